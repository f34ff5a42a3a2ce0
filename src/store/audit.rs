//! The audit trail: every change to a ticket leaves an event (read back by `ticket_detail`).

use super::*;

impl Tx<'_> {
    /// Append to a ticket's audit trail.
    pub fn event(&mut self, ticket: TicketId, kind: &str, detail: &str, now: &str) -> Result<()> {
        self.conn.prepare_cached("INSERT INTO events (ticket_id, kind, detail, created_at) VALUES (?, ?, ?, ?)")?.execute(params![ticket, kind, detail, now])?;
        Ok(())
    }
}
