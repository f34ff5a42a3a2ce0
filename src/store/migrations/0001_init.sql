-- Tickets and their conversation.
CREATE TABLE tickets (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    subject     TEXT NOT NULL,
    status      TEXT NOT NULL,
    priority    TEXT NOT NULL,
    queue       TEXT NOT NULL,
    owner       TEXT,
    requester   TEXT NOT NULL,
    related_to  INTEGER REFERENCES tickets(id),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX tickets_status_queue ON tickets(status, queue);
CREATE INDEX tickets_requester ON tickets(requester);

CREATE TABLE participants (
    ticket_id INTEGER NOT NULL REFERENCES tickets(id),
    email     TEXT NOT NULL,
    role      TEXT NOT NULL,          -- requester | cc
    PRIMARY KEY (ticket_id, email)
) WITHOUT ROWID;

CREATE TABLE tags (
    ticket_id INTEGER NOT NULL REFERENCES tickets(id),
    tag       TEXT NOT NULL,
    PRIMARY KEY (ticket_id, tag)
) WITHOUT ROWID;

CREATE TABLE articles (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id   INTEGER NOT NULL REFERENCES tickets(id),
    direction   TEXT NOT NULL,        -- inbound | outbound
    kind        TEXT NOT NULL,        -- customer | agent_reply | note | auto_reply | notification | system
    from_addr   TEXT NOT NULL,
    to_addrs    TEXT NOT NULL,        -- newline-separated
    subject     TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    body_text   TEXT NOT NULL,
    mailbox     TEXT,
    guard_class TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX articles_ticket ON articles(ticket_id);

-- The raw bytes of every inbound article and every outbound mail, kept apart so scans stay small.
CREATE TABLE raw_messages (
    article_id INTEGER PRIMARY KEY REFERENCES articles(id),
    raw        BLOB NOT NULL
);

CREATE TABLE attachments (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    article_id   INTEGER NOT NULL REFERENCES articles(id),
    name         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL
);
CREATE INDEX attachments_article ON attachments(article_id);

-- Every Message-ID seen or sent, for threading by In-Reply-To/References.
CREATE TABLE message_ids (
    message_id TEXT PRIMARY KEY,
    ticket_id  INTEGER NOT NULL REFERENCES tickets(id),
    article_id INTEGER REFERENCES articles(id)
) WITHOUT ROWID;

-- Inbound deliveries already stored: the same message fetched twice or via two mailboxes is kept once.
CREATE TABLE deliveries (
    dedupe_key TEXT PRIMARY KEY,
    article_id INTEGER,
    outcome    TEXT NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;

-- IMAP position per mailbox; advanced in the same transaction that stores the message.
CREATE TABLE mailbox_cursors (
    mailbox      TEXT PRIMARY KEY,
    uid_validity INTEGER NOT NULL,
    last_uid     INTEGER NOT NULL,
    updated_at   TEXT NOT NULL
);

-- The outbound queue: rendered once, re-sent byte for byte.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id       INTEGER REFERENCES tickets(id),
    article_id      INTEGER REFERENCES articles(id),
    kind            TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    envelope_from   TEXT NOT NULL,
    recipients      TEXT NOT NULL,    -- newline-separated
    raw             BLOB NOT NULL,
    state           TEXT NOT NULL,    -- queued | sent | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    sent_at         TEXT
);
CREATE INDEX outbox_due ON outbox(state, next_attempt_at);

-- Audit trail per ticket (guard verdicts, suppressed mail, failures).
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id  INTEGER REFERENCES tickets(id),
    kind       TEXT NOT NULL,
    detail     TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX events_ticket ON events(ticket_id);

-- Messages that could not be processed or were deliberately dropped, with the reason.
CREATE TABLE quarantine (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    mailbox    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    detail     TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    raw        BLOB NOT NULL,
    created_at TEXT NOT NULL
);
