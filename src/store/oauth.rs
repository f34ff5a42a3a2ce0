//! OAuth2 login state per mailbox and for outbound: last refresh, failures, the alert-once mark.

use super::*;

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

pub(super) const OAUTH_SELECT: &str = "SELECT name, ok, last_refresh, expires_at, last_error, failing_since, alerted_at FROM oauth_state";

pub(super) fn oauth_row(r: &db::Row<'_>) -> Result<OAuthState> {
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

impl Store {
    /// The state of every OAuth2 login the daemon has used, by name (`mailboxes.NAME`, `outbound`).
    pub fn oauth_states(&self) -> Result<Vec<OAuthState>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(&format!("{OAUTH_SELECT} ORDER BY name"))?;
        stmt.query_map((), oauth_row)?.collect::<Result<Vec<_>>>()
    }

    /// A token refresh worked: the login is fine again (a later failure alerts anew).
    /// Returns the state before, so the caller can say the trouble ended.
    pub fn oauth_refreshed(&self, name: &str, now: &str, expires_at: &str) -> Result<Option<OAuthState>> {
        let conn = self.lock()?;
        let before = conn.prepare_cached(&format!("{OAUTH_SELECT} WHERE name = ?"))?.query_row([name], oauth_row).optional()?;
        conn.prepare_cached("INSERT INTO oauth_state (name, ok, last_refresh, expires_at) VALUES (?1, 1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET ok = 1, last_refresh = ?2, expires_at = ?3, last_error = NULL, failing_since = NULL, alerted_at = NULL")?.execute(params![name, now, expires_at],
        )?;
        Ok(before)
    }
}

impl Tx<'_> {
    /// One OAuth2 login's state, inside a transaction.
    pub fn oauth_state(&self, name: &str) -> Result<Option<OAuthState>> {
        self.conn.prepare_cached(&format!("{OAUTH_SELECT} WHERE name = ?"))?.query_row([name], oauth_row).optional()
    }

    /// Record a failed refresh; `alerted` when the admins were told in this transaction.
    pub fn oauth_failed(&mut self, name: &str, error: &str, now: &str, alerted: bool) -> Result<()> {
        self.conn.prepare_cached("INSERT INTO oauth_state (name, ok, last_error, failing_since, alerted_at) VALUES (?1, 0, ?2, ?3, CASE WHEN ?4 <> 0 THEN ?3 END)
             ON CONFLICT (name) DO UPDATE SET ok = 0, last_error = ?2, failing_since = COALESCE(oauth_state.failing_since, ?3),
                 alerted_at = CASE WHEN ?4 <> 0 THEN ?3 ELSE oauth_state.alerted_at END")?.execute(params![name, error, now, alerted],
        )?;
        Ok(())
    }
}
