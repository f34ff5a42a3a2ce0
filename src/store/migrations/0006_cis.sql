-- Configuration items linked to tickets (by rules, by `/ci`, by the catalog).
CREATE TABLE ticket_cis (
    ticket_id INTEGER NOT NULL REFERENCES tickets(id),
    ci        TEXT NOT NULL,
    PRIMARY KEY (ticket_id, ci)
) WITHOUT ROWID;
CREATE INDEX ticket_cis_ci ON ticket_cis(ci);
