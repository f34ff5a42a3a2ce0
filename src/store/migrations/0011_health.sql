-- How each long-running part of the daemon is doing, for `postdesk status` and the metrics:
-- one row per component (`mailbox:NAME`, `outbound`), written when its state changes and after
-- each successful round. `since` is when the current state (ok or not) began.
CREATE TABLE health (
    component  TEXT PRIMARY KEY,
    ok         INTEGER NOT NULL,
    since      TEXT NOT NULL,
    last_ok_at TEXT,
    detail     TEXT NOT NULL DEFAULT '',
    backlog    INTEGER,
    updated_at TEXT NOT NULL
);
