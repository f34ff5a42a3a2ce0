//! Intake: where mail enters. One task per mailbox: IMAP (IDLE with poll fallback) or a watched
//! Maildir; `postdesk deliver` is the third, synchronous entry (MTA pipe), which hands its message
//! to the running daemon over a local socket when there is one (`handoff`). Intakes only fetch and
//! hand bytes to the pipeline; they never decide anything about a message, and never mark, move or
//! delete server mail before the pipeline's transaction committed.

pub mod bounded;
pub mod handoff;
pub mod imap;
pub mod lease;
pub mod maildir;
pub mod tls;

use crate::config::Source;
use crate::desk::DeskHandle;
use crate::pipeline::Pipeline;
use crate::shutdown::Shutdown;
use std::time::Duration;

/// Run the intake of mailbox `name` until shutdown.
pub async fn run_mailbox(name: String, pipeline: Pipeline, desk: DeskHandle, shutdown: Shutdown) {
    let source = match desk.current().config.mailboxes.get(&name) {
        Some(m) => m.source.clone(),
        None => return,
    };
    let ttl = desk.current().config.store.lease_ttl;
    match source {
        // One node at a time reads a mailbox (PostgreSQL); its cursor moves only under the lease.
        Source::Imap(imap) => {
            let lease = format!("mailbox:{name}");
            let boxes = desk.current().config.mailboxes.values().filter(|m| matches!(m.source, Source::Imap(_))).count();
            lease::leased(&lease, ttl, Some(boxes), &pipeline, &shutdown, |sd| imap::run(name.clone(), imap.clone(), pipeline.clone(), desk.clone(), sd)).await
        }
        Source::Maildir { path, poll_interval } => maildir::run(name, path, poll_interval, pipeline, desk, shutdown).await,
        Source::Pipe => {}
    }
}

/// Reconnect delays: 1 s doubling to 5 min, with ±20% jitter so many desks don't stampede a server.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Duration::from_secs(1) }
    }
}

impl Backoff {
    pub fn reset(&mut self) {
        self.next = Duration::from_secs(1);
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = self.next.mul_f64(0.8 + rand::random::<f64>() * 0.4);
        self.next = (self.next * 2).min(Duration::from_secs(300));
        d
    }
}

/// Record how mailbox `name` is doing for `postdesk status` and the metrics: `Ok(what it is
/// doing)` or `Err(why it is not)`, and how many messages wait on the server when known.
/// Best effort: a failed write (a full disk) must not stop the intake.
pub async fn report_health(pipeline: &Pipeline, name: &str, state: Result<&str, String>, backlog: Option<i64>) {
    let (store, now) = (pipeline.store.clone(), crate::clock::rfc3339(pipeline.clock.now()));
    let component = format!("mailbox:{name}");
    let (ok, detail) = match state {
        Ok(d) => (true, d.to_string()),
        Err(e) => (false, e),
    };
    let write = tokio::task::spawn_blocking(move || store.set_health(&component, ok, &detail, backlog, &now));
    if let Ok(Err(e)) = write.await {
        tracing::debug!(error = %e, "cannot record mailbox health");
    }
}
