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
pub use transport::{Scope, SendError, Transport};

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

/// What one attempt means for the worker's pace.
#[derive(Debug)]
pub enum Attempt {
    /// The mail's fate is recorded (sent, to be retried, or failed); go on with the next.
    Recorded,
    /// Nothing about this mail was wrong, but sending cannot go on now: the server refuses the
    /// connection or the login, or results cannot be written. Pause the whole queue.
    Stalled(String),
}

impl Worker {
    /// Send due mail until shutdown. While the server or the store is in trouble the queue is
    /// left exactly as it is and the worker backs off (1 s doubling to 5 min), logging the
    /// trouble once and its end once.
    pub async fn run(self, shutdown: Shutdown) {
        tracing::info!(transport = %self.transport.describe(), "outbound worker started");
        self.report_health(Ok(()));
        let mut stall = Stall::default();
        loop {
            let due = match self.store.due_outbound(&rfc3339(self.clock.now()), 50) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    Vec::new()
                }
            };
            let full = due.len() == 50;
            let mut requery = false;
            for mail in due {
                if shutdown.is_triggered() {
                    break;
                }
                match self.deliver(&mail).await {
                    Attempt::Recorded => {
                        if stall.clear() {
                            self.report_health(Ok(()));
                        }
                    }
                    Attempt::Stalled(why) => {
                        if stall.note(&why) {
                            self.report_health(Err(&why));
                        }
                        break;
                    }
                }
                // New mail was queued: look again, so it goes in its turn, not after this batch.
                if futures::FutureExt::now_or_never(self.wake.notified()).is_some() {
                    requery = true;
                    break;
                }
            }
            if shutdown.is_triggered() {
                break;
            }
            if let Some(delay) = stall.delay() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait() => break,
                }
                continue;
            }
            if full || requery {
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

    /// Record the outbound side's state for `postdesk status` and the metrics (best effort: the
    /// trouble may be the store itself).
    fn report_health(&self, state: Result<(), &str>) {
        let (ok, detail) = match state {
            Ok(()) => (true, self.transport.describe()),
            Err(why) => (false, why.to_string()),
        };
        if let Err(e) = self.store.set_health("outbound", ok, &detail, None, &rfc3339(self.clock.now())) {
            tracing::debug!(error = %e, "cannot record outbound health");
        }
    }

    /// Try one queued mail once and record the result.
    pub async fn deliver(&self, mail: &QueuedMail) -> Attempt {
        let mut marked: Option<Result<(), crate::store::StoreError>> = None;
        let sent_at = rfc3339(self.clock.now());
        let mut commit = || {
            let r = self.store.mark_sent(mail.id, &sent_at);
            let ok = r.is_ok();
            marked = Some(r);
            ok
        };
        let result = self.transport.send(mail, &mut commit).await;
        let now = self.clock.now();
        if result.is_err() && matches!(marked, Some(Ok(()))) {
            // The server refused after all: take the mark back so the mail is retried or failed.
            if let Err(e) = self.store.unmark_sent(mail.id) {
                return Attempt::Stalled(format!("cannot take back a send mark: {e}"));
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
            Err(e) if e.scope == Scope::Unrecorded => {
                let why = match marked {
                    Some(Err(store)) => format!("{e}: {store}"),
                    _ => e.to_string(),
                };
                return Attempt::Stalled(why);
            }
            Err(e) if e.scope == Scope::Server => return Attempt::Stalled(e.to_string()),
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
        match record {
            Ok(()) => Attempt::Recorded,
            // Sent (the mark may be there) or refused, but the outcome is not fully written:
            // sending more would pile up results we cannot keep.
            Err(e) => Attempt::Stalled(format!("cannot record the send result of outbox {}: {e}", mail.id)),
        }
    }
}

/// The worker's trouble, if any: how long to pause, and one log line when it starts and ends.
#[derive(Debug, Default)]
struct Stall {
    since: Option<(String, u32)>,
    backoff: crate::intake::Backoff,
    pause: Option<Duration>,
}

impl Stall {
    /// A failed try; true when it starts the trouble (or changes its reason).
    fn note(&mut self, why: &str) -> bool {
        self.pause = Some(self.backoff.next_delay());
        match &mut self.since {
            None => {
                tracing::error!(reason = %why, "outbound paused: queued mail stays queued and is sent when this clears");
                self.since = Some((why.to_string(), 1));
                true
            }
            Some((was, n)) => {
                *n += 1;
                tracing::debug!(reason = %why, attempt = *n, "outbound still paused");
                let changed = was != why;
                *was = why.to_string();
                changed
            }
        }
    }

    /// A try that went through; true when it ends a trouble.
    fn clear(&mut self) -> bool {
        let Some((why, n)) = self.since.take() else { return false };
        tracing::info!(after_attempts = n, was = %why, "outbound resumed");
        self.backoff.reset();
        true
    }

    fn delay(&mut self) -> Option<Duration> {
        self.pause.take()
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
