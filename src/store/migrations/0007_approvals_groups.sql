-- Change approval state: requested | approved | rejected.
ALTER TABLE tickets ADD COLUMN approval TEXT;

-- Tickets handed to external groups, with the group's own ticket number once known.
CREATE TABLE ticket_groups (
    ticket_id    INTEGER NOT NULL REFERENCES tickets(id),
    grp          TEXT NOT NULL,
    external_ref TEXT,
    since        TEXT NOT NULL,
    PRIMARY KEY (ticket_id, grp)
) WITHOUT ROWID;
CREATE INDEX ticket_groups_ref ON ticket_groups(grp, external_ref);
