-- Customer satisfaction by mail. Each resolved notice that asked the question (its Message-ID:
-- only a reply to one of these can be a rating), and the latest rating per ticket.
CREATE TABLE csat_asks (
    message_id TEXT PRIMARY KEY,
    ticket_id  INTEGER NOT NULL REFERENCES tickets(id),
    asked_at   TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE csat_ratings (
    ticket_id INTEGER PRIMARY KEY REFERENCES tickets(id),
    rating    INTEGER NOT NULL,
    label     TEXT NOT NULL,   -- as the scale spells it: "5", "good"
    scale     TEXT NOT NULL,   -- the scale it was given on: "1-5", "bad,okay,good"
    comment   TEXT NOT NULL,
    rated_by  TEXT NOT NULL,
    rated_at  TEXT NOT NULL
);
CREATE INDEX csat_ratings_rated_at ON csat_ratings(rated_at);
