//! Transport: the two ways a stored mail leaves — SMTP (lettre; implicit TLS, STARTTLS, or plain
//! for loopback) or a folder of `.eml` files (embedded default). Errors say whether retrying helps.

use crate::config::Tls;
use crate::store::QueuedMail;
use super::smtp::SmtpSender;
use lettre::address::Envelope;
use lettre::{AsyncFileTransport, AsyncTransport, Tokio1Executor};
use std::path::PathBuf;

/// A send failure; `transient` says whether a later retry can succeed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub transient: bool,
    pub message: String,
}

/// Where outgoing mail goes.
pub enum Transport {
    Smtp { inner: SmtpSender, describe: String },
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
    pub fn from_config(t: &crate::config::Transport) -> Result<Transport, TransportSetupError> {
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
                let inner = SmtpSender::new(e).map_err(|err| TransportSetupError(err.to_string()))?;
                Ok(Transport::Smtp { inner, describe: format!("smtp {}:{} ({tls})", e.host, e.port) })
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
    /// the moment after which the mail counts as handed over (see `smtp`), at most once.
    pub async fn send(&self, mail: &QueuedMail, commit: &mut (dyn FnMut() + Send)) -> Result<(), SendError> {
        if let Transport::Smtp { inner, .. } = self {
            return inner.send(mail, commit).await;
        }
        let from = mail.envelope_from.parse().map_err(|e| SendError { transient: false, message: format!("envelope sender <{}>: {e}", mail.envelope_from) })?;
        let to = mail
            .recipients
            .iter()
            .map(|r| r.parse())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SendError { transient: false, message: format!("recipient: {e}") })?;
        let envelope = Envelope::new(Some(from), to).map_err(|e| SendError { transient: false, message: e.to_string() })?;
        match self {
            Transport::Smtp { .. } => unreachable!("handled above"),
            Transport::Folder { inner, .. } => {
                inner.send_raw(&envelope, &mail.raw).await.map_err(|e| SendError { transient: true, message: error_chain(&e) })?;
                commit();
                Ok(())
            }
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
