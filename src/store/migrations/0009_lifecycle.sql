-- Lifecycle timers: since when a ticket waits for the customer, and whether they were reminded.
ALTER TABLE tickets ADD COLUMN pending_since TEXT;
ALTER TABLE tickets ADD COLUMN reminded_at TEXT;
CREATE INDEX tickets_status_updated ON tickets(status, resolved_at, pending_since);
