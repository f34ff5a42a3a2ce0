-- Flood control looks up recent tickets by sender and by sender domain.
ALTER TABLE tickets ADD COLUMN requester_domain TEXT NOT NULL DEFAULT '';
UPDATE tickets SET requester_domain = lower(substr(requester, instr(requester, '@') + 1));
CREATE INDEX tickets_requester_created ON tickets(requester, created_at);
CREATE INDEX tickets_domain_created ON tickets(requester_domain, created_at);

-- Every automatic mail queued, per recipient: the caps on automatic mail count these.
CREATE TABLE auto_mail_log (
    recipient  TEXT NOT NULL,
    ticket_id  INTEGER,
    created_at TEXT NOT NULL
);
CREATE INDEX auto_mail_log_recipient ON auto_mail_log(recipient, created_at);

-- Addresses that bounced permanently: we stop mailing them.
CREATE TABLE undeliverable (
    address TEXT PRIMARY KEY,
    reason  TEXT NOT NULL,
    since   TEXT NOT NULL
) WITHOUT ROWID;
