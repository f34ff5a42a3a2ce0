//! Tickets and articles: creating and changing tickets, participants, tags, agents, links
//! (CIs, groups, approvals), articles with their raw bytes and attachments, and the reads that
//! thread and list them.

use super::*;

/// A ticket to create.
#[derive(Debug, Clone)]
pub struct NewTicket<'a> {
    pub subject: &'a str,
    pub queue: &'a str,
    pub priority: Priority,
    pub requester: &'a str,
    pub related_to: Option<TicketId>,
    pub now: &'a str,
}

/// An article to add (inbound message, outbound mail, note, system entry).
#[derive(Debug, Clone)]
pub struct NewArticle<'a> {
    pub ticket: TicketId,
    pub direction: Direction,
    pub kind: ArticleKind,
    pub from: &'a str,
    pub to: &'a [String],
    pub subject: &'a str,
    pub message_id: &'a str,
    pub body_text: &'a str,
    pub mailbox: Option<&'a str>,
    pub guard_class: Option<&'a str>,
    pub raw: Option<&'a [u8]>,
    pub attachments: &'a [AttachmentInfo],
    pub now: &'a str,
}

/// Filter for `tickets list`.
#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    pub status: Option<Status>,
    pub queue: Option<String>,
    pub requester: Option<String>,
    /// Only tickets linked to this configuration item.
    pub ci: Option<String>,
    pub limit: Option<u32>,
}

pub(super) const TICKET_SELECT: &str = "SELECT id, subject, status, priority, queue, owner, requester, created_at, updated_at, tier, first_response_at, ticket_type, service, sla_policy, approval FROM tickets";

pub(super) fn ticket_row(r: &db::Row<'_>) -> Result<Ticket> {
    Ok(Ticket {
        id: r.get(0)?,
        reference: String::new(),
        subject: r.get(1)?,
        status: r.get::<_, String>(2)?.parse().unwrap_or(Status::Open),
        priority: r.get::<_, String>(3)?.parse().unwrap_or(Priority::Normal),
        queue: r.get(4)?,
        owner: r.get(5)?,
        requester: r.get(6)?,
        participants: Vec::new(),
        tags: Vec::new(),
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        tier: r.get(9)?,
        first_response_at: r.get(10)?,
        ticket_type: r.get(11)?,
        service: r.get(12)?,
        sla_policy: r.get(13)?,
        approval: r.get(14)?,
        cis: Vec::new(),
        groups: Vec::new(),
    })
}

pub(super) fn complete_ticket(conn: &Conn, mut t: Ticket) -> Result<Ticket> {
    t.participants = conn
        .prepare_cached("SELECT email FROM participants WHERE ticket_id = ? ORDER BY role DESC, email")?
        .query_map([t.id], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>>>()?;
    t.tags = conn
        .prepare_cached("SELECT tag FROM tags WHERE ticket_id = ? ORDER BY tag")?
        .query_map([t.id], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>>>()?;
    t.cis = conn.prepare_cached("SELECT ci FROM ticket_cis WHERE ticket_id = ? ORDER BY ci")?.query_map([t.id], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>>>()?;
    t.groups = conn
        .prepare_cached("SELECT grp, external_ref FROM ticket_groups WHERE ticket_id = ? ORDER BY grp")?
        .query_map([t.id], |r| Ok(crate::ticket::GroupRef { group: r.get(0)?, external_ref: r.get(1)? }))?
        .collect::<Result<Vec<_>>>()?;
    Ok(t)
}

impl crate::thread::History for Tx<'_> {
    fn ticket_by_message_id(&mut self, id: &str) -> Result<Option<TicketId>> {
        self.conn.prepare_cached("SELECT ticket_id FROM message_ids WHERE message_id = ?")?.query_row([id], |r| r.get(0)).optional()
    }

    fn ticket_summary(&mut self, id: TicketId) -> Result<Option<(Status, Vec<String>)>> {
        let status: Option<String> = self.conn.prepare_cached("SELECT status FROM tickets WHERE id = ?")?.query_row([id], |r| r.get(0)).optional()?;
        let Some(status) = status else { return Ok(None) };
        let participants = self
            .conn
            .prepare_cached("SELECT email FROM participants WHERE ticket_id = ?")?
            .query_map([id], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>>>()?;
        Ok(Some((status.parse().unwrap_or(Status::Open), participants)))
    }
}

impl Store {
    /// Tickets, newest first.
    pub fn list_tickets(&self, f: &TicketFilter) -> Result<Vec<Ticket>> {
        let conn = self.lock()?;
        let mut sql = String::from(TICKET_SELECT);
        sql.push_str(" WHERE 1=1");
        let mut args: Vec<String> = Vec::new();
        if let Some(s) = f.status {
            sql.push_str(" AND status = ?");
            args.push(s.as_str().into());
        }
        if let Some(q) = &f.queue {
            sql.push_str(" AND queue = ?");
            args.push(q.clone());
        }
        if let Some(r) = &f.requester {
            sql.push_str(" AND requester = ?");
            args.push(r.clone());
        }
        if let Some(ci) = &f.ci {
            sql.push_str(" AND id IN (SELECT ticket_id FROM ticket_cis WHERE lower(ci) = lower(?))");
            args.push(ci.clone());
        }
        sql.push_str(" ORDER BY id DESC");
        if let Some(l) = f.limit {
            sql.push_str(&format!(" LIMIT {l}"));
        }
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(args, ticket_row)?.collect::<Result<Vec<_>>>()?;
        rows.into_iter().map(|t| complete_ticket(&conn, t)).collect()
    }

    /// One ticket with its articles and events.
    pub fn ticket_detail(&self, id: TicketId) -> Result<Option<TicketDetail>> {
        let conn = self.lock()?;
        let Some(t) = conn.prepare_cached(&format!("{TICKET_SELECT} WHERE id = ?"))?.query_row([id], ticket_row).optional()? else {
            return Ok(None);
        };
        let ticket = complete_ticket(&conn, t)?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, direction, kind, from_addr, to_addrs, subject, message_id, body_text, created_at
             FROM articles WHERE ticket_id = ? ORDER BY id",
        )?;
        let mut articles = stmt
            .query_map([id], |r| {
                Ok(Article {
                    id: r.get(0)?,
                    direction: r.get::<_, String>(1)?.parse().unwrap_or(Direction::Inbound),
                    kind: r.get::<_, String>(2)?.parse().unwrap_or(ArticleKind::System),
                    from: r.get(3)?,
                    to: lines(&r.get::<_, String>(4)?),
                    subject: r.get(5)?,
                    message_id: r.get(6)?,
                    body_text: r.get(7)?,
                    created_at: r.get(8)?,
                    attachments: Vec::new(),
                })
            })?
            .collect::<Result<Vec<_>>>()?;
        let mut att = conn.prepare_cached("SELECT name, content_type, size FROM attachments WHERE article_id = ? ORDER BY id")?;
        for a in &mut articles {
            a.attachments = att
                .query_map([a.id], |r| Ok(AttachmentInfo { name: r.get(0)?, content_type: r.get(1)?, size: r.get::<_, i64>(2)? as u64 }))?
                .collect::<Result<Vec<_>>>()?;
        }
        let mut ev = conn.prepare_cached("SELECT kind, detail, created_at FROM events WHERE ticket_id = ? ORDER BY id")?;
        let events = ev
            .query_map([id], |r| Ok(Event { kind: r.get(0)?, detail: r.get(1)?, created_at: r.get(2)? }))?
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(TicketDetail { ticket, articles, events }))
    }

    /// How many tickets each configuration item is linked to.
    pub fn ci_ticket_counts(&self) -> Result<BTreeMap<String, u64>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached("SELECT lower(ci), COUNT(*) FROM ticket_cis GROUP BY lower(ci)")?;
        let v = stmt.query_map((), |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?.collect::<Result<BTreeMap<_, _>>>()?;
        Ok(v)
    }

    /// The raw bytes of an article, as received or as sent.
    pub fn raw_message(&self, article: i64) -> Result<Option<Vec<u8>>> {
        self.lock()?.prepare_cached("SELECT raw FROM raw_messages WHERE article_id = ?")?.query_row([article], |r| r.get(0)).optional()
    }
}

impl Tx<'_> {
    pub fn create_ticket(&mut self, t: &NewTicket<'_>) -> Result<TicketId> {
        let id = self.conn.prepare_cached("INSERT INTO tickets (subject, status, priority, queue, requester, requester_domain, related_to, created_at, updated_at)
             VALUES (?1, 'new', ?2, ?3, ?4, ?5, ?6, ?7, ?7) RETURNING id")?.query_row(params![t.subject, t.priority.as_str(), t.queue, t.requester, domain_of(t.requester), t.related_to, t.now],
            |r| r.get(0),
        )?;
        if !t.requester.is_empty() {
            self.add_participant(id, t.requester, "requester")?;
        }
        Ok(id)
    }

    /// Add someone to a ticket's conversation (no-op if already there).
    pub fn add_participant(&mut self, ticket: TicketId, email: &str, role: &str) -> Result<()> {
        self.conn.prepare_cached("INSERT INTO participants (ticket_id, email, role) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")?.execute(params![ticket, email, role])?;
        Ok(())
    }

    pub fn set_status(&mut self, ticket: TicketId, status: Status, now: &str) -> Result<()> {
        // resolved_at: set when the ticket is resolved or closed (first time), cleared on reopen.
        self.conn.prepare_cached("UPDATE tickets SET status = ?2, updated_at = ?3,
             resolved_at = CASE WHEN ?2 IN ('resolved','closed') THEN coalesce(resolved_at, ?3) ELSE NULL END,
             pending_since = CASE WHEN ?2 = 'pending' THEN coalesce(pending_since, ?3) ELSE NULL END,
             reminded_at = CASE WHEN ?2 = 'pending' THEN reminded_at ELSE NULL END WHERE id = ?1")?.execute(params![ticket, status.as_str(), now],
        )?;
        Ok(())
    }

    /// Bump `updated_at` (new activity).
    pub fn touch(&mut self, ticket: TicketId, now: &str) -> Result<()> {
        self.conn.prepare_cached("UPDATE tickets SET updated_at = ?2 WHERE id = ?1")?.execute(params![ticket, now])?;
        Ok(())
    }

    /// Add an article (and its raw bytes, attachments and Message-ID).
    pub fn add_article(&mut self, a: &NewArticle<'_>) -> Result<i64> {
        let id: i64 = self.conn.prepare_cached("INSERT INTO articles (ticket_id, direction, kind, from_addr, to_addrs, subject, message_id, body_text, mailbox, guard_class, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id")?.query_row(params![
                a.ticket,
                a.direction.as_str(),
                a.kind.as_str(),
                a.from,
                a.to.join("\n"),
                a.subject,
                a.message_id,
                a.body_text,
                a.mailbox,
                a.guard_class,
                a.now
            ],
            |r| r.get(0),
        )?;
        if let Some(raw) = a.raw {
            self.put_raw(id, raw)?;
        }
        for att in a.attachments {
            self.conn.prepare_cached("INSERT INTO attachments (article_id, name, content_type, size) VALUES (?, ?, ?, ?)")?.execute(params![id, att.name, att.content_type, att.size as i64],
            )?;
        }
        if !a.message_id.is_empty() {
            self.conn.prepare_cached("INSERT INTO message_ids (message_id, ticket_id, article_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")?.execute(params![a.message_id, a.ticket, id],
            )?;
        }
        Ok(id)
    }

    /// The raw bytes of article `id`. On SQLite a large message is written in place into a
    /// zeroblob row (incremental blob I/O): bound as a parameter it was copied twice more in
    /// memory (the bound value, then the record), which tripled a large mail's peak.
    fn put_raw(&mut self, id: i64, raw: &[u8]) -> Result<()> {
        const IN_PLACE_ABOVE: usize = 256 * 1024;
        match self.conn.lite() {
            Some(lite) if raw.len() > IN_PLACE_ABOVE => {
                use std::io::Write;
                lite.prepare_cached("INSERT INTO raw_messages (article_id, raw) VALUES (?1, zeroblob(?2))")?.execute(rusqlite::params![id, raw.len() as i64])?;
                let mut blob = lite.blob_open(rusqlite::MAIN_DB, "raw_messages", "raw", id, false)?;
                blob.write_all(raw).map_err(|source| StoreError::Io { path: "raw_messages".into(), source })?;
                blob.close()?;
            }
            _ => {
                self.conn.prepare_cached("INSERT INTO raw_messages (article_id, raw) VALUES (?, ?)")?.execute(params![id, raw])?;
            }
        }
        Ok(())
    }

    /// Set the ticket's SLA policy, service and type (rules, catalog, commands).
    pub fn set_service_fields(&mut self, ticket: TicketId, sla_policy: Option<&str>, service: Option<&str>, ticket_type: Option<&str>) -> Result<()> {
        self.conn.prepare_cached("UPDATE tickets SET sla_policy = coalesce(?2, sla_policy), service = coalesce(?3, service), ticket_type = coalesce(?4, ticket_type) WHERE id = ?1")?.execute(params![ticket, sla_policy, service, ticket_type],
        )?;
        Ok(())
    }

    /// The active tickets (new, open, pending) a customer opened, newest first.
    pub fn active_tickets_of(&self, requester: &str) -> Result<Vec<Ticket>> {
        let mut stmt = self.conn.prepare_cached(&format!("{TICKET_SELECT} WHERE requester = ? AND status IN ('new','open','pending') ORDER BY id DESC LIMIT 100"))?;
        let rows = stmt.query_map([requester], ticket_row)?.collect::<Result<Vec<_>>>()?;
        rows.into_iter().map(|t| complete_ticket(&self.conn, t)).collect()
    }

    pub fn mark_reminded(&mut self, ticket: TicketId, now: &str) -> Result<()> {
        self.conn.prepare_cached("UPDATE tickets SET reminded_at = ?2 WHERE id = ?1")?.execute(params![ticket, now])?;
        Ok(())
    }

    /// Set the change-approval state.
    pub fn set_approval(&mut self, ticket: TicketId, state: &str, now: &str) -> Result<()> {
        self.conn.prepare_cached("UPDATE tickets SET approval = ?2, updated_at = ?3 WHERE id = ?1")?.execute(params![ticket, state, now])?;
        Ok(())
    }

    /// Record that a ticket was handed to an external group.
    pub fn hand_to_group(&mut self, ticket: TicketId, group: &str, now: &str) -> Result<()> {
        self.conn.prepare_cached("INSERT INTO ticket_groups (ticket_id, grp, since) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")?.execute(params![ticket, group, now])?;
        Ok(())
    }

    /// Remember the group's own ticket number for our ticket (first one wins).
    pub fn set_group_ref(&mut self, ticket: TicketId, group: &str, external: &str) -> Result<()> {
        self.conn.prepare_cached("UPDATE ticket_groups SET external_ref = coalesce(external_ref, ?3) WHERE ticket_id = ?1 AND grp = ?2")?.execute(params![ticket, group, external],
        )?;
        Ok(())
    }

    /// Our ticket for a group's ticket number.
    pub fn ticket_by_group_ref(&self, group: &str, external: &str) -> Result<Option<TicketId>> {
        self.conn.prepare_cached("SELECT ticket_id FROM ticket_groups WHERE grp = ? AND external_ref = ?")?.query_row(params![group, external], |r| r.get(0)).optional()
    }

    /// Link a configuration item to a ticket.
    pub fn link_ci(&mut self, ticket: TicketId, ci: &str) -> Result<()> {
        self.conn.prepare_cached("INSERT INTO ticket_cis (ticket_id, ci) VALUES (?, ?) ON CONFLICT DO NOTHING")?.execute(params![ticket, ci])?;
        Ok(())
    }

    /// Tickets `requester` opened since `since`.
    pub fn tickets_opened_by(&self, requester: &str, since: &str) -> Result<u64> {
        Ok(self.conn.prepare_cached("SELECT COUNT(*) FROM tickets WHERE requester = ? AND created_at >= ?")?.query_row(params![requester, since], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Tickets opened from `domain` since `since`.
    pub fn tickets_opened_from_domain(&self, domain: &str, since: &str) -> Result<u64> {
        Ok(self.conn.prepare_cached("SELECT COUNT(*) FROM tickets WHERE requester_domain = ? AND created_at >= ?")?.query_row(params![domain, since], |r| r.get::<_, i64>(0))? as u64)
    }

    /// The most recently updated ticket of `requester` that is still active.
    pub fn latest_active_ticket(&self, requester: &str) -> Result<Option<TicketId>> {
        self
            .conn
            .prepare_cached("SELECT id FROM tickets WHERE requester = ? AND status IN ('new','open','pending') ORDER BY updated_at DESC, id DESC LIMIT 1")?
            .query_row([requester], |r| r.get(0))
            .optional()
    }

    /// The queue a ticket is in.
    pub fn ticket_queue(&self, ticket: TicketId) -> Result<Option<String>> {
        self.conn.prepare_cached("SELECT queue FROM tickets WHERE id = ?")?.query_row([ticket], |r| r.get(0)).optional()
    }

    /// When the ticket last changed (RFC 3339).
    pub fn ticket_updated_at(&self, ticket: TicketId) -> Result<Option<String>> {
        self.conn.prepare_cached("SELECT updated_at FROM tickets WHERE id = ?")?.query_row([ticket], |r| r.get(0)).optional()
    }

    /// The whole ticket as listed (participants and tags included).
    pub fn ticket(&self, ticket: TicketId) -> Result<Option<Ticket>> {
        let t = self.conn.prepare_cached(&format!("{TICKET_SELECT} WHERE id = ?"))?.query_row([ticket], ticket_row).optional()?;
        t.map(|t| complete_ticket(&self.conn, t)).transpose()
    }

    pub fn set_owner(&mut self, ticket: TicketId, owner: Option<&str>, now: &str) -> Result<()> {
        self.conn.prepare_cached("UPDATE tickets SET owner = ?2, updated_at = ?3 WHERE id = ?1")?.execute(params![ticket, owner, now])?;
        Ok(())
    }

    pub fn set_priority(&mut self, ticket: TicketId, p: Priority, now: &str) -> Result<()> {
        self.conn.prepare_cached("UPDATE tickets SET priority = ?2, updated_at = ?3 WHERE id = ?1")?.execute(params![ticket, p.as_str(), now])?;
        Ok(())
    }

    pub fn set_queue(&mut self, ticket: TicketId, queue: &str, now: &str) -> Result<()> {
        self.conn.prepare_cached("UPDATE tickets SET queue = ?2, updated_at = ?3 WHERE id = ?1")?.execute(params![ticket, queue, now])?;
        Ok(())
    }

    pub fn set_tier(&mut self, ticket: TicketId, tier: u8, now: &str) -> Result<()> {
        self.conn.prepare_cached("UPDATE tickets SET tier = ?2, updated_at = ?3 WHERE id = ?1")?.execute(params![ticket, tier, now])?;
        Ok(())
    }

    pub fn add_tag(&mut self, ticket: TicketId, tag: &str) -> Result<()> {
        self.conn.prepare_cached("INSERT INTO tags (ticket_id, tag) VALUES (?, ?) ON CONFLICT DO NOTHING")?.execute(params![ticket, tag])?;
        Ok(())
    }

    pub fn remove_tag(&mut self, ticket: TicketId, tag: &str) -> Result<()> {
        self.conn.prepare_cached("DELETE FROM tags WHERE ticket_id = ? AND tag = ?")?.execute(params![ticket, tag])?;
        Ok(())
    }

    /// Record the first agent response (only the first one counts).
    pub fn mark_first_response(&mut self, ticket: TicketId, now: &str) -> Result<()> {
        self.conn.prepare_cached("UPDATE tickets SET first_response_at = ?2 WHERE id = ?1 AND first_response_at IS NULL")?.execute(params![ticket, now])?;
        Ok(())
    }

    /// Remember that an agent worked this ticket.
    pub fn add_ticket_agent(&mut self, ticket: TicketId, email: &str) -> Result<()> {
        self.conn.prepare_cached("INSERT INTO ticket_agents (ticket_id, email) VALUES (?, ?) ON CONFLICT DO NOTHING")?.execute(params![ticket, email])?;
        Ok(())
    }

    /// Agents who worked this ticket.
    pub fn ticket_agents(&self, ticket: TicketId) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached("SELECT email FROM ticket_agents WHERE ticket_id = ? ORDER BY email")?;
        let v = stmt.query_map([ticket], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>>>()?;
        Ok(v)
    }

    /// Message-IDs of the customer-facing conversation, oldest first: what the customer sent and
    /// what we sent to customers. Agent notifications and notes are not part of it.
    pub fn customer_thread(&self, ticket: TicketId) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT message_id FROM articles WHERE ticket_id = ? AND message_id != ''
             AND (kind = 'customer' OR (direction = 'outbound' AND kind IN ('auto_reply', 'agent_reply'))) ORDER BY id",
        )?;
        let v = stmt.query_map([ticket], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>>>()?;
        Ok(v)
    }

    /// The newest text the customer wrote on a ticket.
    pub fn latest_customer_text(&self, ticket: TicketId) -> Result<Option<String>> {
        self
            .conn
            .prepare_cached("SELECT body_text FROM articles WHERE ticket_id = ? AND kind = 'customer' ORDER BY id DESC LIMIT 1")?
            .query_row([ticket], |r| r.get(0))
            .optional()
    }

    /// The references (In-Reply-To chain) for mail we send on a ticket: its first and latest inbound Message-IDs.
    pub fn thread_ids(&self, ticket: TicketId) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT message_id FROM articles WHERE ticket_id = ? AND message_id != '' ORDER BY id",
        )?;
        let ids = stmt.query_map([ticket], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>>>()?;
        Ok(ids)
    }
}
