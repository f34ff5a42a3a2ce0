//! SLA targets, timers and reports: targets per ticket, what is due to warn or breach, lifecycle
//! candidates (auto-close, reminders), the report rows and when a periodic report went out.

use super::*;

/// One ticket's facts for `postdesk report`.
#[derive(Debug, Clone)]
pub struct ReportRow {
    pub id: TicketId,
    pub queue: String,
    pub ticket_type: String,
    pub status: Status,
    pub created_at: String,
    pub first_response_at: Option<String>,
    pub resolved_at: Option<String>,
    /// met | breached | running, when the ticket has such an SLA target.
    pub sla_first_response: Option<String>,
    pub sla_resolution: Option<String>,
    pub priority: Priority,
    pub tags: Vec<String>,
    /// Configuration items linked to the ticket.
    pub cis: Vec<String>,
}

pub(super) const SLA_SELECT: &str = "SELECT ticket_id, kind, started_at, target_secs, paused_secs, paused_since, due_at, warn_at, warned_at, breached_at, met_at FROM sla_targets";

pub(super) fn sla_row(r: &db::Row<'_>) -> Result<(TicketId, Option<crate::sla::Target>)> {
    let kind: String = r.get(1)?;
    let t = crate::sla::Kind::parse(&kind).map(|kind| -> Result<crate::sla::Target> {
        Ok(crate::sla::Target {
            kind,
            started_at: r.get(2)?,
            target_secs: r.get(3)?,
            paused_secs: r.get(4)?,
            paused_since: r.get(5)?,
            due_at: r.get(6)?,
            warn_at: r.get(7)?,
            warned_at: r.get(8)?,
            breached_at: r.get(9)?,
            met_at: r.get(10)?,
        })
    });
    Ok((r.get(0)?, t.transpose()?))
}

pub(super) fn report_rows(conn: &Conn, since: &str) -> Result<Vec<ReportRow>> {
    // A list of tags or CIs separated by U+001F, in either dialect.
    let list = if conn.is_pg() { "string_agg(x, chr(31))" } else { "group_concat(x, char(31))" };
    let mut stmt = conn.prepare_cached(&format!(
            "SELECT t.id, t.queue, coalesce(t.ticket_type, ''), t.status, t.created_at, t.first_response_at, t.resolved_at,
                    (SELECT CASE WHEN breached_at IS NOT NULL THEN 'breached' WHEN met_at IS NOT NULL THEN 'met' ELSE 'running' END
                       FROM sla_targets s WHERE s.ticket_id = t.id AND s.kind = 'first_response'),
                    (SELECT CASE WHEN breached_at IS NOT NULL THEN 'breached' WHEN met_at IS NOT NULL THEN 'met' ELSE 'running' END
                       FROM sla_targets s WHERE s.ticket_id = t.id AND s.kind = 'resolution'),
                    t.priority, (SELECT {tags} FROM tags g WHERE g.ticket_id = t.id),
                    (SELECT {cis} FROM ticket_cis c WHERE c.ticket_id = t.id)
             FROM tickets t WHERE t.created_at >= ?1 OR t.status IN ('new','open','pending') OR t.resolved_at >= ?1",
            tags = list.replace('x', "tag"),
            cis = list.replace('x', "ci"),
        ))?;
        let rows = stmt
            .query_map([since], |r| {
                Ok(ReportRow {
                    id: r.get(0)?,
                    queue: r.get(1)?,
                    ticket_type: r.get(2)?,
                    status: r.get::<_, String>(3)?.parse().unwrap_or(Status::Open),
                    created_at: r.get(4)?,
                    first_response_at: r.get(5)?,
                    resolved_at: r.get(6)?,
                    sla_first_response: r.get(7)?,
                    sla_resolution: r.get(8)?,
                    priority: r.get::<_, String>(9)?.parse().unwrap_or(Priority::Normal),
                    tags: split_unit(r.get(10)?),
                    cis: split_unit(r.get(11)?),
                })
            })?
            .collect::<Result<Vec<_>>>()?;
        Ok(rows)
}

impl Store {
    /// SLA targets whose warning or breach moment has come and was not yet announced.
    pub fn due_sla(&self, now: i64, limit: u32) -> Result<Vec<(TicketId, crate::sla::Target)>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(&format!(
            "{SLA_SELECT} WHERE met_at IS NULL AND paused_since IS NULL
             AND ((warned_at IS NULL AND warn_at <= ?1) OR (breached_at IS NULL AND due_at <= ?1)) ORDER BY due_at LIMIT ?2"
        ))?;
        let v = stmt.query_map(params![now, limit], sla_row)?.collect::<Result<Vec<_>>>()?;
        Ok(v.into_iter().filter_map(|(id, t)| t.map(|t| (id, t))).collect())
    }

    /// The earliest pending warning or due time (the timer sleeps until then).
    pub fn next_sla_moment(&self) -> Result<Option<i64>> {
        self.lock()?.prepare_cached("SELECT MIN(CASE WHEN warned_at IS NULL THEN CASE WHEN warn_at IS NULL OR warn_at < due_at THEN warn_at ELSE due_at END ELSE due_at END) FROM sla_targets
             WHERE met_at IS NULL AND paused_since IS NULL AND breached_at IS NULL")?.query_row((),
            |r| r.get(0),
        )
    }

    /// Facts for reports: every ticket created since `since` or still active, with its timings.
    pub fn report_rows(&self, since: &str) -> Result<Vec<ReportRow>> {
        report_rows(&*self.lock()?, since)
    }

    /// Tickets resolved before `before` (auto-close candidates).
    pub fn resolved_before(&self, before: &str) -> Result<Vec<TicketId>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached("SELECT id FROM tickets WHERE status = 'resolved' AND resolved_at <= ? LIMIT 500")?;
        let v = stmt.query_map([before], |r| r.get(0))?.collect::<Result<Vec<_>>>()?;
        Ok(v)
    }

    /// Pending tickets waiting since before `before`; `unreminded` limits to those not reminded.
    pub fn pending_before(&self, before: &str, unreminded: bool) -> Result<Vec<TicketId>> {
        let conn = self.lock()?;
        let sql = if unreminded {
            "SELECT id FROM tickets WHERE status = 'pending' AND pending_since <= ? AND reminded_at IS NULL AND (approval IS NULL OR approval <> 'requested') LIMIT 500"
        } else {
            "SELECT id FROM tickets WHERE status = 'pending' AND pending_since <= ? AND (approval IS NULL OR approval <> 'requested') LIMIT 500"
        };
        let v = conn.prepare_cached(sql)?.query_map([before], |r| r.get(0))?.collect::<Result<Vec<_>>>()?;
        Ok(v)
    }
}

impl Tx<'_> {
    /// The SLA targets of a ticket.
    pub fn sla_targets(&self, ticket: TicketId) -> Result<Vec<crate::sla::Target>> {
        let mut stmt = self.conn.prepare_cached(&format!("{SLA_SELECT} WHERE ticket_id = ? ORDER BY kind"))?;
        let v = stmt.query_map([ticket], |r| sla_row(r).map(|(_, t)| t))?.collect::<Result<Vec<_>>>()?;
        Ok(v.into_iter().flatten().collect())
    }

    /// Insert or replace one SLA target.
    pub fn put_sla_target(&mut self, ticket: TicketId, t: &crate::sla::Target) -> Result<()> {
        self.conn.prepare_cached(
            "INSERT INTO sla_targets (ticket_id, kind, started_at, target_secs, paused_secs, paused_since, due_at, warn_at, warned_at, breached_at, met_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (ticket_id, kind) DO UPDATE SET started_at = excluded.started_at, target_secs = excluded.target_secs,
                paused_secs = excluded.paused_secs, paused_since = excluded.paused_since, due_at = excluded.due_at, warn_at = excluded.warn_at,
                warned_at = excluded.warned_at, breached_at = excluded.breached_at, met_at = excluded.met_at",
        )?
        .execute(params![ticket, t.kind.as_str(), t.started_at, t.target_secs, t.paused_secs, t.paused_since, t.due_at, t.warn_at, t.warned_at, t.breached_at, t.met_at])?;
        Ok(())
    }

    /// The ticket's SLA policy name, if any.
    pub fn ticket_sla_policy(&self, ticket: TicketId) -> Result<Option<String>> {
        Ok(self.conn.prepare_cached("SELECT sla_policy FROM tickets WHERE id = ?")?.query_row([ticket], |r| r.get(0)).optional()?.flatten())
    }

    /// When a periodic report was last sent.
    pub fn report_sent_at(&self, kind: &str) -> Result<Option<String>> {
        self.conn.prepare_cached("SELECT sent_at FROM report_log WHERE kind = ?")?.query_row([kind], |r| r.get(0)).optional()
    }

    pub fn mark_report_sent(&mut self, kind: &str, now: &str) -> Result<()> {
        self.conn.prepare_cached("INSERT INTO report_log (kind, sent_at) VALUES (?, ?) ON CONFLICT (kind) DO UPDATE SET sent_at = excluded.sent_at")?.execute(params![kind, now])?;
        Ok(())
    }

    /// Facts for reports, inside a transaction.
    pub fn report_rows_tx(&self, since: &str) -> Result<Vec<ReportRow>> {
        report_rows(&self.conn, since)
    }
}

/// A `group_concat(…, char(31))` list.
fn split_unit(s: Option<String>) -> Vec<String> {
    s.map(|s| s.split('\u{1f}').map(str::to_string).collect()).unwrap_or_default()
}
