-- Knowledge (docs/KNOWLEDGE.md): full-text search, solutions, published articles, suggestions,
-- deflection.

-- Search over tickets: one row per customer message, agent reply and note (rowid = articles.id),
-- written by the trigger below inside the transaction that writes the article. Porter stemming
-- (English) over unicode61 with diacritics folded; the first 64 KiB of a body are indexed. An
-- external-content table: the text stays in `articles` only (snippets read it from there).
-- Articles are never updated or deleted; one that ever is must first be removed from the index
-- with FTS5's 'delete' command and the values it was indexed with.
CREATE VIRTUAL TABLE article_fts USING fts5(subject, body_text, content = 'articles', content_rowid = 'id', tokenize = 'porter unicode61 remove_diacritics 2');
CREATE TRIGGER article_fts_insert AFTER INSERT ON articles
WHEN new.kind IN ('customer', 'agent_reply', 'note')
BEGIN
    INSERT INTO article_fts (rowid, subject, body_text) VALUES (new.id, new.subject, substr(new.body_text, 1, 65536));
END;
INSERT INTO article_fts (rowid, subject, body_text)
    SELECT id, subject, substr(body_text, 1, 65536) FROM articles WHERE kind IN ('customer', 'agent_reply', 'note');

-- A ticket's solution (one per ticket), and what becomes of it: `solution` (recorded, not
-- public), `published` (a knowledge article: searchable by customers, suggested), `withdrawn`.
CREATE TABLE kb_articles (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id    INTEGER UNIQUE REFERENCES tickets(id),
    title        TEXT NOT NULL,
    body         TEXT NOT NULL,
    state        TEXT NOT NULL,
    author       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    published_at TEXT,
    published_by TEXT
);
CREATE INDEX kb_articles_state ON kb_articles(state);

-- Published articles only (rowid = kb_articles.id), kept in step by triggers.
CREATE VIRTUAL TABLE kb_fts USING fts5(title, body, tokenize = 'porter unicode61 remove_diacritics 2');
CREATE TRIGGER kb_fts_insert AFTER INSERT ON kb_articles WHEN new.state = 'published'
BEGIN
    INSERT INTO kb_fts (rowid, title, body) VALUES (new.id, new.title, new.body);
END;
CREATE TRIGGER kb_fts_update AFTER UPDATE ON kb_articles
BEGIN
    DELETE FROM kb_fts WHERE rowid = old.id;
    INSERT INTO kb_fts (rowid, title, body) SELECT new.id, new.title, new.body WHERE new.state = 'published';
END;

-- Published articles suggested in a ticket's acknowledgement, with their rank (1 = best) and how
-- many of the ticket's words they matched.
CREATE TABLE kb_suggestions (
    ticket_id  INTEGER NOT NULL REFERENCES tickets(id),
    article_id INTEGER NOT NULL REFERENCES kb_articles(id),
    rank       INTEGER NOT NULL,
    matched    INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (ticket_id, article_id)
) WITHOUT ROWID;
CREATE INDEX kb_suggestions_created ON kb_suggestions(created_at);

-- Tickets the customer closed after a suggestion, before any agent answered.
CREATE TABLE kb_deflections (
    ticket_id  INTEGER PRIMARY KEY REFERENCES tickets(id),
    created_at TEXT NOT NULL
);
