//! Leases: work that one node at a time may do (read an IMAP mailbox, run the timers). On
//! PostgreSQL a lease is a row with a holder, an expiry in the database's own clock (so the
//! nodes' clocks do not matter) and a fencing token that grows with every change of holder; the
//! holder renews it well before it expires, and another node takes it once it has expired. A
//! node that lost its lease finds out in its next write transaction ([`Tx::holds_lease`]) and
//! rolls back, so a node that was paused or cut off past the expiry cannot store mail the new
//! holder stores too. On SQLite one daemon owns the file (its pid lock), so every lease is held.

use super::*;
use std::time::Duration;

/// A lease this node holds, with the token its writes are fenced by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub token: i64,
}

/// What asking for a lease found.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseState {
    /// Ours until at least the time asked for.
    Held(Lease),
    /// Another node holds it for this much longer.
    HeldBy { holder: String, for_secs: f64 },
}

impl Store {
    /// Take or renew the lease `name` for `node` for `ttl`. Taking it from a node whose lease
    /// expired gives a new token; renewing keeps the token.
    pub fn take_lease(&self, name: &str, node: &str, ttl: Duration) -> Result<LeaseState> {
        if !self.is_postgres() {
            return Ok(LeaseState::Held(Lease { name: name.to_string(), token: 0 }));
        }
        let conn = self.lock_leases()?;
        let token: Option<i64> = conn
            .prepare_cached(
                "INSERT INTO leases (name, holder, expires_at, token) VALUES (?1, ?2, now() + make_interval(secs => ?3), 1)
                 ON CONFLICT (name) DO UPDATE SET
                    token = CASE WHEN leases.holder = excluded.holder THEN leases.token ELSE leases.token + 1 END,
                    holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at < now()
                 RETURNING token",
            )?
            .query_row(params![name, node, ttl.as_secs_f64()], |r| r.get(0))
            .optional()?;
        if let Some(token) = token {
            return Ok(LeaseState::Held(Lease { name: name.to_string(), token }));
        }
        let held = conn
            .prepare_cached("SELECT holder, extract(epoch FROM expires_at - now())::float8 FROM leases WHERE name = ?1")?
            .query_row([name], |r| Ok(LeaseState::HeldBy { holder: r.get(0)?, for_secs: r.get(1)? }))
            .optional()?;
        // Released between the two statements: ask again next time.
        Ok(held.unwrap_or(LeaseState::HeldBy { holder: String::new(), for_secs: 0.0 }))
    }

    /// Give a lease up (clean shutdown), so another node need not wait for it to expire.
    pub fn release_lease(&self, lease: &Lease, node: &str) -> Result<()> {
        if self.is_postgres() {
            self.lock_leases()?.execute("DELETE FROM leases WHERE name = ?1 AND holder = ?2 AND token = ?3", params![lease.name, node, lease.token])?;
        }
        Ok(())
    }

    /// Every lease and its holder (for `postdesk status`).
    pub fn leases(&self) -> Result<Vec<(String, String, f64)>> {
        if !self.is_postgres() {
            return Ok(Vec::new());
        }
        let conn = self.lock_leases()?;
        let mut stmt = conn.prepare_cached("SELECT name, holder, extract(epoch FROM expires_at - now())::float8 FROM leases ORDER BY name")?;
        stmt.query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect()
    }
}

impl Tx<'_> {
    /// Whether `lease` is still this node's, checked inside the write transaction that depends
    /// on it (the row is locked until commit, so it cannot change hands before then).
    pub fn holds_lease(&self, lease: &Lease, node: &str) -> Result<bool> {
        if !self.conn.is_pg() {
            return Ok(true);
        }
        let held: Option<i64> = self
            .conn
            .prepare_cached("SELECT token FROM leases WHERE name = ?1 AND holder = ?2 AND token = ?3 AND expires_at > now() FOR UPDATE")?
            .query_row(params![lease.name, node, lease.token], |r| r.get(0))
            .optional()?;
        Ok(held.is_some())
    }
}

/// This machine's name (the default `[store] node`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "postdesk".into())
}
