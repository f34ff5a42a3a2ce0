//! Outbound: the persistent queue's worker. Mail is rendered once into the outbox (inside the
//! ingest transaction) and this worker hands the stored bytes, unchanged, to SMTP or to a folder,
//! retrying transient failures with capped exponential backoff and jitter and recording permanent
//! ones on the ticket. It never renders or changes a message.

pub mod compose;
pub mod smtp;
pub mod transport;

use crate::clock::{SharedClock, rfc3339};
use crate::config::RetryPolicy;
use crate::shutdown::Shutdown;
use crate::store::{QueuedMail, Store};
use std::sync::Arc;
use std::time::Duration;
pub use transport::{SendError, Transport};

/// The outbound worker's inputs.
#[derive(Debug, Clone)]
pub struct Worker {
    pub store: Arc<Store>,
    pub transport: Arc<Transport>,
    pub retry: RetryPolicy,
    pub clock: SharedClock,
    pub wake: Arc<tokio::sync::Notify>,
    pub poll_interval: Duration,
}

impl Worker {
    /// Send due mail until shutdown. Store errors are logged and retried on the next round.
    pub async fn run(self, shutdown: Shutdown) {
        tracing::info!(transport = %self.transport.describe(), "outbound worker started");
        loop {
            let due = match self.store.due_outbound(&rfc3339(self.clock.now()), 50) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    Vec::new()
                }
            };
            let full = due.len() == 50;
            for mail in due {
                if shutdown.is_triggered() {
                    break;
                }
                self.deliver(&mail).await;
            }
            if shutdown.is_triggered() {
                break;
            }
            if full {
                continue;
            }
            if let Err(e) = self.store.fold_sent() {
                tracing::warn!(error = %e, "cannot fold sent marks into the outbox");
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.poll_interval) => {}
                _ = shutdown.wait() => break,
            }
        }
        tracing::info!("outbound worker stopped");
    }

    /// Try one queued mail once and record the result.
    pub async fn deliver(&self, mail: &QueuedMail) {
        let mut marked: Option<Result<(), crate::store::StoreError>> = None;
        let sent_at = rfc3339(self.clock.now());
        let mut commit = || marked = Some(self.store.mark_sent(mail.id, &sent_at));
        let result = self.transport.send(mail, &mut commit).await;
        let now = self.clock.now();
        if result.is_err() && matches!(marked, Some(Ok(()))) {
            // The server refused after all: take the mark back so the mail is retried or failed.
            if let Err(e) = self.store.unmark_sent(mail.id) {
                tracing::error!(outbox = mail.id, error = %e, "cannot take back a send mark");
            }
        }
        let record = match result {
            Ok(()) => {
                tracing::info!(outbox = mail.id, ticket = mail.ticket, message_id = %crate::token::redact(&mail.message_id), to = %mail.recipients.join(","), "mail sent");
                match marked {
                    Some(Ok(())) => self.store.confirm_sent(mail.id),
                    Some(Err(e)) => Err(e),
                    None => self.store.mark_sent(mail.id, &rfc3339(now)).and_then(|_| self.store.confirm_sent(mail.id)),
                }
            }
            Err(e) if e.transient && mail.attempts + 1 < self.retry.max_attempts => {
                let delay = backoff(&self.retry, mail.attempts);
                let next = now + time::Duration::try_from(delay).unwrap_or(time::Duration::HOUR);
                tracing::warn!(outbox = mail.id, attempt = mail.attempts + 1, retry_in_s = delay.as_secs_f64(), error = %e, "send failed, will retry");
                self.store.mark_retry(mail.id, &e.to_string(), &rfc3339(next))
            }
            Err(e) => {
                tracing::error!(outbox = mail.id, ticket = mail.ticket, attempts = mail.attempts + 1, error = %e, "send failed permanently");
                self.store.mark_failed(mail.id, &e.to_string(), &rfc3339(now))
            }
        };
        if let Err(e) = record {
            // The mail may be sent again after a restart; the window is this one failed write.
            tracing::error!(outbox = mail.id, error = %e, "cannot record the send result");
        }
    }
}

/// Delay before retry number `attempts + 1`: `initial · 2^attempts`, capped, ±20% jitter.
pub fn backoff(p: &RetryPolicy, attempts: u32) -> Duration {
    let base = p.initial.as_secs_f64() * 2f64.powi(attempts.min(30) as i32);
    let capped = base.min(p.max.as_secs_f64());
    let jitter = 0.8 + rand::random::<f64>() * 0.4;
    Duration::from_secs_f64((capped * jitter).max(0.001))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy { max_attempts: 10, initial: Duration::from_secs(10), max: Duration::from_secs(100) };
        assert!(backoff(&p, 0) >= Duration::from_secs(8) && backoff(&p, 0) <= Duration::from_secs(12));
        assert!(backoff(&p, 2) >= Duration::from_secs(32));
        assert!(backoff(&p, 20) <= Duration::from_secs(120));
    }
}
