-- Server messages intake deliberately left alone (over the size limit): never flagged or moved.
CREATE TABLE left_on_server (
    mailbox      TEXT NOT NULL,
    uid_validity INTEGER NOT NULL,
    uid          INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    PRIMARY KEY (mailbox, uid_validity, uid)
) WITHOUT ROWID;
