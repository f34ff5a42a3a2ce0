//! Transport: the two ways a stored mail leaves — SMTP (lettre; implicit TLS, STARTTLS, or plain
//! for loopback) or a folder of `.eml` files (embedded default). Errors say whether retrying helps.

use crate::config::Tls;
use crate::store::QueuedMail;
use super::smtp::SmtpSender;
use lettre::address::Envelope;
use lettre::{AsyncFileTransport, AsyncTransport, Tokio1Executor};
use std::path::PathBuf;

/// A send failure; `transient` says whether a later retry can succeed, `scope` whose fault it is.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub transient: bool,
    pub scope: Scope,
    pub message: String,
}

/// Whose failure a [`SendError`] is, which decides what the worker does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This mail's: the server refused its sender, a recipient or its content. Retry or fail it.
    Mail,
    /// The server's or the connection's (refused, TLS, login): every mail would fail alike.
    /// Keep the queue as it is and back off.
    Server,
    /// The send could not be recorded (disk full), so it was not completed. Stop sending.
    Unrecorded,
}

impl SendError {
    pub fn mail(transient: bool, message: impl Into<String>) -> SendError {
        SendError { transient, scope: Scope::Mail, message: message.into() }
    }

    pub fn server(message: impl Into<String>) -> SendError {
        SendError { transient: true, scope: Scope::Server, message: message.into() }
    }

    pub fn unrecorded() -> SendError {
        SendError { transient: true, scope: Scope::Unrecorded, message: "the send could not be recorded, so it was withheld".into() }
    }
}

/// Where outgoing mail goes.
pub enum Transport {
    Smtp { inner: Box<SmtpSender>, describe: String },
    Folder { inner: AsyncFileTransport<Tokio1Executor>, path: PathBuf },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The transport could not be set up (bad CA file, folder not writable).
#[derive(Debug, thiserror::Error)]
#[error("outbound transport: {0}")]
pub struct TransportSetupError(String);

impl Transport {
    /// `tokens` logs SMTP in with OAuth2 access tokens (`auth = "oauth2"`).
    pub fn from_config(t: &crate::config::Transport, tokens: Option<std::sync::Arc<crate::oauth::TokenSource>>) -> Result<Transport, TransportSetupError> {
        match t {
            crate::config::Transport::Folder(path) => {
                std::fs::create_dir_all(path).map_err(|e| TransportSetupError(format!("cannot create {}: {e}", path.display())))?;
                Ok(Transport::Folder { inner: AsyncFileTransport::new(path), path: path.clone() })
            }
            crate::config::Transport::Smtp(e) => {
                let tls = match e.tls {
                    Tls::Implicit => "tls",
                    Tls::StartTls => "starttls",
                    Tls::None => "plain",
                };
                let mut inner = SmtpSender::new(e).map_err(|err| TransportSetupError(err.to_string()))?;
                let auth = if tokens.is_some() { ", oauth2" } else { "" };
                if let Some(t) = tokens {
                    inner = inner.with_tokens(t);
                }
                Ok(Transport::Smtp { inner: Box::new(inner), describe: format!("smtp {}:{} ({tls}{auth})", e.host, e.port) })
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Transport::Smtp { describe, .. } => describe.clone(),
            Transport::Folder { path, .. } => format!("folder {}", path.display()),
        }
    }

    /// Hand the stored bytes to the transport, unchanged. `commit` records the send; it runs at
    /// the moment after which the mail counts as handed over (see `smtp`), at most once, and
    /// returns whether the record was written: if not, the mail is withheld.
    pub async fn send(&self, mail: &QueuedMail, commit: &mut (dyn FnMut() -> bool + Send)) -> Result<(), SendError> {
        let inner = match self {
            Transport::Smtp { inner, .. } => return inner.send(mail, commit).await,
            Transport::Folder { inner, .. } => inner,
        };
        let from = mail.envelope_from.parse().map_err(|e| SendError::mail(false, format!("envelope sender <{}>: {e}", mail.envelope_from)))?;
        let to = mail.recipients.iter().map(|r| r.parse()).collect::<Result<Vec<_>, _>>().map_err(|e| SendError::mail(false, format!("recipient: {e}")))?;
        let envelope = Envelope::new(Some(from), to).map_err(|e| SendError::mail(false, e.to_string()))?;
        let id = inner.send_raw(&envelope, &mail.raw).await.map_err(|e| SendError::server(error_chain(&e)))?;
        if !commit() {
            // Not recorded, so it must not count as sent (it would go out again): take it back.
            let _ = std::fs::remove_file(self.folder_file(&id));
            return Err(SendError::unrecorded());
        }
        Ok(())
    }

    fn folder_file(&self, id: &str) -> PathBuf {
        match self {
            Transport::Folder { path, .. } => path.join(format!("{id}.eml")),
            Transport::Smtp { .. } => PathBuf::new(),
        }
    }
}

/// `error: cause: cause` — the whole chain on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}
