//! Pipeline: one inbound message → parse → guard → thread → decide → ONE store transaction
//! (article, ticket changes, outbox rows, mailbox cursor). The same code serves every intake and
//! the dry run (which runs the transaction and rolls it back), so `rules test` shows exactly what
//! the daemon would do.

use crate::clock::{SharedClock, rfc3339};
use crate::desk::Desk;
use crate::guard::{self, Class, Verdict};
use crate::message::{self, Parsed};
use crate::outbound::compose::{AutoSubmitted, Outgoing, compose};
use crate::reference::normalize_subject;
use crate::store::{Cursor, NewArticle, NewOutbound, NewTicket, Store, StoreError, Tx};
use crate::thread::{self, Decision};
use crate::ticket::{ArticleKind, Direction, Priority, Status, TicketId};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// One message handed to the pipeline by an intake.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub mailbox: &'a str,
    pub raw: &'a [u8],
    /// For IMAP: the cursor to store with this message (its UIDVALIDITY and UID).
    pub cursor: Option<Cursor>,
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
}

/// A mail the pipeline queued (or, in a dry run, would queue).
#[derive(Debug, Clone, Serialize)]
pub struct PlannedMail {
    pub kind: &'static str,
    pub to: String,
    pub subject: String,
    pub message_id: String,
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
}

/// Why a message could not be handled *now*; intake must not advance past it.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Only from [`Pipeline::ingest_strict`]: the input is not mail at all.
    #[error(transparent)]
    NotMail(#[from] message::NotMail),
}

impl IngestError {
    pub fn is_transient(&self) -> bool {
        match self {
            IngestError::Store(e) => e.is_transient(),
            IngestError::NotMail(_) => false,
        }
    }
}

/// Runs messages through the desk. Cheap to clone; shared by every intake task.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub store: Arc<Store>,
    pub clock: SharedClock,
    /// Poked after a commit that queued mail, so the outbound worker wakes at once.
    pub outbox_wake: Arc<tokio::sync::Notify>,
}

impl Pipeline {
    pub fn new(store: Arc<Store>, clock: SharedClock) -> Self {
        Pipeline { store, clock, outbox_wake: Arc::new(tokio::sync::Notify::new()) }
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

    fn run(&self, desk: &Desk, d: Delivery<'_>, dry: bool, quarantine_non_mail: bool) -> Result<Report, IngestError> {
        let now_t = self.clock.now();
        let now = rfc3339(now_t);
        let date = std::time::SystemTime::from(now_t);
        // The pure stages run under catch_unwind: a bug on hostile input quarantines one message
        // instead of killing the daemon.
        let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| message::parse(d.raw).map(|p| {
            let v = guard::classify(&p, &desk.identity);
            (p, v)
        })));
        let mut tx = self.store.begin()?;
        let report = match parsed {
            Ok(Ok((p, verdict))) => {
                if d.raw.len() as u64 > desk.config.limits.max_message_size {
                    let reason = format!("message of {} bytes exceeds limits.max_message_size", d.raw.len());
                    quarantine(&mut tx, d, "too_large", &reason, &now)?;
                    report_for(&p, Some(verdict), None, Outcome::Quarantined { reason })
                } else {
                    process(&mut tx, desk, d, p, verdict, &now, date)?
                }
            }
            Ok(Err(not_mail)) => {
                if !quarantine_non_mail {
                    return Err(not_mail.into());
                }
                let reason = not_mail.to_string();
                quarantine(&mut tx, d, "not_mail", &reason, &now)?;
                Report::bare(Outcome::Quarantined { reason })
            }
            Err(panic) => {
                let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
                let reason = format!("internal error while parsing: {what}");
                quarantine(&mut tx, d, "internal_error", &reason, &now)?;
                Report::bare(Outcome::Quarantined { reason })
            }
        };
        if let Some(c) = d.cursor {
            tx.advance_cursor(d.mailbox, c, &now)?;
        }
        if dry {
            drop(tx); // rolls back
        } else {
            tx.commit()?;
            if !report.mails.is_empty() {
                self.outbox_wake.notify_one();
            }
        }
        Ok(report)
    }
}

impl Pipeline {
    /// [`ingest`](Self::ingest) on the blocking pool, for async intakes (SQLite and parsing block).
    pub async fn ingest_async(&self, desk: Arc<Desk>, mailbox: String, raw: Vec<u8>, cursor: Option<Cursor>) -> Result<Report, IngestError> {
        let p = self.clone();
        match tokio::task::spawn_blocking(move || p.ingest(&desk, Delivery { mailbox: &mailbox, raw: &raw, cursor })).await {
            Ok(r) => r,
            // A panic outside the guarded parse: the transaction rolled back; report it as a store fault.
            Err(e) => Err(IngestError::Store(StoreError::Io { path: "ingest task".into(), source: std::io::Error::other(e.to_string()) })),
        }
    }
}

impl Report {
    fn bare(outcome: Outcome) -> Report {
        Report { message_id: String::new(), from: String::new(), subject: String::new(), verdict: None, threading: None, outcome, actions: Vec::new(), mails: Vec::new() }
    }
}

fn report_for(p: &Parsed, verdict: Option<Verdict>, threading: Option<String>, outcome: Outcome) -> Report {
    Report {
        message_id: p.message_id.clone(),
        from: p.from_address().to_string(),
        subject: p.subject.clone(),
        verdict,
        threading,
        outcome,
        actions: Vec::new(),
        mails: Vec::new(),
    }
}

fn quarantine(tx: &mut Tx<'_>, d: Delivery<'_>, reason: &str, detail: &str, now: &str) -> Result<(), StoreError> {
    let sha = hex::encode(Sha256::digest(d.raw));
    tx.quarantine(d.mailbox, reason, detail, &sha, d.raw, now)?;
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

fn process(tx: &mut Tx<'_>, desk: &Desk, d: Delivery<'_>, p: Parsed, verdict: Verdict, now: &str, date: std::time::SystemTime) -> Result<Report, StoreError> {
    let key = dedupe_key(&p);
    if let Some(prior) = tx.prior_delivery(&key)? {
        let mut r = report_for(&p, Some(verdict), None, Outcome::Duplicate { ticket: prior.ticket });
        r.actions.push(format!("already stored ({}); nothing to do", prior.outcome));
        return Ok(r);
    }

    if verdict.class == Class::OwnLoop {
        let reason = format!("our own mail came back: {}", verdict.reasons.join("; "));
        quarantine(tx, d, "own_mail", &reason, now)?;
        tx.record_delivery(&key, None, "dropped", now)?;
        let mut r = report_for(&p, Some(verdict), None, Outcome::Dropped { reason });
        r.actions.push("dropped (kept in quarantine)".into());
        return Ok(r);
    }

    let sender = p.from_address().to_string();
    let ancestors = p.ancestors();
    let decision = thread::decide(&sender, &ancestors, &p.subject, tx, &desk.signer, &desk.refs)?;
    let threading = decision.describe(&desk.refs);
    let queue = desk.config.queue_of(d.mailbox).or_else(|| desk.config.queues.values().next()).expect("validated config has a queue");
    let to_list: Vec<String> = p.to.iter().chain(p.cc.iter()).map(|m| m.address.clone()).filter(|a| !a.is_empty()).collect();
    let mut actions = Vec::new();
    let mut mails = Vec::new();

    let (ticket, outcome) = match decision {
        Decision::FollowUp { ticket, .. } => {
            let (status, participants) = crate::thread::History::ticket_summary(tx, ticket)?.unwrap_or((Status::Open, Vec::new()));
            if !sender.is_empty() && !participants.contains(&sender) {
                tx.add_participant(ticket, &sender, "cc")?;
                actions.push(format!("added {sender} as a participant"));
            }
            if verdict.class == Class::Human && matches!(status, Status::Pending | Status::Resolved | Status::Closed) {
                tx.set_status(ticket, Status::Open, now)?;
                tx.event(ticket, "status", &format!("{status} → open (customer replied)"), now)?;
                actions.push(format!("status {status} → open"));
            } else {
                tx.touch(ticket, now)?;
            }
            (ticket, Outcome::FollowUp { ticket })
        }
        Decision::New { possibly_related } => {
            let subject = normalize_subject(&p.subject);
            let subject = if subject.is_empty() { "(no subject)".to_string() } else { subject };
            let requester = if sender.is_empty() { "unknown@invalid".to_string() } else { sender.clone() };
            let ticket = tx.create_ticket(&NewTicket {
                subject: &subject,
                queue: &queue.name,
                priority: Priority::Normal,
                requester: &requester,
                related_to: possibly_related,
                now,
            })?;
            actions.push(format!("created ticket {} in queue {}", desk.refs.format(ticket), queue.name));
            for cc in p.cc.iter().chain(p.to.iter()) {
                if !cc.address.is_empty() && cc.address != requester && !desk.identity.own_addresses.contains(&cc.address) && !guard::is_system_address(&cc.address) {
                    tx.add_participant(ticket, &cc.address, "cc")?;
                }
            }
            if let Some(rel) = possibly_related {
                let note = format!("sender is not a participant of {}; opened a new ticket linked to it", desk.refs.format(rel));
                tx.event(ticket, "possibly_related", &note, now)?;
                tx.event(rel, "possibly_related", &format!("{} quoted this ticket's reference; see {}", requester, desk.refs.format(ticket)), now)?;
                actions.push(note);
            }
            (ticket, Outcome::Created { ticket })
        }
    };

    let kind = ArticleKind::Customer;
    let article = tx.add_article(&NewArticle {
        ticket,
        direction: Direction::Inbound,
        kind,
        from: &sender,
        to: &to_list,
        subject: &p.subject,
        message_id: &p.message_id,
        body_text: &p.body_text,
        mailbox: Some(d.mailbox),
        guard_class: Some(verdict.class.as_str()),
        raw: Some(d.raw),
        attachments: &p.attachments,
        now,
    })?;
    if verdict.class != Class::Human {
        tx.event(ticket, "guard", &format!("{}: {}", verdict.class.as_str(), verdict.reasons.join("; ")), now)?;
    }

    // Acknowledge new tickets, unless the guard forbids automatic answers.
    if let Outcome::Created { .. } = outcome {
        let ack_blocked = if !queue.acknowledge {
            Some("queue has acknowledge = false".to_string())
        } else if !verdict.auto_reply_allowed {
            Some(format!("guard: {} ({})", verdict.class.as_str(), verdict.reasons.join("; ")))
        } else if sender.is_empty() || guard::is_system_address(&sender) {
            Some(format!("sender <{sender}> must never get automatic mail"))
        } else {
            None
        };
        match ack_blocked {
            Some(why) => {
                tx.event(ticket, "ack_suppressed", &why, now)?;
                actions.push(format!("no acknowledgement: {why}"));
            }
            None => match acknowledge(tx, desk, queue, ticket, &p, now, date) {
                Ok(m) => {
                    actions.push(format!("acknowledgement queued to {}", m.to));
                    mails.push(m);
                }
                Err(AckError::Store(e)) => return Err(e),
                Err(AckError::Other(why)) => {
                    tracing::error!(ticket, error = %why, "acknowledgement not sent");
                    tx.event(ticket, "ack_failed", &why, now)?;
                    actions.push(format!("acknowledgement failed: {why}"));
                }
            },
        }
    }

    tx.record_delivery(&key, Some(article), match outcome {
        Outcome::Created { .. } => "created",
        _ => "follow_up",
    }, now)?;
    let mut r = report_for(&p, Some(verdict), Some(threading), outcome);
    r.actions = actions;
    r.mails = mails;
    Ok(r)
}

enum AckError {
    Store(StoreError),
    Other(String),
}

fn acknowledge(tx: &mut Tx<'_>, desk: &Desk, queue: &crate::config::Queue, ticket: TicketId, p: &Parsed, now: &str, date: std::time::SystemTime) -> Result<PlannedMail, AckError> {
    let to = p.from_address().to_string();
    let to_name = p.from.as_ref().and_then(|m| m.name.clone());
    let subject = normalize_subject(&p.subject);
    let ctx = json!({
        "desk": { "name": desk.config.desk.name },
        "queue": { "name": queue.name, "address": queue.address, "from_name": queue.from_name },
        "ticket": {
            "id": ticket, "ref": desk.refs.format(ticket), "subject": subject,
            "status": "new", "priority": "normal", "queue": queue.name,
            "requester": to, "created_at": now
        },
        "message": {
            "from": to, "from_name": to_name.clone().unwrap_or_default(),
            "subject": p.subject, "text": p.body_text
        },
        "recipient": { "address": to, "name": to_name.clone().unwrap_or_default() }
    });
    let rendered = desk.templates.render(&queue.ack_template, &queue.name, &ctx).map_err(|e| AckError::Other(e.to_string()))?;
    let mut rendered = rendered;
    rendered.subject = desk.refs.tagged_subject(ticket, &rendered.subject);
    let message_id = desk.signer.message_id(ticket, &to);
    let mut references = p.references.clone();
    references.push(p.message_id.clone());
    let raw = compose(&Outgoing {
        from_name: &queue.from_name,
        from_address: &queue.address,
        to_name: to_name.as_deref(),
        to_address: &to,
        message_id: &message_id,
        in_reply_to: Some(&p.message_id),
        references: &references,
        auto: Some(AutoSubmitted::AutoReplied),
        domain: &desk.config.desk.domain,
        rendered: &rendered,
        date,
    })
    .map_err(|e| AckError::Other(e.to_string()))?;
    let recipients = [to.clone()];
    let article = tx
        .add_article(&NewArticle {
            ticket,
            direction: Direction::Outbound,
            kind: ArticleKind::AutoReply,
            from: &queue.address,
            to: &recipients,
            subject: &rendered.subject,
            message_id: &message_id,
            body_text: &rendered.text,
            mailbox: None,
            guard_class: None,
            raw: None,
            attachments: &[],
            now,
        })
        .map_err(AckError::Store)?;
    tx.enqueue(&NewOutbound {
        ticket: Some(ticket),
        article: Some(article),
        kind: ArticleKind::AutoReply,
        message_id: &message_id,
        envelope_from: &queue.address,
        recipients: &recipients,
        raw: &raw,
        now,
    })
    .map_err(AckError::Store)?;
    Ok(PlannedMail { kind: "acknowledgement", to, subject: rendered.subject, message_id })
}
