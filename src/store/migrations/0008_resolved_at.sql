-- When a ticket was last resolved or closed (reports: resolution time).
ALTER TABLE tickets ADD COLUMN resolved_at TEXT;
