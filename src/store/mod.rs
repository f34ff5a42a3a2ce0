//! Store: every byte of state lives here, in SQLite (WAL, numbered migrations; the embedded
//! default) or PostgreSQL (several nodes on one database). The API speaks the domain (tickets,
//! articles, outbox, cursors) and is the same for both; the SQL is written once through
//! [`db::Conn`]. This is the only module that imports rusqlite or tokio-postgres.
//!
//! Writes happen in a [`Tx`] (SQLite's `BEGIN IMMEDIATE`; on PostgreSQL a transaction holding the
//! desk's advisory write lock): one ingest = one transaction holding the article, ticket changes,
//! outbox rows and the mailbox cursor, so a crash leaves all or nothing.

mod audit;
mod copy;
pub(crate) mod db;
mod lease;
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
use db::{Conn, OptionalExtension, PgConn, params};
pub use copy::{CopiedTable, Progress};
pub use lease::{Lease, LeaseState, host_name};
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
    #[error("PostgreSQL database {url}: {source}")]
    OpenPg { url: String, source: tokio_postgres::Error },
    #[error("database busy or locked: {0}")]
    Busy(rusqlite::Error),
    #[error("database error: {0}")]
    Sql(rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Pg(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("no such row")]
    NoRows,
    #[error("database returned an unexpected value: {0}")]
    Column(String),
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
            StoreError::OpenPg { .. } => true,
            StoreError::Pg(e) => pg_transient(e),
            _ => false,
        }
    }
}

/// Connection trouble, a server going down, too many clients, a deadlock or serialization
/// failure: trying again later can help. Constraint or syntax errors cannot.
fn pg_transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true, // no SQLSTATE: the connection itself failed
        Some(c) => {
            let c = c.code();
            c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") || c == "40001" || c == "40P01" || c == "55P03"
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::QueryReturnedNoRows => StoreError::NoRows,
            rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Busy(e)
            }
            _ => StoreError::Sql(e),
        }
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// Where the desk's state lives (`[store]`, docs/POSTGRES.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file (the embedded default); `:memory:` for throwaway stores.
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by any number of nodes.
    Postgres(String),
}

impl Backend {
    /// The database as logs and messages show it: the file, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            Backend::Sqlite(p) => p.display().to_string(),
            Backend::Postgres(url) => redact_url(url),
        }
    }
}

/// A PostgreSQL URL with any password (in the authority or a `password=` parameter) replaced
/// by `***`, for logs and messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "(not a URL)".to_string() };
    let (path_end, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let authority_end = path_end.find('/').unwrap_or(path_end.len());
    let (authority, path) = path_end.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((auth, host)) => match auth.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{auth}@{host}"),
        },
        None => authority.to_string(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(q) => format!("{scheme}://{authority}{path}?{q}"),
        None => format!("{scheme}://{authority}{path}"),
    }
}

/// Handle to the database; cheap to share behind an `Arc`. One connection, serialised by a mutex:
/// SQLite has one writer anyway, and reads are short; PostgreSQL writers take turns on the
/// desk's write lock across nodes.
pub struct Store {
    conn: Mutex<Conn>,
    /// The outbound worker's own connection, so recording a send never waits behind the Rust
    /// mutex of an ingest (the crash window between SMTP's 250 and `mark_sent` stays minimal).
    /// Opened when first used (`deliver` never needs it); unused for in-memory databases (a
    /// second connection would be another database).
    outbox: Mutex<Option<Conn>>,
    /// The lease connection (PostgreSQL), opened on first use.
    leases: Mutex<Option<Conn>>,
    backend: Backend,
    /// `backend`'s file, or the URL (redacted) for PostgreSQL.
    path: PathBuf,
    /// This process's name in leases and outbox claims (PostgreSQL); see [`Store::set_node`].
    node: Mutex<String>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend.display()).finish()
    }
}

impl Store {
    /// Open (creating if needed) and migrate the SQLite database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        Self::connect(&Backend::Sqlite(path.to_path_buf()))
    }

    /// Open and migrate the desk's database on either backend.
    pub fn connect(backend: &Backend) -> Result<Store> {
        let conn = open_conn(backend, true)?;
        let path = match backend {
            Backend::Sqlite(p) => p.clone(),
            Backend::Postgres(url) => PathBuf::from(redact_url(url)),
        };
        let node = Mutex::new(format!("{}/{}", host_name(), std::process::id()));
        let store = Store { conn: Mutex::new(conn), outbox: Mutex::new(None), leases: Mutex::new(None), backend: backend.clone(), path, node };
        if store.in_memory() {
            attach_sent_log(&*store.lock()?, Path::new(":memory:"))?;
        }
        Ok(store)
    }

    /// A throwaway database for tests and dry runs.
    pub fn open_in_memory() -> Result<Store> {
        Self::connect(&Backend::Sqlite(PathBuf::from(":memory:")))
    }

    /// The SQLite file (for PostgreSQL: the redacted URL).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Name this process in leases and claims (`[store] node` plus the process id).
    pub fn set_node(&self, node: &str) {
        *self.node.lock().unwrap_or_else(|e| e.into_inner()) = node.to_string();
    }

    pub fn node(&self) -> String {
        self.node.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// The main connection; a PostgreSQL connection that was lost is opened again.
    fn lock(&self) -> Result<MutexGuard<'_, Conn>> {
        // A panic while holding the lock cannot leave a transaction open (Tx rolls back on drop).
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if let Conn::Pg(p) = &*guard
            && p.is_closed()
        {
            *guard = open_conn(&self.backend, false)?;
        }
        Ok(guard)
    }

    fn in_memory(&self) -> bool {
        self.backend == Backend::Sqlite(PathBuf::from(":memory:"))
    }

    /// The outbound worker's connection, opened on first use: on SQLite with the sent log
    /// attached and a small page cache (it reads a few rows at a time: 512 KB, not SQLite's
    /// 2 MB); on PostgreSQL committing without waiting for the server's flush (see `mark_sent`).
    fn lock_outbox(&self) -> Result<OutboxConn<'_>> {
        self.lock_aux(&self.outbox, |conn, backend| match backend {
            Backend::Sqlite(path) => {
                attach_sent_log(conn, &sent_log_path(path))?;
                conn.execute_batch("PRAGMA main.cache_size = -512")
            }
            Backend::Postgres(_) => conn.execute_batch("SET synchronous_commit = off"),
        })
    }

    /// The leases' own PostgreSQL connection: renewing a lease must not wait behind this
    /// node's ingest, which itself may wait for another node's write lock.
    fn lock_leases(&self) -> Result<OutboxConn<'_>> {
        self.lock_aux(&self.leases, |_, _| Ok(()))
    }

    /// A second connection kept in `slot`, opened (and `setup`) on first use and again after
    /// it was lost.
    fn lock_aux<'a>(&'a self, slot: &'a Mutex<Option<Conn>>, setup: fn(&Conn, &Backend) -> Result<()>) -> Result<OutboxConn<'a>> {
        if self.in_memory() {
            return Ok(OutboxConn::Main(self.lock()?));
        }
        let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        let stale = match &*guard {
            None => true,
            Some(Conn::Pg(p)) => p.is_closed(),
            Some(Conn::Lite(_)) => false,
        };
        if stale {
            let conn = open_conn(&self.backend, false)?;
            setup(&conn, &self.backend)?;
            *guard = Some(conn);
        }
        Ok(OutboxConn::Own(guard))
    }

    /// Start a write transaction.
    pub fn begin(&self) -> Result<Tx<'_>> {
        let conn = self.lock()?;
        conn.begin_write()?;
        Ok(Tx { conn, done: false })
    }
}

/// A configured, migrated connection. `first`: the one `Store::connect` opens (it migrates and,
/// for SQLite, creates the files private).
fn open_conn(backend: &Backend, first: bool) -> Result<Conn> {
    match backend {
        Backend::Sqlite(path) if path.as_os_str() == ":memory:" => {
            let conn = Conn::Lite(rusqlite::Connection::open_in_memory()?);
            configure(&conn)?;
            migrate(&conn, path)?;
            Ok(conn)
        }
        Backend::Sqlite(path) => {
            if first {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    crate::fsmode::private_dir(dir).map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
                }
                // 0600 whatever the umask (docs/SECURITY.md); SQLite keeps the mode for -wal and -shm.
                for f in [path.to_path_buf(), sent_log_path(path)] {
                    crate::fsmode::private_file(&f).map_err(|source| StoreError::Io { path: f.clone(), source })?;
                }
            }
            let conn = Conn::Lite(rusqlite::Connection::open(path).map_err(|source| StoreError::Open { path: path.to_path_buf(), source })?);
            configure(&conn)?;
            if first {
                migrate(&conn, path)?;
            }
            Ok(conn)
        }
        Backend::Postgres(url) => {
            let conn = Conn::Pg(PgConn::connect(url).map_err(|source| StoreError::OpenPg { url: redact_url(url), source })?);
            if first {
                pg_migrate(&conn, url)?;
            }
            Ok(conn)
        }
    }
}

/// The connection the outbox functions use: their own, or the only one of an in-memory store.
enum OutboxConn<'a> {
    Own(MutexGuard<'a, Option<Conn>>),
    Main(MutexGuard<'a, Conn>),
}

impl std::ops::Deref for OutboxConn<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        match self {
            OutboxConn::Own(g) => g.as_ref().expect("opened by lock_outbox"),
            OutboxConn::Main(g) => g,
        }
    }
}

/// A write transaction. Dropped without [`Tx::commit`], it rolls back.
pub struct Tx<'a> {
    conn: MutexGuard<'a, Conn>,
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
fn migrate(conn: &Conn, path: &Path) -> Result<()> {
    let lite = conn.lite().expect("SQLite");
    let known = MIGRATIONS.len() as i64;
    // The usual case, a database already up to date, needs no write lock.
    if lite.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? == known {
        return Ok(());
    }
    loop {
        lite.execute_batch("BEGIN IMMEDIATE")?;
        let step = (|| {
            let version: i64 = lite.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version > known {
                return Err(StoreError::TooNew { path: path.to_path_buf(), found: version, known });
            }
            if version == known {
                return Ok(false);
            }
            lite.execute_batch(&format!("{}; PRAGMA user_version = {};", MIGRATIONS[version as usize], version + 1))?;
            Ok(true)
        })();
        match step {
            Ok(more) => {
                lite.execute_batch("COMMIT")?;
                if !more {
                    return Ok(());
                }
            }
            Err(e) => {
                let _ = lite.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
}

/// PostgreSQL's schema: `pg/schema.sql` is the state after SQLite's migration 15; later
/// migrations come as `(version, sql)` here, each applied once, under the desk's write lock,
/// in the transaction that records its version.
const PG_MIGRATIONS: &[(i64, &str)] = &[(15, include_str!("pg/schema.sql"))];

fn pg_migrate(conn: &Conn, url: &str) -> Result<()> {
    let known = PG_MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    let version = || -> Result<i64> {
        let exists: bool = conn.query_row("SELECT to_regclass('schema_version') IS NOT NULL", (), |r| r.get(0))?;
        if !exists {
            return Ok(0);
        }
        conn.query_row("SELECT coalesce(max(version), 0) FROM schema_version", (), |r| r.get(0))
    };
    if version()? == known {
        return Ok(());
    }
    conn.begin_write()?;
    let step = (|| {
        let found = version()?;
        if found > known {
            return Err(StoreError::TooNew { path: PathBuf::from(redact_url(url)), found, known });
        }
        for (v, sql) in PG_MIGRATIONS.iter().filter(|(v, _)| *v > found) {
            conn.execute_batch(sql)?;
            conn.execute("DELETE FROM schema_version", ())?;
            conn.execute("INSERT INTO schema_version (version) VALUES (?1)", [*v])?;
        }
        Ok(())
    })();
    match step {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Settings every SQLite connection gets: WAL; FULL sync, so a commit survives power loss too
/// before intake moves or flags the server's copy; foreign keys.
fn configure(conn: &Conn) -> Result<()> {
    let Some(conn) = conn.lite() else { return Ok(()) };
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
    fn database_urls_never_show_a_password() {
        assert_eq!(redact_url("postgres://pd:s3cret@db.example.org:5432/desk?sslmode=require"), "postgres://pd:***@db.example.org:5432/desk?sslmode=require");
        assert_eq!(redact_url("postgres://pd:p@ss@db/desk"), "postgres://pd:***@db/desk");
        assert_eq!(redact_url("postgresql://db/desk?user=pd&password=s3cret"), "postgresql://db/desk?user=pd&password=***");
        assert_eq!(redact_url("postgres://pd@127.0.0.1/desk"), "postgres://pd@127.0.0.1/desk");
        assert!(!redact_url("host=db password=s3cret").contains("s3cret"));
    }

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
