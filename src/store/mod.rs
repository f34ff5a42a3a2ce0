//! Store: every byte of state lives here, in SQLite (WAL, numbered migrations). The API speaks the
//! domain (tickets, articles, outbox, cursors), so a PostgreSQL backend can implement the same
//! shape later. This is the only module that imports rusqlite.
//!
//! Writes happen in a [`Tx`] (`BEGIN IMMEDIATE`): one ingest = one transaction holding the article,
//! ticket changes, outbox rows and the mailbox cursor, so a crash leaves all or nothing.

mod csat;
mod ops;
pub use csat::{MAX_REPORT_RATINGS, Rating};
pub use ops::{Health, Quarantined};

use crate::ticket::{Article, ArticleKind, AttachmentInfo, Direction, Event, Priority, Status, Ticket, TicketDetail, TicketId};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// One OAuth2 login (`Store::oauth_states`): for `postdesk status` and the alert-once rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthState {
    /// `mailboxes.NAME` or `outbound`.
    pub name: String,
    /// Whether the last refresh worked.
    pub ok: bool,
    /// When a token was last obtained (RFC 3339).
    pub last_refresh: Option<String>,
    /// When that token expires.
    pub expires_at: Option<String>,
    /// Why the last refresh failed (no secrets in it).
    pub last_error: Option<String>,
    /// Since when refreshes fail.
    pub failing_since: Option<String>,
    /// When the admins were told (once per failure).
    pub alerted_at: Option<String>,
}

const OAUTH_SELECT: &str = "SELECT name, ok, last_refresh, expires_at, last_error, failing_since, alerted_at FROM oauth_state";

fn oauth_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OAuthState> {
    Ok(OAuthState {
        name: r.get(0)?,
        ok: r.get(1)?,
        last_refresh: r.get(2)?,
        expires_at: r.get(3)?,
        last_error: r.get(4)?,
        failing_since: r.get(5)?,
        alerted_at: r.get(6)?,
    })
}

/// Numbered migrations, applied in order at open; `PRAGMA user_version` records the last one.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"), include_str!("migrations/0002_guard.sql"), include_str!("migrations/0003_agents.sql"),
    include_str!("migrations/0004_left_on_server.sql"),
    include_str!("migrations/0005_service_desk.sql"),
    include_str!("migrations/0006_cis.sql"),
    include_str!("migrations/0007_approvals_groups.sql"),
    include_str!("migrations/0008_resolved_at.sql"),
    include_str!("migrations/0009_lifecycle.sql"),
    include_str!("migrations/0010_report_log.sql"),
    include_str!("migrations/0011_health.sql"),
    include_str!("migrations/0012_oauth_state.sql"),
    // 0013 (search) goes here when merged.
    include_str!("migrations/0014_csat.sql"),
];

/// A storage failure. `is_transient` tells callers whether retrying later can help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("database busy or locked: {0}")]
    Busy(rusqlite::Error),
    #[error("database error: {0}")]
    Sql(rusqlite::Error),
    #[error("database {path} has schema version {found}, newer than this postdesk knows ({known})")]
    TooNew { path: PathBuf, found: i64, known: i64 },
    #[error("cannot create {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl StoreError {
    /// Busy/locked databases and full disks may clear up; schema problems will not.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Busy(_) => true,
            StoreError::Sql(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(e.code, rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure | rusqlite::ErrorCode::CannotOpen)
            }
            StoreError::Io { .. } => true,
            _ => false,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Busy(e)
            }
            _ => StoreError::Sql(e),
        }
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// Handle to the database; cheap to share behind an `Arc`. One connection, serialised by a mutex:
/// SQLite has one writer anyway, and reads are short.
pub struct Store {
    conn: Mutex<Connection>,
    /// The outbound worker's own connection, so recording a send never waits behind the Rust
    /// mutex of an ingest (the crash window between SMTP's 250 and `mark_sent` stays minimal).
    /// `None` for in-memory databases (a second connection would be another database).
    outbox: Option<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// IMAP position of a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub uid_validity: u32,
    pub last_uid: u32,
}

/// A ticket to create.
#[derive(Debug, Clone)]
pub struct NewTicket<'a> {
    pub subject: &'a str,
    pub queue: &'a str,
    pub priority: Priority,
    pub requester: &'a str,
    pub related_to: Option<TicketId>,
    pub now: &'a str,
}

/// An article to add (inbound message, outbound mail, note, system entry).
#[derive(Debug, Clone)]
pub struct NewArticle<'a> {
    pub ticket: TicketId,
    pub direction: Direction,
    pub kind: ArticleKind,
    pub from: &'a str,
    pub to: &'a [String],
    pub subject: &'a str,
    pub message_id: &'a str,
    pub body_text: &'a str,
    pub mailbox: Option<&'a str>,
    pub guard_class: Option<&'a str>,
    pub raw: Option<&'a [u8]>,
    pub attachments: &'a [AttachmentInfo],
    pub now: &'a str,
}

/// A rendered mail to queue for sending.
#[derive(Debug, Clone)]
pub struct NewOutbound<'a> {
    pub ticket: Option<TicketId>,
    pub article: Option<i64>,
    pub kind: ArticleKind,
    pub message_id: &'a str,
    pub envelope_from: &'a str,
    pub recipients: &'a [String],
    pub raw: &'a [u8],
    pub now: &'a str,
}

/// An address we stopped mailing because it bounced permanently (`postdesk undeliverable list`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UndeliverableMark {
    pub address: String,
    pub reason: String,
    /// When it last bounced (RFC 3339); the mark expires `guard.undeliverable_for` later.
    pub since: String,
}

/// A queued mail as the outbound worker sees it.
#[derive(Debug, Clone)]
pub struct QueuedMail {
    pub id: i64,
    pub ticket: Option<TicketId>,
    pub message_id: String,
    pub envelope_from: String,
    pub recipients: Vec<String>,
    pub raw: Vec<u8>,
    pub attempts: u32,
}

/// Counts of the outbound queue by state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub queued: u64,
    pub sent: u64,
    pub failed: u64,
}

/// One ticket's facts for `postdesk report`.
#[derive(Debug, Clone)]
pub struct ReportRow {
    pub id: TicketId,
    pub queue: String,
    pub ticket_type: String,
    pub status: Status,
    pub created_at: String,
    pub first_response_at: Option<String>,
    pub resolved_at: Option<String>,
    /// met | breached | running, when the ticket has such an SLA target.
    pub sla_first_response: Option<String>,
    pub sla_resolution: Option<String>,
    pub priority: Priority,
    pub tags: Vec<String>,
    /// Configuration items linked to the ticket.
    pub cis: Vec<String>,
}

/// Filter for `tickets list`.
#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    pub status: Option<Status>,
    pub queue: Option<String>,
    pub requester: Option<String>,
    /// Only tickets linked to this configuration item.
    pub ci: Option<String>,
    pub limit: Option<u32>,
}

/// What an earlier delivery of the same message became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorDelivery {
    pub article: Option<i64>,
    pub ticket: Option<TicketId>,
    pub outcome: String,
}

impl Store {
    /// Open (creating if needed) and migrate the database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::fsmode::private_dir(dir).map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
        }
        // 0600 whatever the umask (docs/SECURITY.md); SQLite keeps the mode for -wal and -shm.
        for f in [path.to_path_buf(), sent_log_path(path)] {
            crate::fsmode::private_file(&f).map_err(|source| StoreError::Io { path: f.clone(), source })?;
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Open { path: path.to_path_buf(), source })?;
        let mut store = Self::setup(conn, path.to_path_buf())?;
        let outbox = Connection::open(path).map_err(|source| StoreError::Open { path: path.to_path_buf(), source })?;
        configure(&outbox)?;
        attach_sent_log(&outbox, &sent_log_path(path))?;
        store.outbox = Some(Mutex::new(outbox));
        Ok(store)
    }

    /// A throwaway database for tests and dry runs.
    pub fn open_in_memory() -> Result<Store> {
        Self::setup(Connection::open_in_memory()?, PathBuf::from(":memory:"))
    }

    fn setup(conn: Connection, path: PathBuf) -> Result<Store> {
        configure(&conn)?;
        migrate(&conn, &path)?;
        let store = Store { conn: Mutex::new(conn), outbox: None, path };
        if store.path.as_os_str() == ":memory:" {
            attach_sent_log(&store.lock(), Path::new(":memory:"))?;
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction open (Tx rolls back on drop).
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_outbox(&self) -> MutexGuard<'_, Connection> {
        match &self.outbox {
            Some(m) => m.lock().unwrap_or_else(|e| e.into_inner()),
            None => self.lock(),
        }
    }

    /// Start a write transaction.
    pub fn begin(&self) -> Result<Tx<'_>> {
        let conn = self.lock();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(Tx { conn, done: false })
    }

    /// Where intake stopped in a mailbox.
    pub fn cursor(&self, mailbox: &str) -> Result<Option<Cursor>> {
        cursor(&self.lock(), mailbox)
    }

    /// The state of every OAuth2 login the daemon has used, by name (`mailboxes.NAME`, `outbound`).
    pub fn oauth_states(&self) -> Result<Vec<OAuthState>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!("{OAUTH_SELECT} ORDER BY name"))?;
        Ok(stmt.query_map([], oauth_row)?.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// A token refresh worked: the login is fine again (a later failure alerts anew).
    /// Returns the state before, so the caller can say the trouble ended.
    pub fn oauth_refreshed(&self, name: &str, now: &str, expires_at: &str) -> Result<Option<OAuthState>> {
        let conn = self.lock();
        let before = conn.prepare_cached(&format!("{OAUTH_SELECT} WHERE name = ?"))?.query_row([name], oauth_row).optional()?;
        conn.execute(
            "INSERT INTO oauth_state (name, ok, last_refresh, expires_at) VALUES (?1, 1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET ok = 1, last_refresh = ?2, expires_at = ?3, last_error = NULL, failing_since = NULL, alerted_at = NULL",
            params![name, now, expires_at],
        )?;
        Ok(before)
    }

    /// SLA targets whose warning or breach moment has come and was not yet announced.
    pub fn due_sla(&self, now: i64, limit: u32) -> Result<Vec<(TicketId, crate::sla::Target)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "{SLA_SELECT} WHERE met_at IS NULL AND paused_since IS NULL
             AND ((warned_at IS NULL AND warn_at <= ?1) OR (breached_at IS NULL AND due_at <= ?1)) ORDER BY due_at LIMIT ?2"
        ))?;
        let v = stmt.query_map(params![now, limit], sla_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v.into_iter().filter_map(|(id, t)| t.map(|t| (id, t))).collect())
    }

    /// The earliest pending warning or due time (the timer sleeps until then).
    pub fn next_sla_moment(&self) -> Result<Option<i64>> {
        Ok(self.lock().query_row(
            "SELECT MIN(CASE WHEN warned_at IS NULL THEN min(warn_at, due_at) ELSE due_at END) FROM sla_targets
             WHERE met_at IS NULL AND paused_since IS NULL AND breached_at IS NULL",
            [],
            |r| r.get(0),
        )?)
    }

    /// Facts for reports: every ticket created since `since` or still active, with its timings.
    pub fn report_rows(&self, since: &str) -> Result<Vec<ReportRow>> {
        report_rows(&self.lock(), since)
    }

    /// Tickets resolved before `before` (auto-close candidates).
    pub fn resolved_before(&self, before: &str) -> Result<Vec<TicketId>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT id FROM tickets WHERE status = 'resolved' AND resolved_at <= ? LIMIT 500")?;
        let v = stmt.query_map([before], |r| r.get(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    }

    /// Pending tickets waiting since before `before`; `unreminded` limits to those not reminded.
    pub fn pending_before(&self, before: &str, unreminded: bool) -> Result<Vec<TicketId>> {
        let conn = self.lock();
        let sql = if unreminded {
            "SELECT id FROM tickets WHERE status = 'pending' AND pending_since <= ? AND reminded_at IS NULL AND approval IS NOT 'requested' LIMIT 500"
        } else {
            "SELECT id FROM tickets WHERE status = 'pending' AND pending_since <= ? AND approval IS NOT 'requested' LIMIT 500"
        };
        let v = conn.prepare_cached(sql)?.query_map([before], |r| r.get(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    }

    /// UIDs of a mailbox that intake left untouched on purpose.
    pub fn left_on_server(&self, mailbox: &str, uid_validity: u32) -> Result<Vec<u32>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT uid FROM left_on_server WHERE mailbox = ? AND uid_validity = ?")?;
        let v = stmt.query_map(params![mailbox, uid_validity], |r| r.get(0))?.collect::<rusqlite::Result<Vec<u32>>>()?;
        Ok(v)
    }

    /// Tickets, newest first.
    pub fn list_tickets(&self, f: &TicketFilter) -> Result<Vec<Ticket>> {
        let conn = self.lock();
        let mut sql = String::from(TICKET_SELECT);
        sql.push_str(" WHERE 1=1");
        let mut args: Vec<String> = Vec::new();
        if let Some(s) = f.status {
            sql.push_str(" AND status = ?");
            args.push(s.as_str().into());
        }
        if let Some(q) = &f.queue {
            sql.push_str(" AND queue = ?");
            args.push(q.clone());
        }
        if let Some(r) = &f.requester {
            sql.push_str(" AND requester = ?");
            args.push(r.clone());
        }
        if let Some(ci) = &f.ci {
            sql.push_str(" AND id IN (SELECT ticket_id FROM ticket_cis WHERE ci = ? COLLATE NOCASE)");
            args.push(ci.clone());
        }
        sql.push_str(" ORDER BY id DESC");
        if let Some(l) = f.limit {
            sql.push_str(&format!(" LIMIT {l}"));
        }
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), ticket_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(|t| complete_ticket(&conn, t)).collect()
    }

    /// One ticket with its articles and events.
    pub fn ticket_detail(&self, id: TicketId) -> Result<Option<TicketDetail>> {
        let conn = self.lock();
        let Some(t) = conn.query_row(&format!("{TICKET_SELECT} WHERE id = ?"), [id], ticket_row).optional()? else {
            return Ok(None);
        };
        let ticket = complete_ticket(&conn, t)?;
        let mut stmt = conn.prepare(
            "SELECT id, direction, kind, from_addr, to_addrs, subject, message_id, body_text, created_at
             FROM articles WHERE ticket_id = ? ORDER BY id",
        )?;
        let mut articles = stmt
            .query_map([id], |r| {
                Ok(Article {
                    id: r.get(0)?,
                    direction: r.get::<_, String>(1)?.parse().unwrap_or(Direction::Inbound),
                    kind: r.get::<_, String>(2)?.parse().unwrap_or(ArticleKind::System),
                    from: r.get(3)?,
                    to: lines(&r.get::<_, String>(4)?),
                    subject: r.get(5)?,
                    message_id: r.get(6)?,
                    body_text: r.get(7)?,
                    created_at: r.get(8)?,
                    attachments: Vec::new(),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut att = conn.prepare("SELECT name, content_type, size FROM attachments WHERE article_id = ? ORDER BY id")?;
        for a in &mut articles {
            a.attachments = att
                .query_map([a.id], |r| Ok(AttachmentInfo { name: r.get(0)?, content_type: r.get(1)?, size: r.get::<_, i64>(2)? as u64 }))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
        }
        let mut ev = conn.prepare("SELECT kind, detail, created_at FROM events WHERE ticket_id = ? ORDER BY id")?;
        let events = ev
            .query_map([id], |r| Ok(Event { kind: r.get(0)?, detail: r.get(1)?, created_at: r.get(2)? }))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Some(TicketDetail { ticket, articles, events }))
    }

    /// How many tickets each configuration item is linked to.
    pub fn ci_ticket_counts(&self) -> Result<BTreeMap<String, u64>> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT lower(ci), COUNT(*) FROM ticket_cis GROUP BY lower(ci)")?;
        let v = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?.collect::<rusqlite::Result<BTreeMap<_, _>>>()?;
        Ok(v)
    }

    /// The raw bytes of an article, as received or as sent.
    pub fn raw_message(&self, article: i64) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().query_row("SELECT raw FROM raw_messages WHERE article_id = ?", [article], |r| r.get(0)).optional()?)
    }

    /// Mail due for a (re)try at `now`, in sending order: what an agent wrote first (a person is
    /// waiting on it), then the queues in turn — the oldest due mail of each queue, then the
    /// second oldest of each, and so on — so a backlog in one queue never holds up another
    /// queue's acknowledgements. Oldest first within a queue.
    pub fn due_outbound(&self, now: &str, limit: u32) -> Result<Vec<QueuedMail>> {
        let conn = self.lock_outbox();
        let mut stmt = conn.prepare_cached(
            "WITH due AS (
                SELECT o.id, o.ticket_id, o.message_id, o.envelope_from, o.recipients, o.attempts, o.next_attempt_at,
                       o.kind = 'agent_reply' AS by_agent, coalesce(t.queue, '') AS lane
                FROM main.outbox o LEFT JOIN main.tickets t ON t.id = o.ticket_id
                WHERE o.state = 'queued' AND o.next_attempt_at <= ?1 AND o.id NOT IN (SELECT outbox_id FROM sentlog.sent)
             ), ranked AS (
                SELECT *, row_number() OVER (PARTITION BY by_agent, lane ORDER BY next_attempt_at, id) AS turn FROM due
             ), picked AS (
                SELECT * FROM ranked ORDER BY by_agent DESC, turn, next_attempt_at, id LIMIT ?2
             )
             SELECT p.id, p.ticket_id, p.message_id, p.envelope_from, p.recipients, o.raw, p.attempts
             FROM picked p JOIN main.outbox o ON o.id = p.id
             ORDER BY p.by_agent DESC, p.turn, p.next_attempt_at, p.id",
        )?;
        let rows = stmt
            .query_map(params![now, limit], |r| {
                Ok(QueuedMail {
                    id: r.get(0)?,
                    ticket: r.get(1)?,
                    message_id: r.get(2)?,
                    envelope_from: r.get(3)?,
                    recipients: lines(&r.get::<_, String>(4)?),
                    raw: r.get(5)?,
                    attempts: r.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The earliest time a queued mail becomes due, if any is queued.
    pub fn next_outbound_due(&self) -> Result<Option<String>> {
        Ok(self.lock_outbox().query_row(
            "SELECT MIN(next_attempt_at) FROM main.outbox WHERE state = 'queued' AND id NOT IN (SELECT outbox_id FROM sentlog.sent)",
            [],
            |r| r.get(0),
        )?)
    }

    /// Record a successful hand-over to the transport. Written to the separate sent log, whose
    /// lock ingest never holds: the time between the server's 250 and this commit is the only
    /// window in which a crash makes a mail go out twice, so it must not wait for anything.
    pub fn mark_sent(&self, id: i64, now: &str) -> Result<()> {
        self.lock_outbox().prepare_cached("INSERT OR IGNORE INTO sentlog.sent (outbox_id, sent_at, confirmed) VALUES (?, ?, 0)")?.execute(params![id, now])?;
        Ok(())
    }

    /// The server answered 250 for a marked send.
    pub fn confirm_sent(&self, id: i64) -> Result<()> {
        self.lock_outbox().prepare_cached("UPDATE sentlog.sent SET confirmed = 1 WHERE outbox_id = ?")?.execute([id])?;
        Ok(())
    }

    /// The server refused a marked send after all: it is not sent.
    pub fn unmark_sent(&self, id: i64) -> Result<()> {
        self.lock_outbox().prepare_cached("DELETE FROM sentlog.sent WHERE outbox_id = ?")?.execute([id])?;
        Ok(())
    }

    /// Move sent marks from the sent log into the outbox table (idle-time housekeeping; safe to
    /// repeat after a crash at any point).
    pub fn fold_sent(&self) -> Result<usize> {
        let conn = self.lock_outbox();
        let marks: Vec<(i64, String, bool)> =
            conn.prepare_cached("SELECT outbox_id, sent_at, confirmed FROM sentlog.sent")?.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<_>>()?;
        if marks.is_empty() {
            return Ok(0);
        }
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let done = (|| -> Result<()> {
            let mut up = conn.prepare_cached("UPDATE main.outbox SET state = 'sent', attempts = attempts + 1, sent_at = ?2, last_error = NULL WHERE id = ?1 AND state = 'queued'")?;
            let mut ev = conn.prepare_cached(
                "INSERT INTO main.events (ticket_id, kind, detail, created_at) SELECT ticket_id, 'delivery_unconfirmed',
                 'the daemon stopped while the server was accepting mail <' || message_id || '>; counted as sent (it had the whole message)', ?2
                 FROM main.outbox WHERE id = ?1 AND ticket_id IS NOT NULL",
            )?;
            for (id, at, confirmed) in &marks {
                up.execute(params![id, at])?;
                if !confirmed {
                    ev.execute(params![id, at])?;
                }
            }
            Ok(())
        })();
        match done {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        let mut del = conn.prepare_cached("DELETE FROM sentlog.sent WHERE outbox_id = ?")?;
        for (id, _, _) in &marks {
            del.execute([id])?;
        }
        Ok(marks.len())
    }

    /// Record a transient failure and when to try again.
    pub fn mark_retry(&self, id: i64, error: &str, next_at: &str) -> Result<()> {
        self.lock_outbox().execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 WHERE id = ?1",
            params![id, error, next_at],
        )?;
        Ok(())
    }

    /// Record a permanent failure, on the outbox row and on the ticket's audit trail.
    pub fn mark_failed(&self, id: i64, error: &str, now: &str) -> Result<()> {
        let mut tx = self.begin()?;
        let ticket: Option<TicketId> = tx.conn.query_row(
            "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ?2 WHERE id = ?1 RETURNING ticket_id",
            params![id, error],
            |r| r.get(0),
        )?;
        let (mid, rcpts): (String, String) = tx.conn.query_row("SELECT message_id, recipients FROM outbox WHERE id = ?", [id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if let Some(t) = ticket {
            tx.event(t, "delivery_failed", &format!("mail <{mid}> to {} failed permanently: {error}", rcpts.replace('\n', ", ")), now)?;
        }
        tx.commit()
    }

    pub fn outbox_counts(&self) -> Result<OutboxCounts> {
        let conn = self.lock_outbox();
        let mut stmt = conn.prepare(
            "SELECT CASE WHEN id IN (SELECT outbox_id FROM sentlog.sent) THEN 'sent' ELSE state END, COUNT(*) FROM main.outbox GROUP BY 1",
        )?;
        let mut c = OutboxCounts::default();
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (state, n) = row?;
            match state.as_str() {
                "queued" => c.queued = n as u64,
                "sent" => c.sent = n as u64,
                "failed" => c.failed = n as u64,
                _ => {}
            }
        }
        Ok(c)
    }

    /// Undeliverable marks set at or after `not_before` (older ones have expired), by address.
    pub fn undeliverable_marks(&self, not_before: &str) -> Result<Vec<UndeliverableMark>> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT address, reason, since FROM undeliverable WHERE since >= ? ORDER BY address")?;
        let rows = stmt.query_map([not_before], |r| Ok(UndeliverableMark { address: r.get(0)?, reason: r.get(1)?, since: r.get(2)? }))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Number of quarantined messages, by reason.
    pub fn quarantine_counts(&self) -> Result<Vec<(String, u64)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT reason, COUNT(*) FROM quarantine GROUP BY reason ORDER BY reason")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

/// A write transaction. Dropped without [`Tx::commit`], it rolls back.
pub struct Tx<'a> {
    conn: MutexGuard<'a, Connection>,
    done: bool,
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl Tx<'_> {
    pub fn commit(mut self) -> Result<()> {
        self.conn.execute_batch("COMMIT")?;
        self.done = true;
        Ok(())
    }

    /// Whether this exact message was stored before (same Message-ID and content).
    pub fn prior_delivery(&self, dedupe_key: &str) -> Result<Option<PriorDelivery>> {
        Ok(self
            .conn
            .query_row(
                "SELECT d.article_id, a.ticket_id, d.outcome FROM deliveries d LEFT JOIN articles a ON a.id = d.article_id WHERE d.dedupe_key = ?",
                [dedupe_key],
                |r| Ok(PriorDelivery { article: r.get(0)?, ticket: r.get(1)?, outcome: r.get(2)? }),
            )
            .optional()?)
    }

    /// Remember a delivery so a second copy is recognised.
    /// Forget that a message was refused (a dedupe record without an article), so a released
    /// copy is processed instead of taken for a duplicate.
    pub fn forget_refusal(&mut self, dedupe_key: &str) -> Result<()> {
        self.conn.execute("DELETE FROM deliveries WHERE dedupe_key = ? AND article_id IS NULL", [dedupe_key])?;
        Ok(())
    }

    pub fn delete_quarantined(&mut self, id: i64) -> Result<bool> {
        Ok(self.conn.execute("DELETE FROM quarantine WHERE id = ?", [id])? == 1)
    }

    pub fn record_delivery(&mut self, dedupe_key: &str, article: Option<i64>, outcome: &str, now: &str) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO deliveries (dedupe_key, article_id, outcome, created_at) VALUES (?, ?, ?, ?)",
            params![dedupe_key, article, outcome, now],
        )?;
        Ok(())
    }

    pub fn create_ticket(&mut self, t: &NewTicket<'_>) -> Result<TicketId> {
        let id = self.conn.query_row(
            "INSERT INTO tickets (subject, status, priority, queue, requester, requester_domain, related_to, created_at, updated_at)
             VALUES (?1, 'new', ?2, ?3, ?4, ?5, ?6, ?7, ?7) RETURNING id",
            params![t.subject, t.priority.as_str(), t.queue, t.requester, domain_of(t.requester), t.related_to, t.now],
            |r| r.get(0),
        )?;
        if !t.requester.is_empty() {
            self.add_participant(id, t.requester, "requester")?;
        }
        Ok(id)
    }

    /// Add someone to a ticket's conversation (no-op if already there).
    pub fn add_participant(&mut self, ticket: TicketId, email: &str, role: &str) -> Result<()> {
        self.conn.execute("INSERT OR IGNORE INTO participants (ticket_id, email, role) VALUES (?, ?, ?)", params![ticket, email, role])?;
        Ok(())
    }

    pub fn set_status(&mut self, ticket: TicketId, status: Status, now: &str) -> Result<()> {
        // resolved_at: set when the ticket is resolved or closed (first time), cleared on reopen.
        self.conn.execute(
            "UPDATE tickets SET status = ?2, updated_at = ?3,
             resolved_at = CASE WHEN ?2 IN ('resolved','closed') THEN coalesce(resolved_at, ?3) ELSE NULL END,
             pending_since = CASE WHEN ?2 = 'pending' THEN coalesce(pending_since, ?3) ELSE NULL END,
             reminded_at = CASE WHEN ?2 = 'pending' THEN reminded_at ELSE NULL END WHERE id = ?1",
            params![ticket, status.as_str(), now],
        )?;
        Ok(())
    }

    /// Bump `updated_at` (new activity).
    pub fn touch(&mut self, ticket: TicketId, now: &str) -> Result<()> {
        self.conn.execute("UPDATE tickets SET updated_at = ?2 WHERE id = ?1", params![ticket, now])?;
        Ok(())
    }

    /// Add an article (and its raw bytes, attachments and Message-ID).
    pub fn add_article(&mut self, a: &NewArticle<'_>) -> Result<i64> {
        let id: i64 = self.conn.query_row(
            "INSERT INTO articles (ticket_id, direction, kind, from_addr, to_addrs, subject, message_id, body_text, mailbox, guard_class, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            params![
                a.ticket,
                a.direction.as_str(),
                a.kind.as_str(),
                a.from,
                a.to.join("\n"),
                a.subject,
                a.message_id,
                a.body_text,
                a.mailbox,
                a.guard_class,
                a.now
            ],
            |r| r.get(0),
        )?;
        if let Some(raw) = a.raw {
            self.conn.execute("INSERT INTO raw_messages (article_id, raw) VALUES (?, ?)", params![id, raw])?;
        }
        for att in a.attachments {
            self.conn.execute(
                "INSERT INTO attachments (article_id, name, content_type, size) VALUES (?, ?, ?, ?)",
                params![id, att.name, att.content_type, att.size as i64],
            )?;
        }
        if !a.message_id.is_empty() {
            self.conn.execute(
                "INSERT OR IGNORE INTO message_ids (message_id, ticket_id, article_id) VALUES (?, ?, ?)",
                params![a.message_id, a.ticket, id],
            )?;
        }
        Ok(id)
    }

    /// Queue a rendered mail.
    pub fn enqueue(&mut self, m: &NewOutbound<'_>) -> Result<i64> {
        Ok(self.conn.query_row(
            "INSERT INTO outbox (ticket_id, article_id, kind, message_id, envelope_from, recipients, raw, state, next_attempt_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?8) RETURNING id",
            params![m.ticket, m.article, m.kind.as_str(), m.message_id, m.envelope_from, m.recipients.join("\n"), m.raw, m.now],
            |r| r.get(0),
        )?)
    }

    /// Append to a ticket's audit trail.
    pub fn event(&mut self, ticket: TicketId, kind: &str, detail: &str, now: &str) -> Result<()> {
        self.conn.execute("INSERT INTO events (ticket_id, kind, detail, created_at) VALUES (?, ?, ?, ?)", params![ticket, kind, detail, now])?;
        Ok(())
    }

    /// Keep a message we could not or would not process, with the reason.
    pub fn quarantine(&mut self, mailbox: &str, reason: &str, detail: &str, sha256: &str, raw: &[u8], now: &str) -> Result<i64> {
        Ok(self.conn.query_row(
            "INSERT INTO quarantine (mailbox, reason, detail, sha256, raw, created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            params![mailbox, reason, detail, sha256, raw, now],
            |r| r.get(0),
        )?)
    }

    pub fn cursor(&self, mailbox: &str) -> Result<Option<Cursor>> {
        cursor(&self.conn, mailbox)
    }

    /// Move a mailbox's cursor; part of the transaction that stored the message at `last_uid`.
    pub fn advance_cursor(&mut self, mailbox: &str, c: Cursor, now: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO mailbox_cursors (mailbox, uid_validity, last_uid, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(mailbox) DO UPDATE SET uid_validity = ?2, last_uid = ?3, updated_at = ?4",
            params![mailbox, c.uid_validity, c.last_uid, now],
        )?;
        Ok(())
    }

    /// The SLA targets of a ticket.
    pub fn sla_targets(&self, ticket: TicketId) -> Result<Vec<crate::sla::Target>> {
        let mut stmt = self.conn.prepare_cached(&format!("{SLA_SELECT} WHERE ticket_id = ? ORDER BY kind"))?;
        let v = stmt.query_map([ticket], |r| sla_row(r).map(|(_, t)| t))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v.into_iter().flatten().collect())
    }

    /// Insert or replace one SLA target.
    pub fn put_sla_target(&mut self, ticket: TicketId, t: &crate::sla::Target) -> Result<()> {
        self.conn.prepare_cached(
            "INSERT OR REPLACE INTO sla_targets (ticket_id, kind, started_at, target_secs, paused_secs, paused_since, due_at, warn_at, warned_at, breached_at, met_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?
        .execute(params![ticket, t.kind.as_str(), t.started_at, t.target_secs, t.paused_secs, t.paused_since, t.due_at, t.warn_at, t.warned_at, t.breached_at, t.met_at])?;
        Ok(())
    }

    /// Set the ticket's SLA policy, service and type (rules, catalog, commands).
    pub fn set_service_fields(&mut self, ticket: TicketId, sla_policy: Option<&str>, service: Option<&str>, ticket_type: Option<&str>) -> Result<()> {
        self.conn.execute(
            "UPDATE tickets SET sla_policy = coalesce(?2, sla_policy), service = coalesce(?3, service), ticket_type = coalesce(?4, ticket_type) WHERE id = ?1",
            params![ticket, sla_policy, service, ticket_type],
        )?;
        Ok(())
    }

    /// The ticket's SLA policy name, if any.
    pub fn ticket_sla_policy(&self, ticket: TicketId) -> Result<Option<String>> {
        Ok(self.conn.prepare_cached("SELECT sla_policy FROM tickets WHERE id = ?")?.query_row([ticket], |r| r.get(0)).optional()?.flatten())
    }

    /// The active tickets (new, open, pending) a customer opened, newest first.
    pub fn active_tickets_of(&self, requester: &str) -> Result<Vec<Ticket>> {
        let mut stmt = self.conn.prepare_cached(&format!("{TICKET_SELECT} WHERE requester = ? AND status IN ('new','open','pending') ORDER BY id DESC LIMIT 100"))?;
        let rows = stmt.query_map([requester], ticket_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(|t| complete_ticket(&self.conn, t)).collect()
    }

    pub fn mark_reminded(&mut self, ticket: TicketId, now: &str) -> Result<()> {
        self.conn.execute("UPDATE tickets SET reminded_at = ?2 WHERE id = ?1", params![ticket, now])?;
        Ok(())
    }

    /// One OAuth2 login's state, inside a transaction.
    pub fn oauth_state(&self, name: &str) -> Result<Option<OAuthState>> {
        Ok(self.conn.prepare_cached(&format!("{OAUTH_SELECT} WHERE name = ?"))?.query_row([name], oauth_row).optional()?)
    }

    /// Record a failed refresh; `alerted` when the admins were told in this transaction.
    pub fn oauth_failed(&mut self, name: &str, error: &str, now: &str, alerted: bool) -> Result<()> {
        self.conn.execute(
            "INSERT INTO oauth_state (name, ok, last_error, failing_since, alerted_at) VALUES (?1, 0, ?2, ?3, CASE WHEN ?4 THEN ?3 END)
             ON CONFLICT (name) DO UPDATE SET ok = 0, last_error = ?2, failing_since = COALESCE(failing_since, ?3),
                 alerted_at = CASE WHEN ?4 THEN ?3 ELSE alerted_at END",
            params![name, error, now, alerted],
        )?;
        Ok(())
    }

    /// When a periodic report was last sent.
    pub fn report_sent_at(&self, kind: &str) -> Result<Option<String>> {
        Ok(self.conn.prepare_cached("SELECT sent_at FROM report_log WHERE kind = ?")?.query_row([kind], |r| r.get(0)).optional()?)
    }

    pub fn mark_report_sent(&mut self, kind: &str, now: &str) -> Result<()> {
        self.conn.execute("INSERT OR REPLACE INTO report_log (kind, sent_at) VALUES (?, ?)", params![kind, now])?;
        Ok(())
    }

    /// Facts for reports, inside a transaction.
    pub fn report_rows_tx(&self, since: &str) -> Result<Vec<ReportRow>> {
        report_rows(&self.conn, since)
    }

    /// Set the change-approval state.
    pub fn set_approval(&mut self, ticket: TicketId, state: &str, now: &str) -> Result<()> {
        self.conn.execute("UPDATE tickets SET approval = ?2, updated_at = ?3 WHERE id = ?1", params![ticket, state, now])?;
        Ok(())
    }

    /// Record that a ticket was handed to an external group.
    pub fn hand_to_group(&mut self, ticket: TicketId, group: &str, now: &str) -> Result<()> {
        self.conn.execute("INSERT OR IGNORE INTO ticket_groups (ticket_id, grp, since) VALUES (?, ?, ?)", params![ticket, group, now])?;
        Ok(())
    }

    /// Remember the group's own ticket number for our ticket (first one wins).
    pub fn set_group_ref(&mut self, ticket: TicketId, group: &str, external: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE ticket_groups SET external_ref = coalesce(external_ref, ?3) WHERE ticket_id = ?1 AND grp = ?2",
            params![ticket, group, external],
        )?;
        Ok(())
    }

    /// Our ticket for a group's ticket number.
    pub fn ticket_by_group_ref(&self, group: &str, external: &str) -> Result<Option<TicketId>> {
        Ok(self.conn.prepare_cached("SELECT ticket_id FROM ticket_groups WHERE grp = ? AND external_ref = ?")?.query_row(params![group, external], |r| r.get(0)).optional()?)
    }

    /// Link a configuration item to a ticket.
    pub fn link_ci(&mut self, ticket: TicketId, ci: &str) -> Result<()> {
        self.conn.execute("INSERT OR IGNORE INTO ticket_cis (ticket_id, ci) VALUES (?, ?)", params![ticket, ci])?;
        Ok(())
    }

    /// Remember a server message intake must leave untouched.
    pub fn leave_on_server(&mut self, mailbox: &str, c: Cursor, reason: &str) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO left_on_server (mailbox, uid_validity, uid, reason) VALUES (?, ?, ?, ?)",
            params![mailbox, c.uid_validity, c.last_uid, reason],
        )?;
        Ok(())
    }

    /// Tickets `requester` opened since `since`.
    pub fn tickets_opened_by(&self, requester: &str, since: &str) -> Result<u64> {
        Ok(self.conn.prepare_cached("SELECT COUNT(*) FROM tickets WHERE requester = ? AND created_at >= ?")?.query_row(params![requester, since], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Tickets opened from `domain` since `since`.
    pub fn tickets_opened_from_domain(&self, domain: &str, since: &str) -> Result<u64> {
        Ok(self.conn.prepare_cached("SELECT COUNT(*) FROM tickets WHERE requester_domain = ? AND created_at >= ?")?.query_row(params![domain, since], |r| r.get::<_, i64>(0))? as u64)
    }

    /// The most recently updated ticket of `requester` that is still active.
    pub fn latest_active_ticket(&self, requester: &str) -> Result<Option<TicketId>> {
        Ok(self
            .conn
            .prepare_cached("SELECT id FROM tickets WHERE requester = ? AND status IN ('new','open','pending') ORDER BY updated_at DESC, id DESC LIMIT 1")?
            .query_row([requester], |r| r.get(0))
            .optional()?)
    }

    /// The queue a ticket is in.
    pub fn ticket_queue(&self, ticket: TicketId) -> Result<Option<String>> {
        Ok(self.conn.prepare_cached("SELECT queue FROM tickets WHERE id = ?")?.query_row([ticket], |r| r.get(0)).optional()?)
    }

    /// When the ticket last changed (RFC 3339).
    pub fn ticket_updated_at(&self, ticket: TicketId) -> Result<Option<String>> {
        Ok(self.conn.prepare_cached("SELECT updated_at FROM tickets WHERE id = ?")?.query_row([ticket], |r| r.get(0)).optional()?)
    }

    /// Automatic mails queued to `recipient` since `since`.
    pub fn auto_mail_count(&self, recipient: &str, since: &str) -> Result<u64> {
        Ok(self.conn.prepare_cached("SELECT COUNT(*) FROM auto_mail_log WHERE recipient = ? AND created_at >= ?")?.query_row(params![recipient, since], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Whether `count` or more automatic mails were queued since `since`, to anyone. Reads at
    /// most the last `count` rows (they are written in time order), so no index is needed.
    pub fn auto_mail_total_reaches(&self, count: u32, since: &str) -> Result<bool> {
        let sql = "SELECT COUNT(*) FROM (SELECT created_at FROM auto_mail_log ORDER BY rowid DESC LIMIT ?1) WHERE created_at >= ?2";
        let n: i64 = self.conn.prepare_cached(sql)?.query_row(params![count, since], |r| r.get(0))?;
        Ok(n >= count as i64)
    }

    /// Desk answers without a ticket (status lists, catalog) sent to `recipient` since `since`.
    pub fn desk_answers_to(&self, recipient: &str, since: &str) -> Result<u64> {
        let sql = "SELECT COUNT(*) FROM auto_mail_log WHERE recipient = ? AND created_at >= ? AND ticket_id IS NULL";
        Ok(self.conn.prepare_cached(sql)?.query_row(params![recipient, since], |r| r.get::<_, i64>(0))? as u64)
    }

    pub fn log_auto_mail(&mut self, recipient: &str, ticket: Option<TicketId>, now: &str) -> Result<()> {
        self.conn.prepare_cached("INSERT INTO auto_mail_log (recipient, ticket_id, created_at) VALUES (?, ?, ?)")?.execute(params![recipient, ticket, now])?;
        Ok(())
    }

    /// Why an address must not be mailed (it bounced permanently at or after `not_before`), if so.
    pub fn undeliverable(&self, address: &str, not_before: &str) -> Result<Option<String>> {
        Ok(self.conn.prepare_cached("SELECT reason FROM undeliverable WHERE address = ? AND since >= ?")?.query_row([address, not_before], |r| r.get(0)).optional()?)
    }

    /// Mark (or mark again, restarting its expiry) an address that bounced permanently.
    pub fn mark_undeliverable(&mut self, address: &str, reason: &str, now: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO undeliverable (address, reason, since) VALUES (?1, ?2, ?3) ON CONFLICT(address) DO UPDATE SET reason = ?2, since = ?3",
            params![address, reason, now],
        )?;
        Ok(())
    }

    /// Forget a mark; true when there was one.
    pub fn clear_undeliverable(&mut self, address: &str) -> Result<bool> {
        Ok(self.conn.execute("DELETE FROM undeliverable WHERE address = ?", [address])? > 0)
    }

    /// The ticket and recipients of an outgoing mail of ours, by its Message-ID.
    pub fn our_mail(&self, message_id: &str) -> Result<Option<(TicketId, Vec<String>)>> {
        Ok(self
            .conn
            .prepare_cached("SELECT a.ticket_id, a.to_addrs FROM message_ids m JOIN articles a ON a.id = m.article_id WHERE m.message_id = ? AND a.direction = 'outbound'")?
            .query_row([message_id], |r| Ok((r.get(0)?, lines(&r.get::<_, String>(1)?))))
            .optional()?)
    }

    /// The whole ticket as listed (participants and tags included).
    pub fn ticket(&self, ticket: TicketId) -> Result<Option<Ticket>> {
        let t = self.conn.query_row(&format!("{TICKET_SELECT} WHERE id = ?"), [ticket], ticket_row).optional()?;
        t.map(|t| complete_ticket(&self.conn, t)).transpose()
    }

    pub fn set_owner(&mut self, ticket: TicketId, owner: Option<&str>, now: &str) -> Result<()> {
        self.conn.execute("UPDATE tickets SET owner = ?2, updated_at = ?3 WHERE id = ?1", params![ticket, owner, now])?;
        Ok(())
    }

    pub fn set_priority(&mut self, ticket: TicketId, p: Priority, now: &str) -> Result<()> {
        self.conn.execute("UPDATE tickets SET priority = ?2, updated_at = ?3 WHERE id = ?1", params![ticket, p.as_str(), now])?;
        Ok(())
    }

    pub fn set_queue(&mut self, ticket: TicketId, queue: &str, now: &str) -> Result<()> {
        self.conn.execute("UPDATE tickets SET queue = ?2, updated_at = ?3 WHERE id = ?1", params![ticket, queue, now])?;
        Ok(())
    }

    pub fn set_tier(&mut self, ticket: TicketId, tier: u8, now: &str) -> Result<()> {
        self.conn.execute("UPDATE tickets SET tier = ?2, updated_at = ?3 WHERE id = ?1", params![ticket, tier, now])?;
        Ok(())
    }

    pub fn add_tag(&mut self, ticket: TicketId, tag: &str) -> Result<()> {
        self.conn.execute("INSERT OR IGNORE INTO tags (ticket_id, tag) VALUES (?, ?)", params![ticket, tag])?;
        Ok(())
    }

    pub fn remove_tag(&mut self, ticket: TicketId, tag: &str) -> Result<()> {
        self.conn.execute("DELETE FROM tags WHERE ticket_id = ? AND tag = ?", params![ticket, tag])?;
        Ok(())
    }

    /// Record the first agent response (only the first one counts).
    pub fn mark_first_response(&mut self, ticket: TicketId, now: &str) -> Result<()> {
        self.conn.execute("UPDATE tickets SET first_response_at = ?2 WHERE id = ?1 AND first_response_at IS NULL", params![ticket, now])?;
        Ok(())
    }

    /// Remember that an agent worked this ticket.
    pub fn add_ticket_agent(&mut self, ticket: TicketId, email: &str) -> Result<()> {
        self.conn.execute("INSERT OR IGNORE INTO ticket_agents (ticket_id, email) VALUES (?, ?)", params![ticket, email])?;
        Ok(())
    }

    /// Agents who worked this ticket.
    pub fn ticket_agents(&self, ticket: TicketId) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached("SELECT email FROM ticket_agents WHERE ticket_id = ? ORDER BY email")?;
        let v = stmt.query_map([ticket], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    }

    /// Message-IDs of the customer-facing conversation, oldest first: what the customer sent and
    /// what we sent to customers. Agent notifications and notes are not part of it.
    pub fn customer_thread(&self, ticket: TicketId) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT message_id FROM articles WHERE ticket_id = ? AND message_id != ''
             AND (kind = 'customer' OR (direction = 'outbound' AND kind IN ('auto_reply', 'agent_reply'))) ORDER BY id",
        )?;
        let v = stmt.query_map([ticket], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    }

    /// The newest text the customer wrote on a ticket.
    pub fn latest_customer_text(&self, ticket: TicketId) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT body_text FROM articles WHERE ticket_id = ? AND kind = 'customer' ORDER BY id DESC LIMIT 1")?
            .query_row([ticket], |r| r.get(0))
            .optional()?)
    }

    /// The references (In-Reply-To chain) for mail we send on a ticket: its first and latest inbound Message-IDs.
    pub fn thread_ids(&self, ticket: TicketId) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT message_id FROM articles WHERE ticket_id = ? AND message_id != '' ORDER BY id",
        )?;
        let ids = stmt.query_map([ticket], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids)
    }
}

impl crate::thread::History for Tx<'_> {
    fn ticket_by_message_id(&mut self, id: &str) -> Result<Option<TicketId>> {
        Ok(self.conn.prepare_cached("SELECT ticket_id FROM message_ids WHERE message_id = ?")?.query_row([id], |r| r.get(0)).optional()?)
    }

    fn ticket_summary(&mut self, id: TicketId) -> Result<Option<(Status, Vec<String>)>> {
        let status: Option<String> = self.conn.prepare_cached("SELECT status FROM tickets WHERE id = ?")?.query_row([id], |r| r.get(0)).optional()?;
        let Some(status) = status else { return Ok(None) };
        let participants = self
            .conn
            .prepare_cached("SELECT email FROM participants WHERE ticket_id = ?")?
            .query_map([id], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Some((status.parse().unwrap_or(Status::Open), participants)))
    }
}

const SLA_SELECT: &str = "SELECT ticket_id, kind, started_at, target_secs, paused_secs, paused_since, due_at, warn_at, warned_at, breached_at, met_at FROM sla_targets";

fn sla_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(TicketId, Option<crate::sla::Target>)> {
    let kind: String = r.get(1)?;
    let t = crate::sla::Kind::parse(&kind).map(|kind| -> rusqlite::Result<crate::sla::Target> {
        Ok(crate::sla::Target {
            kind,
            started_at: r.get(2)?,
            target_secs: r.get(3)?,
            paused_secs: r.get(4)?,
            paused_since: r.get(5)?,
            due_at: r.get(6)?,
            warn_at: r.get(7)?,
            warned_at: r.get(8)?,
            breached_at: r.get(9)?,
            met_at: r.get(10)?,
        })
    });
    Ok((r.get(0)?, t.transpose()?))
}

const TICKET_SELECT: &str = "SELECT id, subject, status, priority, queue, owner, requester, created_at, updated_at, tier, first_response_at, ticket_type, service, sla_policy, approval FROM tickets";

fn ticket_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Ticket> {
    Ok(Ticket {
        id: r.get(0)?,
        reference: String::new(),
        subject: r.get(1)?,
        status: r.get::<_, String>(2)?.parse().unwrap_or(Status::Open),
        priority: r.get::<_, String>(3)?.parse().unwrap_or(Priority::Normal),
        queue: r.get(4)?,
        owner: r.get(5)?,
        requester: r.get(6)?,
        participants: Vec::new(),
        tags: Vec::new(),
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        tier: r.get(9)?,
        first_response_at: r.get(10)?,
        ticket_type: r.get(11)?,
        service: r.get(12)?,
        sla_policy: r.get(13)?,
        approval: r.get(14)?,
        cis: Vec::new(),
        groups: Vec::new(),
    })
}

fn complete_ticket(conn: &Connection, mut t: Ticket) -> Result<Ticket> {
    t.participants = conn
        .prepare_cached("SELECT email FROM participants WHERE ticket_id = ? ORDER BY role DESC, email")?
        .query_map([t.id], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    t.tags = conn
        .prepare_cached("SELECT tag FROM tags WHERE ticket_id = ? ORDER BY tag")?
        .query_map([t.id], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    t.cis = conn.prepare_cached("SELECT ci FROM ticket_cis WHERE ticket_id = ? ORDER BY ci")?.query_map([t.id], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
    t.groups = conn
        .prepare_cached("SELECT grp, external_ref FROM ticket_groups WHERE ticket_id = ? ORDER BY grp")?
        .query_map([t.id], |r| Ok(crate::ticket::GroupRef { group: r.get(0)?, external_ref: r.get(1)? }))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(t)
}

fn cursor(conn: &Connection, mailbox: &str) -> Result<Option<Cursor>> {
    Ok(conn
        .prepare_cached("SELECT uid_validity, last_uid FROM mailbox_cursors WHERE mailbox = ?")?
        .query_row([mailbox], |r| Ok(Cursor { uid_validity: r.get(0)?, last_uid: r.get(1)? }))
        .optional()?)
}

/// Apply the migrations this database lacks. Each one runs under SQLite's write lock and reads
/// the schema version inside it, so processes opening a fresh database at once (an MTA starting
/// a dozen `deliver`s) apply each migration exactly once; the others wait, then see it done.
fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let known = MIGRATIONS.len() as i64;
    loop {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let step = (|| {
            let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version > known {
                return Err(StoreError::TooNew { path: path.to_path_buf(), found: version, known });
            }
            if version == known {
                return Ok(false);
            }
            conn.execute_batch(&format!("{}; PRAGMA user_version = {};", MIGRATIONS[version as usize], version + 1))?;
            Ok(true)
        })();
        match step {
            Ok(more) => {
                conn.execute_batch("COMMIT")?;
                if !more {
                    return Ok(());
                }
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
}

/// Settings every connection gets: WAL; FULL sync, so a commit survives power loss too before
/// intake moves or flags the server's copy; foreign keys.
fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// The sent log lives beside the database: `postdesk.db` → `postdesk.db-sent`.
fn sent_log_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-sent");
    PathBuf::from(p)
}

/// Attach the sent log as `sentlog` (its own file and lock, NORMAL sync: after a power loss the
/// worst case is one mail sent again, never one lost).
fn attach_sent_log(conn: &Connection, path: &Path) -> Result<()> {
    conn.execute("ATTACH DATABASE ?1 AS sentlog", [path.to_string_lossy()])?;
    conn.pragma_update(Some("sentlog"), "journal_mode", "WAL")?;
    conn.pragma_update(Some("sentlog"), "synchronous", "NORMAL")?;
    conn.execute_batch("CREATE TABLE IF NOT EXISTS sentlog.sent (outbox_id INTEGER PRIMARY KEY, sent_at TEXT NOT NULL, confirmed INTEGER NOT NULL DEFAULT 0)")?;
    Ok(())
}

fn report_rows(conn: &Connection, since: &str) -> Result<Vec<ReportRow>> {
    let mut stmt = conn.prepare(
            "SELECT t.id, t.queue, coalesce(t.ticket_type, ''), t.status, t.created_at, t.first_response_at, t.resolved_at,
                    (SELECT CASE WHEN breached_at IS NOT NULL THEN 'breached' WHEN met_at IS NOT NULL THEN 'met' ELSE 'running' END
                       FROM sla_targets s WHERE s.ticket_id = t.id AND s.kind = 'first_response'),
                    (SELECT CASE WHEN breached_at IS NOT NULL THEN 'breached' WHEN met_at IS NOT NULL THEN 'met' ELSE 'running' END
                       FROM sla_targets s WHERE s.ticket_id = t.id AND s.kind = 'resolution'),
                    t.priority, (SELECT group_concat(tag, char(31)) FROM tags g WHERE g.ticket_id = t.id),
                    (SELECT group_concat(ci, char(31)) FROM ticket_cis c WHERE c.ticket_id = t.id)
             FROM tickets t WHERE t.created_at >= ?1 OR t.status IN ('new','open','pending') OR t.resolved_at >= ?1",
        )?;
        let rows = stmt
            .query_map([since], |r| {
                Ok(ReportRow {
                    id: r.get(0)?,
                    queue: r.get(1)?,
                    ticket_type: r.get(2)?,
                    status: r.get::<_, String>(3)?.parse().unwrap_or(Status::Open),
                    created_at: r.get(4)?,
                    first_response_at: r.get(5)?,
                    resolved_at: r.get(6)?,
                    sla_first_response: r.get(7)?,
                    sla_resolution: r.get(8)?,
                    priority: r.get::<_, String>(9)?.parse().unwrap_or(Priority::Normal),
                    tags: split_unit(r.get(10)?),
                    cis: split_unit(r.get(11)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
}

/// A `group_concat(…, char(31))` list.
fn split_unit(s: Option<String>) -> Vec<String> {
    s.map(|s| s.split('\u{1f}').map(str::to_string).collect()).unwrap_or_default()
}

fn domain_of(addr: &str) -> String {
    addr.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default()
}

fn lines(s: &str) -> Vec<String> {
    s.split('\n').filter(|l| !l.is_empty()).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thread::History;

    #[test]
    fn migrations_apply_once_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x/y.db");
        drop(Store::open(&p).unwrap());
        let s = Store::open(&p).unwrap();
        assert!(s.list_tickets(&TicketFilter::default()).unwrap().is_empty());
    }

    #[test]
    fn a_dropped_transaction_leaves_nothing() {
        let s = Store::open_in_memory().unwrap();
        {
            let mut tx = s.begin().unwrap();
            tx.create_ticket(&NewTicket { subject: "x", queue: "q", priority: Priority::Normal, requester: "a@b.c", related_to: None, now: "t" })
                .unwrap();
            tx.advance_cursor("m", Cursor { uid_validity: 1, last_uid: 5 }, "t").unwrap();
        }
        assert!(s.list_tickets(&TicketFilter::default()).unwrap().is_empty());
        assert_eq!(s.cursor("m").unwrap(), None);
    }

    #[test]
    fn tickets_articles_and_message_ids() {
        let s = Store::open_in_memory().unwrap();
        let mut tx = s.begin().unwrap();
        let t = tx
            .create_ticket(&NewTicket { subject: "Printer", queue: "support", priority: Priority::Normal, requester: "a@b.c", related_to: None, now: "2026-01-01T00:00:00Z" })
            .unwrap();
        let att = [AttachmentInfo { name: "x.pdf".into(), content_type: "application/pdf".into(), size: 3 }];
        tx.add_article(&NewArticle {
            ticket: t,
            direction: Direction::Inbound,
            kind: ArticleKind::Customer,
            from: "a@b.c",
            to: &["support@x.y".to_string()],
            subject: "Printer",
            message_id: "m1@b.c",
            body_text: "jammed",
            mailbox: Some("support"),
            guard_class: Some("human"),
            raw: Some(b"raw"),
            attachments: &att,
            now: "2026-01-01T00:00:00Z",
        })
        .unwrap();
        assert_eq!(tx.ticket_by_message_id("m1@b.c").unwrap(), Some(t));
        assert_eq!(tx.ticket_summary(t).unwrap().unwrap().1, vec!["a@b.c".to_string()]);
        tx.commit().unwrap();
        let d = s.ticket_detail(t).unwrap().unwrap();
        assert_eq!(d.articles[0].attachments[0].name, "x.pdf");
        assert_eq!(s.raw_message(d.articles[0].id).unwrap().unwrap(), b"raw");
    }
}
