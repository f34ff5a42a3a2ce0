//! Service levels through the pipeline with a manual clock (real SQLite, no servers): due times
//! in business hours, warning then breach announced once each, pending pauses the clock, a
//! first agent reply meets the target, breach escalates to tier 2.

mod common;

use common::clients;
use postdesk::clock::ManualClock;
use postdesk::desk::{Desk, KeyMode};
use postdesk::pipeline::{Delivery, Outcome, Pipeline};
use std::sync::Arc;
use time::macros::datetime;

const CFG: &str = r#"
[desk]
domain = "desk.example.test"
data_dir = "var"
templates_dir = "templates"
secret = "sla-test-secret-0123456789"

[queues.support]
address = "support@example.test"
sla = "standard"
escalate_to = "experts"

[queues.experts]
address = "experts@example.test"

[mailboxes.support]
kind = "pipe"

[agents.alice]
email = "alice@agents.example.test"
queues = ["support"]

[agents.bob]
email = "bob@agents.example.test"
tier = 2

[sla.calendars.office]
timezone = "Europe/Berlin"
mon = "09:00-17:00"
tue = "09:00-17:00"
wed = "09:00-17:00"
thu = "09:00-17:00"
fri = "09:00-17:00"
holidays = ["2026-12-24"]

[sla.policies.standard]
calendar = "office"
first_response = "4h"
resolution = "2d"
warn_at = "75%"
escalate_on_breach = true
priority_on_breach = "high"

[sla.policies.standard.priority.urgent]
first_response = "1h"
"#;

struct S {
    _dir: tempfile::TempDir,
    desk: Desk,
    p: Pipeline,
    clock: ManualClock,
}

fn setup(start: time::OffsetDateTime) -> S {
    let dir = tempfile::tempdir().unwrap();
    let path = common::write_config(dir.path(), CFG);
    let desk = Desk::load(&path, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
    let clock = ManualClock::new(start);
    let p = Pipeline::new(Arc::new(common::test_store(&desk.config.desk.database)), Arc::new(clock.clone()));
    S { _dir: dir, desk, p, clock }
}

impl S {
    fn ingest(&self, raw: &[u8]) -> Outcome {
        self.p.ingest(&self.desk, Delivery { mailbox: "support", raw, cursor: None, truncated_from: None }).unwrap().outcome
    }
    fn events(&self, kind: &str) -> Vec<String> {
        self.p.store.ticket_detail(1).unwrap().unwrap().events.into_iter().filter(|e| e.kind == kind).map(|e| e.detail).collect()
    }
    fn queued_to(&self, who: &str, subject_part: &str) -> Vec<String> {
        self.p
            .store
            .due_outbound("9999", 10_000)
            .unwrap()
            .into_iter()
            .filter(|m| m.recipients.iter().any(|r| r == who))
            .map(|m| String::from_utf8(m.raw).unwrap())
            .filter(|m| m.contains(subject_part))
            .collect()
    }
}

#[test]
fn warning_then_breach_once_each_in_business_hours_then_escalation() {
    // Friday 2026-12-04 15:00 Berlin (14:00 UTC): 2 business hours left on Friday.
    let s = setup(datetime!(2026-12-04 14:00 UTC));
    assert!(matches!(s.ingest(&clients::thunderbird_new("Dana", "dana@example.org", "support@example.test", "VPN down", "x").raw), Outcome::Created { ticket: 1 }));
    let targets = s.p.store.begin().unwrap().sla_targets(1).unwrap();
    let first = targets.iter().find(|t| t.kind == postdesk::sla::Kind::FirstResponse).unwrap();
    // 4 business hours: 2 on Friday, 2 on Monday → Monday 11:00 Berlin = 10:00 UTC.
    assert_eq!(first.due_at, Some(datetime!(2026-12-07 10:00 UTC).unix_timestamp()));
    // 75% = 3h: Monday 10:00 Berlin.
    assert_eq!(first.warn_at, Some(datetime!(2026-12-07 09:00 UTC).unix_timestamp()));

    // The weekend passes: nothing yet.
    s.clock.advance(time::Duration::days(2));
    assert_eq!(s.p.sla_tick(&s.desk).unwrap().warnings, 0);
    // Monday 08:05 Berlin: not yet.
    s.clock.advance(time::Duration::hours(17) + time::Duration::minutes(5));
    assert_eq!(s.p.sla_tick(&s.desk).unwrap().warnings, 0);
    // Monday 10:05 Berlin: one warning, and only one however often the timer runs.
    s.clock.advance(time::Duration::hours(2));
    assert_eq!(s.p.sla_tick(&s.desk).unwrap().warnings, 1);
    assert_eq!(s.p.sla_tick(&s.desk).unwrap().warnings, 0);
    assert_eq!(s.events("sla_warning").len(), 1);
    assert_eq!(s.queued_to("alice@agents.example.test", "SLA warning").len(), 1);
    // Monday 11:01: breach, once; priority raised; escalated to tier 2 in the experts queue.
    s.clock.advance(time::Duration::minutes(56));
    assert_eq!(s.p.sla_tick(&s.desk).unwrap().breaches, 1);
    assert_eq!(s.p.sla_tick(&s.desk).unwrap().breaches, 0);
    assert_eq!(s.events("sla_breach").len(), 1);
    let t = s.p.store.ticket_detail(1).unwrap().unwrap().ticket;
    assert_eq!((t.priority, t.tier, t.queue.as_str()), (postdesk::ticket::Priority::High, 2, "experts"));
    assert_eq!(s.queued_to("alice@agents.example.test", "SLA BREACHED").len(), 1);
    assert_eq!(s.queued_to("bob@agents.example.test", "Escalated").len(), 1, "tier 2 is told");
}

#[test]
fn pending_pauses_and_an_agent_reply_meets_the_target() {
    let s = setup(datetime!(2026-12-01 09:00 UTC)); // Tuesday 10:00 Berlin
    s.ingest(&clients::thunderbird_new("Dana", "dana@example.org", "support@example.test", "Printer", "x").raw);
    let n = s.queued_to("alice@agents.example.test", "New ticket").remove(0);
    let nid = common::header(&n, "message-id").unwrap();
    let nid = nid.trim_matches(['<', '>']);
    // The agent sets pending after one hour; the clock stops for the three hours pending lasts.
    s.clock.advance(time::Duration::hours(1));
    let cmd = clients::thunderbird_reply("A", "alice@agents.example.test", "support@example.test", "[PD-1] Printer", nid, &[], "/status pending");
    s.ingest(&cmd.raw);
    s.clock.advance(time::Duration::hours(3));
    s.ingest(&clients::outlook_subject_only_reply("Dana", "dana@example.org", "support@example.test", "[PD-1] Printer", "Here is the info").raw);
    let first = s.p.store.begin().unwrap().sla_targets(1).unwrap().into_iter().find(|t| t.kind == postdesk::sla::Kind::FirstResponse).unwrap();
    // due was 14:00 Berlin; three paused business hours move it to 17:00 Berlin = 16:00 UTC
    assert_eq!(first.due_at, Some(datetime!(2026-12-01 16:00 UTC).unix_timestamp()));
    // An agent reply meets it; no warning or breach ever follows.
    let reply = clients::thunderbird_reply("A", "alice@agents.example.test", "support@example.test", "[PD-1] Printer", nid, &[], "Fixed it, Dana.");
    s.ingest(&reply.raw);
    s.clock.advance(time::Duration::days(10));
    let tick = s.p.sla_tick(&s.desk).unwrap();
    let first = s.p.store.begin().unwrap().sla_targets(1).unwrap().into_iter().find(|t| t.kind == postdesk::sla::Kind::FirstResponse).unwrap();
    assert!(first.met_in_time() == Some(true), "{first:?}");
    assert_eq!(tick.breaches, 1, "only the resolution target (2 business days) is still running and breaches");
    assert_eq!(s.events("sla_breach").iter().filter(|d| d.contains("first response")).count(), 0);
}

#[test]
fn urgent_priority_has_its_own_target_and_changes_recompute() {
    let s = setup(datetime!(2026-12-01 09:00 UTC));
    s.ingest(&clients::thunderbird_new("Dana", "dana@example.org", "support@example.test", "Server down", "x").raw);
    let n = s.queued_to("alice@agents.example.test", "New ticket").remove(0);
    let nid = common::header(&n, "message-id").unwrap();
    let cmd = clients::thunderbird_reply("A", "alice@agents.example.test", "support@example.test", "[PD-1] Server down", nid.trim_matches(['<', '>']), &[], "/priority urgent");
    s.ingest(&cmd.raw);
    let first = s.p.store.begin().unwrap().sla_targets(1).unwrap().into_iter().find(|t| t.kind == postdesk::sla::Kind::FirstResponse).unwrap();
    assert_eq!(first.due_at, Some(datetime!(2026-12-01 10:00 UTC).unix_timestamp()), "1 business hour from 10:00 Berlin");
}

#[test]
fn lifecycle_closes_resolved_and_reminds_then_resolves_pending() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = CFG.to_string() + "\n[lifecycle]\nclose_resolved_after = \"7d\"\nremind_pending_after = \"3d\"\nresolve_pending_after = \"7d\"\n";
    let path = common::write_config(dir.path(), &cfg);
    let desk = Desk::load(&path, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
    let clock = ManualClock::new(datetime!(2026-12-01 09:00 UTC));
    let p = Pipeline::new(Arc::new(common::test_store(&desk.config.desk.database)), Arc::new(clock.clone()));
    let s = S { _dir: dir, desk, p, clock };
    for subject in ["One", "Two"] {
        s.ingest(&clients::thunderbird_new("Dana", "dana@example.org", "support@example.test", subject, "x").raw);
    }
    let notes: Vec<String> = s.queued_to("alice@agents.example.test", "New ticket");
    let cmd = |n: &str, text: &str| {
        let nid = common::header(n, "message-id").unwrap();
        let sub = common::header(n, "subject").unwrap();
        clients::thunderbird_reply("A", "alice@agents.example.test", "support@example.test", &sub, nid.trim_matches(['<', '>']), &[], text).raw
    };
    s.ingest(&cmd(&notes[0], "/resolve"));
    s.ingest(&cmd(&notes[1], "/pending"));
    let status = |id| s.p.store.ticket_detail(id).unwrap().unwrap().ticket.status;
    s.clock.advance(time::Duration::days(3) + time::Duration::hours(1));
    assert_eq!(s.p.lifecycle_tick(&s.desk).unwrap(), 1, "the reminder");
    assert_eq!(s.p.lifecycle_tick(&s.desk).unwrap(), 0, "once");
    assert_eq!(s.queued_to("dana@example.org", "Reminder").len(), 1);
    s.clock.advance(time::Duration::days(4));
    assert_eq!(s.p.lifecycle_tick(&s.desk).unwrap(), 2, "close PD-1, resolve PD-2");
    assert_eq!((status(1), status(2)), (postdesk::ticket::Status::Closed, postdesk::ticket::Status::Resolved));
    assert_eq!(s.queued_to("dana@example.org", "Closed: One").len(), 1);
    // A customer reply to the resolved one reopens it.
    s.ingest(&clients::outlook_subject_only_reply("Dana", "dana@example.org", "support@example.test", "[PD-2] Two", "Still broken").raw);
    assert_eq!(status(2), postdesk::ticket::Status::Open);
}

#[test]
fn weekly_report_goes_out_once_a_week() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::write_config(dir.path(), &(CFG.to_string() + "\n[reports]\nweekly_to = [\"boss@example.org\"]\n"));
    let desk = Desk::load(&path, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
    let clock = ManualClock::new(datetime!(2026-12-01 09:00 UTC));
    let p = Pipeline::new(Arc::new(common::test_store(&desk.config.desk.database)), Arc::new(clock.clone()));
    let s = S { _dir: dir, desk, p, clock };
    s.ingest(&clients::thunderbird_new("Dana", "dana@example.org", "support@example.test", "One", "x").raw);
    assert!(s.p.weekly_report_tick(&s.desk).unwrap());
    assert!(!s.p.weekly_report_tick(&s.desk).unwrap(), "once");
    let mail = s.queued_to("boss@example.org", "Weekly help desk report");
    assert_eq!(mail.len(), 1);
    assert!(mail[0].contains("support") && mail[0].contains("opened"), "{}", mail[0]);
    s.clock.advance(time::Duration::days(7));
    assert!(s.p.weekly_report_tick(&s.desk).unwrap());
}
