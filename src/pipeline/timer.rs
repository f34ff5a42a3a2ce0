//! SLA timer: announces each warning and each breach exactly once (the moment is recorded on the
//! target in the same transaction that queues the notification), and applies the policy's breach
//! actions (raise priority, escalate to tier 2). Time comes from the pipeline's clock.

use super::context::About;
use super::{Now, Pipeline, agent, notify};
use crate::clock::rfc3339;
use crate::config::Agent;
use crate::desk::Desk;
use crate::store::StoreError;
use crate::ticket::Ticket;

/// What one tick announced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tick {
    pub warnings: usize,
    pub breaches: usize,
}

impl Pipeline {
    /// Announce every SLA warning and breach that is due now.
    pub fn sla_tick(&self, desk: &Desk) -> Result<Tick, StoreError> {
        let now = Now::at(self.clock.now());
        let at = now.t.unix_timestamp();
        let mut tick = Tick::default();
        for (ticket, due) in self.store.due_sla(at, 200)? {
            let mut tx = self.store.begin()?;
            // Re-read inside the transaction: another tick or an agent's reply may have won.
            let Some(mut tg) = tx.sla_targets(ticket)?.into_iter().find(|x| x.kind == due.kind) else { continue };
            let Some(t) = tx.ticket(ticket)? else { continue };
            if tg.met_at.is_some() || tg.paused_since.is_some() {
                continue;
            }
            let breach = tg.breached_at.is_none() && tg.due_at.is_some_and(|d| d <= at);
            let warn = !breach && tg.warned_at.is_none() && tg.warn_at.is_some_and(|w| w <= at);
            if !breach && !warn {
                continue;
            }
            let due_at = tg.due_at.and_then(|d| time::OffsetDateTime::from_unix_timestamp(d).ok()).map(rfc3339).unwrap_or_default();
            let (kind, template) = if breach {
                tg.breached_at = Some(at);
                tg.warned_at.get_or_insert(at);
                tick.breaches += 1;
                ("sla_breach", "sla_breach")
            } else {
                tg.warned_at = Some(at);
                tick.warnings += 1;
                ("sla_warning", "sla_warning")
            };
            tx.put_sla_target(ticket, &tg)?;
            tx.event(ticket, kind, &format!("{} due {due_at}", tg.kind.label()), &now.s)?;
            let about = About { sla: Some((tg.kind.label(), due_at.clone())), ..Default::default() };
            let to: Vec<&Agent> = owner_or_queue(desk, &t);
            notify::agents(&mut tx, desk, &now, &t, template, &to, None, &about, None)?;
            if breach {
                on_breach(&mut tx, desk, &t, &now)?;
            }
            tx.commit()?;
            self.outbox_wake.notify_one();
            tracing::info!(ticket, target = tg.kind.as_str(), what = kind, "SLA");
        }
        Ok(tick)
    }

    /// The earliest moment the timer has work (Unix seconds).
    pub fn next_sla_moment(&self) -> Result<Option<i64>, StoreError> {
        self.store.next_sla_moment()
    }
}

fn owner_or_queue<'d>(desk: &'d Desk, t: &Ticket) -> Vec<&'d Agent> {
    match t.owner.as_deref().and_then(|o| desk.config.agent_by_email(o)) {
        Some(a) => vec![a],
        None => desk.config.agents.values().filter(|a| a.works(&t.queue) && a.tier == t.tier).collect(),
    }
}

/// The policy's breach actions.
fn on_breach(tx: &mut crate::store::Tx<'_>, desk: &Desk, t: &Ticket, now: &Now) -> Result<(), StoreError> {
    let Some(p) = super::sla::policy(tx, desk, t)? else { return Ok(()) };
    if let Some(pr) = p.priority_on_breach
        && pr > t.priority
    {
        tx.set_priority(t.id, pr, &now.s)?;
        tx.event(t.id, "sla_action", &format!("priority {} → {pr} (breach)", t.priority), &now.s)?;
    }
    if p.escalate_on_breach && t.tier < 2 {
        let line = agent::escalate(tx, desk, t, None, now)?;
        tx.event(t.id, "sla_action", &format!("{line} (breach)"), &now.s)?;
        let t2 = tx.ticket(t.id)?.unwrap_or_else(|| t.clone());
        let timer = Agent { key: "sla".into(), name: "The SLA timer".into(), email: String::new(), queues: Vec::new(), tier: 2, notify_new: false };
        let text = tx.latest_customer_text(t.id)?.unwrap_or_default();
        let reason = format!("The {} target was breached.", p.name);
        let about = About { from: &t2.requester, text: &text, agent: Some(&timer), reply: &reason, ..Default::default() };
        let to = agent::escalation_recipients(desk, &t2, None);
        notify::agents(tx, desk, now, &t2, "agent_escalated", &to, None, &about, None)?;
    }
    Ok(())
}

impl Pipeline {
    /// Lifecycle timers: close long-resolved tickets, remind and then resolve tickets that wait for
    /// a customer who does not answer. Each step is its own transaction and happens once.
    pub fn lifecycle_tick(&self, desk: &Desk) -> Result<usize, StoreError> {
        let Some(lc) = &desk.config.lifecycle else { return Ok(0) };
        let now = Now::at(self.clock.now());
        let mut done = 0;
        if let Some(after) = lc.close_resolved_after {
            for id in self.store.resolved_before(&now.minus(after))? {
                done += self.lifecycle_step(desk, &now, id, crate::ticket::Status::Resolved, Step::Close)? as usize;
            }
        }
        if let Some(after) = lc.resolve_pending_after {
            for id in self.store.pending_before(&now.minus(after), false)? {
                done += self.lifecycle_step(desk, &now, id, crate::ticket::Status::Pending, Step::Resolve)? as usize;
            }
        }
        if let Some(after) = lc.remind_pending_after {
            for id in self.store.pending_before(&now.minus(after), true)? {
                done += self.lifecycle_step(desk, &now, id, crate::ticket::Status::Pending, Step::Remind)? as usize;
            }
        }
        if done > 0 {
            self.outbox_wake.notify_one();
        }
        Ok(done)
    }

    /// Prune what no check reads any more: automatic-mail log rows older than the guard's
    /// longest window (they would otherwise grow by one per acknowledgement forever, each new
    /// row a random-key insert into a large index). Chunks of 5,000 rows, one short
    /// transaction each, so intake waits for one chunk at most; at most 20 chunks a tick, so
    /// a desk upgraded with years of rows catches up over some minutes without holding up the
    /// other timers. Returns the rows deleted.
    pub fn housekeeping_tick(&self, desk: &Desk) -> Result<usize, StoreError> {
        const CHUNK: u32 = 5_000;
        let before = Now::at(self.clock.now()).minus(desk.config.guard.auto_mail_horizon());
        let mut deleted = 0;
        for _ in 0..20 {
            let mut tx = self.store.begin()?;
            let n = tx.prune_auto_mail_log(&before, CHUNK)?;
            tx.commit()?;
            deleted += n;
            if n < CHUNK as usize {
                break;
            }
        }
        if deleted > 0 {
            tracing::info!(rows = deleted, before = %before, "pruned the automatic-mail log");
        }
        Ok(deleted)
    }

    /// Mail the weekly report to `[reports] weekly_to`, once a week.
    pub fn weekly_report_tick(&self, desk: &Desk) -> Result<bool, StoreError> {
        if desk.config.weekly_report_to.is_empty() {
            return Ok(false);
        }
        let now = Now::at(self.clock.now());
        let mut tx = self.store.begin()?;
        let week = std::time::Duration::from_secs(7 * 86400);
        if tx.report_sent_at("weekly")?.is_some_and(|at| at > now.minus(week)) {
            return Ok(false);
        }
        let since = now.t - time::Duration::days(7);
        let rows = tx.report_rows_tx(&crate::clock::rfc3339(since))?;
        let mut report = crate::report::build(&rows, since, now.t);
        let (suggested, deflected) = tx.knowledge_figures(&crate::clock::rfc3339(since))?;
        report.knowledge = crate::report::Deflection { suggested, deflected };
        crate::report::add_csat(&mut report, &tx.csat_ratings_tx(&crate::clock::rfc3339(since))?);
        let (text, html) = (crate::report::text(&report), crate::report::html(&report));
        let queue = desk.config.queues.values().next().expect("validated config has a queue");
        for to in &desk.config.weekly_report_to {
            let mut ctx = serde_json::json!({ "desk": { "name": desk.config.desk.name }, "queue": { "name": queue.name, "address": queue.address, "from_name": queue.from_name } });
            ctx["report"] = serde_json::json!({ "text": text, "html": html });
            super::mailer::send_auto(&mut tx, desk, &now, super::mailer::AutoMail::desk_notice(queue, to, "weekly_report", ctx))?;
        }
        tx.mark_report_sent("weekly", &now.s)?;
        tx.commit()?;
        self.outbox_wake.notify_one();
        Ok(true)
    }

    fn lifecycle_step(&self, desk: &Desk, now: &Now, id: i64, expect: crate::ticket::Status, step: Step) -> Result<bool, StoreError> {
        let mut tx = self.store.begin()?;
        let Some(t) = tx.ticket(id)? else { return Ok(false) };
        if t.status != expect {
            return Ok(false);
        }
        let mut actions = Vec::new();
        let mut mails = Vec::new();
        match step {
            Step::Close | Step::Resolve => {
                let new = if matches!(step, Step::Close) { crate::ticket::Status::Closed } else { crate::ticket::Status::Resolved };
                tx.set_status(id, new, &now.s)?;
                super::sla::on_status(&mut tx, desk, &t, t.status, new, now)?;
                tx.event(id, "lifecycle", &format!("{} → {new} (no activity)", t.status), &now.s)?;
                if let Some(t2) = tx.ticket(id)?
                    && let Some(sent) = notify::customer_status(&mut tx, desk, now, &t2)?
                {
                    notify::record(vec![sent], &mut actions, &mut mails);
                }
            }
            Step::Remind => {
                tx.mark_reminded(id, &now.s)?;
                tx.event(id, "lifecycle", "pending reminder sent", &now.s)?;
                let sent = super::mailer::to_requester(&mut tx, desk, now, &t, "pending_reminder", &About::default(), None)?;
                notify::record(vec![sent], &mut actions, &mut mails);
            }
        }
        tx.commit()?;
        Ok(true)
    }
}

/// One lifecycle step.
#[derive(Debug, Clone, Copy)]
enum Step {
    Close,
    Resolve,
    Remind,
}
