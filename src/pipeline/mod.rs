//! Pipeline: one inbound message → parse → guard → thread → decide → ONE store transaction
//! (article, ticket changes, outbox rows, mailbox cursor). The same code serves every intake and
//! the dry run (which runs the transaction and rolls it back), so `rules test` shows exactly what
//! the daemon would do.

mod agent;
mod context;
mod csat;
mod knowledge;
pub mod mailer;
pub mod oauth;
mod notify;
pub mod release;
mod service;
mod sla;
mod timer;

use crate::clock::{SharedClock, rfc3339};
use crate::config::{FloodAction, OnClosed, Queue};
use crate::desk::Desk;
use crate::guard::{self, Class, Verdict};
use crate::message::{self, Parsed};
use crate::reference::normalize_subject;
use crate::store::{Cursor, NewArticle, NewTicket, Store, StoreError, Tx};
use crate::thread::{self, Decision, History, Via};
use crate::ticket::{ArticleKind, Direction, Priority, Status, TicketId};
use mailer::{AutoMail, Sent};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use time::OffsetDateTime;

/// One message handed to the pipeline by an intake.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub mailbox: &'a str,
    pub raw: &'a [u8],
    /// For IMAP: the cursor to store with this message (its UIDVALIDITY and UID).
    pub cursor: Option<Cursor>,
    /// `Some(size)` when `raw` is only the header section of a `size`-byte message that intake
    /// did not fetch because it is over `limits.max_message_size`.
    pub truncated_from: Option<u64>,
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A new ticket was opened.
    Created { ticket: TicketId },
    /// The message was added to an existing ticket.
    FollowUp { ticket: TicketId },
    /// The same message was stored before; nothing changed.
    Duplicate { ticket: Option<TicketId> },
    /// Deliberately not made into a ticket (our own mail coming back); kept in quarantine.
    Dropped { reason: String },
    /// Could not be processed; kept in quarantine with the reason.
    Quarantined { reason: String },
    /// A request to the desk itself (e.g. "my open tickets"), answered by mail; kept, no ticket.
    Answered { what: String },
}

/// A mail the pipeline queued (or, in a dry run, would queue).
#[derive(Debug, Clone, Serialize)]
pub struct PlannedMail {
    pub kind: &'static str,
    pub to: String,
    pub subject: String,
    /// Carries the reply token: reports and `rules test --json` show it redacted.
    #[serde(serialize_with = "redacted_id")]
    pub message_id: String,
}

fn redacted_id<S: serde::Serializer>(id: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::token::redact(id))
}

/// The full account of one message's trip through the pipeline (logs, dry run).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub message_id: String,
    pub from: String,
    pub subject: String,
    pub verdict: Option<Verdict>,
    pub threading: Option<String>,
    pub outcome: Outcome,
    pub actions: Vec<String>,
    pub mails: Vec<PlannedMail>,
    /// What the routing rules did (absent when the message never reached them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<crate::rules::Evaluation>,
}

/// Why a message could not be handled *now*; intake must not advance past it.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Only from [`Pipeline::ingest_strict`]: the input is not mail at all.
    #[error(transparent)]
    NotMail(#[from] message::NotMail),
    /// This node no longer holds the mailbox's lease (PostgreSQL): another node reads it now,
    /// and nothing of this batch was stored.
    #[error("the lease {0} passed to another node; nothing stored")]
    LeaseLost(String),
}

impl IngestError {
    pub fn is_transient(&self) -> bool {
        match self {
            IngestError::Store(e) => e.is_transient(),
            IngestError::NotMail(_) => false,
            IngestError::LeaseLost(_) => true,
        }
    }
}

/// "Now" for one message: the instant, and its stored form.
#[derive(Debug, Clone)]
pub struct Now {
    pub t: OffsetDateTime,
    pub s: String,
}

impl Now {
    pub fn at(t: OffsetDateTime) -> Now {
        Now { t, s: rfc3339(t) }
    }
    /// The stored form of `now - d`, for window queries.
    pub fn minus(&self, d: std::time::Duration) -> String {
        rfc3339(self.t - time::Duration::try_from(d).unwrap_or(time::Duration::DAY * 3650))
    }
    pub fn system(&self) -> std::time::SystemTime {
        std::time::SystemTime::from(self.t)
    }
}

/// Runs messages through the desk. Cheap to clone; shared by every intake task.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub store: Arc<Store>,
    pub clock: SharedClock,
    /// Poked after a commit that queued mail, so the outbound worker wakes at once.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    /// What the metrics count (messages by class, tickets created).
    pub counters: crate::metrics::Counters,
    /// The leases this node works under, by name (`mailbox:NAME`): a batch that moves that
    /// mailbox's cursor commits only while its lease is still ours (PostgreSQL).
    fences: Arc<std::sync::Mutex<std::collections::HashMap<String, crate::store::Lease>>>,
}

impl Pipeline {
    pub fn new(store: Arc<Store>, clock: SharedClock) -> Self {
        Pipeline { store, clock, outbox_wake: Arc::new(tokio::sync::Notify::new()), counters: Default::default(), fences: Default::default() }
    }

    /// Work under `lease` (or no longer) for the lease `name`.
    pub fn fence(&self, name: &str, lease: Option<crate::store::Lease>) {
        let mut f = self.fences.lock().unwrap_or_else(|e| e.into_inner());
        match lease {
            Some(l) => f.insert(name.to_string(), l),
            None => f.remove(name),
        };
    }

    /// Inside the transaction that moves `mailbox`'s cursor: is its lease still ours?
    fn check_fence(&self, tx: &Tx<'_>, mailbox: &str) -> Result<(), IngestError> {
        let name = format!("mailbox:{mailbox}");
        let lease = self.fences.lock().unwrap_or_else(|e| e.into_inner()).get(&name).cloned();
        match lease {
            Some(l) if !tx.holds_lease(&l, &self.store.node())? => Err(IngestError::LeaseLost(name)),
            _ => Ok(()),
        }
    }

    /// Store one message for good. Non-mail and unprocessable input is quarantined (and the
    /// cursor still advances); only a storage failure returns an error.
    pub fn ingest(&self, desk: &Desk, d: Delivery<'_>) -> Result<Report, IngestError> {
        self.run(desk, d, false, true)
    }

    /// Like [`ingest`](Self::ingest) but input that is not mail is refused, not quarantined
    /// (`postdesk deliver` answers EX_DATAERR so the MTA bounces it).
    pub fn ingest_strict(&self, desk: &Desk, d: Delivery<'_>) -> Result<Report, IngestError> {
        self.run(desk, d, false, false)
    }

    /// Everything `ingest` would do, then roll back: no side effects.
    pub fn dry_run(&self, desk: &Desk, d: Delivery<'_>) -> Result<Report, IngestError> {
        self.run(desk, d, true, true)
    }

    /// [`ingest`](Self::ingest) on the blocking pool, for async intakes (SQLite and parsing block).
    pub async fn ingest_async(&self, desk: Arc<Desk>, mailbox: String, raw: Vec<u8>, cursor: Option<Cursor>, truncated_from: Option<u64>) -> Result<Report, IngestError> {
        let p = self.clone();
        match tokio::task::spawn_blocking(move || p.ingest(&desk, Delivery { mailbox: &mailbox, raw: &raw, cursor, truncated_from })).await {
            Ok(r) => r,
            // A panic outside the guarded parse: the transaction rolled back; report it as a store fault.
            Err(e) => Err(IngestError::Store(StoreError::Io { path: "ingest task".into(), source: std::io::Error::other(e.to_string()) })),
        }
    }

    fn run(&self, desk: &Desk, d: Delivery<'_>, dry: bool, quarantine_non_mail: bool) -> Result<Report, IngestError> {
        let now = Now::at(self.clock.now());
        // Parse and classify before the write lock: a slow message never holds up other writers.
        let prepared = prepare(desk, d);
        let mut tx = self.store.begin()?;
        if d.cursor.is_some() {
            self.check_fence(&tx, d.mailbox)?;
        }
        let report = one(&mut tx, desk, d, prepared, quarantine_non_mail, &now)?;
        if dry {
            drop(tx); // rolls back
        } else {
            tx.commit()?;
            self.counters.ingested(d.mailbox, &report);
            if !report.mails.is_empty() {
                self.outbox_wake.notify_one();
            }
        }
        Ok(report)
    }

    /// Store a batch of messages of one mailbox in ONE transaction (one disk sync for the batch).
    /// Each message is processed exactly as by [`ingest`](Self::ingest) and sees the ones before
    /// it; the cursor ends at the last. If anything fails, nothing of the batch is stored and the
    /// intake fetches it again.
    pub fn ingest_batch<R: AsRef<[u8]>>(&self, desk: &Desk, mailbox: &str, batch: &[(R, Cursor)]) -> Result<Vec<Report>, IngestError> {
        self.commit_batch(desk, mailbox, batch.iter().map(|(raw, cursor)| Delivery { mailbox, raw: raw.as_ref(), cursor: Some(*cursor), truncated_from: None }).collect())
    }

    /// [`ingest_batch`](Self::ingest_batch) for intakes without a cursor (Maildir): one
    /// transaction for all of `raws`.
    pub fn ingest_many(&self, desk: &Desk, mailbox: &str, raws: &[Vec<u8>]) -> Result<Vec<Report>, IngestError> {
        self.commit_batch(desk, mailbox, raws.iter().map(|raw| Delivery { mailbox, raw, cursor: None, truncated_from: None }).collect())
    }

    /// Prepare every delivery outside the write lock, then decide and write them all in one
    /// transaction.
    fn commit_batch(&self, desk: &Desk, mailbox: &str, deliveries: Vec<Delivery<'_>>) -> Result<Vec<Report>, IngestError> {
        let now = Now::at(self.clock.now());
        let prepared = prepare_all(desk, &deliveries);
        let mut tx = self.store.begin()?;
        if deliveries.iter().any(|d| d.cursor.is_some()) {
            self.check_fence(&tx, mailbox)?;
        }
        let mut reports = Vec::with_capacity(deliveries.len());
        for (d, prepared) in deliveries.into_iter().zip(prepared) {
            reports.push(one(&mut tx, desk, d, prepared, true, &now)?);
        }
        tx.commit()?;
        release_free_memory();
        for r in &reports {
            self.counters.ingested(mailbox, r);
        }
        if reports.iter().any(|r| !r.mails.is_empty()) {
            self.outbox_wake.notify_one();
        }
        Ok(reports)
    }

    /// [`ingest_many`](Self::ingest_many) on the blocking pool.
    pub async fn ingest_many_async(&self, desk: Arc<Desk>, mailbox: String, raws: Vec<Vec<u8>>) -> Result<Vec<Report>, IngestError> {
        let p = self.clone();
        match tokio::task::spawn_blocking(move || p.ingest_many(&desk, &mailbox, &raws)).await {
            Ok(r) => r,
            Err(e) => Err(IngestError::Store(StoreError::Io { path: "ingest task".into(), source: std::io::Error::other(e.to_string()) })),
        }
    }

    /// [`ingest_batch`](Self::ingest_batch) on the blocking pool.
    pub async fn ingest_batch_async<R: AsRef<[u8]> + Send + 'static>(&self, desk: Arc<Desk>, mailbox: String, batch: Vec<(R, Cursor)>) -> Result<Vec<Report>, IngestError> {
        let p = self.clone();
        match tokio::task::spawn_blocking(move || p.ingest_batch(&desk, &mailbox, &batch)).await {
            Ok(r) => r,
            Err(e) => Err(IngestError::Store(StoreError::Io { path: "ingest task".into(), source: std::io::Error::other(e.to_string()) })),
        }
    }
}

/// Give the allocator's free pages back after a batch. glibc keeps what a batch freed in the
/// arenas of the threads that used it (the parse threads', the blocking pool's) and trims only
/// their tops, so without this the daemon's resident memory grows with every batch of a
/// backlog to several arenas' worth (docs/BENCHMARKS.md, issue 14). Costs well under a
/// millisecond against a batch's tens.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of glibc's own arenas to the kernel; it takes
    // each arena's lock and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A message parsed and classified, ready for the write transaction.
enum Prepared {
    Mail(Box<Parsed>, Verdict),
    NotMail(message::NotMail),
    /// Parse or guard panicked (a bug on hostile input), with the panic's message.
    Panicked(String),
}

/// [`prepare`] a batch on every core (at most four threads; small batches on this one), in
/// order. Parsing is half the CPU of a message and needs no lock, so a batch is parsed in
/// parallel before its write transaction begins.
fn prepare_all(desk: &Desk, deliveries: &[Delivery<'_>]) -> Vec<Prepared> {
    const MIN_PER_THREAD: usize = 8;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4).min(deliveries.len() / MIN_PER_THREAD).max(1);
    if threads == 1 {
        return deliveries.iter().map(|d| prepare(desk, *d)).collect();
    }
    let chunk = deliveries.len().div_ceil(threads);
    std::thread::scope(|s| {
        let mut chunks = deliveries.chunks(chunk);
        let first = chunks.next().unwrap_or_default();
        let others: Vec<_> = chunks.map(|c| (c.len(), s.spawn(move || c.iter().map(|d| prepare(desk, *d)).collect::<Vec<_>>()))).collect();
        let mut out: Vec<Prepared> = first.iter().map(|d| prepare(desk, *d)).collect();
        for (n, h) in others {
            // `prepare` catches panics itself; a thread that died anyway quarantines its messages.
            out.extend(h.join().unwrap_or_else(|_| (0..n).map(|_| Prepared::Panicked("parser thread died".into())).collect()));
        }
        out
    })
}

/// Parse and guard one message, outside any transaction, under catch_unwind: a bug on hostile
/// input quarantines one message instead of killing the daemon. Pure, bounded work
/// (`message::MAX_IDS` and the other limits).
fn prepare(desk: &Desk, d: Delivery<'_>) -> Prepared {
    // Over the size limit, only the header section is read (the size is known before parsing).
    let raw = if d.raw.len() as u64 > desk.config.limits.max_message_size { header_section(d.raw) } else { d.raw };
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        message::parse(raw).map(|p| {
            let v = guard::classify(&p, raw, &desk.identity);
            (p, v)
        })
    }));
    match parsed {
        Ok(Ok((p, v))) => Prepared::Mail(Box::new(p), v),
        Ok(Err(not_mail)) => Prepared::NotMail(not_mail),
        Err(panic) => Prepared::Panicked(panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default()),
    }
}

/// One prepared message inside the caller's transaction: decide and write, move the cursor.
fn one(tx: &mut Tx<'_>, desk: &Desk, d: Delivery<'_>, prepared: Prepared, quarantine_non_mail: bool, now: &Now) -> Result<Report, IngestError> {
    let report = match prepared {
        Prepared::Mail(p, verdict) => process(tx, desk, d, *p, verdict, now)?,
        Prepared::NotMail(not_mail) => {
            if !quarantine_non_mail {
                return Err(not_mail.into());
            }
            let reason = not_mail.to_string();
            quarantine(tx, d, "not_mail", &reason, now)?;
            Report::bare(Outcome::Quarantined { reason })
        }
        Prepared::Panicked(what) => {
            let reason = format!("internal error while parsing: {what}");
            quarantine(tx, d, "internal_error", &reason, now)?;
            Report::bare(Outcome::Quarantined { reason })
        }
    };
    if let Some(c) = d.cursor {
        tx.advance_cursor(d.mailbox, c, &now.s)?;
    }
    Ok(report)
}

impl Report {
    fn bare(outcome: Outcome) -> Report {
        Report { message_id: String::new(), from: String::new(), subject: String::new(), verdict: None, threading: None, outcome, actions: Vec::new(), mails: Vec::new(), rules: None }
    }

    fn new(p: &Parsed, verdict: Option<Verdict>, threading: Option<String>, outcome: Outcome) -> Report {
        Report {
            message_id: p.message_id.clone(),
            from: p.from_address().to_string(),
            subject: p.subject.clone(),
            verdict,
            threading,
            outcome,
            actions: Vec::new(),
            mails: Vec::new(),
            rules: None,
        }
    }
}

fn quarantine(tx: &mut Tx<'_>, d: Delivery<'_>, reason: &str, detail: &str, now: &Now) -> Result<(), StoreError> {
    let sha = hex::encode(Sha256::digest(d.raw));
    tx.quarantine(d.mailbox, reason, detail, &sha, d.raw, &now.s)?;
    tracing::warn!(mailbox = d.mailbox, reason, detail, sha256 = %sha, "message quarantined");
    Ok(())
}

/// Identity of a message for duplicate detection: the same Message-ID and content, whatever
/// envelope headers (Received, Delivered-To) the copies picked up.
fn dedupe_key(p: &Parsed) -> String {
    let mut h = Sha256::new();
    for part in [p.message_id.as_str(), p.from_address(), p.subject.as_str(), p.body_text.as_str()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// Where the message goes, after threading and the desk's policies.
enum Placement {
    /// Onto an existing ticket; `reopen` when a customer's reply should reopen it.
    Existing { ticket: TicketId, status: Status },
    /// A new ticket, optionally linked to another.
    New { related: Option<TicketId> },
    /// Not onto any ticket: quarantined with this reason.
    Quarantine { reason: String },
    /// Closed ticket with the `reject` policy: a notice to the sender, nothing stored on the ticket.
    Rejected { ticket: TicketId },
}

fn process(tx: &mut Tx<'_>, desk: &Desk, d: Delivery<'_>, mut p: Parsed, verdict: Verdict, now: &Now) -> Result<Report, StoreError> {
    let oversize = over_limit(tx, desk, d, &mut p)?;
    let key = dedupe_key(&p);
    if let Some(r) = settled_early(tx, desk, d, &p, &verdict, &key, oversize.as_ref(), now)? {
        return Ok(r);
    }
    let sender = p.from_address().to_string();
    // A person writing from an address is the best proof that it takes mail again.
    if verdict.class == Class::Human && !sender.is_empty() && tx.clear_undeliverable(&sender)? {
        tracing::info!(sender, "undeliverable mark cleared: the address wrote to us");
    }
    if let Some(r) = status_request(tx, desk, d, &p, &verdict, &key, now)? {
        return Ok(r);
    }
    if let Some(r) = knowledge::answer_request(tx, desk, d, &p, &verdict, &key, now)? {
        return Ok(r);
    }
    let queue = desk.config.queue_of(d.mailbox).or_else(|| desk.config.queues.values().next()).expect("validated config has a queue");
    let (decision, bounced) = match decide_thread(tx, desk, d, &p, &verdict, &sender, &key, now)? {
        Ok(threaded) => threaded,
        Err(quarantined) => return Ok(quarantined),
    };
    // The explanation names the reply token it verified: logs and dry runs show it redacted.
    let threading = crate::token::redact_in(&decision.describe(&desk.refs));
    let mut actions = Vec::new();
    let mut mails = Vec::new();

    // Approvers answering an approval request, and external groups replying to a hand-off.
    if let Some(r) = service::approver_mail(tx, desk, d, &p, &verdict, &decision, &threading, now)? {
        tx.record_delivery(&key, None, "approval", &now.s)?;
        return Ok(r);
    }
    if let Some(r) = service::group_mail(tx, desk, d, &p, &verdict, &decision, now)? {
        tx.record_delivery(&key, None, "group_reply", &now.s)?;
        return Ok(r);
    }
    // An agent's mail runs commands and posts replies only when it answers a notification sent to
    // that agent (a token signed for their address) and, if configured, passed DKIM/DMARC.
    // Only From is identity: an author taken from Sender or Reply-To is never an agent.
    let agent = desk.config.agent_by_email(&sender).filter(|_| p.from_fallback.is_none());
    let mut agent_refused = None;
    if let Some(agent) = agent {
        let why = match (&decision, verdict.class) {
            (Decision::FollowUp { via: Via::Token { shared: true, .. }, .. }, _) => {
                format!("mail from agent address {sender} answers mail that others were copied on (its reply token reached them too): handled as a customer message, no commands run; commands are taken from answers to the agent's own notifications")
            }
            (Decision::FollowUp { ticket, via: Via::Token { issued, .. } }, Class::Human) => {
                if authenticated(desk, &p) {
                    let ticket = *ticket;
                    let stale = stale_token(desk, *issued, now);
                    let r = agent::handle(tx, desk, d, &p, verdict, agent, ticket, threading, stale, now)?;
                    tx.record_delivery(&key, None, "agent", &now.s)?;
                    return Ok(r);
                }
                format!("mail from agent {sender} failed the DKIM/DMARC requirement: handled as a customer message, no commands run")
            }
            _ => format!("mail from agent address {sender} without a valid reply token: handled as a customer message, no commands run"),
        };
        actions.push(why.clone());
        agent_refused = Some(why);
    }

    // Routing rules see the message, the guard's verdict and, for a follow-up, the ticket as it is.
    let existing = match &decision {
        Decision::FollowUp { ticket, .. } => tx.ticket(*ticket)?,
        Decision::New { .. } => None,
    };
    let eval = desk.rules.evaluate(&crate::rules::Input {
        message: &p,
        mailbox: d.mailbox,
        class: verdict.class,
        phase: if existing.is_some() { crate::rules::Phase::FollowUp } else { crate::rules::Phase::New },
        ticket: existing.as_ref().map(|t| crate::rules::TicketFacts { queue: &t.queue, status: t.status, priority: t.priority, tags: &t.tags }),
        sender_is_agent: agent.is_some(),
        now: now.t,
    });
    let ra = eval.actions.clone();
    if ra.drop || ra.quarantine || ra.spam {
        return rule_stop(tx, d, &p, verdict, threading, eval, &key, actions, now);
    }
    // The service catalog: a rule's choice wins, else the subject's keywords.
    let service = match (&ra.service, existing.is_none()) {
        (Some(s), _) => desk.catalog.get(s),
        (None, true) if verdict.class == Class::Human => desk.catalog.match_subject(&p.subject),
        _ => None,
    };
    // A rule (or the service) may route a new ticket to another queue.
    let queue = ra
        .queue
        .as_deref()
        .or(service.and_then(|s| s.queue.as_deref()))
        .filter(|_| existing.is_none())
        .and_then(|q| desk.config.queues.get(q))
        .unwrap_or(queue);
    // The requester's answer to the resolved notice's rating question: recorded, no reopening.
    if let Some(a) = csat::answer(tx, desk, &p, &verdict, &decision, existing.as_ref(), &mut actions)?
        && let Some(t) = &existing
    {
        let mut r = csat::record(tx, desk, d, &p, verdict, t, a, &key, threading, now)?;
        r.actions.splice(0..0, actions);
        r.rules = Some(eval);
        return Ok(r);
    }
    // Self-service: the requester closes their own ticket with /close in a reply to our mail.
    let customer_close = desk.config.self_service.as_ref().is_some_and(|s| s.allow_close)
        && verdict.class == Class::Human
        && matches!(&decision, Decision::FollowUp { via: Via::Token { .. } | Via::MessageId { .. }, .. })
        && existing.as_ref().is_some_and(|t| t.requester == sender && t.status != Status::Closed)
        && matches!(crate::command::parse(&p.visible_text).commands.as_slice(), [crate::command::Command::Status { status: Status::Closed | Status::Resolved }])
        && (authenticated(desk, &p) || {
            actions.push(format!("/close from {sender} failed the DKIM/DMARC requirement: not applied"));
            false
        });
    // A responder answering our mail: kept as a ticket, never answered (the loop stops here).
    let verdict = match responder_loop(tx, desk, &decision, &sender, &p, &verdict, now)? {
        Some(why) => Verdict { auto_reply_allowed: false, reasons: [verdict.reasons, vec![why]].concat(), ..verdict },
        None => verdict,
    };
    let placement = place(tx, desk, queue, &decision, &sender, &verdict, now, &mut actions)?;
    let (ticket, outcome) = match placement {
        Placement::Quarantine { reason } => {
            quarantine(tx, d, "flood", &reason, now)?;
            tx.record_delivery(&key, None, "quarantined", &now.s)?;
            let mut r = Report::new(&p, Some(verdict), Some(threading), Outcome::Quarantined { reason });
            r.actions = actions;
            return Ok(r);
        }
        Placement::Rejected { ticket } => {
            quarantine(tx, d, "closed_ticket", &format!("reply to closed {} rejected by queue policy", desk.refs.format(ticket)), now)?;
            tx.record_delivery(&key, None, "rejected", &now.s)?;
            if verdict.auto_reply_allowed {
                let ctx = customer_context(tx, desk, queue, ticket, &p, &sender)?;
                let sent = mailer::send_auto(tx, desk, now, AutoMail::answer(&p, Some(ticket), queue, ArticleKind::AutoReply, "closed_notice", "closed_notice", ctx))?;
                record_sent(sent, &mut actions, &mut mails);
            }
            let mut r = Report::new(&p, Some(verdict), Some(threading), Outcome::Quarantined { reason: "ticket is closed".into() });
            r.actions = actions;
            r.mails = mails;
            return Ok(r);
        }
        Placement::Existing { ticket, status } => {
            if !customer_close {
                follow_up(tx, desk, ticket, status, &sender, &verdict, now, &mut actions)?;
                // Only a sender who proved who they are may bring others in: a reply carrying our
                // token for them, or DKIM. A forged From with a guessed tag threads (as mail
                // from that address always could) but adds nobody (docs/SECURITY.md).
                // With `require_dkim`, DKIM alone: a token travels with every forward of our mail.
                let token = matches!(decision, Decision::FollowUp { via: crate::thread::Via::Token { .. }, .. }) && !desk.config.security.require_dkim;
                let proven = token || dkim_verified(desk, &p);
                if verdict.class == Class::Human && proven {
                    add_copied(tx, desk, ticket, &p, &sender, now, &mut actions)?;
                }
            }
            (ticket, Outcome::FollowUp { ticket })
        }
        Placement::New { related } => {
            let ticket = open_ticket(tx, desk, queue, &p, &sender, related, now, &mut actions)?;
            (ticket, Outcome::Created { ticket })
        }
    };

    let placed = Placed { ticket, outcome: &outcome, queue, service, ra: &ra, customer_close, unauthenticated_agent: agent_refused.as_deref() };
    let article = record_inbound(tx, desk, d, &p, &verdict, &placed, &bounced, oversize.as_ref(), now, &mut actions, &mut mails)?;
    match &oversize {
        Some(o) => {
            let kept = if d.truncated_from.is_some() { "left on the mail server".to_string() } else { format!("kept in quarantine, sha256 {}", o.sha) };
            tx.event(ticket, "too_large", &format!("message <{}> of {} bytes not read (limit {}); {kept}", p.message_id, o.size, desk.config.limits.max_message_size), &now.s)?;
            too_large_notice(tx, desk, queue, ticket, &p, &verdict, now, &mut actions, &mut mails)?;
        }
        None if matches!(outcome, Outcome::Created { .. }) => acknowledge(tx, desk, queue, ticket, &p, &verdict, &ra, now, &mut actions, &mut mails)?,
        None => {}
    }
    if verdict.class == Class::Human {
        tell_agents(tx, desk, &p, &sender, &placed, oversize.is_some(), now, &mut actions, &mut mails)?;
    }

    tx.record_delivery(&key, Some(article), if matches!(outcome, Outcome::Created { .. }) { "created" } else { "follow_up" }, &now.s)?;
    let mut r = Report::new(&p, Some(verdict), Some(threading), outcome);
    r.actions = actions;
    r.mails = mails;
    r.rules = Some(eval);
    Ok(r)
}

/// Before threading: a message stored before (a duplicate) or our own mail come back ends here;
/// an oversized message we hold goes to quarantine whole.
#[allow(clippy::too_many_arguments)]
fn settled_early(tx: &mut Tx<'_>, desk: &Desk, d: Delivery<'_>, p: &Parsed, verdict: &Verdict, key: &str, oversize: Option<&Oversize>, now: &Now) -> Result<Option<Report>, StoreError> {
    if let Some(prior) = tx.prior_delivery(key)? {
        let mut r = Report::new(p, Some(verdict.clone()), None, Outcome::Duplicate { ticket: prior.ticket });
        r.actions.push(format!("already stored ({}); nothing to do", prior.outcome));
        return Ok(Some(r));
    }
    if let (Some(o), None) = (oversize, d.truncated_from) {
        quarantine(tx, d, "too_large", &format!("{} bytes, over limits.max_message_size ({})", o.size, desk.config.limits.max_message_size), now)?;
    }
    if verdict.class == Class::OwnLoop {
        let reason = format!("our own mail came back: {}", verdict.reasons.join("; "));
        quarantine(tx, d, "own_mail", &reason, now)?;
        tx.record_delivery(key, None, "dropped", &now.s)?;
        let mut r = Report::new(p, Some(verdict.clone()), None, Outcome::Dropped { reason });
        r.actions.push("dropped (kept in quarantine)".into());
        return Ok(Some(r));
    }
    Ok(None)
}

/// Which ticket the message belongs to (`thread::decide`), or, for a bounce, the ticket of our
/// mail its report names (RFC 3464 §2.1: the returned message or its headers) with the
/// recipients it reports; an unverified bounce is quarantined instead (`Err`).
#[allow(clippy::too_many_arguments)]
fn decide_thread(tx: &mut Tx<'_>, desk: &Desk, d: Delivery<'_>, p: &Parsed, verdict: &Verdict, sender: &str, key: &str, now: &Now) -> Result<Result<(Decision, Vec<String>), Report>, StoreError> {
    let tokens: Vec<String> = p.to.iter().chain(p.cc.iter()).filter_map(|m| desk.signer.token_from_address(&m.address)).collect();
    Ok(match check_bounce(tx, desk, p, verdict, &tokens, now)? {
        BounceCheck::NotABounce => Ok((thread::decide(sender, &tokens, &p.ancestors(), &p.subject, tx, &desk.signer, &desk.refs, now.t.unix_timestamp())?, Vec::new())),
        BounceCheck::Verified { ticket, message_id, recipients } => Ok((Decision::FollowUp { ticket, via: Via::MessageId { message_id } }, recipients)),
        BounceCheck::Unverified(why) => {
            let reason = format!("unverified bounce: {why}");
            quarantine(tx, d, "unverified_bounce", &reason, now)?;
            tx.record_delivery(key, None, "unverified_bounce", &now.s)?;
            let mut r = Report::new(p, Some(verdict.clone()), None, Outcome::Quarantined { reason });
            r.actions.push("kept in quarantine; no ticket and no address changed".into());
            Err(r)
        }
    })
}

/// A message over `limits.max_message_size`: its size and, for bytes we hold, their SHA-256.
struct Oversize {
    size: u64,
    sha: String,
}

/// Over the size limit: the ticket gets the header facts only, the sender a notice, the agents
/// an alert. The whole message is kept: an IMAP copy that was not fetched stays untouched on the
/// server (recorded here); bytes we were handed (deliver, Maildir) go to quarantine.
fn over_limit(tx: &mut Tx<'_>, desk: &Desk, d: Delivery<'_>, p: &mut Parsed) -> Result<Option<Oversize>, StoreError> {
    let size = d.truncated_from.unwrap_or(d.raw.len() as u64);
    let limit = desk.config.limits.max_message_size;
    if size <= limit {
        return Ok(None);
    }
    let sha = hex::encode(Sha256::digest(d.raw));
    let kept = match d.truncated_from {
        Some(_) => "It was left on the mail server.".to_string(),
        None => format!("It is kept whole in quarantine (sha256 {}) until an admin releases or deletes it.", &sha[..16]),
    };
    p.body_text = format!("(This message of {:.1} MB is over the limit of {:.1} MB and was not read. {kept})", size as f64 / 1048576.0, limit as f64 / 1048576.0);
    p.visible_text = p.body_text.clone();
    p.attachments.clear();
    if let (Some(c), Some(_)) = (d.cursor, d.truncated_from) {
        tx.leave_on_server(d.mailbox, c, "over limits.max_message_size")?;
    }
    Ok(Some(Oversize { size, sha }))
}

/// A rule dropped, quarantined or marked the message spam: kept in quarantine, no ticket.
#[allow(clippy::too_many_arguments)]
fn rule_stop(tx: &mut Tx<'_>, d: Delivery<'_>, p: &Parsed, verdict: Verdict, threading: String, eval: crate::rules::Evaluation, key: &str, mut actions: Vec<String>, now: &Now) -> Result<Report, StoreError> {
    let ra = &eval.actions;
    let by = |k: &str| ra.applied_by.get(k).cloned().unwrap_or_default();
    let (reason, why, outcome) = if ra.drop {
        ("dropped", format!("dropped by rule {}", by("drop")), Outcome::Dropped { reason: format!("rule {}", by("drop")) })
    } else if ra.spam {
        ("spam", format!("marked spam by rule {}", by("spam")), Outcome::Quarantined { reason: format!("spam (rule {})", by("spam")) })
    } else {
        ("rule", format!("quarantined by rule {}", by("quarantine")), Outcome::Quarantined { reason: format!("rule {}", by("quarantine")) })
    };
    quarantine(tx, d, reason, &why, now)?;
    tx.record_delivery(key, None, reason, &now.s)?;
    actions.push(why);
    let mut r = Report::new(p, Some(verdict), Some(threading), outcome);
    r.actions = actions;
    r.rules = Some(eval);
    Ok(r)
}

/// Where a message went and what rules and catalog made of it: what the writes after placement need.
struct Placed<'a> {
    ticket: TicketId,
    outcome: &'a Outcome,
    queue: &'a Queue,
    service: Option<&'a crate::catalog::Service>,
    ra: &'a crate::rules::Actions,
    customer_close: bool,
    /// Why mail from an agent's address was handled as a customer's (no valid reply token, a
    /// shared one, or DKIM failed).
    unauthenticated_agent: Option<&'a str>,
}

impl Placed<'_> {
    fn created(&self) -> bool {
        matches!(self.outcome, Outcome::Created { .. })
    }
}

/// The message as an article of its ticket, and what follows from it on the ticket: events,
/// bounce, rule actions, service, configuration items, the requester's /close, change approval,
/// SLA clocks. Returns the article's id.
#[allow(clippy::too_many_arguments)]
fn record_inbound(
    tx: &mut Tx<'_>,
    desk: &Desk,
    d: Delivery<'_>,
    p: &Parsed,
    verdict: &Verdict,
    at: &Placed<'_>,
    bounced: &[String],
    oversize: Option<&Oversize>,
    now: &Now,
    actions: &mut Vec<String>,
    mails: &mut Vec<PlannedMail>,
) -> Result<i64, StoreError> {
    let (ticket, ra, sender) = (at.ticket, at.ra, p.from_address());
    let to_list: Vec<String> = p.to.iter().chain(p.cc.iter()).map(|m| m.address.clone()).filter(|a| !a.is_empty()).collect();
    if let Some(why) = at.unauthenticated_agent {
        tx.event(ticket, "unauthenticated_agent", why, &now.s)?;
        tracing::warn!(ticket, sender, why, "mail with an agent's address handled as a customer's");
    }
    let article = tx.add_article(&NewArticle {
        ticket,
        direction: Direction::Inbound,
        kind: if matches!(verdict.class, Class::Bounce | Class::DelayWarning | Class::Feedback) { ArticleKind::System } else { ArticleKind::Customer },
        from: sender,
        to: &to_list,
        subject: &p.subject,
        message_id: &p.message_id,
        body_text: &p.body_text,
        mailbox: Some(d.mailbox),
        guard_class: Some(verdict.class.as_str()),
        // An oversized message keeps only its header section; the server keeps the rest.
        raw: Some(if oversize.is_some() { header_section(d.raw) } else { d.raw }),
        attachments: &p.attachments,
        now: &now.s,
    })?;
    if !p.truncated.is_empty() {
        let cut = p.truncated.join("; ");
        tx.event(ticket, "parse_limits", &format!("message <{}> read within limits: {cut}", p.message_id), &now.s)?;
        actions.push(format!("parse limits: {cut}"));
    }
    if verdict.class != Class::Human {
        tx.event(ticket, "guard", &format!("{}: {}", verdict.class.as_str(), verdict.reasons.join("; ")), &now.s)?;
    }
    if let Some(b) = &verdict.bounce {
        record_bounce(tx, ticket, b, bounced, now, actions)?;
    }
    apply_rule_actions(tx, desk, ticket, ra, at.created(), now, actions)?;
    if let (Some(svc), true) = (at.service, at.created()) {
        tx.set_service_fields(ticket, if ra.sla_policy.is_none() { svc.sla.as_deref() } else { None }, Some(&svc.name), if ra.ticket_type.is_none() { svc.ticket_type.as_deref() } else { None })?;
        if let (Some(pr), None) = (svc.priority, ra.priority) {
            tx.set_priority(ticket, pr, &now.s)?;
        }
        tx.event(ticket, "service", &format!("service {} ({})", svc.name, svc.title), &now.s)?;
        actions.push(format!("service {}", svc.name));
    }
    // Configuration items the customer names (host names, asset tags) are linked to the ticket.
    if verdict.class == Class::Human {
        for ci in desk.cis.mentioned(&format!("{}\n{}", p.subject, p.visible_text)) {
            tx.link_ci(ticket, &ci.name)?;
            actions.push(format!("linked configuration item {}", ci.name));
        }
    }
    if at.customer_close {
        close_by_customer(tx, desk, at.queue, ticket, p, now, actions, mails)?;
    }
    if (ra.ticket_type.as_deref() == Some("change") || at.service.and_then(|s| s.ticket_type.as_deref()) == Some("change") && at.created())
        && let Some(t) = tx.ticket(ticket)?
    {
        service::request_approval(tx, desk, &t, now, actions, mails)?;
    }
    if let Some(t) = tx.ticket(ticket)? {
        match at.outcome {
            Outcome::Created { .. } => sla::on_created(tx, desk, &t, now)?,
            _ if verdict.class == Class::Human => sla::on_customer_message(tx, desk, &t, now)?,
            _ => {}
        }
    }
    Ok(article)
}

/// Agents hear about people's mail (never about automatic mail): a new ticket, a customer's
/// reply, an oversized message; plus the addresses a rule asked to tell.
#[allow(clippy::too_many_arguments)]
fn tell_agents(tx: &mut Tx<'_>, desk: &Desk, p: &Parsed, sender: &str, at: &Placed<'_>, oversize: bool, now: &Now, actions: &mut Vec<String>, mails: &mut Vec<PlannedMail>) -> Result<(), StoreError> {
    let Some(t) = tx.ticket(at.ticket)? else { return Ok(()) };
    let from_name = p.from.as_ref().and_then(|m| m.name.clone()).unwrap_or_default();
    let about = context::About { from: sender, from_name: &from_name, subject: &p.subject, text: &p.visible_text, ..Default::default() };
    let (template, mut to) = match at.outcome {
        _ if oversize => ("alert_too_large", desk.config.agents.values().filter(|a| a.works(&t.queue)).collect()),
        Outcome::Created { .. } => ("agent_new_ticket", notify::for_new_ticket(desk, &t)),
        _ => ("agent_customer_reply", notify::for_customer_reply(tx, desk, &t)?),
    };
    // Extra addresses a rule asked to tell, as if they were agents of the queue.
    let extra: Vec<crate::config::Agent> = at
        .ra
        .notify
        .iter()
        .map(|a| crate::config::Agent { key: a.clone(), name: a.clone(), email: a.to_ascii_lowercase(), queues: Vec::new(), tier: t.tier, notify_new: true })
        .collect();
    for e in &extra {
        if !to_contains(&to, &e.email) {
            to.push(e);
        }
    }
    if !to.is_empty() {
        let sent = notify::agents(tx, desk, now, &t, template, &to, Some(sender), &about, Some(&p.message_id))?;
        notify::record(sent, actions, mails);
    }
    Ok(())
}

/// A responder that neither tags its answers nor keeps our headers (so neither threading nor the
/// guard sees a loop): a new mail from an address we sent automatic mail to within
/// `guard.loop_reply_window`, with the same subject and words (digits aside) as its previous
/// mail to us. Its
/// ticket gets no acknowledgement, so such a pair opens at most three tickets (docs/SECURITY.md).
fn responder_loop(tx: &Tx<'_>, desk: &Desk, decision: &Decision, sender: &str, p: &Parsed, verdict: &Verdict, now: &Now) -> Result<Option<String>, StoreError> {
    let window = desk.config.guard.loop_reply_window;
    if !matches!(decision, Decision::New { .. }) || verdict.class != Class::Human || sender.is_empty() || window.is_zero() {
        return Ok(None);
    }
    // Mail that names our tag or one of our Message-IDs is threaded or linked, not this pattern.
    if desk.refs.find(&p.subject).is_some() || p.ancestors().iter().any(|id| desk.signer.is_ours(id)) {
        return Ok(None);
    }
    if tx.auto_mail_count(sender, &now.minus(window))? == 0 {
        return Ok(None);
    }
    let Some(t) = tx.latest_active_ticket(sender)?.map(|t| tx.ticket(t)).transpose()?.flatten() else { return Ok(None) };
    let previous = tx.latest_customer_text(t.id)?.unwrap_or_default();
    let same_subject = guard::body_shape(&normalize_subject(&p.subject)) == guard::body_shape(&t.subject);
    let same = same_subject && guard::body_shape(&p.body_text) == guard::body_shape(&previous);
    Ok(same.then(|| format!("mail loop suspected: {sender} answered our mail within {}s with the same subject and text as before", window.as_secs())))
}

/// Apply the closed-ticket policy and flood control to the threading decision.
#[allow(clippy::too_many_arguments)]
fn place(tx: &mut Tx<'_>, desk: &Desk, queue: &Queue, decision: &Decision, sender: &str, verdict: &Verdict, now: &Now, actions: &mut Vec<String>) -> Result<Placement, StoreError> {
    match decision {
        Decision::FollowUp { ticket, .. } => {
            let (status, _) = tx.ticket_summary(*ticket)?.unwrap_or((Status::Open, Vec::new()));
            if status != Status::Closed || verdict.class != Class::Human {
                return Ok(Placement::Existing { ticket: *ticket, status });
            }
            let ticket_queue = desk.config.queues.get(&tx.ticket_queue(*ticket)?.unwrap_or_default()).unwrap_or(queue);
            match ticket_queue.on_closed {
                OnClosed::Reopen => {
                    let too_old = match (ticket_queue.reopen_within, tx.ticket_updated_at(*ticket)?) {
                        (Some(within), Some(updated)) => updated < now.minus(within),
                        _ => false,
                    };
                    if too_old {
                        actions.push(format!("{} was closed too long ago to reopen; opening a new linked ticket", desk.refs.format(*ticket)));
                        Ok(Placement::New { related: Some(*ticket) })
                    } else {
                        Ok(Placement::Existing { ticket: *ticket, status })
                    }
                }
                OnClosed::NewTicket => {
                    actions.push(format!("{} is closed; opening a new linked ticket (queue policy)", desk.refs.format(*ticket)));
                    Ok(Placement::New { related: Some(*ticket) })
                }
                OnClosed::Reject => {
                    actions.push(format!("{} is closed; rejected with a notice (queue policy)", desk.refs.format(*ticket)));
                    Ok(Placement::Rejected { ticket: *ticket })
                }
            }
        }
        Decision::New { possibly_related } => {
            if sender.is_empty() {
                return Ok(Placement::New { related: *possibly_related });
            }
            let g = &desk.config.guard;
            let domain = sender.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            let over = if let Some(why) = sender_flood(tx, desk, sender, now)? {
                Some(why)
            } else { g.domain_rate.filter(|r| !domain.is_empty() && tx.tickets_opened_from_domain(domain, &now.minus(r.window)).is_ok_and(|n| n >= r.count as u64)).map(|r| format!("{domain} opened {} or more tickets within {}s", r.count, r.window.as_secs())) };
            let Some(why) = over else { return Ok(Placement::New { related: *possibly_related }) };
            tracing::warn!(sender, why, "new-ticket flood");
            match (g.flood_action, tx.latest_active_ticket(sender)?) {
                (FloodAction::Append, Some(t)) => {
                    tx.event(t, "flood", &format!("appended instead of opening a new ticket: {why}"), &now.s)?;
                    actions.push(format!("flood control: {why}; appended to {}", desk.refs.format(t)));
                    let (status, _) = tx.ticket_summary(t)?.unwrap_or((Status::Open, Vec::new()));
                    Ok(Placement::Existing { ticket: t, status })
                }
                _ => {
                    actions.push(format!("flood control: {why}; quarantined"));
                    Ok(Placement::Quarantine { reason: format!("flood control: {why}") })
                }
            }
        }
    }
}

/// Add outside people to a ticket's participants, up to `limits.max_participants` (requester
/// included): one mail Cc'ing 300 people must not make every later reply go to all of them
/// (issue 17.3). Those over the cap are recorded on the ticket and returned.
pub(crate) fn add_participants(tx: &mut Tx<'_>, desk: &Desk, ticket: TicketId, addresses: &[String], now: &Now) -> Result<Vec<String>, StoreError> {
    let (_, mut have) = tx.ticket_summary(ticket)?.unwrap_or((Status::Open, Vec::new()));
    let max = desk.config.limits.max_participants as usize;
    let mut refused = Vec::new();
    for a in addresses {
        if have.contains(a) {
            continue;
        }
        if have.len() >= max {
            refused.push(a.clone());
            continue;
        }
        tx.add_participant(ticket, a, "cc")?;
        have.push(a.clone());
    }
    if !refused.is_empty() {
        let detail = format!("{} address(es) not added, limits.max_participants = {max} reached: {}", refused.len(), refused.join(", "));
        tx.event(ticket, "participants_capped", &detail, &now.s)?;
    }
    Ok(refused)
}

#[allow(clippy::too_many_arguments)]
fn follow_up(tx: &mut Tx<'_>, desk: &Desk, ticket: TicketId, status: Status, sender: &str, verdict: &Verdict, now: &Now, actions: &mut Vec<String>) -> Result<(), StoreError> {
    let (_, participants) = tx.ticket_summary(ticket)?.unwrap_or((status, Vec::new()));
    // People who write join the conversation; mail systems and robots do not, nor an agent's
    // address (agents take part through their notifications; such mail here failed that path).
    let joins = verdict.class == Class::Human && !sender.is_empty() && desk.config.agent_by_email(sender).is_none();
    if joins && !participants.iter().any(|p| p == sender) {
        if add_participants(tx, desk, ticket, &[sender.to_string()], now)?.is_empty() {
            actions.push(format!("added {sender} as a participant"));
        } else {
            actions.push(format!("{sender} not added as a participant: limits.max_participants reached"));
        }
    }
    // Automatic mail (out-of-office, bounces) never changes a ticket's state.
    if verdict.class == Class::Human && matches!(status, Status::Pending | Status::Resolved | Status::Closed) {
        tx.set_status(ticket, Status::Open, &now.s)?;
        if let Some(t) = tx.ticket(ticket)? {
            sla::on_status(tx, desk, &t, status, Status::Open, now)?;
        }
        tx.event(ticket, "status", &format!("{status} → open (customer replied)"), &now.s)?;
        actions.push(format!("status {status} → open"));
    } else {
        tx.touch(ticket, &now.s)?;
    }
    actions.push(format!("added to {}", desk.refs.format(ticket)));
    Ok(())
}

/// People a participant copied on their own mail take part in the conversation (RT's Cc
/// watchers), when the ticket's queue says so (`cc_policy`, docs/SECURITY.md).
fn add_copied(tx: &mut Tx<'_>, desk: &Desk, ticket: TicketId, p: &Parsed, sender: &str, now: &Now, actions: &mut Vec<String>) -> Result<(), StoreError> {
    let queue = tx.ticket_queue(ticket)?.and_then(|q| desk.config.queues.get(&q));
    if queue.is_none_or(|q| q.cc_policy != crate::config::CcPolicy::Join) {
        return Ok(());
    }
    let Some((_, participants)) = tx.ticket_summary(ticket)? else { return Ok(()) };
    let mut copied: Vec<String> = Vec::new();
    for m in p.cc.iter().chain(p.to.iter()) {
        let a = &m.address;
        if !a.is_empty() && a != sender && !participants.contains(a) && !copied.contains(a) && !desk.identity.own_addresses.contains(a) && desk.signer.token_from_address(a).is_none() && !guard::is_system_address(a) {
            copied.push(a.clone());
        }
    }
    let refused = add_participants(tx, desk, ticket, &copied, now)?;
    for a in copied.iter().filter(|a| !refused.contains(a)) {
        actions.push(format!("added {a} as a participant (copied by {sender})"));
    }
    if !refused.is_empty() {
        actions.push(format!("{} copied address(es) not added: limits.max_participants = {}", refused.len(), desk.config.limits.max_participants));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn open_ticket(tx: &mut Tx<'_>, desk: &Desk, queue: &Queue, p: &Parsed, sender: &str, related: Option<TicketId>, now: &Now, actions: &mut Vec<String>) -> Result<TicketId, StoreError> {
    let subject = normalize_subject(&p.subject);
    let subject = if subject.is_empty() { "(no subject)".to_string() } else { subject };
    let requester = if sender.is_empty() { "unknown@invalid" } else { sender };
    let ticket = tx.create_ticket(&NewTicket { subject: &subject, queue: &queue.name, priority: Priority::Normal, requester, related_to: related, now: &now.s })?;
    actions.push(format!("created ticket {} in queue {}", desk.refs.format(ticket), queue.name));
    add_copied(tx, desk, ticket, p, requester, now, actions)?;
    if let Some(rel) = related {
        let note = format!("linked to {} (possibly related)", desk.refs.format(rel));
        tx.event(ticket, "possibly_related", &note, &now.s)?;
        tx.event(rel, "possibly_related", &format!("{requester} wrote about this ticket; see {}", desk.refs.format(ticket)), &now.s)?;
        actions.push(note);
    }
    Ok(ticket)
}

#[allow(clippy::too_many_arguments)]
fn acknowledge(
    tx: &mut Tx<'_>,
    desk: &Desk,
    queue: &Queue,
    ticket: TicketId,
    p: &Parsed,
    verdict: &Verdict,
    ra: &crate::rules::Actions,
    now: &Now,
    actions: &mut Vec<String>,
    mails: &mut Vec<PlannedMail>,
) -> Result<(), StoreError> {
    let by = |k: &str| ra.applied_by.get(k).cloned().unwrap_or_default();
    let blocked = if ra.internal_only {
        Some(format!("internal-only ticket (rule {})", by("internal_only")))
    } else if ra.acknowledge == Some(false) {
        Some(format!("rule {} turned the acknowledgement off", by("acknowledge")))
    } else if !queue.acknowledge && ra.acknowledge != Some(true) {
        Some("queue has acknowledge = false".to_string())
    } else if !verdict.auto_reply_allowed {
        Some(format!("guard: {} ({})", verdict.class.as_str(), verdict.reasons.join("; ")))
    } else {
        None
    };
    if let Some(why) = blocked {
        tx.event(ticket, "ack_suppressed", &why, &now.s)?;
        actions.push(format!("no acknowledgement: {why}"));
        return Ok(());
    }
    let to = p.from_address().to_string();
    let mut ctx = customer_context(tx, desk, queue, ticket, p, &to)?;
    let found = knowledge::suggest(tx, desk, ticket, p, now, actions)?;
    knowledge::merge_into(&mut ctx, &found, desk);
    let sent = mailer::send_auto(tx, desk, now, AutoMail::answer(p, Some(ticket), queue, ArticleKind::AutoReply, "acknowledgement", ra.ack_template.as_deref().unwrap_or(&queue.ack_template), ctx))?;
    record_sent(sent, actions, mails);
    Ok(())
}

fn to_contains(to: &[&crate::config::Agent], email: &str) -> bool {
    to.iter().any(|a| a.email == email)
}

/// Apply what the rules decided to the ticket (all within the ingest transaction).
#[allow(clippy::too_many_arguments)]
fn apply_rule_actions(tx: &mut Tx<'_>, desk: &Desk, ticket: TicketId, ra: &crate::rules::Actions, created: bool, now: &Now, actions: &mut Vec<String>) -> Result<(), StoreError> {
    let by = |k: &str| {
        let item = format!("{k}[");
        ra.applied_by.get(k).or_else(|| ra.applied_by.iter().find(|(key, _)| key.starts_with(&item)).map(|(_, v)| v)).cloned().unwrap_or_default()
    };
    let Some(t) = tx.ticket(ticket)? else { return Ok(()) };
    let mut note = |tx: &mut Tx<'_>, what: String, key: &str| -> Result<(), StoreError> {
        let line = format!("{what} (rule {})", by(key));
        tx.event(ticket, "rule", &line, &now.s)?;
        actions.push(line);
        Ok(())
    };
    if let Some(q) = ra.queue.as_deref().filter(|q| !created && *q != t.queue) {
        tx.set_queue(ticket, q, &now.s)?;
        note(tx, format!("queue {} → {q}", t.queue), "queue")?;
    }
    if let Some(pr) = ra.priority.filter(|pr| *pr != t.priority) {
        tx.set_priority(ticket, pr, &now.s)?;
        note(tx, format!("priority {} → {pr}", t.priority), "priority")?;
    }
    if let Some(o) = &ra.owner
        && let Some(a) = desk.config.find_agent(o)
    {
        tx.set_owner(ticket, Some(&a.email), &now.s)?;
        note(tx, format!("owner → {}", a.email), "owner")?;
    }
    if let Some(st) = ra.status.filter(|s| *s != t.status) {
        tx.set_status(ticket, st, &now.s)?;
        note(tx, format!("status {} → {st}", t.status), "status")?;
    }
    for tag in &ra.add_tags {
        tx.add_tag(ticket, tag)?;
    }
    for tag in &ra.remove_tags {
        tx.remove_tag(ticket, tag)?;
    }
    if !ra.add_tags.is_empty() || !ra.remove_tags.is_empty() {
        note(tx, format!("tags +[{}] -[{}]", ra.add_tags.join(", "), ra.remove_tags.join(", ")), "add_tags")?;
    }
    if ra.internal_only {
        tx.add_tag(ticket, "internal-only")?;
    }
    if ra.sla_policy.is_some() || ra.service.is_some() || ra.ticket_type.is_some() {
        tx.set_service_fields(ticket, ra.sla_policy.as_deref(), ra.service.as_deref(), ra.ticket_type.as_deref())?;
        note(tx, format!("service {:?}, SLA {:?}, type {:?}", ra.service, ra.sla_policy, ra.ticket_type), "sla_policy")?;
    }
    for ci in &ra.ci {
        tx.link_ci(ticket, ci)?;
    }
    let watchers: Vec<String> = ra.watchers.iter().map(|w| w.to_ascii_lowercase()).collect();
    add_participants(tx, desk, ticket, &watchers, now)?;
    // Priority, queue or policy changed on a running ticket: its SLA clocks follow.
    if !created && (ra.priority.is_some() || ra.queue.is_some() || ra.sla_policy.is_some())
        && let Some(t) = tx.ticket(ticket)?
    {
        sla::recompute(tx, desk, &t)?;
    }
    Ok(())
}

/// Why `sender` may not make another request now: new tickets plus desk answers (status lists,
/// catalog) within `guard.new_tickets_per_sender`. `None` when within the rate.
fn sender_flood(tx: &Tx<'_>, desk: &Desk, sender: &str, now: &Now) -> Result<Option<String>, StoreError> {
    let Some(r) = desk.config.guard.sender_rate else { return Ok(None) };
    let since = now.minus(r.window);
    let n = tx.tickets_opened_by(sender, &since)? + tx.desk_answers_to(sender, &since)?;
    Ok((n >= r.count as u64).then(|| format!("{sender} made {} or more requests (new tickets, status or catalog answers) within {}s", r.count, r.window.as_secs())))
}

/// "status" from a customer: the list of their open tickets, by mail. No ticket is opened; the
/// request is kept (quarantine table, reason `self_service`) so nothing is lost.
fn status_request(tx: &mut Tx<'_>, desk: &Desk, d: Delivery<'_>, p: &Parsed, verdict: &Verdict, key: &str, now: &Now) -> Result<Option<Report>, StoreError> {
    let Some(ss) = &desk.config.self_service else { return Ok(None) };
    let sender = p.from_address();
    let subject = normalize_subject(&p.subject).to_lowercase();
    let wants_catalog = !desk.catalog.services.is_empty() && ["catalog", "catalogue", "services", "service catalog"].contains(&subject.as_str());
    if verdict.class != Class::Human || sender.is_empty() || desk.refs.find(&p.subject).is_some() || !(wants_catalog || ss.status_subjects.contains(&subject)) {
        return Ok(None);
    }
    let queue = desk.config.queue_of(d.mailbox).or_else(|| desk.config.queues.values().next()).expect("validated config has a queue");
    // Desk answers count toward the sender's flood limit like new tickets (issue 17.4).
    if let Some(why) = sender_flood(tx, desk, sender, now)? {
        tracing::warn!(sender, why, "status request flood");
        quarantine(tx, d, "flood", &format!("status request not answered: {why}"), now)?;
        tx.record_delivery(key, None, "quarantined", &now.s)?;
        let mut r = Report::new(p, Some(verdict.clone()), Some("status request (self-service)".into()), Outcome::Quarantined { reason: format!("flood control: {why}") });
        r.actions.push(format!("flood control: {why}; not answered"));
        return Ok(Some(r));
    }
    let tickets: Vec<serde_json::Value> = tx
        .active_tickets_of(sender)?
        .iter()
        .map(|t| json!({ "ref": desk.refs.format(t.id), "subject": crate::reference::sender_text(&t.subject), "status": t.status.as_str(), "updated_at": t.updated_at }))
        .collect();
    let name = p.from.as_ref().and_then(|m| m.name.clone()).unwrap_or_default();
    let mut ctx = json!({
        "desk": { "name": desk.config.desk.name },
        "queue": { "name": queue.name, "address": queue.address, "from_name": queue.from_name },
        "recipient": { "address": sender, "name": crate::reference::sender_text(&name) },
    });
    ctx["tickets"] = serde_json::Value::Array(tickets.clone());
    ctx["services"] = serde_json::to_value(&desk.catalog.services).unwrap_or_default();
    let (template, what) = if wants_catalog { ("catalog_list", format!("the catalog of {} request type(s)", desk.catalog.services.len())) } else { ("status_list", format!("list of {} open ticket(s)", tickets.len())) };
    quarantine(tx, d, "self_service", &format!("answered with {template}"), now)?;
    tx.record_delivery(key, None, "status_request", &now.s)?;
    let label = if wants_catalog { "catalog_list" } else { "status_list" };
    let sent = mailer::send_auto(tx, desk, now, AutoMail::answer(p, None, queue, ArticleKind::AutoReply, label, template, ctx))?;
    let mut r = Report::new(p, Some(verdict.clone()), Some("status request (self-service)".into()), Outcome::Answered { what });
    record_sent(sent, &mut r.actions, &mut r.mails);
    Ok(Some(r))
}

/// The requester wrote /close: close the ticket and confirm.
#[allow(clippy::too_many_arguments)]
fn close_by_customer(tx: &mut Tx<'_>, desk: &Desk, queue: &Queue, ticket: TicketId, p: &Parsed, now: &Now, actions: &mut Vec<String>, mails: &mut Vec<PlannedMail>) -> Result<(), StoreError> {
    let Some(t) = tx.ticket(ticket)? else { return Ok(()) };
    knowledge::on_customer_close(tx, &t, now, actions)?;
    tx.set_status(ticket, Status::Closed, &now.s)?;
    sla::on_status(tx, desk, &t, t.status, Status::Closed, now)?;
    tx.event(ticket, "status", &format!("{} → closed (by the customer, /close)", t.status), &now.s)?;
    actions.push(format!("status {} → closed by the customer", t.status));
    let t = tx.ticket(ticket)?.unwrap_or(t);
    let queue = desk.config.queues.get(&t.queue).unwrap_or(queue);
    let ctx = context::build(desk, queue, &t, &context::About::default(), &t.requester, p.from.as_ref().and_then(|m| m.name.as_deref()).unwrap_or(""));
    // The requester wrote the /close, so the answer goes to them, threaded under it.
    let sent = mailer::send_auto(tx, desk, now, AutoMail::answer(p, Some(ticket), queue, ArticleKind::Notification, "customer_closed", "customer_closed", ctx))?;
    record_sent(sent, actions, mails);
    Ok(())
}

/// The one authentication check for every identity that can change a ticket (agents, approvers,
/// external groups, a requester's `/close`): with `[security] require_dkim`, one of our trusted
/// MTAs must have recorded dkim=pass for the From domain, or dmarc=pass (RFC 8601 §5).
pub(crate) fn authenticated(desk: &Desk, p: &Parsed) -> bool {
    let sec = &desk.config.security;
    let domain = p.from_address().rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    let ok = !sec.require_dkim || crate::authres::passes(p.header_all("authentication-results"), &sec.trusted_authserv_ids, domain);
    if !ok {
        tracing::warn!(from = p.from_address(), message_id = p.message_id, "sender failed the DKIM/DMARC requirement");
    }
    ok
}

/// One of our trusted MTAs recorded dkim=pass (or dmarc=pass) for the From domain, whether or
/// not `require_dkim` is on.
fn dkim_verified(desk: &Desk, p: &Parsed) -> bool {
    let sec = &desk.config.security;
    let domain = p.from_address().rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    !sec.trusted_authserv_ids.is_empty() && crate::authres::passes(p.header_all("authentication-results"), &sec.trusted_authserv_ids, domain)
}

/// Why a token is too old to carry commands (`security.command_token_max_age`), if it is:
/// a stolen or long-forwarded notification cannot act for ever. Tokens of the earlier format
/// carry no issue time and count as too old.
pub(crate) fn stale_token(desk: &Desk, issued: Option<i64>, now: &Now) -> Option<String> {
    let max = desk.config.security.command_token_max_age?;
    let fresh = issued.is_some_and(|t| now.t.unix_timestamp() - t <= max.as_secs() as i64);
    (!fresh).then(|| {
        format!(
            "the mail you answered was sent more than {} day(s) ago (security.command_token_max_age); commands are taken only from an answer to a fresh notification: answer the latest notification of this ticket",
            max.as_secs().div_ceil(86400)
        )
    })
}

/// What a delivery report proves about itself.
enum BounceCheck {
    /// Not a delivery report: thread as usual.
    NotABounce,
    /// It answers mail of ours on `ticket`, and these of its recipients were recipients of it.
    Verified { ticket: TicketId, message_id: String, recipients: Vec<String> },
    /// It names no mail of ours that went to the addresses it reports on: no effect at all.
    Unverified(String),
}

/// A report may touch a ticket or an address only when it names one of our signed Message-IDs
/// (in the report, the returned message or its headers, its In-Reply-To/References, or a
/// plus-addressed token it was sent to) and the failed recipient was a recipient of that mail.
/// Anyone can write a DSN; only the MTA that handled our mail knows our Message-ID for it.
fn check_bounce(tx: &Tx<'_>, desk: &Desk, p: &Parsed, verdict: &Verdict, tokens: &[String], now: &Now) -> Result<BounceCheck, StoreError> {
    let Some(b) = &verdict.bounce else { return Ok(BounceCheck::NotABounce) };
    let candidates = b.original_message_id.iter().map(String::as_str).chain(tokens.iter().map(String::as_str)).chain(p.ancestors());
    for id in candidates.filter(|id| desk.signer.is_ours(id)) {
        let Some((ticket, sent_to)) = tx.our_mail(id)? else { continue };
        let recipients: Vec<String> = b
            .recipients
            .iter()
            .map(|r| r.address.to_ascii_lowercase())
            .filter(|a| !a.is_empty() && (sent_to.contains(a) || desk.signer.verify(id, a, now.t.unix_timestamp()).is_some_and(|v| v.ticket == ticket)))
            .collect();
        if !recipients.is_empty() {
            return Ok(BounceCheck::Verified { ticket, message_id: id.to_string(), recipients });
        }
    }
    let named: Vec<&str> = b.recipients.iter().map(|r| r.address.as_str()).collect();
    Ok(BounceCheck::Unverified(match &b.original_message_id {
        Some(id) => format!("<{id}> is not mail of ours to {}", named.join(", ")),
        None => format!("names no mail of ours (recipients: {})", named.join(", ")),
    }))
}

/// Record which recipients failed and stop mailing the ones that failed for good; only
/// `verified` recipients (those our mail went to, see [`check_bounce`]) count.
fn record_bounce(tx: &mut Tx<'_>, ticket: TicketId, b: &crate::bounce::BounceReport, verified: &[String], now: &Now, actions: &mut Vec<String>) -> Result<(), StoreError> {
    for r in b.recipients.iter().filter(|r| verified.contains(&r.address.to_ascii_lowercase())) {
        let detail = format!(
            "{} for <{}>: status {}{}{}",
            r.kind.as_str(),
            r.address,
            r.status.as_deref().unwrap_or("unknown"),
            r.diagnostic.as_deref().map(|d| format!(" ({d})")).unwrap_or_default(),
            b.original_message_id.as_deref().map(|m| format!("; original <{m}>")).unwrap_or_default()
        );
        tx.event(ticket, "bounce", &detail, &now.s)?;
        actions.push(format!("bounce recorded: {detail}"));
        if r.kind == crate::bounce::BounceKind::Hard && !r.address.is_empty() {
            tx.mark_undeliverable(&r.address.to_ascii_lowercase(), &format!("hard bounce, status {}", r.status.as_deref().unwrap_or("unknown")), &now.s)?;
            actions.push(format!("{} marked undeliverable", r.address));
        }
    }
    Ok(())
}

/// Tell the sender their message was too large (unless it was automatic mail).
#[allow(clippy::too_many_arguments)]
fn too_large_notice(tx: &mut Tx<'_>, desk: &Desk, queue: &Queue, ticket: TicketId, p: &Parsed, verdict: &Verdict, now: &Now, actions: &mut Vec<String>, mails: &mut Vec<PlannedMail>) -> Result<(), StoreError> {
    if !verdict.auto_reply_allowed {
        actions.push(format!("no size notice: guard: {}", verdict.class.as_str()));
        return Ok(());
    }
    let to = p.from_address().to_string();
    let ctx = customer_context(tx, desk, queue, ticket, p, &to)?;
    let sent = mailer::send_auto(tx, desk, now, AutoMail::answer(p, Some(ticket), queue, ArticleKind::AutoReply, "too_large", "too_large", ctx))?;
    record_sent(sent, actions, mails);
    Ok(())
}

/// The bytes up to and including the blank line that ends the header section.
fn header_section(raw: &[u8]) -> &[u8] {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| i + 2));
    &raw[..end.unwrap_or(raw.len())]
}

fn record_sent(sent: Sent, actions: &mut Vec<String>, mails: &mut Vec<PlannedMail>) {
    match sent {
        Sent::Queued(m) => {
            actions.push(format!("{} queued to {}", m.kind, m.to));
            mails.push(m);
        }
        Sent::Suppressed(why) => actions.push(format!("automatic mail suppressed: {why}")),
    }
}

/// Variables for mail to the customer about their message: the common set (`context::build`),
/// plus the catalog service the ticket is for (with what it still needs) and knowledge-base
/// suggestions for the customer's words.
fn customer_context(tx: &Tx<'_>, desk: &Desk, queue: &Queue, ticket: TicketId, p: &Parsed, to: &str) -> Result<serde_json::Value, StoreError> {
    let name = p.from.as_ref().and_then(|m| m.name.clone()).unwrap_or_default();
    let Some(t) = tx.ticket(ticket)? else { return Ok(json!({})) };
    let about = context::About { from: p.from_address(), from_name: &name, subject: &p.subject, text: &p.visible_text, ..Default::default() };
    let mut ctx = context::build(desk, queue, &t, &about, to, &name);
    if let Some(svc) = t.service.as_deref().and_then(|s| desk.catalog.get(s)) {
        ctx["service"] = json!({ "name": svc.name, "title": svc.title, "description": svc.description, "missing": svc.missing(&p.visible_text) });
    }
    let n = desk.config.kb.as_ref().map(|(_, n)| *n).unwrap_or(0);
    let suggestions = desk.kb.suggest(&format!("{}\n{}", p.subject, p.visible_text), n);
    ctx["suggestions"] = serde_json::to_value(&suggestions).unwrap_or_default();
    ctx["suggested"] = json!(false);
    Ok(ctx)
}
