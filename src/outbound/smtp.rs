//! SMTP sending on lettre's protocol layer (`AsyncSmtpConnection`: EHLO, STARTTLS, AUTH,
//! commands, dot-stuffing), driven by us so the queue can record a send at the one safe moment:
//! after the last body byte is written and just before the terminating `.` (RFC 5321 §4.1.1.4).
//! From then on the server holds the whole message, so a crash cannot make it go out twice; the
//! remaining window (a crash between that commit and writing five bytes) can only lose a mail,
//! is microseconds long, and such a send is recorded as unconfirmed on restart.
//! One connection is kept open and reused; plain connections set TCP_NODELAY (lettre's own
//! sockets wait ~40 ms per message on delayed ACKs).

use super::transport::{SendError, error_chain};
use crate::config::{Endpoint, Tls};
use crate::store::QueuedMail;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, MailBodyParameter, MailParameter};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Close an idle connection after this long rather than let the server time it out.
const IDLE: Duration = Duration::from_secs(30);

/// A reusable SMTP session to one relay.
pub struct SmtpSender {
    endpoint: Endpoint,
    tls: Option<TlsParameters>,
    hello: ClientId,
    conn: Mutex<Option<(AsyncSmtpConnection, Instant)>>,
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
    SendError { transient: transient(&e), message: error_chain(&e) }
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
        Ok(SmtpSender { endpoint: endpoint.clone(), tls, hello: ClientId::default(), conn: Mutex::new(None) })
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let e = &self.endpoint;
        let timeout = Some(e.connect_timeout);
        let mut conn = match e.tls {
            Tls::None => {
                let tcp = tokio::time::timeout(e.connect_timeout, tokio::net::TcpStream::connect((e.host.as_str(), e.port)))
                    .await
                    .map_err(|_| SendError { transient: true, message: format!("connect to {}:{} timed out", e.host, e.port) })?
                    .map_err(|err| SendError { transient: true, message: format!("connect to {}:{}: {err}", e.host, e.port) })?;
                let _ = tcp.set_nodelay(true);
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await.map_err(err)?
            }
            Tls::Implicit => AsyncSmtpConnection::connect_tokio1((e.host.as_str(), e.port), timeout, &self.hello, self.tls.clone(), None).await.map_err(err)?,
            Tls::StartTls => {
                let mut c = AsyncSmtpConnection::connect_tokio1((e.host.as_str(), e.port), timeout, &self.hello, None, None).await.map_err(err)?;
                let params = self.tls.clone().expect("starttls has TLS parameters");
                c.starttls(params, &self.hello).await.map_err(err)?;
                c
            }
        };
        if let (Some(u), Some(p)) = (&e.username, &e.password) {
            conn.auth(DEFAULT_MECHANISMS, &Credentials::new(u.clone(), p.expose().to_string())).await.map_err(err)?;
        }
        Ok(conn)
    }

    /// Send `mail`. `commit` runs after the last body byte and before the final dot; `Ok` then
    /// means the server accepted it. On `Err`, the caller undoes what `commit` recorded.
    pub async fn send(&self, mail: &QueuedMail, commit: &mut (dyn FnMut() + Send)) -> Result<(), SendError> {
        let mut slot = self.conn.lock().await;
        let reused = match slot.take() {
            Some((mut c, used)) if used.elapsed() < IDLE && !c.has_broken() => {
                if c.test_connected().await {
                    Some(c)
                } else {
                    c.abort().await;
                    None
                }
            }
            Some((mut c, _)) => {
                let _ = c.quit().await;
                None
            }
            None => None,
        };
        let mut conn = match reused {
            Some(c) => c,
            None => self.connect().await?,
        };
        let result = transaction(&mut conn, mail, commit).await;
        match &result {
            Ok(()) => *slot = Some((conn, Instant::now())),
            Err(_) => conn.abort().await,
        }
        result
    }
}

async fn transaction(conn: &mut AsyncSmtpConnection, mail: &QueuedMail, commit: &mut (dyn FnMut() + Send)) -> Result<(), SendError> {
    let permanent = |m: String| SendError { transient: false, message: m };
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
    let body = CommitBeforeDot { body: Some(&mail.raw), commit };
    conn.message_iter(body).await.map_err(err)?;
    Ok(())
}

/// Yields the body once; when lettre asks for more (just before it writes `.`), runs `commit`.
struct CommitBeforeDot<'a> {
    body: Option<&'a [u8]>,
    commit: &'a mut (dyn FnMut() + Send),
}

impl<'a> Iterator for CommitBeforeDot<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        match self.body.take() {
            Some(b) => Some(b),
            None => {
                (self.commit)();
                None
            }
        }
    }
}
