//! Deliveries and cursors: what intake already stored (dedupe), where each mailbox stands,
//! what it left on the server, and the quarantine it fills.

use super::*;

/// IMAP position of a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub uid_validity: u32,
    pub last_uid: u32,
}

/// What an earlier delivery of the same message became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorDelivery {
    pub article: Option<i64>,
    pub ticket: Option<TicketId>,
    pub outcome: String,
}

pub(super) fn cursor(conn: &Conn, mailbox: &str) -> Result<Option<Cursor>> {
    conn
        .prepare_cached("SELECT uid_validity, last_uid FROM mailbox_cursors WHERE mailbox = ?")?
        .query_row([mailbox], |r| Ok(Cursor { uid_validity: r.get(0)?, last_uid: r.get(1)? }))
        .optional()
}

impl Store {
    /// Where intake stopped in a mailbox.
    pub fn cursor(&self, mailbox: &str) -> Result<Option<Cursor>> {
        cursor(&*self.lock()?, mailbox)
    }

    /// UIDs of a mailbox that intake left untouched on purpose.
    pub fn left_on_server(&self, mailbox: &str, uid_validity: u32) -> Result<Vec<u32>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached("SELECT uid FROM left_on_server WHERE mailbox = ? AND uid_validity = ?")?;
        let v = stmt.query_map(params![mailbox, uid_validity], |r| r.get(0))?.collect::<Result<Vec<u32>>>()?;
        Ok(v)
    }

    /// Number of quarantined messages, by reason.
    pub fn quarantine_counts(&self) -> Result<Vec<(String, u64)>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached("SELECT reason, COUNT(*) FROM quarantine GROUP BY reason ORDER BY reason")?;
        let rows = stmt.query_map((), |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?.collect::<Result<Vec<_>>>()?;
        Ok(rows)
    }
}

impl Tx<'_> {
    /// Whether this exact message was stored before (same Message-ID and content).
    pub fn prior_delivery(&self, dedupe_key: &str) -> Result<Option<PriorDelivery>> {
        self
            .conn
            .prepare_cached("SELECT d.article_id, a.ticket_id, d.outcome FROM deliveries d LEFT JOIN articles a ON a.id = d.article_id WHERE d.dedupe_key = ?")?.query_row([dedupe_key],
                |r| Ok(PriorDelivery { article: r.get(0)?, ticket: r.get(1)?, outcome: r.get(2)? }),
            )
            .optional()
    }

    /// Forget that a message was refused (a dedupe record without an article), so a released
    /// copy is processed instead of taken for a duplicate.
    pub fn forget_refusal(&mut self, dedupe_key: &str) -> Result<()> {
        self.conn.prepare_cached("DELETE FROM deliveries WHERE dedupe_key = ? AND article_id IS NULL")?.execute([dedupe_key])?;
        Ok(())
    }

    /// Remember a delivery so a second copy is recognised.
    pub fn record_delivery(&mut self, dedupe_key: &str, article: Option<i64>, outcome: &str, now: &str) -> Result<()> {
        self.conn.prepare_cached("INSERT INTO deliveries (dedupe_key, article_id, outcome, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")?.execute(params![dedupe_key, article, outcome, now],
        )?;
        Ok(())
    }

    pub fn delete_quarantined(&mut self, id: i64) -> Result<bool> {
        Ok(self.conn.prepare_cached("DELETE FROM quarantine WHERE id = ?")?.execute([id])? == 1)
    }

    /// Keep a message we could not or would not process, with the reason.
    pub fn quarantine(&mut self, mailbox: &str, reason: &str, detail: &str, sha256: &str, raw: &[u8], now: &str) -> Result<i64> {
        self.conn.prepare_cached("INSERT INTO quarantine (mailbox, reason, detail, sha256, raw, created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id")?.query_row(params![mailbox, reason, detail, sha256, raw, now],
            |r| r.get(0),
        )
    }

    pub fn cursor(&self, mailbox: &str) -> Result<Option<Cursor>> {
        cursor(&self.conn, mailbox)
    }

    /// Move a mailbox's cursor; part of the transaction that stored the message at `last_uid`.
    pub fn advance_cursor(&mut self, mailbox: &str, c: Cursor, now: &str) -> Result<()> {
        self.conn.prepare_cached("INSERT INTO mailbox_cursors (mailbox, uid_validity, last_uid, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(mailbox) DO UPDATE SET uid_validity = ?2, last_uid = ?3, updated_at = ?4")?.execute(params![mailbox, c.uid_validity, c.last_uid, now],
        )?;
        Ok(())
    }

    /// Remember a server message intake must leave untouched.
    pub fn leave_on_server(&mut self, mailbox: &str, c: Cursor, reason: &str) -> Result<()> {
        self.conn.prepare_cached("INSERT INTO left_on_server (mailbox, uid_validity, uid, reason) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")?.execute(params![mailbox, c.uid_validity, c.last_uid, reason],
        )?;
        Ok(())
    }
}
