//! SMTP sending on lettre's protocol layer (`AsyncSmtpConnection`: EHLO, STARTTLS, AUTH,
//! commands, dot-stuffing), driven by us so the queue can record a send at the one safe moment:
//! after the last body byte is written and just before the terminating `.` (RFC 5321 §4.1.1.4).
//! From then on the server holds the whole message, so a crash cannot make it go out twice; the
//! remaining window (a crash between that commit and writing five bytes) can only lose a mail,
//! is microseconds long, and such a send is recorded as unconfirmed on restart.
//! One connection is kept open and reused; we open its socket ourselves (TCP_NODELAY: lettre's
//! own sockets wait ~40 ms per message on delayed ACKs) and wrap it in [`Held`], which withholds
//! the final dot when the send could not be recorded.
//! With `auth = "oauth2"` the login is AUTH XOAUTH2 (lettre's) with a cached access token, or
//! AUTH OAUTHBEARER (RFC 7628, sent by us as an initial response) where the server offers no
//! XOAUTH2.

use super::transport::{SendError, error_chain};
use crate::config::{Endpoint, Tls};
use crate::store::QueuedMail;
use crate::oauth::TokenSource;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, MailBodyParameter, MailParameter};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Mutex;

/// Close an idle connection after this long rather than let the server time it out.
const IDLE: Duration = Duration::from_secs(30);

/// A reusable SMTP session to one relay.
pub struct SmtpSender {
    endpoint: Endpoint,
    tls: Option<TlsParameters>,
    hello: ClientId,
    /// The open session, its `hold` switch and when it was last used.
    conn: Mutex<Option<(AsyncSmtpConnection, Arc<AtomicBool>, Instant)>>,
    /// Access tokens with `auth = "oauth2"`.
    tokens: Option<Arc<TokenSource>>,
}

/// The relay's TLS settings could not be built (unreadable CA file).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

fn transient(e: &lettre::transport::smtp::Error) -> bool {
    // Only an explicit 5xx is permanent; refused connections, timeouts and 4xx retry.
    !e.is_permanent()
}

fn err(e: lettre::transport::smtp::Error) -> SendError {
    SendError::mail(transient(&e), error_chain(&e))
}

impl SmtpSender {
    pub fn new(endpoint: &Endpoint) -> Result<SmtpSender, SetupError> {
        let tls = match endpoint.tls {
            Tls::None => None,
            Tls::Implicit | Tls::StartTls => {
                let mut p = TlsParameters::builder(endpoint.host.clone());
                if let Some(ca) = &endpoint.ca_file {
                    let pem = std::fs::read(ca).map_err(|e| SetupError(format!("cannot read {}: {e}", ca.display())))?;
                    p = p.add_root_certificate(Certificate::from_pem(&pem).map_err(|e| SetupError(format!("{}: {e}", ca.display())))?);
                }
                Some(p.build_rustls().map_err(|e| SetupError(e.to_string()))?)
            }
        };
        Ok(SmtpSender { endpoint: endpoint.clone(), tls, hello: ClientId::default(), conn: Mutex::new(None), tokens: None })
    }

    /// Log in with access tokens from `tokens` (SASL XOAUTH2/OAUTHBEARER) instead of a password.
    pub fn with_tokens(mut self, tokens: Arc<TokenSource>) -> SmtpSender {
        self.tokens = Some(tokens);
        self
    }

    /// Connect, say EHLO, secure and log in. Every failure here is the server's (or our
    /// credentials'), never a mail's: the worker keeps the queue and backs off.
    async fn connect(&self, hold: &Arc<AtomicBool>) -> Result<AsyncSmtpConnection, SendError> {
        let e = &self.endpoint;
        let server = |m: String| SendError::server(format!("{}:{}: {m}", e.host, e.port));
        // The token first: without one there is no point in connecting.
        let token = match &self.tokens {
            Some(t) => Some(t.token().await.map_err(|x| server(format!("OAuth2: {x}")))?),
            None => None,
        };
        let tcp = tokio::time::timeout(e.connect_timeout, tokio::net::TcpStream::connect((e.host.as_str(), e.port)))
            .await
            .map_err(|_| server("connect timed out".into()))?
            .map_err(|err| server(format!("connect: {err}")))?;
        let _ = tcp.set_nodelay(true);
        let peer = tcp.peer_addr().map_err(|err| server(err.to_string()))?;
        let greet = async {
            let mut conn = match e.tls {
                Tls::None => AsyncSmtpConnection::connect_with_transport(Box::new(Held::new(tcp, peer, hold)), &self.hello).await.map_err(|x| server(error_chain(&x)))?,
                Tls::Implicit => {
                    let connector = crate::intake::tls::connector(e.ca_file.as_deref()).map_err(server)?;
                    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(e.host.clone()).map_err(|x| server(x.to_string()))?;
                    let tls = connector.connect(name, tcp).await.map_err(|x| server(format!("TLS: {x}")))?;
                    AsyncSmtpConnection::connect_with_transport(Box::new(Held::new(tls, peer, hold)), &self.hello).await.map_err(|x| server(error_chain(&x)))?
                }
                Tls::StartTls => {
                    let mut c = AsyncSmtpConnection::connect_with_transport(Box::new(Held::new(tcp, peer, hold)), &self.hello).await.map_err(|x| server(error_chain(&x)))?;
                    let params = self.tls.clone().expect("starttls has TLS parameters");
                    c.starttls(params, &self.hello).await.map_err(|x| server(error_chain(&x)))?;
                    c
                }
            };
            if let (Some(u), Some(tokens), Some(token)) = (&e.username, &self.tokens, &token) {
                let login = if conn.server_info().supports_auth_mechanism(Mechanism::Xoauth2) {
                    conn.auth(&[Mechanism::Xoauth2], &Credentials::new(u.clone(), token.secret.expose().to_string())).await.map(drop).map_err(|x| error_chain(&x))
                } else {
                    oauthbearer(&mut conn, u, &token.secret).await
                };
                if let Err(x) = login {
                    // Refused: the next connection gets a new token.
                    tokens.forget().await;
                    return Err(server(format!("login as {u}: {x}")));
                }
            } else if let (Some(u), Some(p)) = (&e.username, &e.password) {
                conn.auth(DEFAULT_MECHANISMS, &Credentials::new(u.clone(), p.expose().to_string())).await.map_err(|x| server(format!("login as {u}: {}", error_chain(&x))))?;
            }
            Ok(conn)
        };
        tokio::time::timeout(e.connect_timeout * 2, greet).await.map_err(|_| server("greeting, TLS or login timed out".into()))?
    }

    /// Connect, secure and log in as for a send, then say goodbye: what `check --connect` asks.
    pub async fn probe(&self) -> Result<String, SendError> {
        let hold = Arc::new(AtomicBool::new(false));
        let mut conn = self.connect(&hold).await?;
        let secure = conn.is_encrypted();
        let _ = conn.quit().await;
        let login = if self.endpoint.username.is_some() { ", logged in" } else { ", no login configured" };
        Ok(format!("{}{login}", if secure { "TLS" } else { "no TLS" }))
    }

    /// Send `mail`. `commit` runs after the last body byte and before the final dot; `Ok` then
    /// means the server accepted it. On `Err`, the caller undoes what `commit` recorded. When
    /// `commit` reports that it could not record the send, the dot is withheld and the connection
    /// dropped, so the server discards the message ([`SendError::unrecorded`]).
    pub async fn send(&self, mail: &QueuedMail, commit: &mut (dyn FnMut() -> bool + Send)) -> Result<(), SendError> {
        let mut slot = self.conn.lock().await;
        let reused = match slot.take() {
            Some((mut c, hold, used)) if used.elapsed() < IDLE && !c.has_broken() => {
                if c.test_connected().await {
                    Some((c, hold))
                } else {
                    c.abort().await;
                    None
                }
            }
            Some((mut c, _, _)) => {
                let _ = c.quit().await;
                None
            }
            None => None,
        };
        let (mut conn, hold) = match reused {
            Some(c) => c,
            None => {
                let hold = Arc::new(AtomicBool::new(false));
                (self.connect(&hold).await?, hold)
            }
        };
        let result = transaction(&mut conn, mail, commit, &hold).await;
        match &result {
            Ok(()) => *slot = Some((conn, hold, Instant::now())),
            Err(_) => conn.abort().await,
        }
        result
    }
}

/// RFC 7628 §3.1 over RFC 4954: `AUTH OAUTHBEARER <initial response>`. A failure comes as a 334
/// challenge with the server's JSON error, answered with `^A` so the server ends with 5xx.
async fn oauthbearer(conn: &mut AsyncSmtpConnection, user: &str, token: &crate::config::Secret) -> Result<(), String> {
    use base64::Engine;
    struct Line(String);
    impl std::fmt::Display for Line {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}\r\n", self.0)
        }
    }
    let response = base64::engine::general_purpose::STANDARD.encode(crate::oauth::oauthbearer(user, token.expose()));
    let r = conn.command(Line(format!("AUTH OAUTHBEARER {response}"))).await.map_err(|x| format!("OAUTHBEARER: {}", error_chain(&x)))?;
    if r.has_code(334) {
        // The positive-looking 334 carries the error: finish the exchange (the server ends it
        // with 5xx); the login failed either way.
        let end = conn.command(Line("AQ==".into())).await;
        return Err(format!("OAUTHBEARER refused{}", end.err().map(|x| format!(": {}", error_chain(&x))).unwrap_or_default()));
    }
    Ok(())
}

async fn transaction(conn: &mut AsyncSmtpConnection, mail: &QueuedMail, commit: &mut (dyn FnMut() -> bool + Send), hold: &AtomicBool) -> Result<(), SendError> {
    let permanent = |m: String| SendError::mail(false, m);
    let from = mail.envelope_from.parse().map_err(|e| permanent(format!("envelope sender <{}>: {e}", mail.envelope_from)))?;
    let mut params = Vec::new();
    // RFC 6152: announce 8-bit content when the message has any.
    if !mail.raw.is_ascii() {
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    conn.command(Mail::new(Some(from), params)).await.map_err(err)?;
    for r in &mail.recipients {
        let to = r.parse().map_err(|e| permanent(format!("recipient <{r}>: {e}")))?;
        conn.command(Rcpt::new(to, vec![])).await.map_err(err)?;
    }
    conn.command(Data).await.map_err(err)?;
    let body = CommitBeforeDot { body: Some(&mail.raw), commit, hold };
    match conn.message_iter(body).await {
        Ok(_) => Ok(()),
        Err(_) if hold.load(Ordering::SeqCst) => Err(SendError::unrecorded()),
        Err(e) => Err(err(e)),
    }
}

/// Yields the body once; when lettre asks for more (just before it writes `.`), runs `commit`.
/// If that fails, `hold` makes the socket refuse the dot.
struct CommitBeforeDot<'a> {
    body: Option<&'a [u8]>,
    commit: &'a mut (dyn FnMut() -> bool + Send),
    hold: &'a AtomicBool,
}

impl<'a> Iterator for CommitBeforeDot<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        match self.body.take() {
            Some(b) => Some(b),
            None => {
                if !(self.commit)() {
                    self.hold.store(true, Ordering::SeqCst);
                }
                None
            }
        }
    }
}

/// The byte stream under an SMTP session. Once `hold` is set (a send could not be recorded) it
/// refuses every write, so the terminating `.` never reaches the server, which then discards
/// the message when the connection drops (RFC 5321 §4.1.1.4: the dot completes the mail).
/// Below STARTTLS's TLS layer it refuses the encrypted record carrying the dot; lettre flushes
/// after every body part, so all body bytes are already on the socket when `hold` is set.
struct Held<S> {
    inner: S,
    peer: SocketAddr,
    hold: Arc<AtomicBool>,
}

impl<S> Held<S> {
    fn new(inner: S, peer: SocketAddr, hold: &Arc<AtomicBool>) -> Held<S> {
        Held { inner, peer, hold: hold.clone() }
    }

    fn held(&self) -> Option<io::Error> {
        self.hold.load(Ordering::SeqCst).then(|| io::Error::other("send could not be recorded: final dot withheld"))
    }
}

impl<S> std::fmt::Debug for Held<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "smtp connection to {}", self.peer)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Held<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Held<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.held() {
            Some(e) => Poll::Ready(Err(e)),
            None => Pin::new(&mut self.inner).poll_write(cx, buf),
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.held() {
            Some(e) => Poll::Ready(Err(e)),
            None => Pin::new(&mut self.inner).poll_flush(cx),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Sync + Unpin> lettre::transport::smtp::client::AsyncTokioStream for Held<S> {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }
}
