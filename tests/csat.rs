//! Satisfaction by mail, through the library with a real SQLite file: the resolved notice asks
//! for a rating; the requester's answer is recorded without reopening the ticket; a comment
//! becomes an internal note for the owner; strangers, ordinary replies and hostile text do what
//! they always did.

mod common;

use common::clients;
use postdesk::clock::ManualClock;
use postdesk::desk::{Desk, KeyMode};
use postdesk::pipeline::{Delivery, Outcome, Pipeline, Report};
use postdesk::ticket::{ArticleKind, Status};
use std::sync::Arc;
use time::macros::datetime;

const DESK: &str = r#"
[desk]
name = "Example Support"
domain = "desk.example.test"
data_dir = "var"
templates_dir = "templates"
secret = "csat-test-secret-0123456789abc"

[queues.support]
address = "support@example.test"
from_name = "Example Support"

[mailboxes.support]
kind = "pipe"

[agents.alice]
name = "Alice Agent"
email = "alice@agents.example.test"
queues = ["support"]
"#;

struct Bench {
    _dir: tempfile::TempDir,
    desk: Desk,
    p: Pipeline,
    sent: std::cell::Cell<usize>,
}

fn setup(extra: &str) -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let path = common::write_config(dir.path(), &format!("{DESK}\n{extra}"));
    let desk = Desk::load(&path, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
    let store = Arc::new(common::test_store(&desk.config.desk.database));
    let clock = ManualClock::new(datetime!(2026-11-30 09:00 UTC));
    let p = Pipeline::new(store, Arc::new(clock));
    Bench { _dir: dir, desk, p, sent: std::cell::Cell::new(0) }
}

struct Out {
    to: Vec<String>,
    raw: String,
}

impl Out {
    fn h(&self, name: &str) -> String {
        common::header(&self.raw, name).unwrap_or_default()
    }
    fn id(&self) -> String {
        self.h("message-id").trim_matches(['<', '>']).to_string()
    }
    fn text(&self) -> String {
        postdesk::message::parse(self.raw.as_bytes()).unwrap().body_text
    }
}

impl Bench {
    fn ingest(&self, raw: &[u8]) -> Report {
        self.p.ingest(&self.desk, Delivery { mailbox: "support", raw, cursor: None, truncated_from: None }).unwrap()
    }
    fn new_mail(&self) -> Vec<Out> {
        let mut all = self.p.store.due_outbound("9999", 10_000).unwrap();
        all.sort_by_key(|m| m.id);
        let new: Vec<Out> = all.iter().skip(self.sent.get()).map(|m| Out { to: m.recipients.clone(), raw: String::from_utf8(m.raw.clone()).unwrap() }).collect();
        self.sent.set(all.len());
        new
    }
    fn status(&self) -> Status {
        self.p.store.ticket_detail(1).unwrap().unwrap().ticket.status
    }
    fn events(&self, kind: &str) -> Vec<String> {
        self.p.store.ticket_detail(1).unwrap().unwrap().events.into_iter().filter(|e| e.kind == kind).map(|e| e.detail).collect()
    }

    /// Dana opens a ticket, Alice takes and resolves it; returns the resolved notice Dana got.
    fn resolved(&self) -> Out {
        let m = clients::thunderbird_new("Dana Customer", "dana@example.org", "support@example.test", "VPN broken", "The VPN drops every hour.");
        assert!(matches!(self.ingest(&m.raw).outcome, Outcome::Created { ticket: 1 }));
        let mails = self.new_mail();
        let n = mails.into_iter().find(|m| m.to == ["alice@agents.example.test"]).expect("notification");
        let reply = clients::thunderbird_reply("Alice", "alice@agents.example.test", "support@example.test", &n.h("subject"), &n.id(), &[], "/take\n/status resolved");
        self.ingest(&reply.raw);
        assert_eq!(self.status(), Status::Resolved);
        let mut mails = self.new_mail();
        let i = mails.iter().position(|m| m.to == ["dana@example.org"]).expect("resolved notice");
        mails.remove(i)
    }
}

fn answer(notice: &Out, from: &str, body: &str) -> Vec<u8> {
    clients::thunderbird_reply("Dana Customer", from, "support@example.test", &notice.h("subject"), &notice.id(), &[], body).raw
}

#[test]
fn a_rating_is_recorded_and_the_ticket_stays_resolved() {
    let b = setup("[csat]\nscale = \"1-5\"\n");
    let notice = b.resolved();
    let text = notice.text();
    assert!(text.contains("How did we do?") && text.contains("1, 2, 3, 4, 5"), "the notice asks: {text}");

    let r = b.ingest(&answer(&notice, "dana@example.org", "5"));
    assert_eq!(r.outcome, Outcome::FollowUp { ticket: 1 }, "{:?}", r.actions);
    assert_eq!(b.status(), Status::Resolved, "a rating does not reopen: {:?}", r.actions);
    let rating = b.p.store.csat_rating(1).unwrap().expect("rating recorded");
    assert_eq!((rating.rating, rating.label.as_str(), rating.scale.as_str(), rating.rated_by.as_str()), (5, "5", "1-5", "dana@example.org"));
    assert!(b.new_mail().is_empty(), "a bare rating tells nobody");
    assert_eq!(b.events("csat"), vec!["rated 5 (1-5)".to_string()]);
    let d = b.p.store.ticket_detail(1).unwrap().unwrap();
    assert!(d.articles.iter().any(|a| a.kind == ArticleKind::Customer && a.body_text.starts_with('5')), "the mail is on the ticket");
    // `tickets show` has it too (the command reads the desk's config, which names the SQLite file).
    if !common::on_postgres() {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_postdesk")).arg("--config").arg(b._dir.path().join("postdesk.toml")).args(["tickets", "show", "PD-1", "--json"]).output().unwrap();
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!((j["status"].as_str(), j["satisfaction"]["rating"].as_i64(), j["satisfaction"]["label"].as_str()), (Some("resolved"), Some(5), Some("5")), "{j}");
    }

    // A second answer replaces the first; the event says so.
    b.ingest(&answer(&notice, "dana@example.org", "3.\nActually it took three days."));
    assert_eq!(b.status(), Status::Resolved);
    assert_eq!(b.p.store.csat_rating(1).unwrap().unwrap().rating, 3);
    let ev = b.events("csat");
    assert_eq!(ev.len(), 2);
    assert!(ev[1].starts_with("rated 3 (1-5), replacing 5 given"), "{ev:?}");
}

#[test]
fn a_comment_becomes_a_note_for_the_owner() {
    let b = setup("[csat]\nscale = \"bad, okay, good\"\n");
    let notice = b.resolved();
    assert!(notice.text().contains("bad, okay, good"), "{}", notice.text());
    b.ingest(&answer(&notice, "dana@example.org", "Good!\nQuick and friendly, thank you."));
    assert_eq!(b.status(), Status::Resolved);
    let r = b.p.store.csat_rating(1).unwrap().unwrap();
    assert_eq!((r.rating, r.label.as_str(), r.comment.as_str()), (3, "good", "Quick and friendly, thank you."));
    let d = b.p.store.ticket_detail(1).unwrap().unwrap();
    assert!(d.articles.iter().any(|a| a.kind == ArticleKind::Note && a.body_text.contains("Quick and friendly")), "note kept");
    let mails = b.new_mail();
    assert_eq!(mails.len(), 1, "the owner is told");
    assert_eq!(mails[0].to, ["alice@agents.example.test"]);
    assert!(mails[0].h("subject").starts_with("[PD-1] Rated good"), "{}", mails[0].h("subject"));
    assert!(mails[0].text().contains("Quick and friendly, thank you."));
}

#[test]
fn anything_but_the_requesters_rating_reopens_as_before() {
    let b = setup("[csat]\n");
    let notice = b.resolved();
    // A stranger with the notice's Message-ID: the token is not theirs, they are no participant.
    let r = b.ingest(&answer(&notice, "mallory@evil.example", "1"));
    assert!(matches!(r.outcome, Outcome::Created { .. }), "a stranger never joins: {:?}", r.outcome);
    assert_eq!(b.status(), Status::Resolved);
    assert!(b.p.store.csat_rating(1).unwrap().is_none(), "a stranger's rating never counts");
    // Words that are not the rating alone on the first line: an ordinary reply, which reopens.
    b.new_mail();
    let r = b.ingest(&answer(&notice, "dana@example.org", "It broke again, 5 minutes after you closed it."));
    assert_eq!(r.outcome, Outcome::FollowUp { ticket: 1 });
    assert_eq!(b.status(), Status::Open, "a normal reply still reopens: {:?}", r.actions);
    assert!(b.p.store.csat_rating(1).unwrap().is_none());
    // Once reopened, a digit is a reply like any other.
    b.ingest(&answer(&notice, "dana@example.org", "4"));
    assert!(b.p.store.csat_rating(1).unwrap().is_none(), "only a resolved ticket takes a rating");
}

#[test]
fn ratings_out_of_scale_huge_or_to_another_mail_reopen() {
    let b = setup("[csat]\nscale = \"1-5\"\n");
    let notice = b.resolved();
    for (i, body) in ["9", "five", &"5".repeat(300_000), "\u{202e}5", "5 5"].iter().enumerate() {
        let r = b.ingest(&answer(&notice, "dana@example.org", body));
        assert_eq!(b.status(), Status::Open, "case {i}: {:?}", r.actions);
        assert!(b.p.store.csat_rating(1).unwrap().is_none(), "case {i}");
        // Back to resolved for the next case (an agent's command).
        let t = b.p.store.ticket_detail(1).unwrap().unwrap();
        let n = b.new_mail().into_iter().find(|m| m.to == ["alice@agents.example.test"]).expect("alice told");
        b.ingest(&clients::thunderbird_reply("Alice", "alice@agents.example.test", "support@example.test", &n.h("subject"), &n.id(), &[], "/status resolved").raw);
        assert_eq!(b.status(), Status::Resolved, "{:?}", t.events.last());
        b.new_mail();
    }
    // A "5" answering the acknowledgement (which asked nothing) is an ordinary reply.
    let ack = b.p.store.ticket_detail(1).unwrap().unwrap().articles.into_iter().find(|a| a.kind == ArticleKind::AutoReply).expect("ack");
    let raw = clients::thunderbird_reply("Dana", "dana@example.org", "support@example.test", "[PD-1] VPN broken", &ack.message_id, &[], "5").raw;
    b.ingest(&raw);
    assert_eq!(b.status(), Status::Open);
    assert!(b.p.store.csat_rating(1).unwrap().is_none());
}

#[test]
fn without_the_section_nothing_is_asked_and_a_digit_reopens() {
    let b = setup("");
    let notice = b.resolved();
    assert!(!notice.text().contains("How did we do?"), "{}", notice.text());
    b.ingest(&answer(&notice, "dana@example.org", "5"));
    assert_eq!(b.status(), Status::Open);
}

#[test]
fn an_unauthenticated_rating_is_handled_as_a_reply() {
    let b = setup("[csat]\n\n[security]\nrequire_dkim = true\ntrusted_authserv_ids = [\"mx.example.test\"]\n");
    // Alice's commands need DKIM too here: sign her mail.
    let m = clients::thunderbird_new("Dana Customer", "dana@example.org", "support@example.test", "VPN broken", "The VPN drops every hour.");
    b.ingest(&m.raw);
    let n = b.new_mail().into_iter().find(|m| m.to == ["alice@agents.example.test"]).unwrap();
    let mut signed = b"Authentication-Results: mx.example.test; dkim=pass header.d=agents.example.test\r\n".to_vec();
    signed.extend(clients::thunderbird_reply("Alice", "alice@agents.example.test", "support@example.test", &n.h("subject"), &n.id(), &[], "/status resolved").raw);
    b.ingest(&signed);
    let notice = b.new_mail().into_iter().find(|m| m.to == ["dana@example.org"]).unwrap();
    let r = b.ingest(&answer(&notice, "dana@example.org", "5"));
    assert!(r.actions.iter().any(|a| a.contains("failed the DKIM/DMARC requirement")), "{:?}", r.actions);
    assert!(b.p.store.csat_rating(1).unwrap().is_none());
    assert_eq!(b.status(), Status::Open, "handled as a reply: it reopens");
}

#[test]
fn a_bad_scale_is_a_config_problem_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::write_config(dir.path(), &format!("{DESK}\n[csat]\nscale = \"1-99\"\nwords = 3\n"));
    let problems = Desk::load(&path, KeyMode::Persistent).expect_err("refused").to_string();
    assert!(problems.contains("csat.scale") && problems.contains("2 to 11 steps"), "{problems}");
    assert!(problems.contains("words: unknown key"), "{problems}");
}

#[test]
fn the_weekly_report_mail_carries_the_html_report_with_the_ratings() {
    let b = setup("[csat]\n\n[reports]\nweekly_to = [\"boss@example.org\"]\n");
    let notice = b.resolved();
    b.ingest(&answer(&notice, "dana@example.org", "4\nGood work."));
    b.new_mail();
    assert!(b.p.weekly_report_tick(&b.desk).unwrap());
    let mails = b.new_mail();
    let report = mails.iter().find(|m| m.to == ["boss@example.org"]).expect("the weekly report");
    assert!(report.h("content-type").starts_with("multipart/alternative"), "{}", report.h("content-type"));
    let parsed = postdesk::message::parse(report.raw.as_bytes()).unwrap();
    assert!(parsed.body_text.contains("Satisfaction: 1 rating, average 4.0 (1-5)"), "{}", parsed.body_text);
    let html = parsed.body_html.expect("an HTML part");
    assert!(html.contains("<svg") && html.contains("Satisfaction:</b> 1 rating") && html.contains("SLA: met and breached"), "{html}");
    assert!(!html.contains("<script") && !html.contains("src="), "self-contained");
}
