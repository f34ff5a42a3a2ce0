//! Routing rules through the whole pipeline (real SQLite, manual clock), with the example rules
//! shipped in config/rules.toml: the decisions an admin expects from each example, and the dry
//! run that explains them.

mod common;

use common::clients;
use postdesk::clock::ManualClock;
use postdesk::desk::{Desk, KeyMode};
use postdesk::pipeline::{Delivery, Outcome, Pipeline, Report};
use postdesk::ticket::Priority;
use std::path::Path;
use std::sync::Arc;
use time::macros::datetime;

fn setup(at: time::OffsetDateTime) -> (tempfile::TempDir, Desk, Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rules.toml");
    let cfg = format!(
        r#"
[desk]
domain = "desk.example.test"
data_dir = "var"
templates_dir = "templates"
secret = "rules-test-secret-0123456789"
[queues.support]
address = "support@example.test"
[queues.billing]
address = "billing@example.test"
[queues.ops]
address = "ops@example.test"
[mailboxes.support]
kind = "pipe"
[rules]
path = "{}"
"#,
        rules.display()
    );
    let path = common::write_config(dir.path(), &cfg);
    let desk = Desk::load(&path, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
    let store = Arc::new(common::test_store(&desk.config.desk.database));
    let p = Pipeline::new(store, Arc::new(ManualClock::new(at)));
    (dir, desk, p)
}

fn run(d: &Desk, p: &Pipeline, raw: &[u8]) -> Report {
    p.ingest(d, Delivery { mailbox: "support", raw, cursor: None, truncated_from: None }).unwrap()
}

/// Tuesday 10:00 Berlin: office hours.
const OFFICE: time::OffsetDateTime = datetime!(2026-12-01 09:00 UTC);

#[test]
fn example_rules_route_as_documented() {
    let (_d, desk, p) = setup(OFFICE);
    // Invoices → billing, tagged.
    let r = run(&desk, &p, &clients::thunderbird_new("Ann", "ann@example.org", "support@example.test", "Question about invoice 2026-117", "x").raw);
    let Outcome::Created { ticket } = r.outcome else { panic!("{r:?}") };
    let t = p.store.ticket_detail(ticket).unwrap().unwrap().ticket;
    assert_eq!(t.queue, "billing");
    assert_eq!(t.tags, vec!["invoice".to_string()]);
    // VIP domain → high priority.
    let r = run(&desk, &p, &clients::thunderbird_new("Boss", "boss@bigcorp.example", "support@example.test", "Laptop", "x").raw);
    let Outcome::Created { ticket } = r.outcome else { panic!() };
    let t = p.store.ticket_detail(ticket).unwrap().unwrap().ticket;
    assert_eq!((t.priority, t.tags.clone()), (Priority::High, vec!["vip".to_string()]));
    // Nagios alert → ops, tags from the subject's captures, urgent, no acknowledgement.
    let alert = b"From: nagios@monitor.example.org\r\nTo: support@example.test\r\nSubject: ** PROBLEM Service Alert: web01/HTTP is CRITICAL **\r\nMessage-ID: <n1@monitor.example.org>\r\n\r\nCRITICAL - Socket timeout\r\n";
    let r = run(&desk, &p, alert);
    let Outcome::Created { ticket } = r.outcome else { panic!() };
    let t = p.store.ticket_detail(ticket).unwrap().unwrap().ticket;
    assert_eq!(t.queue, "ops");
    assert_eq!(t.priority, Priority::Urgent);
    assert!(t.tags.contains(&"host:web01".to_string()) && t.tags.contains(&"service:http".to_string()), "{:?}", t.tags);
    assert!(r.mails.is_empty(), "no acknowledgement to a monitoring system");
    assert_eq!(t.cis, vec!["web01".to_string()], "the alert's host is linked as a configuration item");
    // Spam flagged by the MTA → quarantined, no ticket.
    let spam = b"From: win@lottery.example\r\nTo: support@example.test\r\nSubject: You won\r\nX-Spam-Flag: YES\r\nMessage-ID: <s1@lottery.example>\r\n\r\nClick.\r\n";
    assert!(matches!(run(&desk, &p, spam).outcome, Outcome::Quarantined { .. }));
    // List mail → dropped (recorded).
    let list = b"From: news@lists.example.org\r\nTo: support@example.test\r\nSubject: Weekly news\r\nList-Id: <news.lists.example.org>\r\nMessage-ID: <l1@lists.example.org>\r\n\r\nNews.\r\n";
    assert!(matches!(run(&desk, &p, list).outcome, Outcome::Dropped { .. }));
    assert_eq!(p.store.quarantine_counts().unwrap(), vec![("dropped".to_string(), 1), ("spam".to_string(), 1)]);
    assert_eq!(p.store.list_tickets(&Default::default()).unwrap().len(), 3);
}

#[test]
fn out_of_hours_and_the_trace() {
    // Saturday in Berlin.
    let (_d, desk, p) = setup(datetime!(2026-12-05 12:00 UTC));
    let r = run(&desk, &p, &clients::thunderbird_new("Ann", "ann@example.org", "support@example.test", "Printer", "x").raw);
    let Outcome::Created { ticket } = r.outcome else { panic!() };
    assert_eq!(p.store.ticket_detail(ticket).unwrap().unwrap().ticket.tags, vec!["out-of-hours".to_string()]);
    let eval = r.rules.unwrap();
    let lines = eval.describe();
    assert!(lines.iter().any(|l| l.contains("rule out-of-hours") && l.contains("matched")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("rule invoices") && l.contains("not matched")), "{lines:#?}");
    // The same message in office hours is not tagged.
    let (_d, desk, p) = setup(OFFICE);
    let r = run(&desk, &p, &clients::thunderbird_new("Ann", "ann@example.org", "support@example.test", "Printer", "x").raw);
    let Outcome::Created { ticket } = r.outcome else { panic!() };
    assert!(p.store.ticket_detail(ticket).unwrap().unwrap().ticket.tags.is_empty());
}

#[test]
fn broken_rules_are_reported_by_check_with_file_line_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.toml"), "[[rule]]\nname = \"a\"\n[rule.when]\nsubject = \"/(unclosed/\"\n[rule.then]\nqueue = \"nowhere\"\n").unwrap();
    let path = common::write_config(dir.path(), "[queues.support]\naddress = \"support@example.test\"\n[mailboxes.support]\nkind = \"pipe\"\n[rules]\npath = \"rules.toml\"\n");
    let err = Desk::load(&path, KeyMode::ReadOnly).unwrap_err().to_string();
    assert!(err.contains("rules.toml:4") && err.contains("rule[a]"), "{err}");
    assert!(err.contains("nowhere"), "{err}");
}

#[test]
fn a_rule_chooses_the_catalog_service() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::write(dir.path().join("rules.toml"), "[[rule]]\nname = \"hr\"\n[rule.when]\nfrom = \"@hr.example.org\"\n[rule.then]\nservice = \"new-laptop\"\n").unwrap();
    let cfg = format!(
        "[desk]\ndomain = \"desk.example.test\"\ndata_dir = \"var\"\ntemplates_dir = \"templates\"\n[queues.support]\naddress = \"support@example.test\"\n[mailboxes.support]\nkind = \"pipe\"\n[rules]\npath = \"rules.toml\"\n[catalog]\nfile = \"{}\"\n",
        root.join("config/catalog.toml").display()
    );
    let path = common::write_config(dir.path(), &cfg);
    let desk = Desk::load(&path, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
    let p = Pipeline::new(Arc::new(common::test_store(&desk.config.desk.database)), Arc::new(ManualClock::new(OFFICE)));
    let r = run(&desk, &p, &clients::thunderbird_new("HR", "anna@hr.example.org", "support@example.test", "Starter on Monday", "Cost center 4711").raw);
    let Outcome::Created { ticket } = r.outcome else { panic!() };
    let t = p.store.ticket_detail(ticket).unwrap().unwrap();
    assert_eq!((t.ticket.service.as_deref(), t.ticket.priority), (Some("new-laptop"), Priority::Low));
    let ack = &t.articles[1].body_text;
    assert!(ack.contains("- Start date") && !ack.contains("- Cost center"), "asks only for what is missing: {ack}");
}

/// A capture from the subject carries no control character into tags (ESC would reach
/// `tickets show` on a terminal, issue 17.5).
#[test]
fn captures_lose_control_characters() {
    let (_d, desk, p) = setup(OFFICE);
    let subject = "** PROBLEM Service Alert: web01/HT\u{1b}[2J\u{1b}]0;owned\u{7}TP is CRITICAL **";
    let r = run(&desk, &p, &clients::thunderbird_new("Nagios", "nagios@example.org", "support@example.test", subject, "x").raw);
    let Outcome::Created { ticket } = r.outcome else { panic!("{r:?}") };
    let t = p.store.ticket_detail(ticket).unwrap().unwrap().ticket;
    assert!(t.tags.iter().any(|tag| tag.starts_with("service:ht")), "{:?}", t.tags);
    assert!(t.tags.iter().all(|tag| !tag.contains(char::is_control)), "{:?}", t.tags);
}
