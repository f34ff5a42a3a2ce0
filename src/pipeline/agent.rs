//! Agent mail: what an authenticated agent's reply does — commands first (all or nothing), then
//! either an internal note or a public reply that reaches the customer from the queue's address,
//! threaded into the customer's conversation, without the agent's own address.

use super::context::{self, About};
use super::mailer::{self, AutoMail};
use super::{Delivery, Now, Outcome, Report, notify, sla};
use crate::command::{self, Command};
use crate::config::Agent;
use crate::desk::Desk;
use crate::guard::Verdict;
use crate::message::Parsed;
use crate::store::{NewArticle, StoreError, Tx};
use crate::ticket::{ArticleKind, Direction, Status, Ticket, TicketId};

/// Check every command against the desk before anything is applied.
fn validate(desk: &Desk, cmds: &[Command]) -> Vec<String> {
    let mut errors = Vec::new();
    for c in cmds {
        match c {
            Command::Assign { who } | Command::Escalate { to: Some(who) } if desk.config.find_agent(who).is_none() => {
                errors.push(format!("{}: no agent `{who}` (known: {})", c.describe(), desk.config.agents.values().map(|a| a.key.as_str()).collect::<Vec<_>>().join(", ")));
            }
            Command::Forward { group } if !desk.config.groups.contains_key(group) => {
                errors.push(format!("{}: no group `{group}` (known: {})", c.describe(), desk.config.groups.keys().cloned().collect::<Vec<_>>().join(", ")));
            }
            Command::Type { ticket_type } if !crate::rules::DEFAULT_TICKET_TYPES.contains(&ticket_type.as_str()) => {
                errors.push(format!("{}: unknown type (known: {})", c.describe(), crate::rules::DEFAULT_TICKET_TYPES.join(", ")));
            }
            Command::Ci { name } if !desk.cis.items.is_empty() && desk.cis.get(name).is_none() => {
                errors.push(format!("{}: no configuration item `{name}` in the inventory", c.describe()));
            }
            Command::Approve | Command::Reject { .. } => errors.push(format!("{}: only an approver can decide, answering the approval request", c.describe())),
            Command::Queue { queue } if !desk.config.queues.contains_key(queue) => {
                errors.push(format!("{}: no queue `{queue}` (known: {})", c.describe(), desk.config.queues.keys().cloned().collect::<Vec<_>>().join(", ")));
            }
            _ => {}
        }
    }
    errors
}

/// What applying the commands changed, for notifications.
#[derive(Default)]
struct Changes<'d> {
    status: Option<Status>,
    assigned: Option<&'d Agent>,
    escalated: Option<Option<&'d Agent>>,
    forward: Option<&'d crate::config::Group>,
    request_approval: bool,
    lines: Vec<String>,
}

fn apply<'d>(tx: &mut Tx<'_>, desk: &'d Desk, actor: &Agent, t: &Ticket, parsed: &command::Parsed, now: &Now) -> Result<Changes<'d>, StoreError> {
    let mut ch = Changes::default();
    let id = t.id;
    let mut status = t.status;
    let cmds = &parsed.commands;
    // The solution first, so a `/publish` anywhere in the same mail finds it.
    if parsed.is_solution() {
        let line = super::knowledge::record_solution(tx, t, actor, &parsed.text, now)?;
        ch.lines.push(line);
    }
    for c in cmds {
        let line = match c {
            Command::Status { status: s } => {
                tx.set_status(id, *s, &now.s)?;
                if let Some(cur) = tx.ticket(id)? {
                    sla::on_status(tx, desk, &cur, status, *s, now)?;
                }
                ch.status = (*s != status).then_some(*s).or(ch.status);
                let l = format!("status {status} → {s}");
                status = *s;
                l
            }
            Command::Assign { who } => {
                let a = desk.config.find_agent(who).expect("validated");
                tx.set_owner(id, Some(&a.email), &now.s)?;
                ch.assigned = Some(a);
                format!("owner → {}", a.email)
            }
            Command::Take => {
                tx.set_owner(id, Some(&actor.email), &now.s)?;
                format!("owner → {} (took it)", actor.email)
            }
            Command::Unassign => {
                tx.set_owner(id, None, &now.s)?;
                "owner → nobody".to_string()
            }
            Command::Priority { priority } => {
                tx.set_priority(id, *priority, &now.s)?;
                if let Some(cur) = tx.ticket(id)? {
                    sla::recompute(tx, desk, &cur)?;
                }
                format!("priority {} → {priority}", t.priority)
            }
            Command::Queue { queue } => {
                tx.set_queue(id, queue, &now.s)?;
                if let Some(cur) = tx.ticket(id)? {
                    sla::recompute(tx, desk, &cur)?;
                }
                format!("queue {} → {queue}", t.queue)
            }
            Command::Tag { tags } => {
                for tag in tags {
                    tx.add_tag(id, tag)?;
                }
                format!("tagged {}", tags.join(", "))
            }
            Command::Untag { tags } => {
                for tag in tags {
                    tx.remove_tag(id, tag)?;
                }
                format!("untagged {}", tags.join(", "))
            }
            Command::Escalate { to } => {
                let target = to.as_deref().and_then(|w| desk.config.find_agent(w));
                ch.escalated = Some(target);
                escalate(tx, desk, t, target, now)?
            }
            Command::Cc { addresses } => {
                let refused = super::add_participants(tx, desk, id, addresses, now)?;
                let added: Vec<&String> = addresses.iter().filter(|a| !refused.contains(a)).collect();
                let mut line = format!("added {} to the conversation", added.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", "));
                if !refused.is_empty() {
                    line.push_str(&format!("; not added (limits.max_participants reached): {}", refused.join(", ")));
                }
                line
            }
            Command::Note => continue,
            Command::Type { ticket_type } => {
                tx.set_service_fields(id, None, None, Some(ticket_type))?;
                ch.request_approval = ticket_type == "change";
                format!("type → {ticket_type}")
            }
            Command::Ci { name } => {
                tx.link_ci(id, name)?;
                format!("linked configuration item {name}")
            }
            Command::Forward { group } => {
                ch.forward = desk.config.groups.get(group);
                format!("handing over to {group}")
            }
            Command::Approve | Command::Reject { .. } | Command::Solution => continue,
            Command::Publish { .. } | Command::Withdraw => super::knowledge::publish(tx, t, actor, c, now)?,
            Command::Search { query } => format!("searched for \"{query}\" (results mailed to {})", actor.email),
        };
        tx.event(id, "command", &format!("{} by {}: {line}", c.describe(), actor.email), &now.s)?;
        ch.lines.push(line);
    }
    Ok(ch)
}

/// Move a ticket to tier 2: the queue's `escalate_to` queue, owned by `target` or by nobody
/// until tier 2 takes it. Returns what changed, for the audit trail.
pub(super) fn escalate(tx: &mut Tx<'_>, desk: &Desk, t: &Ticket, target: Option<&Agent>, now: &Now) -> Result<String, StoreError> {
    let queue = desk.config.queues.get(&t.queue).and_then(|q| q.escalate_to.clone()).unwrap_or_else(|| t.queue.clone());
    tx.set_tier(t.id, 2, &now.s)?;
    tx.set_queue(t.id, &queue, &now.s)?;
    tx.set_owner(t.id, target.map(|a| a.email.as_str()), &now.s)?;
    if let Some(cur) = tx.ticket(t.id)? {
        sla::recompute(tx, desk, &cur)?;
    }
    Ok(format!("escalated to tier 2 (queue {queue}, owner {})", target.map(|a| a.email.as_str()).unwrap_or("nobody")))
}

/// Tier-2 agents to tell about an escalation: the named one, else tier 2 of the queue.
pub(super) fn escalation_recipients<'d>(desk: &'d Desk, t: &Ticket, target: Option<&'d Agent>) -> Vec<&'d Agent> {
    match target {
        Some(a) => vec![a],
        None => desk.config.agents.values().filter(|a| a.tier == 2 && a.works(&t.queue)).collect(),
    }
}

/// An agent's public reply reached nobody: never silent. The ticket records it and the agent gets
/// `agent_reply_failed` (or, in a template set without it, `agent_command_errors`).
#[allow(clippy::too_many_arguments)]
fn reply_not_sent(tx: &mut Tx<'_>, desk: &Desk, now: &Now, t: &Ticket, agent: &Agent, why: &str, text: &str, p: &Parsed, r: &mut Report) -> Result<(), StoreError> {
    tx.event(t.id, "reply_not_sent", &format!("reply by {} not sent: {why}", agent.email), &now.s)?;
    tracing::warn!(ticket = t.id, agent = %agent.email, why, "agent reply not sent");
    let errors = [format!("not sent: {why}")];
    let about = About { agent: Some(agent), reply: text, errors: &errors, ..Default::default() };
    let template = if desk.templates.has("agent_reply_failed") { "agent_reply_failed" } else { "agent_command_errors" };
    // The agent is the actor here but must hear of it: no actor filter.
    let sent = notify::agents(tx, desk, now, t, template, &[agent], None, &about, Some(&p.message_id))?;
    notify::record(sent, &mut r.actions, &mut r.mails);
    Ok(())
}

/// Handle a verified agent's mail on `ticket`; `stale` says why its token is too old to act on
/// (everything is then refused).
#[allow(clippy::too_many_arguments)]
pub(super) fn handle(tx: &mut Tx<'_>, desk: &Desk, d: Delivery<'_>, p: &Parsed, verdict: Verdict, agent: &Agent, ticket: TicketId, threading: String, stale: Option<String>, now: &Now) -> Result<Report, StoreError> {
    let mut r = Report::new(p, Some(verdict), Some(threading), Outcome::FollowUp { ticket });
    let Some(t) = tx.ticket(ticket)? else { return Ok(r) };
    let parsed = command::parse(&p.visible_text);
    let mut errors: Vec<String> = parsed.errors.iter().map(|e| format!("{}: {}", e.line, e.error)).collect();
    errors.extend(validate(desk, &parsed.commands));
    errors.extend(super::knowledge::validate(tx, desk, ticket, &parsed)?);
    errors.extend(stale);
    tx.add_ticket_agent(ticket, &agent.email)?;

    let article = |tx: &mut Tx<'_>, kind: ArticleKind, body: &str| {
        tx.add_article(&NewArticle {
            ticket,
            direction: Direction::Inbound,
            kind,
            from: &agent.email,
            to: &[],
            subject: &p.subject,
            message_id: &p.message_id,
            body_text: body,
            mailbox: Some(d.mailbox),
            guard_class: Some("human"),
            raw: Some(d.raw),
            attachments: &p.attachments,
            now: &now.s,
        })
    };

    if !errors.is_empty() {
        // Nothing half-done: keep the mail as an internal note, apply nothing, tell the agent.
        article(tx, ArticleKind::Note, &p.body_text)?;
        tx.event(ticket, "commands_rejected", &format!("{}: {}", agent.email, errors.join("; ")), &now.s)?;
        r.actions.push(format!("commands rejected: {}", errors.join("; ")));
        let about = About { agent: Some(agent), errors: &errors, ..Default::default() };
        let sent = notify::agents(tx, desk, now, &t, "agent_command_errors", &[agent], None, &about, Some(&p.message_id))?;
        notify::record(sent, &mut r.actions, &mut r.mails);
        return Ok(r);
    }

    let changes = apply(tx, desk, agent, &t, &parsed, now)?;
    r.actions.extend(changes.lines.iter().cloned());
    let text = parsed.text.clone();
    // With /forward the text is for the group, never for the customer.
    let public = !parsed.is_note() && changes.forward.is_none() && !text.is_empty();
    let kind = if public { ArticleKind::AgentReply } else { ArticleKind::Note };
    let body = if text.is_empty() { changes.lines.join("\n") } else { text.clone() };
    article(tx, kind, &body)?;
    let t = tx.ticket(ticket)?.unwrap_or(t);
    let customer_text = tx.latest_customer_text(ticket)?.unwrap_or_default();
    let customer_text = crate::quote::visible_text(&customer_text);

    if public {
        let queue = mailer::queue_of(desk, &t);
        let thread = tx.customer_thread(ticket)?;
        let cc: Vec<String> = mailer::reply_recipients(desk, &t).into_iter().skip(1).collect();
        let about = About { agent: Some(agent), reply: &text, ..Default::default() };
        let ctx = context::build(desk, queue, &t, &about, &t.requester, "");
        let sent = mailer::send_auto(tx, desk, now, AutoMail {
            ticket: Some(ticket),
            kind: ArticleKind::AgentReply,
            label: "agent_reply",
            template: "agent_reply",
            queue,
            to: &t.requester,
            to_name: None,
            cc,
            from_name: Some(format!("{} via {}", agent.name, queue.from_name)),
            ctx,
            in_reply_to: thread.last().map(String::as_str),
            references: thread.clone(),
            auto: None,
            lang: None,
        })?;
        if let mailer::Sent::Suppressed(why) = &sent {
            reply_not_sent(tx, desk, now, &t, agent, why, &text, p, &mut r)?;
        }
        notify::record(vec![sent], &mut r.actions, &mut r.mails);
        tx.mark_first_response(ticket, &now.s)?;
        sla::on_agent_reply(tx, &t, now)?;
        if t.status == Status::New && changes.status.is_none() {
            tx.set_status(ticket, Status::Open, &now.s)?;
            sla::on_status(tx, desk, &t, Status::New, Status::Open, now)?;
            r.actions.push("status new → open (first agent reply)".into());
        }
    } else if parsed.is_note() && !text.is_empty() {
        let mut to: Vec<&Agent> = t.owner.as_deref().and_then(|o| desk.config.agent_by_email(o)).into_iter().collect();
        for e in tx.ticket_agents(ticket)? {
            if let Some(a) = desk.config.agent_by_email(&e)
                && !to.iter().any(|x| x.email == a.email)
            {
                to.push(a);
            }
        }
        let about = About { agent: Some(agent), reply: &text, ..Default::default() };
        let sent = notify::agents(tx, desk, now, &t, "agent_note", &to, Some(&agent.email), &about, Some(&p.message_id))?;
        r.actions.push("internal note added".into());
        notify::record(sent, &mut r.actions, &mut r.mails);
    }

    let t = tx.ticket(ticket)?.unwrap_or(t);
    if let Some(g) = changes.forward {
        super::service::forward(tx, desk, &t, g, agent, &text, now, &mut r.actions, &mut r.mails)?;
    }
    if changes.request_approval {
        super::service::request_approval(tx, desk, &t, now, &mut r.actions, &mut r.mails)?;
    }
    let t = tx.ticket(ticket)?.unwrap_or(t);
    let about = About { from: &t.requester, text: &customer_text, agent: Some(agent), reply: &text, ..Default::default() };
    if let Some(a) = changes.assigned {
        let sent = notify::agents(tx, desk, now, &t, "agent_assigned", &[a], Some(&agent.email), &about, None)?;
        notify::record(sent, &mut r.actions, &mut r.mails);
    }
    if let Some(target) = changes.escalated {
        let to = escalation_recipients(desk, &t, target);
        let sent = notify::agents(tx, desk, now, &t, "agent_escalated", &to, Some(&agent.email), &about, None)?;
        notify::record(sent, &mut r.actions, &mut r.mails);
    }
    if let Some(query) = parsed.search() {
        super::knowledge::answer_agent(tx, desk, now, &t, agent, query, &p.message_id, &mut r)?;
    }
    // The customer hears of a status change from its template, unless the reply itself told them.
    if changes.status.is_some() && !public
        && let Some(sent) = notify::customer_status(tx, desk, now, &t)?
    {
        notify::record(vec![sent], &mut r.actions, &mut r.mails);
    }
    Ok(r)
}
