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
