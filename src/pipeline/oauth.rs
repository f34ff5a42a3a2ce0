//! OAuth2 login trouble, told once: the token events of every OAuth2 login (`oauth::TokenSource`)
//! are recorded in `oauth_state`; the first refresh failure an admin must fix queues one
//! `oauth_failed` mail to `[desk] admins`, in the same transaction that records it, so neither a
//! restart nor the retries repeat it. A refresh that works again clears the state.

use super::{Now, Pipeline};
use crate::desk::DeskHandle;
use crate::oauth::{AccessToken, TokenError, TokenEvents};
use crate::store::StoreError;

impl Pipeline {
    /// Record a failed refresh of login `name`; when an admin must act and nobody was told yet,
    /// queue the alert. Returns whether this failure is new (the caller logs it once).
    pub fn oauth_failed(&self, desk: &crate::desk::Desk, name: &str, account: &str, error: &TokenError) -> Result<bool, StoreError> {
        let now = Now::at(self.clock.now());
        let mut tx = self.store.begin()?;
        let before = tx.oauth_state(name)?;
        let new = before.as_ref().is_none_or(|s| s.ok);
        let told = before.as_ref().is_some_and(|s| s.alerted_at.is_some());
        let alert = error.needs_admin() && !told;
        if alert {
            let cfg = &desk.config;
            let queue = name
                .strip_prefix("mailboxes.")
                .and_then(|m| cfg.queue_of(m))
                .or_else(|| cfg.queues.values().next())
                .expect("validated config has a queue");
            let login = crate::oauth::login_command(name);
            if cfg.desk.admins.is_empty() {
                tracing::warn!(oauth = name, "no [desk] admins to tell about the failed OAuth2 login");
            }
            for to in &cfg.desk.admins {
                let ctx = serde_json::json!({
                    "desk": { "name": cfg.desk.name },
                    "queue": { "name": queue.name, "address": queue.address, "from_name": queue.from_name },
                    "oauth": { "name": name, "account": account, "error": error.to_string(), "login": login, "outbound": name == "outbound" },
                });
                super::mailer::send_auto(&mut tx, desk, &now, super::mailer::AutoMail::desk_notice(queue, to, "oauth_failed", ctx))?;
            }
        }
        tx.oauth_failed(name, &error.to_string(), &now.s, alert)?;
        tx.commit()?;
        if alert {
            self.outbox_wake.notify_one();
        }
        Ok(new)
    }
}

/// The daemon's [`TokenEvents`]: records every refresh, logs a failure once and its end once,
/// alerts the admins once per failure.
pub struct RecordTokenEvents {
    pub pipeline: Pipeline,
    pub desk: DeskHandle,
    /// The account the token is for (the login's username), named in the alert.
    pub account: String,
}

impl TokenEvents for RecordTokenEvents {
    fn refreshed(&self, name: &str, token: &AccessToken) {
        let now = crate::clock::rfc3339(self.pipeline.clock.now());
        match self.pipeline.store.oauth_refreshed(name, &now, &crate::clock::rfc3339(token.expires_at)) {
            Ok(Some(before)) if !before.ok => tracing::info!(oauth = name, "OAuth2 login works again"),
            Ok(_) => {}
            Err(e) => tracing::error!(oauth = name, error = %e, "cannot record the OAuth2 token state"),
        }
    }

    fn failed(&self, name: &str, error: &TokenError) {
        match self.pipeline.oauth_failed(&self.desk.current(), name, &self.account, error) {
            Ok(true) => tracing::error!(oauth = name, error = %error, "OAuth2 token refresh failed; retrying with backoff"),
            Ok(false) => tracing::debug!(oauth = name, error = %error, "OAuth2 token refresh still failing"),
            Err(e) => tracing::error!(oauth = name, error = %error, store_error = %e, "OAuth2 token refresh failed and cannot be recorded"),
        }
    }
}
