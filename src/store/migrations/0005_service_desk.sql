-- Service-desk fields a rule, the catalog or an agent sets.
ALTER TABLE tickets ADD COLUMN sla_policy TEXT;
ALTER TABLE tickets ADD COLUMN service TEXT;
ALTER TABLE tickets ADD COLUMN ticket_type TEXT;

-- One row per SLA target of a ticket. Times are Unix seconds; `due_at`/`warn_at` are derived
-- from started_at + target + time spent paused (pending), in the policy's business calendar.
CREATE TABLE sla_targets (
    ticket_id    INTEGER NOT NULL REFERENCES tickets(id),
    kind         TEXT NOT NULL,          -- first_response | next_response | resolution
    started_at   INTEGER NOT NULL,
    target_secs  INTEGER NOT NULL,
    paused_secs  INTEGER NOT NULL DEFAULT 0,
    paused_since INTEGER,
    due_at       INTEGER,
    warn_at      INTEGER,
    warned_at    INTEGER,
    breached_at  INTEGER,
    met_at       INTEGER,
    PRIMARY KEY (ticket_id, kind)
) WITHOUT ROWID;
CREATE INDEX sla_targets_due ON sla_targets(met_at, paused_since, due_at);
