//! Metrics for Prometheus (`[metrics] listen`): what the daemon counted since it started
//! (messages ingested by mailbox and class, tickets created, mail sent and failed) and what the
//! store says at each scrape (outbox, quarantine, mailboxes up, SLA warnings and breaches), in
//! the OpenMetrics text format of the `prometheus-client` crate; `/health` answers 200 while
//! every mailbox and the outbound side are well, else 503. A small blocking HTTP server
//! (`tiny_http`) on its own thread: a scrape never waits behind the async runtime.

use crate::store::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MailboxClass {
    mailbox: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MailboxLabel {
    mailbox: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// The daemon's own counters; cheap to clone (shared families).
#[derive(Clone, Debug, Default)]
pub struct Counters {
    ingested: Family<MailboxClass, Counter>,
    created: Family<MailboxLabel, Counter>,
}

impl Counters {
    /// One stored message of `mailbox`: its class (`human`, `bounce`, … or `not_mail`) and
    /// whether it opened a ticket.
    pub fn ingested(&self, mailbox: &str, report: &crate::pipeline::Report) {
        let class = report.verdict.as_ref().map(|v| v.class.as_str()).unwrap_or("not_mail");
        self.ingested.get_or_create(&MailboxClass { mailbox: mailbox.to_string(), class: class.to_string() }).inc();
        if matches!(report.outcome, crate::pipeline::Outcome::Created { .. }) {
            self.created.get_or_create(&MailboxLabel { mailbox: mailbox.to_string() }).inc();
        }
    }
}

/// Everything a scrape shows, as OpenMetrics text.
pub fn render(counters: &Counters, store: &Store, now: time::OffsetDateTime) -> Result<String, crate::store::StoreError> {
    let mut r = Registry::with_prefix("postdesk");
    r.register("messages_ingested", "Messages stored, by mailbox and guard class", counters.ingested.clone());
    r.register("tickets_created", "Tickets opened, by mailbox", counters.created.clone());

    let outbox: Family<StateLabel, Gauge> = Family::default();
    let c = store.outbox_counts()?;
    for (state, n) in [("queued", c.queued), ("sent", c.sent), ("failed", c.failed)] {
        outbox.get_or_create(&StateLabel { state: state.into() }).set(n as i64);
    }
    r.register("outbox_mails", "Outgoing mail by state", outbox);
    let oldest: Gauge = Gauge::default();
    if let Some(t) = store.oldest_queued()?.as_deref().and_then(crate::clock::parse_rfc3339) {
        oldest.set((now - t).whole_seconds().max(0));
    }
    r.register("outbox_oldest_queued_seconds", "Age of the oldest mail waiting to be sent (0 when none)", oldest);

    let up: Family<MailboxLabel, Gauge> = Family::default();
    let outbound_up: Gauge = Gauge::default();
    for h in store.health()? {
        match h.component.strip_prefix("mailbox:") {
            Some(name) => {
                up.get_or_create(&MailboxLabel { mailbox: name.into() }).set(h.ok as i64);
            }
            None if h.component == "outbound" => {
                outbound_up.set(h.ok as i64);
            }
            None => {}
        }
    }
    r.register("mailbox_up", "1 while the mailbox's last round went well (IMAP connected, Maildir read)", up);
    r.register("outbound_up", "1 while sending works (0: paused on a server, login or disk problem)", outbound_up);

    let quarantined: Gauge = Gauge::default();
    quarantined.set(store.quarantine_counts()?.iter().map(|(_, n)| *n as i64).sum());
    r.register("quarantine_messages", "Messages kept in quarantine", quarantined);

    let (warnings, breaches) = store.sla_announced()?;
    let (w, b): (Counter, Counter) = (Counter::default(), Counter::default());
    w.inc_by(warnings);
    b.inc_by(breaches);
    r.register("sla_warnings", "SLA warnings announced", w);
    r.register("sla_breaches", "SLA breaches announced", b);

    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &r).map_err(|e| crate::store::StoreError::Io { path: "metrics".into(), source: std::io::Error::other(e.to_string()) })?;
    Ok(out)
}

/// `/health`: every component ok → 200, else 503 with the failing ones.
fn health(store: &Store) -> (u16, String) {
    match store.health() {
        Ok(h) => {
            let down: Vec<String> = h.iter().filter(|h| !h.ok).map(|h| format!("{}: {}", h.component, h.detail)).collect();
            if down.is_empty() { (200, "ok\n".into()) } else { (503, down.join("\n") + "\n") }
        }
        Err(e) => (503, format!("store: {e}\n")),
    }
}

/// Serve `/metrics` and `/health` on `listen` until `shutdown`; returns once listening (or not).
pub fn serve(listen: SocketAddr, counters: Counters, store: Arc<Store>, clock: crate::clock::SharedClock, shutdown: crate::shutdown::Shutdown) -> std::io::Result<()> {
    let server = Arc::new(tiny_http::Server::http(listen).map_err(std::io::Error::other)?);
    tracing::info!(%listen, "metrics listening");
    let stopper = server.clone();
    tokio::spawn(async move {
        shutdown.wait().await;
        stopper.unblock();
    });
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for req in server.incoming_requests() {
            let (code, body, kind) = match req.url() {
                "/metrics" => match render(&counters, &store, clock.now()) {
                    Ok(text) => (200, text, "application/openmetrics-text; version=1.0.0; charset=utf-8"),
                    Err(e) => (500, format!("{e}\n"), "text/plain"),
                },
                "/health" => {
                    let (code, text) = health(&store);
                    (code, text, "text/plain")
                }
                _ => (404, "try /metrics or /health\n".into(), "text/plain"),
            };
            let header = tiny_http::Header::from_bytes("Content-Type", kind).expect("static header");
            let _ = req.respond(tiny_http::Response::from_string(body).with_status_code(code).with_header(header));
        }
    })?;
    Ok(())
}
