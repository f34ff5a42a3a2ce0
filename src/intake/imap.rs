//! IMAP intake for one mailbox: connect (implicit TLS / STARTTLS / plain when configured), log in,
//! SELECT, fetch every UID above the stored cursor with `BODY.PEEK[]` in batches, hand each message
//! to the pipeline (which stores the cursor in the same transaction), and only then mark it `\Seen`
//! or move it. Waits with IDLE where the server has it, else polls. Reconnects with backoff.
//! With `auth = "oauth2"` it logs in with SASL XOAUTH2 (or OAUTHBEARER) and a cached access
//! token, and ends the session when that token expires (servers check tokens only at login;
//! Microsoft's drop the session then anyway), logging in again with a fresh one: the UID
//! cursor makes the reconnect lose nothing.

use super::Backoff;
use super::bounded::{Allowance, Bounded};
use crate::config::{AfterCommit, Endpoint, ImapSource, Tls};
use crate::desk::DeskHandle;
use crate::pipeline::Pipeline;
use crate::shutdown::Shutdown;
use crate::oauth::{AccessToken, TokenError, TokenSource};
use crate::store::Cursor;
use std::sync::Arc;
use async_imap::extensions::idle::IdleResponse;
use futures::TryStreamExt;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::Instrument;

/// Any stream a session can run over: plain TCP, TLS, or TCP upgraded by STARTTLS.
pub trait ImapStream: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> ImapStream for T {}
type Session = async_imap::Session<Box<dyn ImapStream>>;

/// Why a session ended; every variant leads to a reconnect after backoff.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("connect to {0}: {1}")]
    Connect(String, String),
    #[error("login as {0} failed: {1}")]
    Login(String, String),
    /// async-imap's error text, cut to a bounded excerpt.
    #[error("IMAP: {0}")]
    Protocol(String),
    #[error("connection lost")]
    Lost,
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("cannot store message: {0}")]
    Ingest(#[from] crate::pipeline::IngestError),
    #[error("cannot read cursor: {0}")]
    Store(#[from] crate::store::StoreError),
    /// No access token for an OAuth2 login (told to the admins by the token events).
    #[error("OAuth2: {0}")]
    Token(#[from] TokenError),
    /// The access token of this session expired: log in again with a fresh one.
    #[error("access token expired; logging in again")]
    Reauth,
}

/// Longest excerpt of an IMAP error we keep: async-imap's parse errors quote the whole response
/// buffer, as decimal bytes (a 32 MiB literal made 160 MB log lines, issue 17.10).
const MAX_ERROR_TEXT: usize = 300;

impl From<async_imap::error::Error> for ImapError {
    fn from(e: async_imap::error::Error) -> ImapError {
        ImapError::Protocol(excerpt(&e.to_string()))
    }
}

/// `text` cut to `MAX_ERROR_TEXT` characters, saying how long it was.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_TEXT) {
        Some((cut, _)) => format!("{}… ({} bytes in all)", &text[..cut], text.len()),
        None => text.to_string(),
    }
}

/// What any response but a message body may cost: room for `MAX_LINE` twice (a long SEARCH).
const CONTROL_BYTES: u64 = 2 * super::bounded::MAX_LINE;

/// Run until shutdown, reconnecting after failures.
pub async fn run(name: String, src: ImapSource, pipeline: Pipeline, desk: DeskHandle, shutdown: Shutdown) {
    let span = tracing::info_span!("mailbox", mailbox = %name);
    async move {
        let tokens = match &src.oauth2 {
            None => None,
            Some(cfg) => {
                let events = crate::pipeline::oauth::RecordTokenEvents { pipeline: pipeline.clone(), desk: desk.clone(), account: src.endpoint.username.clone().unwrap_or_default() };
                match TokenSource::new((**cfg).clone(), pipeline.clock.clone(), Some(Arc::new(events))) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        tracing::error!(error = %e, "OAuth2 setup failed; IMAP intake not started");
                        return;
                    }
                }
            }
        };
        let mut backoff = Backoff::default();
        loop {
            let mut progressed = false;
            let result = session(&name, &src, &pipeline, &desk, &shutdown, tokens.as_ref(), &mut progressed).await;
            if shutdown.is_triggered() {
                break;
            }
            if let Err(ImapError::Reauth) = result {
                tracing::info!("access token expired: logging in again with a fresh one");
                backoff.reset();
                continue;
            }
            // Start again at the shortest delay only after a session that did useful work. A
            // successful login alone is not enough: a vanished folder (SELECT fails) or a message
            // that makes the server drop the connection on every FETCH would otherwise log in
            // again every second forever instead of backing off.
            if progressed {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            match &result {
                Ok(()) => {}
                // Logged once by the token events; a new `postdesk oauth login` ends the wait.
                Err(ImapError::Token(e)) => {
                    tracing::debug!(error = %e, retry_in_ms = delay.as_millis() as u64, "no access token");
                    super::report_health(&pipeline, &name, Err(e.to_string()), None).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "IMAP session ended");
                    super::report_health(&pipeline, &name, Err(e.to_string()), None).await;
                }
            }
            if let (Some(t), Err(ImapError::Login(..))) = (&tokens, &result) {
                // The server refused the token: get a new one next time.
                t.forget().await;
            }
            let relogin = async {
                let Some(t) = &tokens else { return std::future::pending().await };
                let before = t.refresh_file_stamp();
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if t.refresh_file_stamp() != before {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = relogin => {
                    tracing::info!("new refresh token stored: logging in again");
                    backoff.reset();
                }
                _ = shutdown.wait() => break,
            }
        }
        tracing::info!("IMAP intake stopped");
    }
    .instrument(span)
    .await
}

/// Open an authenticated session with no limit on what the server sends (tests, benchmarks).
pub async fn connect(e: &Endpoint) -> Result<Session, ImapError> {
    connect_bounded(e, Allowance::unlimited()).await
}

/// Open an authenticated session whose reads are bounded by `allowance` (after TLS).
pub async fn connect_bounded(e: &Endpoint, allowance: Allowance) -> Result<Session, ImapError> {
    connect_with(e, None, allowance).await.map(|(s, _)| s)
}

/// Open a session logged in with a password, or with an access token from `tokens` (SASL
/// XOAUTH2/OAUTHBEARER); returns the token used, whose expiry ends the session.
pub async fn connect_with(e: &Endpoint, tokens: Option<&TokenSource>, allowance: Allowance) -> Result<(Session, Option<AccessToken>), ImapError> {
    // The token first: without one there is no point in opening a connection.
    let token = match tokens {
        Some(t) => Some(t.token().await?),
        None => None,
    };
    let addr = format!("{}:{}", e.host, e.port);
    let fut = async {
        let tcp = TcpStream::connect(&addr).await.map_err(|err| ImapError::Connect(addr.clone(), err.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn ImapStream> = match e.tls {
            Tls::None => Box::new(Bounded::new(tcp, allowance)),
            Tls::Implicit => Box::new(Bounded::new(tls(e, tcp).await?, allowance)),
            Tls::StartTls => {
                let mut client = async_imap::Client::new(tcp);
                client.read_response().await.map_err(|err| ImapError::Connect(addr.clone(), excerpt(&err.to_string())))?;
                client.run_command_and_check_ok("STARTTLS", None).await?;
                // After STARTTLS there is no second greeting (reading one would hang).
                let tls = tls(e, client.into_inner()).await?;
                let client = async_imap::Client::new(Box::new(Bounded::new(tls, allowance)) as Box<dyn ImapStream>);
                return login(e, client, token.as_ref()).await;
            }
        };
        let mut client = async_imap::Client::new(stream);
        match client.read_response().await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(ImapError::Connect(addr.clone(), "closed before greeting".into())),
            Err(err) => return Err(ImapError::Connect(addr.clone(), excerpt(&err.to_string()))),
        }
        login(e, client, token.as_ref()).await
    };
    let session = tokio::time::timeout(e.connect_timeout, fut).await.map_err(|_| ImapError::Timeout("connect and login"))??;
    Ok((session, token))
}

async fn tls(e: &Endpoint, tcp: TcpStream) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ImapError> {
    let connector = super::tls::connector(e.ca_file.as_deref()).map_err(|err| ImapError::Connect(e.host.clone(), err))?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(e.host.clone()).map_err(|err| ImapError::Connect(e.host.clone(), err.to_string()))?;
    connector.connect(name, tcp).await.map_err(|err| ImapError::Connect(e.host.clone(), format!("TLS: {err}")))
}

async fn login(e: &Endpoint, mut client: async_imap::Client<Box<dyn ImapStream>>, token: Option<&AccessToken>) -> Result<Session, ImapError> {
    let user = e.username.clone().unwrap_or_default();
    let Some(token) = token else {
        let pass = e.password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default();
        return client.login(&user, &pass).await.map_err(|(err, _)| ImapError::Login(user.clone(), excerpt(&err.to_string())));
    };
    let offered = auth_mechanisms(&mut client).await?;
    let Some(mechanism) = crate::oauth::Mechanism::choose(offered.iter().map(String::as_str)) else {
        return Err(ImapError::Login(user, format!("the server offers neither AUTH=XOAUTH2 nor AUTH=OAUTHBEARER (it offers: {})", offered.join(" "))));
    };
    // RFC 7628 §3.2 / Google's XOAUTH2: AUTHENTICATE, then the base64 response to the empty challenge.
    let auth = crate::oauth::Authenticator::new(mechanism, &user, &token.secret);
    client.authenticate(mechanism.name(), auth).await.map_err(|(err, _)| ImapError::Login(user.clone(), format!("{}: {}", mechanism.name(), excerpt(&err.to_string()))))
}

/// The SASL mechanisms the server offers before login (`AUTH=…` in CAPABILITY, RFC 3501 §6.1.1).
async fn auth_mechanisms(client: &mut async_imap::Client<Box<dyn ImapStream>>) -> Result<Vec<String>, ImapError> {
    use async_imap::imap_proto::{Capability, Response};
    let (tx, rx) = async_channel::bounded(16);
    client.run_command_and_check_ok("CAPABILITY", Some(tx)).await?;
    let mut out = Vec::new();
    while let Ok(r) = rx.try_recv() {
        if let async_imap::types::UnsolicitedResponse::Other(data) = r
            && let Response::Capabilities(caps) = data.parsed()
        {
            out.extend(caps.iter().filter_map(|c| match c {
                Capability::Auth(m) => Some(m.to_ascii_uppercase()),
                _ => None,
            }));
        }
    }
    Ok(out)
}

/// One connection's life. `progressed` is set once the session committed a message or caught up
/// with the folder (reached IDLE or the poll wait): the signal that the server works again.
#[allow(clippy::too_many_arguments)]
async fn session(name: &str, src: &ImapSource, pipeline: &Pipeline, desk: &DeskHandle, shutdown: &Shutdown, tokens: Option<&TokenSource>, progressed: &mut bool) -> Result<(), ImapError> {
    let budget = Allowance::new(CONTROL_BYTES);
    let (mut s, login_token) = connect_with(&src.endpoint, tokens, budget.clone()).await?;
    // How long the login token has left, as a wait; `None` with a password.
    let token_left = || login_token.as_ref().map(|t| Duration::try_from(t.expires_at - pipeline.clock.now()).unwrap_or(Duration::ZERO));
    budget.allow(CONTROL_BYTES);
    let caps = s.capabilities().await?;
    let can_idle = src.idle && caps.has_str("IDLE");
    let can_move = caps.has_str("MOVE");
    if let AfterCommit::Move(folder) = &src.after {
        // Creating an existing folder fails harmlessly.
        let _ = s.create(folder).await;
    }
    tracing::info!(idle = can_idle, "IMAP connected");
    let mut settled = false;
    loop {
        budget.allow(CONTROL_BYTES);
        let mbox = s.select(&src.folder).await?;
        let validity = mbox.uid_validity.unwrap_or(0);
        let stored = pipeline.store.cursor(name)?;
        let mut last = match stored {
            Some(c) if c.uid_validity == validity => c.last_uid,
            Some(c) => {
                // RFC 3501 §2.3.1.1: a new UIDVALIDITY invalidates every UID. Start over; duplicate
                // detection in the pipeline keeps already-stored messages from becoming tickets again.
                tracing::warn!(old = c.uid_validity, new = validity, "UIDVALIDITY changed; rescanning the folder");
                0
            }
            None => 0,
        };
        // Where the windowed search goes on past empty windows (see `search_range`).
        let mut scan = 0u32;
        if !settled {
            let keep = pipeline.store.left_on_server(name, validity)?;
            settle(&mut s, src, last, can_move, &keep).await?;
            settled = true;
        }
        // Fetch everything above the cursor, batch by batch.
        loop {
            if shutdown.is_triggered() {
                let _ = s.logout().await;
                return Ok(());
            }
            // RFC 3501 §2.3.1.1: UIDs are 32-bit; after 4294967295 nothing can follow (issue 17.9).
            let Some(next) = last.checked_add(1) else { break };
            let (range, window_end) = search_range(next.max(scan), mbox.uid_next);
            budget.allow(CONTROL_BYTES);
            let search = tokio::time::timeout(Duration::from_secs(120), s.uid_search(format!("UID {range}"))).await.map_err(|_| ImapError::Timeout("search"))??;
            let mut uids: Vec<u32> = search.into_iter().filter(|u| *u > last).collect();
            if uids.is_empty() {
                match window_end {
                    // An empty window below UIDNEXT: look further up.
                    Some(end) => {
                        scan = end + 1;
                        continue;
                    }
                    None => break,
                }
            }
            uids.sort_unstable();
            let waiting = uids.len() as i64;
            uids.truncate(src.batch_size as usize);
            budget.allow(CONTROL_BYTES);
            let sizes = sizes(&mut s, &uids).await?;
            let max = desk.current().config.limits.max_message_size;
            let head = uids[0];
            let head_size = sizes.get(&head).copied().unwrap_or(0);
            if head_size > max {
                // Over the limit: read only the header section, leave the message untouched.
                budget.allow(CONTROL_BYTES);
                let header = fetch(&mut s, &[head], "BODY.PEEK[HEADER]").await?.into_iter().next().map(|(_, b)| b.as_ref().to_vec()).unwrap_or_default();
                let cursor = Cursor { uid_validity: validity, last_uid: head };
                let report = pipeline.ingest_async(desk.current(), name.to_string(), header, Some(cursor), Some(head_size)).await?;
                tracing::warn!(uid = head, size = head_size, outcome = ?report.outcome, "message over the size limit left on the server");
                last = head;
                continue;
            }
            // Batch by bytes too, so a run of large messages never sits in memory at once.
            let mut batch = Vec::new();
            let mut bytes = 0u64;
            for u in &uids {
                let sz = sizes.get(u).copied().unwrap_or(0);
                if sz > max || (!batch.is_empty() && bytes + sz > BATCH_BYTES) {
                    break;
                }
                bytes += sz;
                batch.push(*u);
            }
            budget.allow(body_bytes(&batch, &sizes));
            let mut fetched = fetch(&mut s, &batch, "BODY.PEEK[]").await?;
            fetched.retain(|(u, _)| *u > last);
            if fetched.is_empty() {
                // Messages expunged between SEARCH and FETCH: skip past them.
                last = *batch.last().unwrap_or(&last);
                continue;
            }
            // One transaction for the batch: one disk sync instead of one per message.
            let batch: Vec<(Fetched, Cursor)> = fetched.into_iter().map(|(uid, raw)| (raw, Cursor { uid_validity: validity, last_uid: uid })).collect();
            let uids: Vec<u32> = batch.iter().map(|(_, c)| c.last_uid).collect();
            let reports = pipeline.ingest_batch_async(desk.current(), name.to_string(), batch).await?;
            for (uid, report) in uids.iter().zip(&reports) {
                tracing::info!(uid, message_id = %report.message_id, outcome = ?report.outcome, "message processed");
            }
            last = *uids.last().unwrap_or(&last);
            super::report_health(pipeline, name, Ok("fetching"), Some(waiting - uids.len() as i64)).await;
            let done = uids;
            budget.allow(CONTROL_BYTES);
            after_commit(&mut s, src, &done, can_move).await?;
        }
        if shutdown.is_triggered() {
            let _ = s.logout().await;
            return Ok(());
        }
        // Caught up with the folder.
        *progressed = true;
        super::report_health(pipeline, name, Ok(if can_idle { "idle" } else { "polling" }), Some(0)).await;
        // Wait for news.
        budget.allow(CONTROL_BYTES);
        if can_idle {
            let mut idle = s.idle();
            idle.init().await?;
            enum Wake {
                Data,
                Timer,
                Stop,
                Lost,
                Expired,
            }
            let wake = {
                let (fut, _stop) = idle.wait_with_timeout(Duration::from_secs(29 * 60));
                let expiry = async {
                    match token_left() {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = fut => match r? {
                        IdleResponse::NewData(_) => Wake::Data,
                        IdleResponse::Timeout => Wake::Timer,
                        // We never drop the StopSource first, so this is a dead connection (CRATE-FACTS).
                        IdleResponse::ManualInterrupt => Wake::Lost,
                    },
                    _ = tokio::time::sleep(src.poll_interval.max(Duration::from_secs(5)).min(Duration::from_secs(25 * 60))) => Wake::Timer,
                    _ = shutdown.wait() => Wake::Stop,
                    _ = expiry => Wake::Expired,
                }
            };
            if let Wake::Lost = wake {
                return Err(ImapError::Lost);
            }
            s = tokio::time::timeout(Duration::from_secs(30), idle.done()).await.map_err(|_| ImapError::Timeout("IDLE DONE"))??;
            if let Wake::Stop = wake {
                let _ = s.logout().await;
                return Ok(());
            }
            if let Wake::Expired = wake {
                let _ = tokio::time::timeout(Duration::from_secs(5), s.logout()).await;
                return Err(ImapError::Reauth);
            }
            let _ = matches!(wake, Wake::Data | Wake::Timer);
        } else {
            tokio::select! {
                _ = tokio::time::sleep(src.poll_interval) => {}
                _ = shutdown.wait() => {
                    let _ = s.logout().await;
                    return Ok(());
                }
            }
            if token_left().is_some_and(|d| d.is_zero()) {
                let _ = tokio::time::timeout(Duration::from_secs(5), s.logout()).await;
                return Err(ImapError::Reauth);
            }
            s.noop().await?;
        }
    }
}

/// Most bytes fetched in one batch (a single larger message is fetched alone).
const BATCH_BYTES: u64 = 32 * 1024 * 1024;

/// Most UIDs one SEARCH covers while the folder's UIDNEXT lies beyond: the answer (at most 11
/// bytes a UID) stays far below the line limit however large the backlog (bounded.rs).
const SEARCH_WINDOW: u32 = 100_000;

/// The UIDs to search from `from`: a window of `SEARCH_WINDOW` while UIDNEXT (from SELECT) says
/// mail lies beyond it, with the window's last UID; else `from:*`, which also finds mail that
/// arrived after SELECT.
fn search_range(from: u32, uid_next: Option<u32>) -> (String, Option<u32>) {
    match uid_next {
        Some(n) if n.saturating_sub(from) > SEARCH_WINDOW => {
            let end = from + (SEARCH_WINDOW - 1);
            (format!("{from}:{end}"), Some(end))
        }
        _ => (format!("{from}:*"), None),
    }
}

/// What a body FETCH of `batch` may cost: each message at up to twice its reported RFC822.SIZE
/// (servers round it) plus room for the FETCH line. Unasked-for messages or a literal far beyond
/// the reported size break it and end the session (issue 17.8).
fn body_bytes(batch: &[u32], sizes: &std::collections::HashMap<u32, u64>) -> u64 {
    batch.iter().map(|u| sizes.get(u).copied().unwrap_or(0).saturating_mul(2).saturating_add(16 * 1024)).sum::<u64>() + 64 * 1024
}

/// RFC822.SIZE of each UID asked for (answers about other UIDs are ignored).
async fn sizes(s: &mut Session, uids: &[u32]) -> Result<std::collections::HashMap<u32, u64>, ImapError> {
    let set = uids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let items: Vec<_> = tokio::time::timeout(Duration::from_secs(120), async { s.uid_fetch(&set, "(UID RFC822.SIZE)").await?.try_collect().await })
        .await
        .map_err(|_| ImapError::Timeout("fetch sizes"))??;
    Ok(items.into_iter().filter_map(|f: async_imap::types::Fetch| Some((f.uid?, f.size? as u64))).filter(|(u, _)| uids.contains(u)).collect())
}

/// Fetch `item` (a body section) of the UIDs `asked`, in UID order. Answers for any other UID
/// are dropped: a server cannot move the cursor past mail it never delivered (issue 17.9).
async fn fetch(s: &mut Session, asked: &[u32], item: &str) -> Result<Vec<(u32, Fetched)>, ImapError> {
    let query = format!("(UID {item})");
    let set = asked.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let items: Vec<_> = tokio::time::timeout(Duration::from_secs(600), async { s.uid_fetch(&set, &query).await?.try_collect().await })
        .await
        .map_err(|_| ImapError::Timeout("fetch"))??;
    let mut out: Vec<(u32, Fetched)> = items
        .into_iter()
        .filter_map(|f: async_imap::types::Fetch| {
            let uid = f.uid.filter(|u| asked.contains(u))?;
            f.body().or_else(|| f.header())?;
            Some((uid, Fetched(f)))
        })
        .collect();
    out.sort_by_key(|(u, _)| *u);
    Ok(out)
}

/// A fetched message's bytes where async-imap read them (its response buffer): handed to the
/// pipeline without a copy, which for a large mail was a second copy of the whole message.
pub struct Fetched(async_imap::types::Fetch);

impl AsRef<[u8]> for Fetched {
    fn as_ref(&self) -> &[u8] {
        self.0.body().or_else(|| self.0.header()).unwrap_or_default()
    }
}

/// Apply the after-commit action to messages already stored (UID ≤ cursor) that a crash left
/// unmarked: idempotent, so it runs once per connection.
async fn settle(s: &mut Session, src: &ImapSource, last: u32, can_move: bool, keep: &[u32]) -> Result<(), ImapError> {
    if last == 0 {
        return Ok(());
    }
    let query = match src.after {
        AfterCommit::Seen => format!("UID 1:{last} UNSEEN"),
        AfterCommit::Move(_) => format!("UID 1:{last}"),
    };
    let uids: Vec<u32> = s.uid_search(query).await?.into_iter().filter(|u| *u <= last && !keep.contains(u)).collect();
    if !uids.is_empty() {
        tracing::info!(count = uids.len(), "marking messages stored before a restart");
        after_commit(s, src, &uids, can_move).await?;
    }
    Ok(())
}

async fn after_commit(s: &mut Session, src: &ImapSource, uids: &[u32], can_move: bool) -> Result<(), ImapError> {
    if uids.is_empty() {
        return Ok(());
    }
    let set = uids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    match &src.after {
        AfterCommit::Seen => {
            let stream = s.uid_store(&set, "+FLAGS.SILENT (\\Seen)").await?;
            let _: Vec<_> = stream.try_collect().await?;
        }
        AfterCommit::Move(folder) if can_move => s.uid_mv(&set, folder).await?,
        AfterCommit::Move(folder) => {
            // RFC 6851 absent: COPY, flag \Deleted, UID EXPUNGE (RFC 4315) only these UIDs.
            s.uid_copy(&set, folder).await?;
            let stream = s.uid_store(&set, "+FLAGS.SILENT (\\Deleted)").await?;
            let _: Vec<_> = stream.try_collect().await?;
            let stream = s.uid_expunge(&set).await?;
            let _: Vec<_> = stream.try_collect().await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_stay_in_windows_below_uidnext() {
        assert_eq!(search_range(1, None), ("1:*".to_string(), None));
        assert_eq!(search_range(1, Some(100_001)), ("1:*".to_string(), None));
        assert_eq!(search_range(1, Some(100_002)), ("1:100000".to_string(), Some(100_000)));
        assert_eq!(search_range(u32::MAX - 5, Some(u32::MAX)), (format!("{}:*", u32::MAX - 5), None));
        assert_eq!(search_range(4_000_000_000, Some(u32::MAX)), ("4000000000:4000099999".to_string(), Some(4_000_099_999)));
    }
}
