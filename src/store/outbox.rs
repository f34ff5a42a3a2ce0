//! Outbox and sent log: queued mail in sending order, the send record written before the final
//! dot (in its own file and lock), retries and failures; the automatic-mail log the caps read,
//! and the addresses we stopped mailing.

use super::*;

/// A rendered mail to queue for sending.
#[derive(Debug, Clone)]
pub struct NewOutbound<'a> {
    pub ticket: Option<TicketId>,
    pub article: Option<i64>,
    pub kind: ArticleKind,
    pub message_id: &'a str,
    pub envelope_from: &'a str,
    pub recipients: &'a [String],
    pub raw: &'a [u8],
    pub now: &'a str,
}

/// An address we stopped mailing because it bounced permanently (`postdesk undeliverable list`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UndeliverableMark {
    pub address: String,
    pub reason: String,
    /// When it last bounced (RFC 3339); the mark expires `guard.undeliverable_for` later.
    pub since: String,
}

/// A queued mail as the outbound worker sees it.
#[derive(Debug, Clone)]
pub struct QueuedMail {
    pub id: i64,
    pub ticket: Option<TicketId>,
    pub message_id: String,
    pub envelope_from: String,
    pub recipients: Vec<String>,
    pub raw: Vec<u8>,
    pub attempts: u32,
}

/// Counts of the outbound queue by state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub queued: u64,
    pub sent: u64,
    pub failed: u64,
}

/// How long a node's claim on a queued mail lasts (PostgreSQL): long enough for the slowest SMTP
/// transaction; after a node dies, its claimed mail waits this long for another node.
const CLAIM_SECS: f64 = 120.0;

/// The sent log lives beside the database: `postdesk.db` → `postdesk.db-sent`.
pub(super) fn sent_log_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-sent");
    PathBuf::from(p)
}

/// Attach the sent log as `sentlog` (its own file and lock, NORMAL sync: after a power loss the
/// worst case is one mail sent again, never one lost).
pub(super) fn attach_sent_log(conn: &Conn, path: &Path) -> Result<()> {
    let Some(conn) = conn.lite() else { return Ok(()) };
    conn.prepare_cached("ATTACH DATABASE ?1 AS sentlog")?.execute([path.to_string_lossy()])?;
    conn.pragma_update(Some("sentlog"), "journal_mode", "WAL")?;
    conn.pragma_update(Some("sentlog"), "synchronous", "NORMAL")?;
    // A few rows in flight at any time: a small page cache (SQLite's default is 2 MB a database).
    conn.pragma_update(Some("sentlog"), "cache_size", -128)?;
    conn.execute_batch("CREATE TABLE IF NOT EXISTS sentlog.sent (outbox_id INTEGER PRIMARY KEY, sent_at TEXT NOT NULL, confirmed INTEGER NOT NULL DEFAULT 0)")?;
    Ok(())
}

impl Store {
    /// Mail due for a (re)try at `now`, in sending order: what an agent wrote first (a person is
    /// waiting on it), then the queues in turn — the oldest due mail of each queue, then the
    /// second oldest of each, and so on — so a backlog in one queue never holds up another
    /// queue's acknowledgements. Oldest first within a queue.
    pub fn due_outbound(&self, now: &str, limit: u32) -> Result<Vec<QueuedMail>> {
        let conn = self.lock_outbox()?;
        let node = self.node();
        // PostgreSQL: mail another node holds a live claim on is not due here.
        // (A claim also ends with its node's presence lease: see the claim below.)
        let unclaimed = if conn.is_pg() {
            "AND (o.claimed_until IS NULL OR o.claimed_until < now() OR o.claimed_by = ?3
                  OR NOT EXISTS (SELECT 1 FROM leases l WHERE l.name = 'node:' || o.claimed_by AND l.expires_at > now()))"
        } else {
            ""
        };
        let mut stmt = conn.prepare_cached(&format!(
            "WITH due AS (
                SELECT o.id, o.ticket_id, o.message_id, o.envelope_from, o.recipients, o.attempts, o.next_attempt_at,
                       o.kind = 'agent_reply' AS by_agent, coalesce(t.queue, '') AS lane
                FROM outbox o LEFT JOIN tickets t ON t.id = o.ticket_id
                WHERE o.state = 'queued' AND o.next_attempt_at <= ?1 AND o.id NOT IN (SELECT outbox_id FROM sentlog.sent) {unclaimed}
             ), ranked AS (
                SELECT *, row_number() OVER (PARTITION BY by_agent, lane ORDER BY next_attempt_at, id) AS turn FROM due
             ), picked AS (
                SELECT * FROM ranked ORDER BY by_agent DESC, turn, next_attempt_at, id LIMIT ?2
             )
             SELECT p.id, p.ticket_id, p.message_id, p.envelope_from, p.recipients, o.raw, p.attempts
             FROM picked p JOIN outbox o ON o.id = p.id
             ORDER BY p.by_agent DESC, p.turn, p.next_attempt_at, p.id"
        ))?;
        let args = if conn.is_pg() { params![now, limit, node] } else { params![now, limit] };
        let rows: Vec<QueuedMail> = stmt
            .query_map(args, |r| {
                Ok(QueuedMail {
                    id: r.get(0)?,
                    ticket: r.get(1)?,
                    message_id: r.get(2)?,
                    envelope_from: r.get(3)?,
                    recipients: lines(&r.get::<_, String>(4)?),
                    raw: r.get(5)?,
                    attempts: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>>>()?;
        if !conn.is_pg() {
            return Ok(rows);
        }
        // Several nodes: each mail is claimed by one of them for a while (row by row: a mail
        // another node claimed in the meantime is left to it), and only the claim's holder may
        // record it sent (`mark_sent`), so it goes out once. A claim also ends when its node's
        // presence lease (`node:NAME/PID`, renewed every third of `lease_ttl`) has run out: a
        // node killed or cut off holds its mail for the lease time, not the whole claim time.
        let mut claim = conn.prepare_cached(
            "UPDATE outbox SET claimed_by = ?2, claimed_until = now() + make_interval(secs => ?3)
             WHERE id = ?1 AND state = 'queued' AND id NOT IN (SELECT outbox_id FROM sentlog.sent)
               AND (claimed_until IS NULL OR claimed_until < now() OR claimed_by = ?2
                    OR NOT EXISTS (SELECT 1 FROM leases l WHERE l.name = 'node:' || outbox.claimed_by AND l.expires_at > now()))
             RETURNING id",
        )?;
        let mut claimed = Vec::with_capacity(rows.len());
        for m in rows {
            if claim.query_row(params![m.id, node, CLAIM_SECS], |r| r.get::<_, i64>(0)).optional()?.is_some() {
                claimed.push(m);
            }
        }
        Ok(claimed)
    }

    /// The earliest time a queued mail becomes due, if any is queued.
    pub fn next_outbound_due(&self) -> Result<Option<String>> {
        self.lock_outbox()?.prepare_cached("SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'queued' AND id NOT IN (SELECT outbox_id FROM sentlog.sent)")?.query_row((),
            |r| r.get(0),
        )
    }

    /// Record a successful hand-over to the transport. Written to the separate sent log, whose
    /// lock ingest never holds: the time between the server's 250 and this commit is the only
    /// window in which a crash makes a mail go out twice, so it must not wait for anything.
    pub fn mark_sent(&self, id: i64, now: &str) -> Result<()> {
        let conn = self.lock_outbox()?;
        if !conn.is_pg() {
            conn.prepare_cached("INSERT INTO sentlog.sent (outbox_id, sent_at, confirmed) VALUES (?, ?, 0) ON CONFLICT DO NOTHING")?.execute(params![id, now])?;
            return Ok(());
        }
        // Only while this node's claim holds: a node that lost it (paused past its expiry, cut
        // off) gets an error here and withholds the final dot; the new holder sends the mail.
        // The row is locked, so a claim taken meanwhile is seen. A mark that is already there
        // was written by another node (this one marks a mail once): that node sent it, so this
        // copy must not go out either.
        // Committed without waiting for the server's disk flush (the outbox connection is set
        // so once, `lock_outbox`), like SQLite's sent log (synchronous NORMAL): a kill -9
        // between the server's commit and our final dot loses the mail (the narrow window of
        // ARCHITECTURE.md), and waiting for an fsync there made that window most of a send; a
        // database crash can at worst forget a mark, and the mail goes out again.
        let n = conn
            .prepare_cached(
                "INSERT INTO sentlog.sent (outbox_id, sent_at, confirmed)
                 SELECT id, ?2, 0 FROM outbox WHERE id = ?1 AND state = 'queued' AND claimed_by = ?3 AND claimed_until > now() FOR UPDATE
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![id, now, self.node()])?;
        if n == 0 {
            return Err(StoreError::Unsupported("this node's claim on the mail ended, or another node sent it; this copy is not sent"));
        }
        Ok(())
    }

    /// The server answered 250 for a marked send.
    pub fn confirm_sent(&self, id: i64) -> Result<()> {
        self.lock_outbox()?.prepare_cached("UPDATE sentlog.sent SET confirmed = 1 WHERE outbox_id = ?")?.execute([id])?;
        Ok(())
    }

    /// The server refused a marked send after all: it is not sent.
    pub fn unmark_sent(&self, id: i64) -> Result<()> {
        self.lock_outbox()?.prepare_cached("DELETE FROM sentlog.sent WHERE outbox_id = ?")?.execute([id])?;
        Ok(())
    }

    /// Move sent marks from the sent log into the outbox table (idle-time housekeeping; safe to
    /// repeat after a crash at any point).
    pub fn fold_sent(&self) -> Result<usize> {
        let conn = self.lock_outbox()?;
        // PostgreSQL: another node may be in the middle of sending a mail it marked (mark before
        // the final dot, confirm after the 250). Such a mark is folded only once that node's
        // claim is over (expired, or its presence lease ran out: it died) — folding it earlier
        // told the ticket `delivery_unconfirmed` for mail that arrived, and left a mail the
        // server then refused as `sent` (its `unmark_sent` found no mark), never retried.
        let node = self.node();
        let read = || -> Result<Vec<(i64, String, bool)>> {
            if conn.is_pg() {
                return conn
                    .prepare_cached(
                        "SELECT s.outbox_id, s.sent_at, s.confirmed FROM sentlog.sent s LEFT JOIN outbox o ON o.id = s.outbox_id
                         WHERE s.confirmed <> 0 OR o.id IS NULL OR o.claimed_by IS NULL OR o.claimed_by = ?1 OR o.claimed_until < now()
                            OR NOT EXISTS (SELECT 1 FROM leases l WHERE l.name = 'node:' || o.claimed_by AND l.expires_at > now())",
                    )?
                    .query_map([&node], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect();
            }
            conn.prepare_cached("SELECT outbox_id, sent_at, confirmed FROM sentlog.sent")?.query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect()
        };
        if read()?.is_empty() {
            return Ok(0);
        }
        conn.begin_write()?;
        // Read again under the write lock: another node may have folded them meanwhile.
        let mut marks = Vec::new();
        let done = (|| -> Result<()> {
            marks = read()?;
            let mut up = conn.prepare_cached("UPDATE outbox SET state = 'sent', attempts = attempts + 1, sent_at = ?2, last_error = NULL WHERE id = ?1 AND state = 'queued'")?;
            let mut ev = conn.prepare_cached(
                "INSERT INTO events (ticket_id, kind, detail, created_at) SELECT ticket_id, 'delivery_unconfirmed',
                 'the daemon stopped while the server was accepting mail <' || message_id || '>; counted as sent (it had the whole message)', ?2
                 FROM outbox WHERE id = ?1 AND ticket_id IS NOT NULL",
            )?;
            for (id, at, confirmed) in &marks {
                // The event once, by whoever moves the row to `sent`.
                if up.execute(params![id, at])? == 1 && !confirmed {
                    ev.execute(params![id, at])?;
                }
            }
            if conn.is_pg() {
                // One database: the marks go in the same transaction.
                let mut del = conn.prepare_cached("DELETE FROM sentlog.sent WHERE outbox_id = ?")?;
                for (id, _, _) in &marks {
                    del.execute([id])?;
                }
            }
            Ok(())
        })();
        match done {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        let mut del = conn.prepare_cached("DELETE FROM sentlog.sent WHERE outbox_id = ?")?;
        for (id, _, _) in &marks {
            del.execute([id])?;
        }
        Ok(marks.len())
    }

    /// Record a transient failure and when to try again.
    pub fn mark_retry(&self, id: i64, error: &str, next_at: &str) -> Result<()> {
        self.lock_outbox()?.prepare_cached("UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 WHERE id = ?1")?.execute(params![id, error, next_at],
        )?;
        Ok(())
    }

    /// Record a permanent failure, on the outbox row and on the ticket's audit trail.
    pub fn mark_failed(&self, id: i64, error: &str, now: &str) -> Result<()> {
        let mut tx = self.begin()?;
        // Only a mail still queued (on PostgreSQL: and not claimed by another node, which may
        // have sent it after our claim ran out).
        let sql = if tx.conn.is_pg() {
            "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ?2 WHERE id = ?1 AND state = 'queued' AND (claimed_by IS NULL OR claimed_by = ?3) RETURNING ticket_id"
        } else {
            "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ?2 WHERE id = ?1 AND state = 'queued' RETURNING ticket_id"
        };
        let args = if tx.conn.is_pg() { params![id, error, self.node()] } else { params![id, error] };
        let Some(ticket): Option<Option<TicketId>> = tx.conn.prepare_cached(sql)?.query_row(args, |r| r.get(0)).optional()? else {
            return Ok(());
        };
        let (mid, rcpts): (String, String) = tx.conn.prepare_cached("SELECT message_id, recipients FROM outbox WHERE id = ?")?.query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if let Some(t) = ticket {
            tx.event(t, "delivery_failed", &format!("mail <{mid}> to {} failed permanently: {error}", rcpts.replace('\n', ", ")), now)?;
        }
        tx.commit()
    }

    pub fn outbox_counts(&self) -> Result<OutboxCounts> {
        let conn = self.lock_outbox()?;
        let mut stmt = conn.prepare_cached(
            "SELECT CASE WHEN id IN (SELECT outbox_id FROM sentlog.sent) THEN 'sent' ELSE state END, COUNT(*) FROM outbox GROUP BY 1",
        )?;
        let mut c = OutboxCounts::default();
        for row in stmt.query_map((), |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (state, n) = row?;
            match state.as_str() {
                "queued" => c.queued = n as u64,
                "sent" => c.sent = n as u64,
                "failed" => c.failed = n as u64,
                _ => {}
            }
        }
        Ok(c)
    }

    /// Undeliverable marks set at or after `not_before` (older ones have expired), by address.
    pub fn undeliverable_marks(&self, not_before: &str) -> Result<Vec<UndeliverableMark>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached("SELECT address, reason, since FROM undeliverable WHERE since >= ? ORDER BY address")?;
        let rows = stmt.query_map([not_before], |r| Ok(UndeliverableMark { address: r.get(0)?, reason: r.get(1)?, since: r.get(2)? }))?.collect::<Result<Vec<_>>>()?;
        Ok(rows)
    }
}

impl Tx<'_> {
    /// Queue a rendered mail.
    pub fn enqueue(&mut self, m: &NewOutbound<'_>) -> Result<i64> {
        self.conn.prepare_cached("INSERT INTO outbox (ticket_id, article_id, kind, message_id, envelope_from, recipients, raw, state, next_attempt_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?8) RETURNING id")?.query_row(params![m.ticket, m.article, m.kind.as_str(), m.message_id, m.envelope_from, m.recipients.join("\n"), m.raw, m.now],
            |r| r.get(0),
        )
    }

    /// Automatic mails queued to `recipient` since `since`.
    pub fn auto_mail_count(&self, recipient: &str, since: &str) -> Result<u64> {
        Ok(self.conn.prepare_cached("SELECT COUNT(*) FROM auto_mail_log WHERE recipient = ? AND created_at >= ?")?.query_row(params![recipient, since], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Whether `count` or more automatic mails were queued since `since`, to anyone. Reads at
    /// most the last `count` rows (they are written in time order), so no index is needed.
    pub fn auto_mail_total_reaches(&self, count: u32, since: &str) -> Result<bool> {
        let sql = if self.conn.is_pg() {
            "SELECT COUNT(*) FROM (SELECT created_at FROM auto_mail_log ORDER BY id DESC LIMIT ?1) recent WHERE created_at >= ?2"
        } else {
            "SELECT COUNT(*) FROM (SELECT created_at FROM auto_mail_log ORDER BY rowid DESC LIMIT ?1) recent WHERE created_at >= ?2"
        };
        let n: i64 = self.conn.prepare_cached(sql)?.query_row(params![count, since], |r| r.get(0))?;
        Ok(n >= count as i64)
    }

    /// Desk answers without a ticket (status lists, catalog) sent to `recipient` since `since`.
    pub fn desk_answers_to(&self, recipient: &str, since: &str) -> Result<u64> {
        let sql = "SELECT COUNT(*) FROM auto_mail_log WHERE recipient = ? AND created_at >= ? AND ticket_id IS NULL";
        Ok(self.conn.prepare_cached(sql)?.query_row(params![recipient, since], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Delete automatic-mail log rows older than `before` among the oldest `limit` (rows are
    /// written in time order): a short transaction whatever the log's size. The count deleted;
    /// fewer than `limit` means nothing older is left.
    pub fn prune_auto_mail_log(&mut self, before: &str, limit: u32) -> Result<usize> {
        let sql = if self.conn.is_pg() {
            "DELETE FROM auto_mail_log WHERE id IN (SELECT id FROM auto_mail_log ORDER BY id LIMIT ?1) AND created_at < ?2"
        } else {
            "DELETE FROM auto_mail_log WHERE rowid IN (SELECT rowid FROM auto_mail_log ORDER BY rowid LIMIT ?1) AND created_at < ?2"
        };
        self.conn.prepare_cached(sql)?.execute(params![limit, before])
    }

    pub fn log_auto_mail(&mut self, recipient: &str, ticket: Option<TicketId>, now: &str) -> Result<()> {
        self.conn.prepare_cached("INSERT INTO auto_mail_log (recipient, ticket_id, created_at) VALUES (?, ?, ?)")?.execute(params![recipient, ticket, now])?;
        Ok(())
    }

    /// Why an address must not be mailed (it bounced permanently at or after `not_before`), if so.
    pub fn undeliverable(&self, address: &str, not_before: &str) -> Result<Option<String>> {
        self.conn.prepare_cached("SELECT reason FROM undeliverable WHERE address = ? AND since >= ?")?.query_row([address, not_before], |r| r.get(0)).optional()
    }

    /// Mark (or mark again, restarting its expiry) an address that bounced permanently.
    pub fn mark_undeliverable(&mut self, address: &str, reason: &str, now: &str) -> Result<()> {
        self.conn.prepare_cached("INSERT INTO undeliverable (address, reason, since) VALUES (?1, ?2, ?3) ON CONFLICT(address) DO UPDATE SET reason = ?2, since = ?3")?.execute(params![address, reason, now],
        )?;
        Ok(())
    }

    /// Forget a mark; true when there was one.
    pub fn clear_undeliverable(&mut self, address: &str) -> Result<bool> {
        Ok(self.conn.prepare_cached("DELETE FROM undeliverable WHERE address = ?")?.execute([address])? > 0)
    }

    /// The ticket and recipients of an outgoing mail of ours, by its Message-ID.
    pub fn our_mail(&self, message_id: &str) -> Result<Option<(TicketId, Vec<String>)>> {
        self
            .conn
            .prepare_cached("SELECT a.ticket_id, a.to_addrs FROM message_ids m JOIN articles a ON a.id = m.article_id WHERE m.message_id = ? AND a.direction = 'outbound'")?
            .query_row([message_id], |r| Ok((r.get(0)?, lines(&r.get::<_, String>(1)?))))
            .optional()
    }
}
