//! Service-desk flows by mail: change approval (approvers answer `/approve` or `/reject reason`
//! from their mail client, authenticated like agents by a token signed for them) and hand-offs to
//! external groups (their replies, found by our token, our tag or their own ticket number, come
//! back as internal notes).

use super::context::{self, About};
use super::mailer::{self, AutoMail};
use super::{Delivery, Now, Outcome, PlannedMail, Report, notify, sla};
use crate::command::{self, Command};
use crate::config::{Agent, Group};
use crate::desk::Desk;
use crate::guard::Verdict;
use crate::message::Parsed;
use crate::store::{NewArticle, StoreError, Tx};
use crate::thread::{Decision, Via};
use crate::ticket::{ArticleKind, Direction, Status, Ticket, TicketId};

/// Approvers for a ticket: its queue's list, else the desk-wide one.
pub fn approvers<'d>(desk: &'d Desk, t: &Ticket) -> &'d [String] {
    match desk.config.queues.get(&t.queue) {
        Some(q) if !q.approvers.is_empty() => &q.approvers,
        _ => &desk.config.approvers,
    }
}

/// Someone who is not an agent, addressed by our notification machinery.
fn person(email: &str, name: &str) -> Agent {
    Agent { key: email.to_string(), name: name.to_string(), email: email.to_string(), queues: Vec::new(), tier: 1, notify_new: false }
}

/// A change needs approval: ask every approver, park the ticket (pending) until they answer.
pub fn request_approval(tx: &mut Tx<'_>, desk: &Desk, t: &Ticket, now: &Now, actions: &mut Vec<String>, mails: &mut Vec<PlannedMail>) -> Result<(), StoreError> {
    let who = approvers(desk, t).to_vec();
    if who.is_empty() || t.approval.is_some() {
        return Ok(());
    }
    tx.set_approval(t.id, "requested", &now.s)?;
    if t.status != Status::Pending {
        tx.set_status(t.id, Status::Pending, &now.s)?;
        sla::on_status(tx, desk, t, t.status, Status::Pending, now)?;
    }
    tx.event(t.id, "approval", &format!("approval requested from {}", who.join(", ")), &now.s)?;
    actions.push(format!("approval requested from {}", who.join(", ")));
    let text = tx.latest_customer_text(t.id)?.unwrap_or_default();
    let people: Vec<Agent> = who.iter().map(|a| person(a, a)).collect();
    let to: Vec<&Agent> = people.iter().collect();
    let about = About { from: &t.requester, text: &text, ..Default::default() };
    let sent = notify::agents(tx, desk, now, t, "approval_request", &to, None, &about, None)?;
    notify::record(sent, actions, mails);
    Ok(())
}

/// An approver's answer, if this mail is one: authenticated by a token signed for the approver.
#[allow(clippy::too_many_arguments)]
pub fn approver_mail(tx: &mut Tx<'_>, desk: &Desk, d: Delivery<'_>, p: &Parsed, verdict: &Verdict, decision: &Decision, threading: &str, now: &Now) -> Result<Option<Report>, StoreError> {
    // A token copied to others (`shared`) does not speak for the approver.
    let Decision::FollowUp { ticket, via: Via::Token { issued, shared: false, .. } } = decision else { return Ok(None) };
    let sender = p.from_address();
    let Some(t) = tx.ticket(*ticket)? else { return Ok(None) };
    if t.approval.as_deref() != Some("requested") || !approvers(desk, &t).iter().any(|a| a == sender) || verdict.class != crate::guard::Class::Human || !super::authenticated(desk, p) {
        return Ok(None);
    }
    let mut r = Report::new(p, Some(verdict.clone()), Some(threading.to_string()), Outcome::FollowUp { ticket: t.id });
    let cmds = command::parse(&p.visible_text);
    let stale = super::stale_token(desk, *issued, now);
    let (state, reason) = match cmds.commands.as_slice() {
        [Command::Approve] if stale.is_none() => ("approved", String::new()),
        [Command::Reject { reason }] if stale.is_none() => ("rejected", reason.clone()),
        _ => {
            note(tx, d, p, t.id, sender, now)?;
            let errors = vec![stale.unwrap_or_else(|| "answer with /approve, or /reject and your reason, on the first line".to_string())];
            let me = person(sender, sender);
            let about = About { agent: Some(&me), errors: &errors, ..Default::default() };
            let sent = notify::agents(tx, desk, now, &t, "agent_command_errors", &[&me], None, &about, Some(&p.message_id))?;
            notify::record(sent, &mut r.actions, &mut r.mails);
            return Ok(Some(r));
        }
    };
    note(tx, d, p, t.id, sender, now)?;
    tx.set_approval(t.id, state, &now.s)?;
    tx.set_status(t.id, Status::Open, &now.s)?;
    sla::on_status(tx, desk, &t, t.status, Status::Open, now)?;
    tx.event(t.id, "approval", &format!("{state} by {sender}{}", if reason.is_empty() { String::new() } else { format!(": {reason}") }), &now.s)?;
    r.actions.push(format!("change {state} by {sender}"));
    let t = tx.ticket(t.id)?.unwrap_or(t);
    let about = About { approval: Some((state, &reason, sender)), ..Default::default() };
    // The requester learns the outcome…
    let sent = mailer::to_requester(tx, desk, now, &t, "approval_outcome", &about, None)?;
    notify::record(vec![sent], &mut r.actions, &mut r.mails);
    // …and so do the owner (or the queue's agents).
    let to: Vec<&Agent> = match t.owner.as_deref().and_then(|o| desk.config.agent_by_email(o)) {
        Some(a) => vec![a],
        None => desk.config.agents.values().filter(|a| a.works(&t.queue)).collect(),
    };
    let sent = notify::agents(tx, desk, now, &t, "approval_decided", &to, Some(sender), &about, None)?;
    notify::record(sent, &mut r.actions, &mut r.mails);
    Ok(Some(r))
}

fn decision_link(d: &Decision) -> Option<TicketId> {
    match d {
        Decision::New { possibly_related } => *possibly_related,
        Decision::FollowUp { .. } => None,
    }
}

fn note(tx: &mut Tx<'_>, d: Delivery<'_>, p: &Parsed, ticket: TicketId, from: &str, now: &Now) -> Result<i64, StoreError> {
    tx.add_article(&NewArticle {
        ticket,
        direction: Direction::Inbound,
        kind: ArticleKind::Note,
        from,
        to: &[],
        subject: &p.subject,
        message_id: &p.message_id,
        body_text: &p.visible_text,
        mailbox: Some(d.mailbox),
        guard_class: None,
        raw: Some(d.raw),
        attachments: &p.attachments,
        now: &now.s,
    })
}

/// Hand a ticket to an external group: `text` (the agent's words) goes to them with the context.
#[allow(clippy::too_many_arguments)]
pub fn forward(tx: &mut Tx<'_>, desk: &Desk, t: &Ticket, group: &Group, agent: &Agent, text: &str, now: &Now, actions: &mut Vec<String>, mails: &mut Vec<PlannedMail>) -> Result<(), StoreError> {
    tx.hand_to_group(t.id, &group.key, &now.s)?;
    tx.add_tag(t.id, &format!("waiting-on:{}", group.key))?;
    tx.event(t.id, "handoff", &format!("handed to {} <{}> by {}", group.name, group.address, agent.email), &now.s)?;
    actions.push(format!("handed to {}", group.name));
    let queue = mailer::queue_of(desk, t);
    let customer = tx.latest_customer_text(t.id)?.map(|s| crate::quote::visible_text(&s)).unwrap_or_default();
    let about = About { text: &customer, agent: Some(agent), reply: text, ..Default::default() };
    let ctx = context::build(desk, queue, t, &about, &group.address, &group.name);
    let sent = mailer::send_auto(tx, desk, now, AutoMail {
        ticket: Some(t.id),
        kind: ArticleKind::Notification,
        label: "group_handoff",
        template: "group_handoff",
        queue,
        to: &group.address,
        to_name: Some(&group.name),
        cc: Vec::new(),
        from_name: None,
        ctx,
        in_reply_to: None,
        references: Vec::new(),
        auto: None,
        lang: None,
    })?;
    notify::record(vec![sent], actions, mails);
    Ok(())
}

/// A reply from an external group: threads by our token or Message-ID, our subject tag on a
/// ticket handed to them, or their own ticket number; becomes an internal note.
#[allow(clippy::too_many_arguments)]
pub fn group_mail(tx: &mut Tx<'_>, desk: &Desk, d: Delivery<'_>, p: &Parsed, verdict: &Verdict, decision: &Decision, now: &Now) -> Result<Option<Report>, StoreError> {
    let sender = p.from_address();
    let Some(group) = desk.config.groups.values().find(|g| g.address == sender) else { return Ok(None) };
    if !super::authenticated(desk, p) {
        return Ok(None);
    }
    let external = group.ticket_pattern.captures(&p.subject).and_then(|c| c.get(1)).map(|m| m.as_str().to_string());
    let handed = |tx: &Tx<'_>, id: TicketId| -> Result<bool, StoreError> { Ok(tx.ticket(id)?.is_some_and(|t| t.groups.iter().any(|g| g.group == group.key))) };
    let mut ticket = match decision {
        Decision::FollowUp { ticket, via: Via::Token { .. } | Via::MessageId { .. } } => Some(*ticket),
        _ => None,
    };
    // Our tag, or a Message-ID of ours the group is not a participant of, on a ticket handed to them.
    for id in [desk.refs.find(&p.subject), decision_link(decision)].into_iter().flatten() {
        if ticket.is_none() && handed(tx, id)? {
            ticket = Some(id);
        }
    }
    if ticket.is_none()
        && let Some(n) = &external
    {
        ticket = tx.ticket_by_group_ref(&group.key, n)?;
    }
    let Some(id) = ticket else { return Ok(None) };
    let Some(t) = tx.ticket(id)? else { return Ok(None) };
    if let Some(n) = &external {
        tx.set_group_ref(id, &group.key, n)?;
    }
    note(tx, d, p, id, sender, now)?;
    tx.touch(id, &now.s)?;
    tx.event(id, "group_reply", &format!("{} replied{}", group.name, external.as_ref().map(|n| format!(" (their ticket {n})")).unwrap_or_default()), &now.s)?;
    let mut r = Report::new(p, Some(verdict.clone()), Some(format!("reply from external group {} on {}", group.name, desk.refs.format(id))), Outcome::FollowUp { ticket: id });
    r.actions.push("kept as an internal note".into());
    let me = person(&group.address, &group.name);
    let about = About { agent: Some(&me), reply: &p.visible_text, ..Default::default() };
    let mut to: Vec<&Agent> = t.owner.as_deref().and_then(|o| desk.config.agent_by_email(o)).into_iter().collect();
    for e in tx.ticket_agents(id)? {
        if let Some(a) = desk.config.agent_by_email(&e)
            && !to.iter().any(|x| x.email == a.email)
        {
            to.push(a);
        }
    }
    let sent = notify::agents(tx, desk, now, &t, "agent_group_reply", &to, None, &about, Some(&p.message_id))?;
    notify::record(sent, &mut r.actions, &mut r.mails);
    Ok(Some(r))
}
