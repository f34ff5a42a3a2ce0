//! Store, satisfaction side: which mails asked the customer for a rating, the latest rating per
//! ticket, and the ratings of a period for reports.

use super::db::{self, Conn, OptionalExtension, params};
use super::{Result, Store, Tx};
use crate::ticket::TicketId;


/// A customer's rating of a ticket (the latest; an earlier one is kept as an event).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rating {
    pub ticket: TicketId,
    pub rating: i64,
    /// As the scale spells it: "5", "good".
    pub label: String,
    /// The scale it was given on: "1-5", "bad,okay,good".
    pub scale: String,
    pub comment: String,
    pub rated_by: String,
    pub rated_at: String,
}

fn rating_row(r: &db::Row<'_>) -> Result<Rating> {
    Ok(Rating { ticket: r.get(0)?, rating: r.get(1)?, label: r.get(2)?, scale: r.get(3)?, comment: r.get(4)?, rated_by: r.get(5)?, rated_at: r.get(6)? })
}

const RATING_SELECT: &str = "SELECT ticket_id, rating, label, scale, comment, rated_by, rated_at FROM csat_ratings";

/// Most ratings a report reads (the newest first); a bound on its cost.
pub const MAX_REPORT_RATINGS: u32 = 100_000;

fn ratings_since(conn: &Conn, since: &str) -> Result<Vec<Rating>> {
    let mut stmt = conn.prepare_cached(&format!("{RATING_SELECT} WHERE rated_at >= ? ORDER BY rated_at DESC LIMIT {MAX_REPORT_RATINGS}"))?;
    let v = stmt.query_map([since], rating_row)?.collect::<Result<Vec<_>>>()?;
    Ok(v)
}

impl Store {
    /// Ratings given since `since` (RFC 3339), newest first.
    pub fn csat_ratings(&self, since: &str) -> Result<Vec<Rating>> {
        ratings_since(&*self.lock()?, since)
    }

    /// The latest rating of a ticket.
    pub fn csat_rating(&self, ticket: TicketId) -> Result<Option<Rating>> {
        self.lock()?.query_row(&format!("{RATING_SELECT} WHERE ticket_id = ?"), [ticket], rating_row).optional()
    }
}

impl Tx<'_> {
    /// Remember that the mail `message_id` asked the requester of `ticket` for a rating.
    pub fn csat_asked(&mut self, ticket: TicketId, message_id: &str, now: &str) -> Result<()> {
        self.conn.execute("INSERT INTO csat_asks (message_id, ticket_id, asked_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", params![message_id, ticket, now])?;
        Ok(())
    }

    /// The ticket whose rating question the mail `message_id` asked, if it asked one.
    pub fn csat_ask(&self, message_id: &str) -> Result<Option<TicketId>> {
        self.conn.query_row("SELECT ticket_id FROM csat_asks WHERE message_id = ?", [message_id], |r| r.get(0)).optional()
    }

    /// The latest rating of a ticket.
    pub fn csat_rating(&self, ticket: TicketId) -> Result<Option<Rating>> {
        self.conn.query_row(&format!("{RATING_SELECT} WHERE ticket_id = ?"), [ticket], rating_row).optional()
    }

    /// Record a rating, replacing the ticket's earlier one.
    pub fn put_csat_rating(&mut self, r: &Rating) -> Result<()> {
        self.conn.execute(
            "INSERT INTO csat_ratings (ticket_id, rating, label, scale, comment, rated_by, rated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (ticket_id) DO UPDATE SET rating = excluded.rating, label = excluded.label, scale = excluded.scale,
                comment = excluded.comment, rated_by = excluded.rated_by, rated_at = excluded.rated_at",
            params![r.ticket, r.rating, r.label, r.scale, r.comment, r.rated_by, r.rated_at],
        )?;
        Ok(())
    }

    /// Ratings given since `since`, inside the transaction (the weekly report).
    pub fn csat_ratings_tx(&self, since: &str) -> Result<Vec<Rating>> {
        ratings_since(&self.conn, since)
    }
}
