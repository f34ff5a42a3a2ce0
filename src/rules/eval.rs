//! Evaluation: every rule in file order against one message — skip by `enabled`, phase or an
//! earlier `stop`; check the conditions cheapest first; merge the actions of each matched rule.
//! Pure and infallible: a message can make a rule not match, never make evaluation fail.

use super::cond::{Captures, Facts, Zone};
use super::{Actions, Evaluation, Input, Outcome, Phase, Rule, RuleSet, RuleTrace};
use std::sync::Arc;

pub fn evaluate(set: &RuleSet, input: &Input<'_>) -> Evaluation {
    let facts = Facts::new(input, set.zones.len(), set.body_searcher.as_ref());
    let mut actions = Actions::default();
    let mut trace = Vec::with_capacity(set.rules.len());
    let disabled: Arc<str> = Arc::from("disabled");
    let other_phase: Arc<str> = Arc::from(match input.phase {
        Phase::New => "phase: rule is for follow-ups only, this is a new ticket",
        Phase::FollowUp => "phase: rule is for new tickets only, this is a follow-up",
    });
    let mut stopped_by: Option<Arc<str>> = None;
    for rule in &set.rules {
        let skip = |why: &Arc<str>| RuleTrace { name: rule.name.clone(), location: rule.location.clone(), outcome: Outcome::Skipped { why: why.clone() }, stopped: false };
        if let Some(why) = &stopped_by {
            trace.push(skip(why));
            continue;
        }
        if !rule.enabled {
            trace.push(skip(&disabled));
            continue;
        }
        if !rule.phase.includes(input.phase) {
            trace.push(skip(&other_phase));
            continue;
        }
        let zone = rule.zone.and_then(|i| set.zones.get(i).map(|tz| Zone { index: i, tz }));
        let mut caps = Captures::new();
        let failed = rule.conds.iter().find(|c| !c.holds(&facts, zone.as_ref(), &mut caps));
        let outcome = match failed {
            Some(c) => Outcome::NotMatched { failed: c.failure(&facts, zone.as_ref()) },
            None => {
                apply(&mut actions, rule, &caps);
                if rule.stop {
                    stopped_by = Some(Arc::from(format!("rule {} stopped evaluation", rule.name)));
                }
                Outcome::Matched { captures: caps }
            }
        };
        let stopped = rule.stop && matches!(outcome, Outcome::Matched { .. });
        trace.push(RuleTrace { name: rule.name.clone(), location: rule.location.clone(), outcome, stopped });
    }
    Evaluation { trace, actions }
}

/// Merge one matched rule's actions: scalars override, lists accumulate without duplicates.
fn apply(a: &mut Actions, rule: &Rule, caps: &Captures) {
    let t = &rule.then;
    let mut by = |key: &str| {
        a.applied_by.insert(key.to_string(), rule.name.to_string());
    };
    macro_rules! scalar {
        ($field:ident, $key:literal) => {
            if let Some(v) = &t.$field {
                by($key);
                a.$field = Some(v.clone());
            }
        };
    }
    macro_rules! flag {
        ($field:ident, $key:literal) => {
            if let Some(v) = t.$field {
                by($key);
                a.$field = v;
            }
        };
    }
    scalar!(queue, "queue");
    scalar!(priority, "priority");
    scalar!(owner, "owner");
    scalar!(status, "status");
    scalar!(ack_template, "ack_template");
    scalar!(acknowledge, "acknowledge");
    scalar!(service, "service");
    scalar!(sla_policy, "sla_policy");
    scalar!(ticket_type, "type");
    flag!(drop, "drop");
    flag!(quarantine, "quarantine");
    flag!(spam, "spam");
    flag!(internal_only, "internal_only");

    for tag in t.add_tags.iter().filter_map(|tpl| tpl.render(caps)).filter_map(|v| normalize_tag(&v)) {
        a.remove_tags.retain(|x| *x != tag);
        a.applied_by.insert(format!("add_tags[{tag}]"), rule.name.to_string());
        push_unique(&mut a.add_tags, tag);
    }
    for tag in t.remove_tags.iter().filter_map(|tpl| tpl.render(caps)).filter_map(|v| normalize_tag(&v)) {
        a.add_tags.retain(|x| *x != tag);
        a.applied_by.remove(&format!("add_tags[{tag}]"));
        a.applied_by.insert(format!("remove_tags[{tag}]"), rule.name.to_string());
        push_unique(&mut a.remove_tags, tag);
    }
    for ci in t.ci.iter().filter_map(|tpl| tpl.render(caps)) {
        let ci = ci.trim().to_string();
        if !ci.is_empty() {
            a.applied_by.insert(format!("ci[{ci}]"), rule.name.to_string());
            push_unique(&mut a.ci, ci);
        }
    }
    for (key, from, to) in [("watchers", &t.watchers, &mut a.watchers), ("notify", &t.notify, &mut a.notify)] {
        for addr in from {
            a.applied_by.insert(format!("{key}[{addr}]"), rule.name.to_string());
            push_unique(to, addr.clone());
        }
    }
}

fn push_unique(list: &mut Vec<String>, v: String) {
    if !list.contains(&v) {
        list.push(v);
    }
}

/// Tags are lower-case, trimmed, with inner whitespace runs as `-`; `None` when nothing is left.
pub fn normalize_tag(s: &str) -> Option<String> {
    // Control characters (ESC from a subject) never reach a tag, nor `tickets show` (17.5).
    let t = crate::reference::one_line(s).split_whitespace().collect::<Vec<_>>().join("-").to_lowercase();
    (!t.is_empty()).then_some(t)
}
