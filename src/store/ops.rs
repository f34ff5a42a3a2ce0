//! Store, operations side: the health each daemon task reports (read by `postdesk status` and
//! the metrics), quarantine administration, and the online backup.

use super::db::{self, OptionalExtension, params};
use super::{Result, Store, StoreError};

use std::path::Path;

/// One component's last reported state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    /// `mailbox:NAME` or `outbound`.
    pub component: String,
    pub ok: bool,
    /// When the current state began (RFC 3339).
    pub since: String,
    pub last_ok_at: Option<String>,
    /// The error while not ok; what it is doing while ok.
    pub detail: String,
    /// Messages waiting on the server (mailboxes), when known.
    pub backlog: Option<i64>,
    pub updated_at: String,
}

/// A quarantined message without its bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Quarantined {
    pub id: i64,
    pub mailbox: String,
    pub reason: String,
    pub detail: String,
    pub size: i64,
    pub created_at: String,
}

const QUARANTINE_SELECT: &str = "SELECT id, mailbox, reason, detail, length(raw), created_at FROM quarantine";

fn quarantined(r: &db::Row<'_>) -> Result<Quarantined> {
    Ok(Quarantined { id: r.get(0)?, mailbox: r.get(1)?, reason: r.get(2)?, detail: r.get(3)?, size: r.get(4)?, created_at: r.get(5)? })
}

impl Store {
    /// Record how `component` is doing; `since` moves only when `ok` changes, and a `None`
    /// backlog keeps the last known one.
    pub fn set_health(&self, component: &str, ok: bool, detail: &str, backlog: Option<i64>, now: &str) -> Result<()> {
        self.lock()?
            .prepare_cached(
                "INSERT INTO health (component, ok, since, last_ok_at, detail, backlog, updated_at)
                 VALUES (?1, ?2, ?5, CASE WHEN ?2 <> 0 THEN ?5 END, ?3, ?4, ?5)
                 ON CONFLICT(component) DO UPDATE SET
                   since = CASE WHEN health.ok = excluded.ok THEN health.since ELSE excluded.since END,
                   ok = excluded.ok,
                   last_ok_at = CASE WHEN excluded.ok <> 0 THEN excluded.updated_at ELSE health.last_ok_at END,
                   detail = excluded.detail,
                   backlog = coalesce(excluded.backlog, health.backlog),
                   updated_at = excluded.updated_at",
            )?
            .execute(params![component, ok, detail, backlog, now])?;
        Ok(())
    }

    pub fn health(&self) -> Result<Vec<Health>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached("SELECT component, ok, since, last_ok_at, detail, backlog, updated_at FROM health ORDER BY component")?;
        let rows = stmt
            .query_map((), |r| {
                Ok(Health { component: r.get(0)?, ok: r.get(1)?, since: r.get(2)?, last_ok_at: r.get(3)?, detail: r.get(4)?, backlog: r.get(5)?, updated_at: r.get(6)? })
            })?
            .collect::<Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// SLA warnings and breaches announced so far (each is announced once).
    pub fn sla_announced(&self) -> Result<(u64, u64)> {
        self.lock()?.query_row("SELECT count(warned_at), count(breached_at) FROM sla_targets", (), |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)))
    }

    /// When the oldest mail still waiting to be sent was queued.
    pub fn oldest_queued(&self) -> Result<Option<String>> {
        self.lock_outbox()?.query_row(
            "SELECT MIN(created_at) FROM outbox WHERE state = 'queued' AND id NOT IN (SELECT outbox_id FROM sentlog.sent)",
            (),
            |r| r.get(0),
        )
    }

    /// Quarantined messages, oldest first.
    pub fn quarantined(&self) -> Result<Vec<Quarantined>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(&format!("{QUARANTINE_SELECT} ORDER BY id"))?;
        let rows = stmt.query_map((), quarantined)?.collect::<Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// One quarantined message with its bytes as received.
    pub fn quarantined_message(&self, id: i64) -> Result<Option<(Quarantined, Vec<u8>)>> {
        let conn = self.lock()?;
        let q = conn.query_row(&format!("{QUARANTINE_SELECT} WHERE id = ?"), [id], quarantined).optional()?;
        let Some(q) = q else { return Ok(None) };
        let raw: Vec<u8> = conn.query_row("SELECT raw FROM quarantine WHERE id = ?", [id], |r| r.get(0))?;
        Ok(Some((q, raw)))
    }

    /// Drop a quarantined message; false when there was none with that id.
    pub fn delete_quarantined(&self, id: i64) -> Result<bool> {
        Ok(self.lock()?.execute("DELETE FROM quarantine WHERE id = ?", [id])? == 1)
    }

    /// A consistent copy of the sent log and then the database into `dir` (`postdesk.db`,
    /// `postdesk.db-sent`), with SQLite's online backup: the daemon goes on meanwhile. The sent
    /// log is copied first, so every send mark in the copy names an outbox row the copied
    /// database holds. Each file is copied in one step (one read snapshot), so a busy daemon
    /// cannot restart it over and over. `done` hears each file as it is finished.
    pub fn backup(&self, dir: &Path, done: &mut dyn FnMut(&Path)) -> Result<()> {
        use rusqlite::backup::Backup;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        crate::fsmode::private_dir(dir).map_err(io(dir))?;
        let (db, sent) = (dir.join("postdesk.db"), dir.join("postdesk.db-sent"));
        for f in [&db, &sent] {
            if f.exists() {
                return Err(StoreError::Io { path: f.clone(), source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "already exists; back up into a new folder") });
            }
        }
        let copy = |from: &rusqlite::Connection, name: &str, to: &Path| -> Result<()> {
            crate::fsmode::private_file(to).map_err(io(to))?;
            let mut out = rusqlite::Connection::open(to).map_err(|source| StoreError::Open { path: to.to_path_buf(), source })?;
            let backup = Backup::new_with_names(from, name, &mut out, "main")?;
            // All pages in one step; a writer holding its lock at that moment makes us wait.
            loop {
                match backup.step(-1)? {
                    rusqlite::backup::StepResult::Done => return Ok(()),
                    _ => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        };
        let not_sqlite = || StoreError::Unsupported("`postdesk backup` copies SQLite desks; back PostgreSQL up with pg_dump or its base backups");
        copy(self.lock_outbox()?.lite().ok_or_else(not_sqlite)?, "sentlog", &sent)?;
        done(&sent);
        copy(self.lock()?.lite().ok_or_else(not_sqlite)?, "main", &db)?;
        done(&db);
        Ok(())
    }
}
