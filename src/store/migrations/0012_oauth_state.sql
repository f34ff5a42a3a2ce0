-- OAuth2 logins (issue 13): per mailbox (`mailboxes.NAME`) or `outbound`, whether the last
-- token refresh worked, and whether the admins were told about the failure (once).
CREATE TABLE oauth_state (
    name         TEXT PRIMARY KEY,
    ok           INTEGER NOT NULL,
    last_refresh TEXT,
    expires_at   TEXT,
    last_error   TEXT,
    failing_since TEXT,
    alerted_at   TEXT
) WITHOUT ROWID;
