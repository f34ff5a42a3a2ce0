//! SLA bookkeeping inside the ingest transaction: start targets on a new ticket, restart the
//! next-response clock when the customer writes, meet targets when an agent answers or the
//! ticket is resolved, pause while pending, recompute when priority or queue change.

use super::Now;
use crate::config::SlaPolicy;
use crate::desk::Desk;
use crate::sla::{Kind, Target};
use crate::store::{StoreError, Tx};
use crate::ticket::{Status, Ticket};

/// The policy that applies to a ticket: its own (set by a rule or the catalog), else its queue's.
pub fn policy<'d>(tx: &Tx<'_>, desk: &'d Desk, t: &Ticket) -> Result<Option<&'d SlaPolicy>, StoreError> {
    let own = tx.ticket_sla_policy(t.id)?;
    let name = own.or_else(|| desk.config.queues.get(&t.queue).and_then(|q| q.sla.clone()));
    Ok(name.and_then(|n| desk.config.sla.policies.get(&n)))
}

fn secs(now: &Now) -> i64 {
    now.t.unix_timestamp()
}

/// A new ticket: start its first-response and resolution clocks.
pub fn on_created(tx: &mut Tx<'_>, desk: &Desk, t: &Ticket, now: &Now) -> Result<(), StoreError> {
    let Some(p) = policy(tx, desk, t)? else { return Ok(()) };
    let cal = desk.config.sla.calendar(p);
    let targets = p.targets_for(t.priority);
    for (kind, target) in [(Kind::FirstResponse, targets.first_response), (Kind::Resolution, targets.resolution)] {
        if let Some(sec) = target {
            let mut tg = Target::new(kind, secs(now), sec as i64);
            tg.schedule(&cal, p.warn);
            tx.put_sla_target(t.id, &tg)?;
        }
    }
    tx.set_service_fields(t.id, Some(&p.name), None, None)?;
    Ok(())
}

/// The customer wrote again: once the first response is met, the next-response clock restarts.
pub fn on_customer_message(tx: &mut Tx<'_>, desk: &Desk, t: &Ticket, now: &Now) -> Result<(), StoreError> {
    let Some(p) = policy(tx, desk, t)? else { return Ok(()) };
    let Some(sec) = p.targets_for(t.priority).next_response else { return Ok(()) };
    let targets = tx.sla_targets(t.id)?;
    let first_met = targets.iter().any(|x| x.kind == Kind::FirstResponse && x.met_at.is_some());
    let next_running = targets.iter().any(|x| x.kind == Kind::NextResponse && x.met_at.is_none());
    if first_met && !next_running {
        let cal = desk.config.sla.calendar(p);
        let mut tg = Target::new(Kind::NextResponse, secs(now), sec as i64);
        tg.schedule(&cal, p.warn);
        tx.put_sla_target(t.id, &tg)?;
    }
    Ok(())
}

/// An agent answered the customer: first and next response are met.
pub fn on_agent_reply(tx: &mut Tx<'_>, t: &Ticket, now: &Now) -> Result<(), StoreError> {
    for mut tg in tx.sla_targets(t.id)? {
        if matches!(tg.kind, Kind::FirstResponse | Kind::NextResponse) && tg.met_at.is_none() {
            tg.meet(secs(now));
            tx.put_sla_target(t.id, &tg)?;
        }
    }
    Ok(())
}

/// Status changed: pending pauses every clock, leaving pending resumes them, resolving or
/// closing stops them (resolution met).
pub fn on_status(tx: &mut Tx<'_>, desk: &Desk, t: &Ticket, old: Status, new: Status, now: &Now) -> Result<(), StoreError> {
    if old == new {
        return Ok(());
    }
    let Some(p) = policy(tx, desk, t)? else { return Ok(()) };
    let cal = desk.config.sla.calendar(p);
    for mut tg in tx.sla_targets(t.id)? {
        match new {
            Status::Pending => tg.pause(secs(now)),
            Status::Resolved | Status::Closed => tg.meet(secs(now)),
            Status::New | Status::Open => tg.resume(&cal, p.warn, secs(now)),
        }
        tg.schedule(&cal, p.warn);
        tx.put_sla_target(t.id, &tg)?;
    }
    Ok(())
}

/// Priority, queue or policy changed: the running clocks get the new targets.
pub fn recompute(tx: &mut Tx<'_>, desk: &Desk, t: &Ticket) -> Result<(), StoreError> {
    let Some(p) = policy(tx, desk, t)? else { return Ok(()) };
    let cal = desk.config.sla.calendar(p);
    let targets = p.targets_for(t.priority);
    for mut tg in tx.sla_targets(t.id)? {
        let new = match tg.kind {
            Kind::FirstResponse => targets.first_response,
            Kind::NextResponse => targets.next_response,
            Kind::Resolution => targets.resolution,
        };
        if let Some(sec) = new
            && tg.met_at.is_none()
        {
            tg.target_secs = sec as i64;
            tg.schedule(&cal, p.warn);
            tx.put_sla_target(t.id, &tg)?;
        }
    }
    Ok(())
}
