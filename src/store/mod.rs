//! Store: every byte of state lives here, in SQLite (WAL, numbered migrations). The API speaks the
//! domain (tickets, articles, outbox, cursors), so a PostgreSQL backend can implement the same
//! shape later. This is the only module that imports rusqlite.
//!
//! Writes happen in a [`Tx`] (`BEGIN IMMEDIATE`): one ingest = one transaction holding the article,
//! ticket changes, outbox rows and the mailbox cursor, so a crash leaves all or nothing.

mod audit;
mod csat;
mod deliveries;
mod knowledge;
mod oauth;
mod ops;
mod outbox;
mod sla;
mod tickets;

use outbox::{attach_sent_log, sent_log_path};
pub use csat::{MAX_REPORT_RATINGS, Rating};
pub use deliveries::{Cursor, PriorDelivery};
pub use knowledge::{KbArticle, KbState, SearchHit, Suggested};
pub use oauth::OAuthState;
pub use ops::{Health, Quarantined};
pub use outbox::{NewOutbound, OutboxCounts, QueuedMail, UndeliverableMark};
pub use sla::ReportRow;
pub use tickets::{NewArticle, NewTicket, TicketFilter};

use crate::ticket::{Article, ArticleKind, AttachmentInfo, Direction, Event, Priority, Status, Ticket, TicketDetail, TicketId};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

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
    include_str!("migrations/0013_knowledge.sql"),
    include_str!("migrations/0014_csat.sql"),
    include_str!("migrations/0015_scale.sql"),
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
    /// Opened when first used (`deliver` never needs it); unused for in-memory databases (a
    /// second connection would be another database).
    outbox: Mutex<Option<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
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
        Self::setup(conn, path.to_path_buf())
    }

    /// A throwaway database for tests and dry runs.
    pub fn open_in_memory() -> Result<Store> {
        Self::setup(Connection::open_in_memory()?, PathBuf::from(":memory:"))
    }

    fn setup(conn: Connection, path: PathBuf) -> Result<Store> {
        configure(&conn)?;
        migrate(&conn, &path)?;
        let store = Store { conn: Mutex::new(conn), outbox: Mutex::new(None), path };
        if store.in_memory() {
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

    fn in_memory(&self) -> bool {
        self.path.as_os_str() == ":memory:"
    }

    /// The outbound worker's connection (with the sent log attached), opened on first use.
    fn lock_outbox(&self) -> Result<OutboxConn<'_>> {
        if self.in_memory() {
            return Ok(OutboxConn::Main(self.lock()));
        }
        let mut guard = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let conn = Connection::open(&self.path).map_err(|source| StoreError::Open { path: self.path.clone(), source })?;
            configure(&conn)?;
            attach_sent_log(&conn, &sent_log_path(&self.path))?;
            *guard = Some(conn);
        }
        Ok(OutboxConn::Own(guard))
    }

    /// Start a write transaction.
    pub fn begin(&self) -> Result<Tx<'_>> {
        let conn = self.lock();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(Tx { conn, done: false })
    }

}

/// The connection the outbox functions use: their own, or the only one of an in-memory store.
enum OutboxConn<'a> {
    Own(MutexGuard<'a, Option<Connection>>),
    Main(MutexGuard<'a, Connection>),
}

impl std::ops::Deref for OutboxConn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            OutboxConn::Own(g) => g.as_ref().expect("opened by lock_outbox"),
            OutboxConn::Main(g) => g,
        }
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

}

/// Apply the migrations this database lacks. Each one runs under SQLite's write lock and reads
/// the schema version inside it, so processes opening a fresh database at once (an MTA starting
/// a dozen `deliver`s) apply each migration exactly once; the others wait, then see it done.
fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let known = MIGRATIONS.len() as i64;
    // The usual case, a database already up to date, needs no write lock.
    if conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? == known {
        return Ok(());
    }
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
    // Every statement is prepared once per connection (`prepare_cached`); there are ~90.
    conn.set_prepared_statement_cache_capacity(128);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
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
