//! Transport: the two ways a stored mail leaves — SMTP (lettre; implicit TLS, STARTTLS, or plain
//! for loopback) or a folder of `.eml` files (embedded default). Errors say whether retrying helps.

use crate::config::{Endpoint, Tls};
use crate::store::QueuedMail;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls as LTls, TlsParameters};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
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
    Smtp { inner: AsyncSmtpTransport<Tokio1Executor>, describe: String },
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
            crate::config::Transport::Smtp(e) => smtp(e),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Transport::Smtp { describe, .. } => describe.clone(),
            Transport::Folder { path, .. } => format!("folder {}", path.display()),
        }
    }

    /// Hand the stored bytes to the transport, unchanged.
    pub async fn send(&self, mail: &QueuedMail) -> Result<(), SendError> {
        let from = mail.envelope_from.parse().map_err(|e| SendError { transient: false, message: format!("envelope sender <{}>: {e}", mail.envelope_from) })?;
        let to = mail
            .recipients
            .iter()
            .map(|r| r.parse())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SendError { transient: false, message: format!("recipient: {e}") })?;
        let envelope = Envelope::new(Some(from), to).map_err(|e| SendError { transient: false, message: e.to_string() })?;
        match self {
            Transport::Smtp { inner, .. } => inner.send_raw(&envelope, &mail.raw).await.map(|_| ()).map_err(|e| SendError {
                // Only an explicit 5xx is permanent; refused connections, timeouts and 4xx retry.
                transient: !e.is_permanent(),
                message: error_chain(&e),
            }),
            Transport::Folder { inner, .. } => {
                inner.send_raw(&envelope, &mail.raw).await.map(|_| ()).map_err(|e| SendError { transient: true, message: error_chain(&e) })
            }
        }
    }
}

fn smtp(e: &Endpoint) -> Result<Transport, TransportSetupError> {
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(e.host.clone()).port(e.port).timeout(Some(e.connect_timeout));
    let params = || -> Result<TlsParameters, TransportSetupError> {
        let mut p = TlsParameters::builder(e.host.clone());
        if let Some(ca) = &e.ca_file {
            let pem = std::fs::read(ca).map_err(|err| TransportSetupError(format!("cannot read {}: {err}", ca.display())))?;
            let cert = Certificate::from_pem(&pem).map_err(|err| TransportSetupError(format!("{}: {err}", ca.display())))?;
            p = p.add_root_certificate(cert);
        }
        p.build_rustls().map_err(|err| TransportSetupError(err.to_string()))
    };
    b = match e.tls {
        Tls::Implicit => b.tls(LTls::Wrapper(params()?)),
        Tls::StartTls => b.tls(LTls::Required(params()?)),
        Tls::None => b.tls(LTls::None),
    };
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        b = b.credentials(Credentials::new(u.clone(), p.expose().to_string()));
    }
    let tls = match e.tls {
        Tls::Implicit => "tls",
        Tls::StartTls => "starttls",
        Tls::None => "plain",
    };
    Ok(Transport::Smtp { inner: b.build(), describe: format!("smtp {}:{} ({tls})", e.host, e.port) })
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
