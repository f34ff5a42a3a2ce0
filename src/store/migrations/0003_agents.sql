-- Escalation tier and first response (agents by mail; SLA uses first_response_at).
ALTER TABLE tickets ADD COLUMN tier INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tickets ADD COLUMN first_response_at TEXT;

-- Agents who worked a ticket (they hear about its notes and replies).
CREATE TABLE ticket_agents (
    ticket_id INTEGER NOT NULL REFERENCES tickets(id),
    email     TEXT NOT NULL,
    PRIMARY KEY (ticket_id, email)
) WITHOUT ROWID;
