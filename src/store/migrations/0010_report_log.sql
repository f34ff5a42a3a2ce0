-- When each periodic report was last sent.
CREATE TABLE report_log (
    kind    TEXT PRIMARY KEY,
    sent_at TEXT NOT NULL
) WITHOUT ROWID;
