//! Mailer: the single path by which the pipeline queues mail (acknowledgements, notices,
//! notifications, agents' replies). It refuses system and undeliverable addresses, applies the
//! caps on automatic mail per recipient (loop protection; agents are exempt, their own automatic
//! answers are never answered), renders, composes, records the outgoing article and queues the
//! bytes — all inside the caller's transaction.

use super::{Now, PlannedMail};
use crate::config::Queue;
use crate::desk::Desk;
use crate::guard;
use crate::outbound::compose::{AutoSubmitted, Outgoing, compose};
use crate::store::{NewArticle, NewOutbound, StoreError, Tx};
use crate::ticket::{ArticleKind, Direction, TicketId, is_usable_address};

/// One automatic mail to queue.
pub struct AutoMail<'a> {
    /// The ticket it is about; `None` for desk mail about no single ticket (a status list).
    pub ticket: Option<TicketId>,
    pub kind: ArticleKind,
    /// Short name for reports and logs ("acknowledgement").
    pub label: &'static str,
    pub template: &'a str,
    pub queue: &'a Queue,
    pub to: &'a str,
    pub to_name: Option<&'a str>,
    /// Further recipients (each checked like `to`; refused ones are left out and recorded).
    pub cc: Vec<String>,
    /// Display name on From; the queue's when `None` ("Alice via Support" for agent replies).
    pub from_name: Option<String>,
    pub ctx: serde_json::Value,
    pub in_reply_to: Option<&'a str>,
    pub references: Vec<String>,
    /// `None` for mail a person wrote (agent replies): no Auto-Submitted, no caps.
    pub auto: Option<AutoSubmitted>,
    /// Language for the template (`templates/lang/XX/`); the queue's when `None`.
    pub lang: Option<String>,
}

impl<'a> AutoMail<'a> {
    /// An automatic answer to the customer's message `p`: to its sender, threaded under it
    /// (RFC 5322 §3.6.4), `Auto-Submitted: auto-replied` (RFC 3834 §5), in the sender's language.
    pub fn answer(p: &'a crate::message::Parsed, ticket: Option<TicketId>, queue: &'a Queue, kind: ArticleKind, label: &'static str, template: &'a str, ctx: serde_json::Value) -> AutoMail<'a> {
        let mut references = p.references.clone();
        references.push(p.message_id.clone());
        AutoMail {
            ticket,
            kind,
            label,
            template,
            queue,
            to: p.from_address(),
            to_name: p.from.as_ref().and_then(|m| m.name.as_deref()),
            cc: Vec::new(),
            from_name: None,
            ctx,
            in_reply_to: Some(&p.message_id),
            references,
            auto: Some(AutoSubmitted::AutoReplied),
            lang: p.header("content-language").map(str::to_string),
        }
    }
}

/// What became of an automatic mail.
pub enum Sent {
    Queued(PlannedMail),
    /// Not sent, with the reason (already recorded on the ticket).
    Suppressed(String),
}

/// Queue `m` unless a rule of loop protection forbids it; every suppression is recorded. A
/// recipient that is not a usable address (RFC 5322 §3.4.1) is left out and recorded
/// (`recipient_refused`): the others still get the mail. When `to` is refused, a person's reply
/// (or any mail whose `to` is no address) goes to the remaining copies.
pub fn send_auto(tx: &mut Tx<'_>, desk: &Desk, now: &Now, mut m: AutoMail<'_>) -> Result<Sent, StoreError> {
    let mut cc = Vec::new();
    for c in std::mem::take(&mut m.cc) {
        if !is_usable_address(&c) {
            refused(tx, &m, &c, now)?;
            continue;
        }
        match blocked(tx, desk, now, &c, m.auto.is_some())? {
            Some(why) => {
                if let Some(t) = m.ticket {
                    tx.event(t, "auto_mail_suppressed", &format!("{} not copied to {c}: {why}", m.label), &now.s)?;
                }
            }
            None => cc.push(c),
        }
    }
    cap_recipients(tx, desk, now, &mut m, cc)?;
    // An empty `to` (a sender without address) is blocked below like any system address.
    let usable = m.to.is_empty() || is_usable_address(m.to);
    let why = if usable { blocked(tx, desk, now, m.to, m.auto.is_some())? } else { Some(format!("<{}> is not a usable address", m.to)) };
    let Some(why) = why else { return queue_recorded(tx, desk, now, &m, m.to) };
    if !usable {
        refused(tx, &m, m.to, now)?;
    } else if let Some(t) = m.ticket {
        tx.event(t, "auto_mail_suppressed", &format!("{} to {} not sent: {why}", m.label, m.to), &now.s)?;
    }
    tracing::info!(ticket = ?m.ticket, to = m.to, what = m.label, why, "mail not sent to its first recipient");
    if (!usable || m.auto.is_none()) && !m.cc.is_empty() {
        let to = m.cc.remove(0);
        return queue_recorded(tx, desk, now, &m, &to);
    }
    Ok(Sent::Suppressed(why))
}

/// Record on the ticket that `who` was left out of a mail for not being an address.
fn refused(tx: &mut Tx<'_>, m: &AutoMail<'_>, who: &str, now: &Now) -> Result<(), StoreError> {
    tracing::warn!(ticket = ?m.ticket, what = m.label, "recipient is not a usable address");
    if let Some(t) = m.ticket {
        tx.event(t, "recipient_refused", &format!("{} not sent to <{who}>: not a usable address", m.label), &now.s)?;
    }
    Ok(())
}

/// [`queue`] to `to`, with the cap log and the failure recorded.
fn queue_recorded(tx: &mut Tx<'_>, desk: &Desk, now: &Now, m: &AutoMail<'_>, to: &str) -> Result<Sent, StoreError> {
    match queue(tx, desk, now, m, to)? {
        Ok(p) => {
            // Caps count mail to outside addresses; agents are never capped, and their
            // notifications must not use up the desk-wide cap.
            if m.auto.is_some() && desk.config.agent_by_email(to).is_none() {
                tx.log_auto_mail(to, m.ticket, &now.s)?;
            }
            Ok(Sent::Queued(p))
        }
        Err(why) => {
            if let Some(t) = m.ticket {
                tx.event(t, "auto_mail_failed", &format!("{} to {to}: {why}", m.label), &now.s)?;
            }
            tracing::error!(ticket = ?m.ticket, to, what = m.label, error = %why, "automatic mail not queued");
            Ok(Sent::Suppressed(why))
        }
    }
}

fn blocked(tx: &Tx<'_>, desk: &Desk, now: &Now, to: &str, automatic: bool) -> Result<Option<String>, StoreError> {
    if to.is_empty() || guard::is_system_address(to) {
        return Ok(Some(format!("<{to}> is a system or no-reply address")));
    }
    if desk.identity.own_addresses.iter().any(|a| a == to) {
        return Ok(Some(format!("<{to}> is one of our own addresses")));
    }
    if let Some(reason) = tx.undeliverable(to, &now.minus(desk.config.guard.undeliverable_for))? {
        return Ok(Some(format!("<{to}> is undeliverable ({reason})")));
    }
    if !automatic || desk.config.agent_by_email(to).is_some() {
        return Ok(None);
    }
    for cap in &desk.config.guard.auto_mail_caps {
        let since = now.minus(cap.window);
        let n = tx.auto_mail_count(to, &since)?;
        if n >= cap.count as u64 {
            return Ok(Some(format!("cap of {} automatic mails per {}s reached", cap.count, cap.window.as_secs())));
        }
    }
    // Forged senders spread over many victims meet one cap for the whole desk (issue 17.4).
    if let Some(cap) = desk.config.guard.auto_mail_total
        && tx.auto_mail_total_reaches(cap.count, &now.minus(cap.window))?
    {
        return Ok(Some(format!("desk-wide cap of {} automatic mails per {}s reached", cap.count, cap.window.as_secs())));
    }
    Ok(None)
}

/// Keep To plus Cc within `limits.max_recipients`; the rest are left out and recorded (17.3).
fn cap_recipients(tx: &mut Tx<'_>, desk: &Desk, now: &Now, m: &mut AutoMail<'_>, mut cc: Vec<String>) -> Result<(), StoreError> {
    let room = (desk.config.limits.max_recipients as usize).saturating_sub(1);
    if cc.len() > room {
        let left_out = cc.split_off(room);
        if let Some(t) = m.ticket {
            let why = format!("{} not copied to {} address(es) over limits.max_recipients = {}: {}", m.label, left_out.len(), room + 1, left_out.join(", "));
            tx.event(t, "auto_mail_suppressed", &why, &now.s)?;
        }
    }
    m.cc = cc;
    Ok(())
}

/// Who a reply on `t` goes to: the requester, then the other outside participants, at most
/// `limits.max_recipients` in all. Agents see this list in their notifications.
pub fn reply_recipients(desk: &Desk, t: &crate::ticket::Ticket) -> Vec<String> {
    let others = t.participants.iter().filter(|e| **e != t.requester && desk.config.agent_by_email(e).is_none());
    std::iter::once(&t.requester).chain(others).take(desk.config.limits.max_recipients as usize).cloned().collect()
}

/// Render, compose, record and queue. `Ok(Err(why))` when the template or address is unusable.
fn queue(tx: &mut Tx<'_>, desk: &Desk, now: &Now, m: &AutoMail<'_>, to: &str) -> Result<Result<PlannedMail, String>, StoreError> {
    let lang = m.lang.as_deref().or(m.queue.language.as_deref());
    let mut rendered = match desk.templates.render(m.template, &m.queue.name, lang, &m.ctx) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if let Some(t) = m.ticket {
        rendered.subject = desk.refs.tagged_subject(t, &rendered.subject);
    }
    // Desk mail gets a token for ticket 0, which names no ticket: replies to it start new ones.
    let message_id = desk.signer.message_id(m.ticket.unwrap_or(0), to, now.t.unix_timestamp());
    let reply_to = if m.queue.plus_addressing { desk.signer.reply_address(&m.queue.address, &message_id) } else { None };
    let from_name = m.from_name.clone().unwrap_or_else(|| m.queue.from_name.clone());
    let raw = match compose(&Outgoing {
        from_name: &from_name,
        from_address: &m.queue.address,
        to_name: m.to_name.filter(|_| to == m.to),
        to_address: to,
        cc: &m.cc,
        reply_to: reply_to.as_deref(),
        message_id: &message_id,
        in_reply_to: m.in_reply_to,
        references: &m.references,
        auto: m.auto,
        domain: &desk.config.desk.domain,
        rendered: &rendered,
        date: now.system(),
    }) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let recipients: Vec<String> = std::iter::once(to.to_string()).chain(m.cc.iter().cloned()).collect();
    let article = match m.ticket {
        None => None,
        Some(ticket) => Some(tx.add_article(&NewArticle {
        ticket,
        direction: Direction::Outbound,
        kind: m.kind,
        from: &m.queue.address,
        to: &recipients,
        subject: &rendered.subject,
        message_id: &message_id,
        body_text: &rendered.text,
        mailbox: None,
        guard_class: None,
        raw: None,
        attachments: &[],
        now: &now.s,
    })?),
    };
    tx.enqueue(&NewOutbound {
        ticket: m.ticket,
        article,
        kind: m.kind,
        message_id: &message_id,
        envelope_from: &m.queue.address,
        recipients: &recipients,
        raw: &raw,
        now: &now.s,
    })?;
    Ok(Ok(PlannedMail { kind: m.label, to: to.to_string(), subject: rendered.subject, message_id }))
}
