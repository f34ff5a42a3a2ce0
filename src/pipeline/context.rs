//! Template variables: one builder for every mail the pipeline writes, so all templates see the
//! same names (documented in the README and checked against `render::sample_context`).

use crate::config::{Agent, Queue};
use crate::desk::Desk;
use crate::reference::sender_text;
use crate::ticket::Ticket;
use serde_json::{Value, json};

/// What the mail is about besides the ticket.
#[derive(Debug, Default, Clone)]
pub struct About<'a> {
    /// The message that triggered the mail (customer text, quote-stripped).
    pub from: &'a str,
    pub from_name: &'a str,
    pub subject: &'a str,
    pub text: &'a str,
    /// The acting agent, for assignment/escalation/note mails.
    pub agent: Option<&'a Agent>,
    /// The agent's own words (reply or note).
    pub reply: &'a str,
    pub errors: &'a [String],
    /// For SLA mails: which target ("first response") and when it is/was due (RFC 3339).
    pub sla: Option<(&'a str, String)>,
    /// For approval mails: decision, reason, approver.
    pub approval: Option<(&'a str, &'a str, &'a str)>,
}

/// Build the context for one recipient. Names, addresses and subjects a sender controls go
/// through [`sender_text`]: one line, no control characters, length-capped (docs/SECURITY.md).
pub fn build(desk: &Desk, queue: &Queue, t: &Ticket, about: &About<'_>, to: &str, to_name: &str) -> Value {
    let s = sender_text;
    json!({
        "desk": { "name": desk.config.desk.name },
        "queue": { "name": queue.name, "address": queue.address, "from_name": queue.from_name },
        "ticket": {
            "id": t.id, "ref": desk.refs.format(t.id), "subject": s(&t.subject),
            "status": t.status.as_str(), "priority": t.priority.as_str(), "queue": t.queue,
            "owner": t.owner.clone().unwrap_or_default(), "tier": t.tier,
            "type": t.ticket_type.clone().unwrap_or_default(), "service": t.service.clone().unwrap_or_default(),
            "requester": s(&t.requester), "created_at": t.created_at,
            "reply_to": super::mailer::reply_recipients(desk, t).join(", ")
        },
        "message": { "from": s(about.from), "from_name": s(about.from_name), "subject": s(about.subject), "text": about.text },
        "recipient": { "address": s(to), "name": s(to_name) },
        "agent": { "name": about.agent.map(|a| a.name.as_str()).unwrap_or(""), "email": about.agent.map(|a| a.email.as_str()).unwrap_or("") },
        "reply": { "text": about.reply },
        "errors": about.errors,
        "sla": { "target": about.sla.as_ref().map(|s| s.0).unwrap_or(""), "due_at": about.sla.as_ref().map(|s| s.1.as_str()).unwrap_or("") },
        "approval": { "decision": about.approval.map(|a| a.0).unwrap_or(""), "reason": about.approval.map(|a| a.1).unwrap_or(""), "by": about.approval.map(|a| a.2).unwrap_or("") },
        "tickets": [],
        "service": { "name": "", "title": "", "description": "", "missing": [] },
        "suggestions": [],
        "services": [],
        "report": { "text": "", "html": "" },
        "csat": super::csat::question(desk, false)
    })
}
