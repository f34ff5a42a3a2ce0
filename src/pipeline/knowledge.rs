//! Knowledge by mail (docs/KNOWLEDGE.md): searches (an agent's: tickets and articles; a
//! customer's: published articles only), solutions and their publication by agents' commands,
//! suggestions in acknowledgements (recorded on the ticket), and deflection when the customer
//! closes a ticket after a suggestion before any agent answered. Inside the ingest transaction.

use super::context::{self, About};
use super::mailer::{self, AutoMail};
use super::{Delivery, Now, Outcome, Report};
use crate::command::{self, Command};
use crate::config::Agent;
use crate::desk::Desk;
use crate::guard::{Class, Verdict};
use crate::message::Parsed;
use crate::outbound::compose::AutoSubmitted;
use crate::reference::{normalize_subject, one_line, sender_text};
use crate::search::{Query, kb_ref};
use crate::store::{KbState, StoreError, Suggested, Tx};
use crate::ticket::{ArticleKind, Ticket, TicketId};
use serde_json::{Value, json};

/// Characters of an article shown under its title in an acknowledgement.
const EXCERPT_CHARS: usize = 300;

/// The `search` template variables for `query`: for an agent every ticket and published article,
/// for anyone else published articles only.
fn results(tx: &Tx<'_>, desk: &Desk, query: &str, agent: bool) -> Result<Value, StoreError> {
    let n = desk.config.knowledge.search_results;
    let q = match Query::parse(query) {
        Ok(q) => q,
        Err(e) => {
            return Ok(json!({ "query": sender_text(query), "agent": agent, "error": e.to_string(), "tickets": [], "articles": [], "count": 0, "truncated": false, "about": "" }));
        }
    };
    let tickets: Vec<Value> = if agent {
        tx.search_tickets(&q, n)?.iter().map(|h| json!({ "ref": desk.refs.format(h.id), "subject": sender_text(&h.title), "status": h.status, "snippet": sender_text(&h.snippet) })).collect()
    } else {
        Vec::new()
    };
    let articles: Vec<Value> = tx.search_kb(&q, n)?.iter().map(|h| json!({ "ref": kb_ref(h.id), "title": sender_text(&h.title), "snippet": sender_text(&h.snippet) })).collect();
    Ok(json!({ "query": q.text(), "agent": agent, "error": null, "count": tickets.len() + articles.len(), "tickets": tickets, "articles": articles, "truncated": q.truncated, "about": "" }))
}

/// A fresh mail to the desk that asks for a search, and whether an agent asks:
/// - an agent (From an agent's address, DKIM/DMARC pass recorded by a trusted MTA): the subject
///   `search WORDS`, or `/search WORDS` as the first line;
/// - anyone else, with `[knowledge] customer_search`: the subject exactly `search` with the words
///   on the first line of the text, or `/search WORDS` as the first line. A subject that merely
///   starts with "search" ("search not working") is an ordinary mail and opens a ticket.
///
/// A reply that carries our signed token for a ticket (an agent's answer to a notification whose
/// client dropped the subject tag) is never taken for one: it goes to its ticket.
fn search_request<'d>(desk: &'d Desk, p: &Parsed, verdict: &Verdict, now: &Now) -> Option<(String, Option<&'d Agent>)> {
    if verdict.class != Class::Human || p.from_address().is_empty() || desk.refs.find(&p.subject).is_some() {
        return None;
    }
    let sender = p.from_address();
    let to_ticket = |id: &str| desk.signer.verify(id, sender, now.t.unix_timestamp()).is_some_and(|v| v.ticket != 0);
    if p.ancestors().into_iter().any(to_ticket) || p.to.iter().chain(p.cc.iter()).filter_map(|m| desk.signer.token_from_address(&m.address)).any(|t| to_ticket(&t)) {
        return None;
    }
    let agent = desk.config.agent_by_email(p.from_address()).filter(|_| p.from_fallback.is_none() && super::dkim_verified(desk, p) && super::authenticated(desk, p));
    if agent.is_none() && !desk.config.knowledge.customer_search {
        return None;
    }
    let subject = normalize_subject(&p.subject);
    let lower = subject.to_lowercase();
    let cmds = command::parse(&p.visible_text);
    if let [Command::Search { query }] = cmds.commands.as_slice() {
        return Some((query.clone(), agent));
    }
    if lower == "search" || lower == "search:" {
        let first = p.visible_text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
        return Some((first.chars().take(crate::search::MAX_QUERY_CHARS).collect(), agent));
    }
    if agent.is_some() && (lower.starts_with("search ") || lower.starts_with("search:")) {
        return Some((subject.get(7..).unwrap_or("").to_string(), agent));
    }
    None
}

/// Answer a search by mail, if the message is one: no ticket is opened; the request is kept
/// (quarantine table, reason `self_service`) like a status request.
pub(super) fn answer_request(tx: &mut Tx<'_>, desk: &Desk, d: Delivery<'_>, p: &Parsed, verdict: &Verdict, key: &str, now: &Now) -> Result<Option<Report>, StoreError> {
    let Some((query, agent)) = search_request(desk, p, verdict, now) else { return Ok(None) };
    let sender = p.from_address();
    let queue = desk.config.queue_of(d.mailbox).or_else(|| desk.config.queues.values().next()).expect("validated config has a queue");
    let threading = Some(format!("search request ({})", if agent.is_some() { "agent" } else { "published articles" }));
    if agent.is_none()
        && let Some(why) = super::sender_flood(tx, desk, sender, now)?
    {
        super::quarantine(tx, d, "flood", &format!("search not answered: {why}"), now)?;
        tx.record_delivery(key, None, "quarantined", &now.s)?;
        let mut r = Report::new(p, Some(verdict.clone()), threading, Outcome::Quarantined { reason: format!("flood control: {why}") });
        r.actions.push(format!("flood control: {why}; not answered"));
        return Ok(Some(r));
    }
    let search = results(tx, desk, &query, agent.is_some())?;
    let name = p.from.as_ref().and_then(|m| m.name.clone()).unwrap_or_default();
    let ctx = json!({
        "desk": { "name": desk.config.desk.name },
        "queue": { "name": queue.name, "address": queue.address, "from_name": queue.from_name },
        "recipient": { "address": sender, "name": sender_text(&name) },
        "search": search,
    });
    let what = format!("search for \"{}\": {} result(s)", search["query"].as_str().unwrap_or(""), search["count"]);
    super::quarantine(tx, d, "self_service", "answered with search_results", now)?;
    tx.record_delivery(key, None, "search_request", &now.s)?;
    let sent = mailer::send_auto(tx, desk, now, AutoMail::answer(p, None, queue, ArticleKind::AutoReply, "search_results", "search_results", ctx))?;
    let mut r = Report::new(p, Some(verdict.clone()), threading, Outcome::Answered { what });
    super::record_sent(sent, &mut r.actions, &mut r.mails);
    Ok(Some(r))
}

/// Problems with an agent's knowledge commands, before anything is applied.
pub(super) fn validate(tx: &Tx<'_>, desk: &Desk, ticket: TicketId, parsed: &command::Parsed) -> Result<Vec<String>, StoreError> {
    let mut errors = Vec::new();
    let solution = tx.solution_of(ticket)?;
    for c in &parsed.commands {
        match c {
            Command::Search { query } => {
                if let Err(e) = Query::parse(query) {
                    errors.push(format!("{}: {e}", c.describe()));
                } else if !desk.templates.has("search_results") {
                    errors.push(format!("{}: the template set has no `search_results`", c.describe()));
                }
            }
            Command::Solution if parsed.text.is_empty() => errors.push("/solution: write the solution below the command lines".into()),
            Command::Solution if parsed.commands.iter().any(|c| matches!(c, Command::Forward { .. })) => errors.push("/solution cannot go with /forward (that text is for the group)".into()),
            Command::Publish { .. } if solution.is_none() && !parsed.is_solution() => errors.push(format!("{}: this ticket has no solution yet (write one with /solution)", c.describe())),
            Command::Withdraw if solution.as_ref().is_none_or(|s| s.state != KbState::Published) => errors.push("/withdraw: this ticket's solution is not published".into()),
            _ => {}
        }
    }
    Ok(errors)
}

/// Record the mail's text as `t`'s solution (before the other commands, so `/publish` finds it).
pub(super) fn record_solution(tx: &mut Tx<'_>, t: &Ticket, agent: &Agent, text: &str, now: &Now) -> Result<String, StoreError> {
    let title = sender_text(&normalize_subject(&t.subject));
    let id = tx.set_solution(t.id, &title, text, &agent.email, &now.s)?;
    let line = format!("solution recorded ({})", kb_ref(id));
    tx.event(t.id, "solution", &format!("{line} by {}", agent.email), &now.s)?;
    Ok(line)
}

/// `/publish [TITLE]` and `/withdraw` on `t`'s solution (validated: it exists).
pub(super) fn publish(tx: &mut Tx<'_>, t: &Ticket, agent: &Agent, c: &Command, now: &Now) -> Result<String, StoreError> {
    let Some(s) = tx.solution_of(t.id)? else { return Ok(String::new()) };
    let (kind, line) = match c {
        Command::Publish { title } => {
            tx.publish_kb(s.id, title.as_deref(), &agent.email, &now.s)?;
            ("published", format!("published as {} \"{}\"", kb_ref(s.id), title.as_deref().unwrap_or(&s.title)))
        }
        _ => {
            tx.withdraw_kb(s.id, &now.s)?;
            ("withdrawn", format!("{} withdrawn", kb_ref(s.id)))
        }
    };
    tx.event(t.id, kind, &format!("{line} by {}", agent.email), &now.s)?;
    Ok(line)
}

/// Mail an agent's `/search` results to the agent, threaded under their mail, about `t` (a reply
/// to it works like a reply to any notification of that ticket).
#[allow(clippy::too_many_arguments)]
pub(super) fn answer_agent(tx: &mut Tx<'_>, desk: &Desk, now: &Now, t: &Ticket, agent: &Agent, query: &str, parent: &str, r: &mut Report) -> Result<(), StoreError> {
    let queue = desk.config.queues.get(&t.queue).or_else(|| desk.config.queues.values().next()).expect("validated config has a queue");
    let mut ctx = context::build(desk, queue, t, &About { agent: Some(agent), ..Default::default() }, &agent.email, &agent.name);
    ctx["search"] = results(tx, desk, query, true)?;
    ctx["search"]["about"] = json!(desk.refs.format(t.id));
    let sent = mailer::send_auto(tx, desk, now, AutoMail {
        ticket: Some(t.id),
        kind: ArticleKind::Notification,
        label: "search_results",
        template: "search_results",
        queue,
        to: &agent.email,
        to_name: Some(&agent.name),
        cc: Vec::new(),
        from_name: None,
        ctx,
        in_reply_to: Some(parent),
        references: vec![parent.to_string()],
        auto: Some(AutoSubmitted::AutoGenerated),
        lang: None,
    })?;
    super::notify::record(vec![sent], &mut r.actions, &mut r.mails);
    Ok(())
}

/// Published articles for a new ticket's acknowledgement: looked up only when one is published,
/// recorded on the ticket (`kb_suggestions`, an event), best first.
pub(super) fn suggest(tx: &mut Tx<'_>, desk: &Desk, ticket: TicketId, p: &Parsed, now: &Now, actions: &mut Vec<String>) -> Result<Vec<Suggested>, StoreError> {
    let k = &desk.config.knowledge;
    if k.suggestions == 0 || !tx.has_published_kb()? {
        return Ok(Vec::new());
    }
    let terms = crate::search::suggestion_terms(&normalize_subject(&p.subject), &p.visible_text);
    let found = tx.suggest_kb(&terms, k.suggest_min_words, k.suggestions)?;
    if !found.is_empty() {
        tx.record_suggestions(ticket, &found, &now.s)?;
        let list = found.iter().map(|s| format!("{} (rank {}, {} word(s))", kb_ref(s.id), s.rank, s.matched)).collect::<Vec<_>>().join(", ");
        tx.event(ticket, "kb_suggested", &list, &now.s)?;
        actions.push(format!("suggested {list}"));
    }
    Ok(found)
}

/// The acknowledgement's `suggestions`: published articles first, then the `[kb]` folder's,
/// at most as many as the larger of the two limits; `suggested` says published ones are there.
pub(super) fn merge_into(ctx: &mut Value, found: &[Suggested], desk: &Desk) {
    let mut list: Vec<Value> = found
        .iter()
        .map(|s| {
            let body = one_line(&s.body);
            let excerpt = if body.chars().count() > EXCERPT_CHARS { format!("{}…", body.chars().take(EXCERPT_CHARS).collect::<String>().trim_end()) } else { body };
            json!({ "ref": kb_ref(s.id), "title": s.title, "excerpt": excerpt })
        })
        .collect();
    let max = desk.config.kb.as_ref().map(|(_, n)| *n).unwrap_or(0).max(desk.config.knowledge.suggestions);
    if let Some(folder) = ctx["suggestions"].as_array() {
        for a in folder {
            if list.len() >= max {
                break;
            }
            let mut a = a.clone();
            a["ref"] = Value::Null;
            list.push(a);
        }
    }
    ctx["suggested"] = Value::Bool(!found.is_empty());
    ctx["suggestions"] = Value::Array(list);
}

/// The customer closed `t`: deflected when we suggested articles and no agent has answered.
pub(super) fn on_customer_close(tx: &mut Tx<'_>, t: &Ticket, now: &Now, actions: &mut Vec<String>) -> Result<(), StoreError> {
    let suggested = tx.suggestions_of(t.id)?;
    if suggested.is_empty() || t.first_response_at.is_some() {
        return Ok(());
    }
    tx.record_deflection(t.id, &now.s)?;
    let detail = format!("closed by the customer after the suggestion of {}", suggested.iter().map(|id| kb_ref(*id)).collect::<Vec<_>>().join(", "));
    tx.event(t.id, "deflected", &detail, &now.s)?;
    actions.push(format!("deflected: {detail}"));
    Ok(())
}
