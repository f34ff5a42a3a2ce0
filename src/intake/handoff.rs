//! The MTA pipe's fast path: `postdesk deliver` hands its message to the daemon running on the
//! same data folder, over the Unix socket `deliver.sock` there, instead of loading the desk and
//! opening the database itself. The daemon stores it through the same pipeline call
//! (`ingest_strict`) in its own transaction and answers only once that committed, so the MTA's
//! "delivered" still means "stored". When no daemon listens (not running, stale socket, no
//! permission), `deliver` stores the message itself, as before.
//!
//! Protocol `PDH1`, one message per connection: the client sends `PDH1 <mailbox> <length>\n`
//! and `<length>` bytes of message; the daemon answers one line, `<exit code> <what happened>\n`,
//! the exit code and stderr line of `deliver` (0 stored or dropped on purpose, 65 not mail, 75
//! not stored), or `- <why>\n` when the daemon does not take it (a mailbox its configuration does
//! not have yet: mailboxes change with a restart). Then, and when the connection ends without an
//! answer, the client stores the message itself; a copy the daemon did commit is recognised as a
//! duplicate.
//!
//! The socket is created mode 0600 in the data folder: only the desk's own user (the one who may
//! write the database anyway) can hand mail over.

use crate::desk::{Desk, DeskHandle};
use crate::pipeline::{Delivery, IngestError, Pipeline, Report};
use crate::shutdown::Shutdown;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// sysexits.h codes of the MTA pipe contract.
pub const EX_DATAERR: i32 = 65;
pub const EX_TEMPFAIL: i32 = 75;

/// Messages larger than this are stored by `deliver` itself (the socket's reader is bounded).
pub const MAX_HANDED: usize = 64 << 20;

/// How long the daemon waits for a client's request; a client that stalls is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `deliver` waits for the daemon's answer (a store waiting behind a long write lock).
/// On timeout it answers 75: the MTA retries, and a copy the daemon stored meanwhile is a duplicate.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// The socket of the daemon serving `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("deliver.sock")
}

/// `deliver`'s exit code and stderr line for what the pipeline did with a message.
pub fn answer(result: Result<Report, IngestError>, desk: &Desk) -> (i32, String) {
    match result {
        Ok(r) => (0, outcome(&r, desk)),
        Err(IngestError::NotMail(e)) => (EX_DATAERR, format!("postdesk deliver: {e}")),
        Err(e) => (EX_TEMPFAIL, format!("postdesk deliver: {e}; message not stored (the MTA will retry)")),
    }
}

/// What happened to a message, in a few words (`created PD-12`, `dropped: …`).
pub fn outcome(r: &Report, desk: &Desk) -> String {
    use crate::pipeline::Outcome::*;
    match &r.outcome {
        Created { ticket } => format!("created {}", desk.refs.format(*ticket)),
        FollowUp { ticket } => format!("added to {}", desk.refs.format(*ticket)),
        Duplicate { ticket } => format!("duplicate of a stored message{}", ticket.map(|t| format!(" on {}", desk.refs.format(t))).unwrap_or_default()),
        Dropped { reason } => format!("dropped: {reason}"),
        Quarantined { reason } => format!("quarantined: {reason}"),
        Answered { what } => format!("answered: {what}"),
    }
}

/// Client side: hand `raw` to the daemon. `None` when no daemon took it (store it yourself).
pub fn hand_over(socket: &Path, mailbox: &str, raw: &[u8]) -> Option<(i32, String)> {
    if raw.len() > MAX_HANDED || mailbox.is_empty() || mailbox.contains(char::is_whitespace) {
        return None;
    }
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).ok()?;
    stream.write_all(format!("PDH1 {mailbox} {}\n", raw.len()).as_bytes()).ok()?;
    stream.write_all(raw).ok()?;
    let mut line = String::new();
    match std::io::BufReader::new(stream).take(64 * 1024).read_line(&mut line) {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            return Some((EX_TEMPFAIL, "postdesk deliver: the daemon did not answer in time; message may not be stored (the MTA will retry)".into()));
        }
        Err(_) => return None,
    }
    // `- why`: the daemon does not take it (parses as no code): store it here.
    let (code, text) = line.strip_suffix('\n')?.split_once(' ')?;
    Some((code.parse().ok()?, text.to_string()))
}

/// Daemon side: listen on `path` (a stale socket of a previous run is replaced). Errors leave
/// the daemon without the fast path; `deliver` then stores mail itself.
pub fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serve hand-offs until shutdown, then remove the socket.
pub async fn serve(listener: tokio::net::UnixListener, path: PathBuf, pipeline: Pipeline, desk: DeskHandle, shutdown: Shutdown) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (p, d) = (pipeline.clone(), desk.clone());
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, p, d).await {
                            tracing::debug!(error = %e, "deliver hand-off");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "deliver socket");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.wait() => break,
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// One hand-off: read the request, store it, answer after the commit.
async fn handle(stream: tokio::net::UnixStream, pipeline: Pipeline, desk: DeskHandle) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = tokio::io::BufReader::new(read);
    let (mailbox, raw) = match tokio::time::timeout(REQUEST_TIMEOUT, request(&mut read)).await {
        Ok(r) => r?,
        Err(_) => return Ok(()),
    };
    let desk = desk.current();
    if !desk.config.mailboxes.contains_key(&mailbox) {
        tracing::info!(mailbox, "deliver for a mailbox this daemon does not have: it stores the message itself");
        return write.write_all(b"- no such mailbox here\n").await;
    }
    let mailbox_name = mailbox.clone();
    let d = desk.clone();
    let stored = tokio::task::spawn_blocking(move || {
        let r = pipeline.ingest_strict(&d, Delivery { mailbox: &mailbox, raw: &raw, cursor: None, truncated_from: None });
        answer(r, &d)
    });
    let (code, text) = match stored.await {
        Ok(a) => a,
        Err(e) => (EX_TEMPFAIL, format!("postdesk deliver: the daemon failed storing it ({e}); message not stored (the MTA will retry)")),
    };
    tracing::info!(mailbox = %mailbox_name, code, "handed over by deliver: {text}");
    write.write_all(format!("{code} {}\n", text.replace('\n', " ")).as_bytes()).await
}

/// Read `PDH1 <mailbox> <length>\n` and the message.
async fn request<R: tokio::io::AsyncBufRead + Unpin>(read: &mut R) -> std::io::Result<(String, Vec<u8>)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("hand-off request: {what}"));
    let mut line = Vec::new();
    (&mut *read).take(512).read_until(b'\n', &mut line).await?;
    let line = std::str::from_utf8(&line).map_err(|_| bad("not UTF-8"))?;
    let mut words = line.trim_end().split(' ');
    let (Some("PDH1"), Some(mailbox), Some(len), None) = (words.next(), words.next(), words.next(), words.next()) else {
        return Err(bad("not PDH1"));
    };
    let len: usize = len.parse().map_err(|_| bad("length"))?;
    if len > MAX_HANDED {
        return Err(bad("too large"));
    }
    let mut raw = vec![0; len];
    read.read_exact(&mut raw).await?;
    Ok((mailbox.to_string(), raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_are_read_exactly_and_bounded() {
        let mut ok: &[u8] = b"PDH1 support 5\nHello and more";
        let (mailbox, raw) = request(&mut ok).await.unwrap();
        assert_eq!((mailbox.as_str(), raw.as_slice()), ("support", &b"Hello"[..]));
        for bad in [&b"PDH2 support 5\nHello"[..], b"PDH1 support\nHello", b"PDH1 support x\n", b"PDH1 a b 5\nHello", b"PDH1 support 99999999999\n"] {
            let mut r = bad;
            assert!(request(&mut r).await.is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let mut short: &[u8] = b"PDH1 support 50\nHello";
        assert!(request(&mut short).await.is_err(), "a message cut short is refused");
        let long = format!("PDH1 {} 5\n", "x".repeat(1000));
        let mut r = long.as_bytes();
        assert!(request(&mut r).await.is_err(), "the request line is bounded");
    }
}
