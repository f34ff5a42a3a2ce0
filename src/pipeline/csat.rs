//! Satisfaction by mail: the requester's answer to the resolved notice's question is recorded on
//! the ticket as a rating, and the ticket stays resolved. Recognised precisely (see [`answer`]);
//! anything else is an ordinary reply, which reopens the ticket.

use super::context::About;
use super::{Delivery, Now, Outcome, Report, authenticated, notify};
use crate::csat::Answer;
use crate::desk::Desk;
use crate::guard::{Class, Verdict};
use crate::message::Parsed;
use crate::store::{NewArticle, Rating, StoreError, Tx};
use crate::thread::{Decision, Via};
use crate::ticket::{ArticleKind, Direction, Status, Ticket, TicketId};

/// The answer to a rating question, when this mail is one: satisfaction is on (`[csat]`); a
/// person's mail that threads (signed token or known Message-ID) directly to a resolved notice
/// that asked the question; from the ticket's requester (From, not a fallback), who passes the
/// one authentication check for requesters; the ticket resolved or closed; and the visible text
/// the rating alone on its first line (a comment may follow). `actions` learns why a rating was
/// not taken when authentication failed.
pub(super) fn answer(tx: &Tx<'_>, desk: &Desk, p: &Parsed, verdict: &Verdict, decision: &Decision, existing: Option<&Ticket>, actions: &mut Vec<String>) -> Result<Option<Answer>, StoreError> {
    let Some(csat) = &desk.config.csat else { return Ok(None) };
    let Decision::FollowUp { ticket, via: Via::Token { message_id, .. } | Via::MessageId { message_id } } = decision else { return Ok(None) };
    let Some(t) = existing.filter(|t| t.id == *ticket) else { return Ok(None) };
    if verdict.class != Class::Human || p.from_fallback.is_some() || p.from_address() != t.requester || !matches!(t.status, Status::Resolved | Status::Closed) {
        return Ok(None);
    }
    let Some(answer) = csat.scale.answer(&p.visible_text) else { return Ok(None) };
    if tx.csat_ask(message_id)? != Some(*ticket) {
        return Ok(None);
    }
    if !authenticated(desk, p) {
        actions.push(format!("rating from {} failed the DKIM/DMARC requirement: handled as a reply", t.requester));
        return Ok(None);
    }
    Ok(Some(answer))
}

/// Record the rating: the mail on the ticket, the rating (replacing an earlier one, which the
/// event names), a comment as an internal note for the owner (or the queue's agents). The
/// ticket's status does not change.
#[allow(clippy::too_many_arguments)]
pub(super) fn record(tx: &mut Tx<'_>, desk: &Desk, d: Delivery<'_>, p: &Parsed, verdict: Verdict, t: &Ticket, a: Answer, key: &str, threading: String, now: &Now) -> Result<Report, StoreError> {
    let ticket: TicketId = t.id;
    let scale = desk.config.csat.as_ref().map(|c| c.scale.spec()).unwrap_or_default();
    let sender = p.from_address().to_string();
    let to: Vec<String> = p.to.iter().chain(p.cc.iter()).map(|m| m.address.clone()).filter(|a| !a.is_empty()).collect();
    let article = tx.add_article(&NewArticle {
        ticket,
        direction: Direction::Inbound,
        kind: ArticleKind::Customer,
        from: &sender,
        to: &to,
        subject: &p.subject,
        message_id: &p.message_id,
        body_text: &p.body_text,
        mailbox: Some(d.mailbox),
        guard_class: Some(verdict.class.as_str()),
        raw: Some(d.raw),
        attachments: &p.attachments,
        now: &now.s,
    })?;
    let before = tx.csat_rating(ticket)?;
    tx.put_csat_rating(&Rating {
        ticket,
        rating: a.rating,
        label: a.label.clone(),
        scale: scale.clone(),
        comment: a.comment.clone(),
        rated_by: sender.clone(),
        rated_at: now.s.clone(),
    })?;
    let detail = match &before {
        Some(b) => format!("rated {} ({scale}), replacing {} given {}", a.label, b.label, b.rated_at),
        None => format!("rated {} ({scale})", a.label),
    };
    tx.event(ticket, "csat", &detail, &now.s)?;
    let mut r = Report::new(p, Some(verdict), Some(threading), Outcome::FollowUp { ticket });
    r.actions.push(format!("satisfaction {detail}; {} stays {}", desk.refs.format(ticket), t.status));
    if !a.comment.is_empty() {
        let note = format!("Satisfaction rating {} ({scale}) from {sender}:\n\n{}", a.label, a.comment);
        tx.add_article(&NewArticle {
            ticket,
            direction: Direction::Inbound,
            kind: ArticleKind::Note,
            from: &sender,
            to: &[],
            subject: &p.subject,
            message_id: "",
            body_text: &note,
            mailbox: None,
            guard_class: None,
            raw: None,
            attachments: &[],
            now: &now.s,
        })?;
        r.actions.push("comment kept as an internal note".into());
        if desk.templates.has("agent_csat") {
            let to = notify::for_customer_reply(tx, desk, t)?;
            let from_name = p.from.as_ref().and_then(|m| m.name.clone()).unwrap_or_default();
            let about = About { from: &sender, from_name: &from_name, subject: &p.subject, text: &a.comment, reply: &a.label, ..Default::default() };
            let sent = notify::agents(tx, desk, now, t, "agent_csat", &to, None, &about, Some(&p.message_id))?;
            notify::record(sent, &mut r.actions, &mut r.mails);
        }
    }
    tx.record_delivery(key, Some(article), "csat", &now.s)?;
    Ok(r)
}

/// The variables of the rating question, for the resolved notice: `csat.ask` is true only there.
pub(super) fn question(desk: &Desk, ask: bool) -> serde_json::Value {
    match &desk.config.csat {
        Some(c) => {
            let choices = c.scale.choices();
            serde_json::json!({
                "ask": ask,
                "choices": choices.join(", "),
                "worst": choices.first().cloned().unwrap_or_default(),
                "best": choices.last().cloned().unwrap_or_default(),
            })
        }
        None => serde_json::json!({ "ask": false, "choices": "", "worst": "", "best": "" }),
    }
}
