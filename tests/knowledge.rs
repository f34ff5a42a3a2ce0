//! Knowledge by mail, through the library with a real SQLite file (no servers): agents search
//! past tickets, record and publish solutions; published solutions are suggested in
//! acknowledgements and counted as deflection when the customer closes; customers' searches see
//! published articles only, whatever FTS5 syntax they try (docs/KNOWLEDGE.md).

mod common;

use common::clients;
use postdesk::clock::ManualClock;
use postdesk::desk::{Desk, KeyMode};
use postdesk::pipeline::{Delivery, Outcome, Pipeline, Report};
use postdesk::store::KbState;
use postdesk::ticket::Status;
use std::sync::Arc;
use time::macros::datetime;

const DESK: &str = r#"
[desk]
name = "Example Support"
domain = "desk.example.test"
data_dir = "var"
templates_dir = "templates"
secret = "knowledge-test-secret-0123456789"

[queues.support]
address = "support@example.test"
from_name = "Example Support"

[mailboxes.support]
kind = "pipe"

[agents.alice]
name = "Alice Agent"
email = "alice@agents.example.test"

[self_service]

[guard]
auto_mail_total = "off"
"#;

struct Kd {
    _dir: tempfile::TempDir,
    desk: Desk,
    p: Pipeline,
    sent: std::cell::Cell<usize>,
    clock: ManualClock,
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
}

fn setup(extra: &str) -> Kd {
    let dir = tempfile::tempdir().unwrap();
    let path = common::write_config(dir.path(), &format!("{DESK}\n{extra}"));
    let desk = Desk::load(&path, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
    let store = Arc::new(common::test_store(&desk.config.desk.database));
    let clock = ManualClock::new(datetime!(2026-11-30 09:00 UTC));
    let p = Pipeline::new(store, Arc::new(clock.clone()));
    Kd { _dir: dir, desk, p, sent: std::cell::Cell::new(0), clock }
}

const KNOWLEDGE: &str = "[knowledge]\nsuggestions = 2\n";
const ALICE: &str = "alice@agents.example.test";

impl Kd {
    fn ingest(&self, raw: &[u8]) -> Report {
        self.clock.advance(time::Duration::seconds(60));
        self.p.ingest(&self.desk, Delivery { mailbox: "support", raw, cursor: None, truncated_from: None }).unwrap()
    }
    /// Mail queued since the last call, in queued order.
    fn new_mail(&self) -> Vec<Out> {
        let mut all = self.p.store.due_outbound("9999", 10_000).unwrap();
        all.sort_by_key(|m| m.id);
        let new: Vec<Out> = all.iter().skip(self.sent.get()).map(|m| Out { to: m.recipients.clone(), raw: String::from_utf8(m.raw.clone()).unwrap() }).collect();
        self.sent.set(all.len());
        new
    }
    fn one_to(&self, who: &str) -> Out {
        let mut m: Vec<Out> = self.new_mail().into_iter().filter(|m| m.to.iter().any(|t| t == who)).collect();
        assert_eq!(m.len(), 1, "one mail to {who}");
        m.remove(0)
    }
    fn events(&self, ticket: i64, kind: &str) -> Vec<String> {
        self.p.store.ticket_detail(ticket).unwrap().unwrap().events.into_iter().filter(|e| e.kind == kind).map(|e| e.detail).collect()
    }
    /// A customer's new mail; returns the outcome.
    fn customer(&self, from: &str, subject: &str, body: &str) -> Report {
        self.ingest(&clients::thunderbird_new("Customer", from, "support@example.test", subject, body).raw)
    }
    /// Ticket `ticket` opened by `from`; the agent's notification.
    fn open(&self, from: &str, subject: &str, body: &str) -> Out {
        let r = self.customer(from, subject, body);
        assert!(matches!(r.outcome, Outcome::Created { .. }), "{r:?}");
        self.new_mail().into_iter().find(|m| m.to == [ALICE]).expect("agent notified")
    }
    fn agent_reply(&self, to: &Out, body: &str) -> Report {
        self.ingest(&clients::thunderbird_reply("Alice Agent", ALICE, "support@example.test", &to.h("subject"), &to.id(), &[], body).raw)
    }
}

/// The text of a mail with quoted-printable soft breaks undone (enough for these assertions).
fn body(m: &Out) -> String {
    m.raw.replace("=\r\n", "").replace("=3D", "=")
}

/// Ticket 1 holds a private detail ("quokka") and gets a published solution.
fn desk_with_published_solution(extra: &str) -> (Kd, Out) {
    let d = setup(extra);
    let n = d.open("dana@example.org", "Printer prints faded pages", "The printer on floor three prints faded pages. My badge is zanzibar quokka.");
    let r = d.agent_reply(&n, "/resolve\n/solution\n/publish Faded prints: replace the toner\nOpen the front cover and replace the toner cartridge; prints are dark again.");
    assert_eq!(r.outcome, Outcome::FollowUp { ticket: 1 });
    assert!(r.actions.iter().any(|a| a.contains("published as KB-1")), "{:?}", r.actions);
    let reply = d.one_to("dana@example.org");
    assert!(body(&reply).contains("replace the toner cartridge"), "/solution without /note answers the customer");
    assert_eq!(d.p.store.ticket_detail(1).unwrap().unwrap().ticket.status, Status::Resolved);
    (d, n)
}

#[test]
fn agent_searches_tickets_by_reply_and_gets_references_and_snippets() {
    let d = setup("");
    let n = d.open("dana@example.org", "Printer prints faded pages", "The printer on floor three prints faded pages.");
    let _ = d.open("erin@example.net", "VPN drops every hour", "My VPN connection drops every hour since Monday.");
    let r = d.agent_reply(&n, "/search printing faded");
    assert!(r.actions.iter().any(|a| a.contains("searched for")), "{:?}", r.actions);
    let mails = d.new_mail();
    assert_eq!(mails.len(), 1, "only the agent hears of a search: {:?}", mails.iter().map(|m| &m.to).collect::<Vec<_>>());
    let m = &mails[0];
    assert_eq!(m.to, [ALICE]);
    assert!(m.h("subject").contains("Search: printing faded"), "{}", m.h("subject"));
    let text = body(m);
    assert!(text.contains("[PD-1] Printer prints faded pages (new)"), "{text}");
    assert!(text.contains("*faded*"), "snippet with the match marked: {text}");
    assert!(!text.contains("PD-2]"), "the VPN ticket does not match: {text}");
    // Porter stemming: "printing" found "prints"/"printer"; the ticket did not change.
    assert_eq!(d.p.store.ticket_detail(1).unwrap().unwrap().ticket.status, Status::New);
}

#[test]
fn solution_published_is_suggested_and_a_customer_close_counts_as_deflected() {
    let (d, _) = desk_with_published_solution(KNOWLEDGE);
    let a = d.p.store.kb_article(1).unwrap().unwrap();
    assert_eq!((a.state, a.ticket, a.title.as_str()), (KbState::Published, Some(1), "Faded prints: replace the toner"));
    assert_eq!(a.body, "Open the front cover and replace the toner cartridge; prints are dark again.", "the text as the agent wrote it");
    assert!(!a.body.contains("quokka"), "nothing of the customer's mail is copied");

    // The next customer with the same problem.
    let r = d.customer("erin@example.net", "Faded prints", "Since this morning all prints from the printer are faded and pale.");
    assert_eq!(r.outcome, Outcome::Created { ticket: 2 });
    let ack = d.one_to("erin@example.net");
    let text = body(&ack);
    assert!(text.contains("[KB-1] Faded prints: replace the toner") && text.contains("replace the toner cartridge"), "{text}");
    assert!(text.contains("/close"), "{text}");
    assert!(d.events(2, "kb_suggested")[0].starts_with("KB-1 (rank 1, "), "{:?}", d.events(2, "kb_suggested"));
    assert_eq!(d.p.store.knowledge_figures("2026-01-01T00:00:00Z").unwrap(), (1, 0));

    // She closes it herself: deflected.
    let r = d.ingest(&clients::thunderbird_reply("Erin", "erin@example.net", "support@example.test", &ack.h("subject"), &ack.id(), &[], "/close\nThanks, that fixed it.").raw);
    assert!(r.actions.iter().any(|a| a.starts_with("deflected")), "{:?}", r.actions);
    assert_eq!(d.p.store.ticket_detail(2).unwrap().unwrap().ticket.status, Status::Closed);
    assert_eq!(d.p.store.knowledge_figures("2026-01-01T00:00:00Z").unwrap(), (1, 1));
}

#[test]
fn a_close_after_an_agent_answered_is_not_deflection() {
    let (d, _) = desk_with_published_solution(KNOWLEDGE);
    let r = d.customer("erin@example.net", "Faded prints", "Since this morning all prints from the printer are faded and pale.");
    assert_eq!(r.outcome, Outcome::Created { ticket: 2 });
    let mails = d.new_mail();
    let n = mails.iter().find(|m| m.to == [ALICE]).unwrap();
    let ack = mails.iter().find(|m| m.to == ["erin@example.net"]).unwrap();
    d.agent_reply(n, "Did the article help?");
    d.ingest(&clients::thunderbird_reply("Erin", "erin@example.net", "support@example.test", &ack.h("subject"), &ack.id(), &[], "/close").raw);
    assert_eq!(d.p.store.ticket_detail(2).unwrap().unwrap().ticket.status, Status::Closed);
    assert_eq!(d.p.store.knowledge_figures("2026-01-01T00:00:00Z").unwrap(), (1, 0));
}

#[test]
fn suggestions_need_published_knowledge_and_enough_shared_words() {
    let d = setup(KNOWLEDGE);
    let n = d.open("dana@example.org", "Printer prints faded pages", "The printer on floor three prints faded pages.");
    // A solution not yet published is never suggested.
    d.agent_reply(&n, "/note\n/solution\nReplace the toner cartridge behind the front cover.");
    d.new_mail();
    d.customer("erin@example.net", "Toner cartridge empty", "Where is the toner cartridge?");
    assert!(d.events(2, "kb_suggested").is_empty());
    d.new_mail();
    // Published: a mail sharing one word only (below suggest_min_words = 2) gets nothing.
    d.agent_reply(&n, "/publish");
    d.new_mail();
    assert_eq!(d.p.store.kb_article(1).unwrap().unwrap().title, "Printer prints faded pages", "title from the subject");
    d.customer("fritz@example.com", "Cover of the coffee machine", "The cover is broken.");
    assert!(d.events(3, "kb_suggested").is_empty(), "one shared word is not enough");
    d.new_mail();
    d.customer("gina@example.com", "Toner cartridge", "Which toner cartridge fits?");
    assert_eq!(d.events(4, "kb_suggested").len(), 1);
    // Withdrawn: neither suggested nor found.
    d.agent_reply(&n, "/withdraw");
    assert_eq!(d.p.store.kb_article(1).unwrap().unwrap().state, KbState::Withdrawn);
    d.new_mail();
    d.customer("hank@example.com", "Toner cartridge again", "Which toner cartridge do we order?");
    assert!(d.events(5, "kb_suggested").is_empty());
}

#[test]
fn knowledge_commands_are_all_or_nothing() {
    let d = setup("");
    let n = d.open("dana@example.org", "Printer prints faded pages", "The printer on floor three prints faded pages.");
    for (cmds, why) in [
        ("/resolve\n/publish", "no solution yet"),
        ("/resolve\n/withdraw", "not published"),
        ("/resolve\n/solution", "write the solution"),
        ("/resolve\n/search ***", "nothing to search for"),
    ] {
        let r = d.agent_reply(&n, cmds);
        assert!(r.actions.iter().any(|a| a.starts_with("commands rejected") && a.contains(why)), "{cmds}: {:?}", r.actions);
        assert_eq!(d.p.store.ticket_detail(1).unwrap().unwrap().ticket.status, Status::New, "{cmds}: nothing applied");
        let m = d.one_to(ALICE);
        assert!(body(&m).contains(why), "{}", m.raw);
    }
    assert!(d.p.store.kb_articles(true).unwrap().is_empty());
}

#[test]
fn customer_search_returns_published_articles_only() {
    let (d, _) = desk_with_published_solution(KNOWLEDGE);
    d.new_mail();
    // Subject exactly "search", the words on the first line.
    let r = d.customer("frank@example.com", "search", "faded prints\n\n-- \nFrank");
    assert!(matches!(&r.outcome, Outcome::Answered { what } if what.contains("1 result")), "{r:?}");
    let m = d.one_to("frank@example.com");
    let text = body(&m);
    assert!(text.contains("[KB-1] Faded prints: replace the toner"), "{text}");
    assert!(!text.contains("PD-1") && !text.contains("quokka"), "no ticket of another customer: {text}");
    // `/search WORDS` on the first line, any subject.
    let r = d.customer("gina@example.com", "Question", "/search toner cartridge");
    assert!(matches!(r.outcome, Outcome::Answered { .. }), "{r:?}");
    assert!(body(&d.one_to("gina@example.com")).contains("[KB-1]"));
    // A subject that starts with "search" is an ordinary mail: a ticket (with suggestions).
    let r = d.customer("hank@example.com", "search not working", "The search box of the intranet shows nothing at all.");
    assert!(matches!(r.outcome, Outcome::Created { .. }), "{r:?}");
    let r = d.customer("ivy@example.com", "Search printer toner", "Search printer toner please, faded prints.");
    assert!(matches!(r.outcome, Outcome::Created { .. }), "{r:?}");
    // Without [knowledge] a subject "search" opens a ticket like any other.
    let plain = setup("");
    let r = plain.customer("frank@example.com", "search", "faded prints");
    assert!(matches!(r.outcome, Outcome::Created { .. }), "{r:?}");
}

#[test]
fn customer_search_syntax_never_reaches_fts5_or_other_tickets() {
    let (d, _) = desk_with_published_solution(KNOWLEDGE);
    d.new_mail();
    let huge = format!("quokka {}", "zanzibar OR * ".repeat(8_000));
    let queries = [
        r#""quokka" OR *"#,
        "quokka OR faded",
        "NEAR(quokka zanzibar)",
        "subject:quokka",
        "body:quokka",
        "{subject body}:quokka",
        "quokka*",
        "\"quokka",
        "-quokka",
        "^quokka",
        "quokka AND NOT toner",
        huge.as_str(),
    ];
    for (i, q) in queries.iter().enumerate() {
        let from = format!("probe.{}@example.com", common::spelled(&i.to_string()).replace(' ', "."));
        let r = d.customer(&from, "search", q);
        assert!(matches!(r.outcome, Outcome::Answered { .. }), "{q}: {r:?}");
        let m = d.one_to(&from);
        let text = body(&m);
        let answer = text.split("matching").nth(1).unwrap_or(&text);
        assert!(!text.contains("PD-1") && !answer.contains("zanzibar quokka") && !answer.contains("badge"), "{q}: {text}");
    }
    // A search for a published article's words still works after all that.
    assert!(d.p.store.search_kb(&postdesk::search::Query::parse("toner").unwrap(), 5).unwrap().len() == 1);
    // The agent's From without authentication is a customer too.
    let r = d.ingest(&clients::thunderbird_new("Alice Agent", ALICE, "support@example.test", "search quokka", "").raw);
    assert!(matches!(r.outcome, Outcome::Created { .. }), "no subject search without DKIM: {r:?}");
    let r = d.ingest(&clients::thunderbird_new("Alice Agent", ALICE, "support@example.test", "Lookup", "/search quokka badge").raw);
    assert!(matches!(r.outcome, Outcome::Answered { .. }), "{r:?}");
    assert!(!d.new_mail().iter().any(|m| m.raw.contains("PD-1]")), "published articles only");
}

#[test]
fn agent_fresh_search_needs_a_trusted_dkim_pass() {
    let d = setup("[security]\ntrusted_authserv_ids = [\"mx.example.test\"]\n");
    let _ = d.open("dana@example.org", "Printer prints faded pages", "The printer on floor three prints faded pages. Badge zanzibar.");
    let mut signed = b"Authentication-Results: mx.example.test; dkim=pass header.d=agents.example.test header.s=s1\r\n".to_vec();
    signed.extend_from_slice(&clients::thunderbird_new("Alice Agent", ALICE, "support@example.test", "search zanzibar", "").raw);
    let r = d.ingest(&signed);
    assert!(matches!(r.outcome, Outcome::Answered { .. }), "{r:?}");
    let text = body(&d.one_to(ALICE));
    assert!(text.contains("[PD-1] Printer prints faded pages") && text.contains("*zanzibar*"), "{text}");
    // The same mail from a forged MTA header is not an agent's: a ticket, nothing found out.
    let mut forged = b"Authentication-Results: evil.example; dkim=pass header.d=agents.example.test\r\n".to_vec();
    forged.extend_from_slice(&clients::thunderbird_new("Alice Agent", ALICE, "support@example.test", "search zanzibar badge", "").raw);
    let r = d.ingest(&forged);
    assert!(matches!(r.outcome, Outcome::Created { .. }), "{r:?}");
}

#[test]
fn search_folds_diacritics_and_stems_english() {
    let d = setup(KNOWLEDGE);
    let n = d.open("dana@example.org", "Drucker zeigt Störung", "Der Drucker im Büro zeigt eine Störung beim Drucken.");
    d.agent_reply(&n, "/solution\n/publish Drucker-Störung beheben\nPapierfach öffnen, Papierstau entfernen, Drucker neu starten.");
    for q in ["storung", "STÖRUNG", "buro", "papierstau", "Störung drucker"] {
        let hits = d.p.store.search_tickets(&postdesk::search::Query::parse(q).unwrap(), 10).unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), [1], "{q}");
    }
    assert_eq!(d.p.store.search_kb(&postdesk::search::Query::parse("stoerung papierstau").unwrap(), 10).unwrap().len(), 0, "every word must occur");
    assert_eq!(d.p.store.search_kb(&postdesk::search::Query::parse("störung papierstau").unwrap(), 10).unwrap().len(), 1);
    let n2 = d.open("erin@example.net", "Printers jammed", "Both printers jammed while printing labels.");
    let _ = n2;
    for q in ["printer", "jam", "printed"] {
        let hits = d.p.store.search_tickets(&postdesk::search::Query::parse(q).unwrap(), 10).unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), [2], "{q}");
    }
}

#[test]
fn an_agent_reply_without_the_subject_tag_is_still_the_agents_search() {
    let d = setup(KNOWLEDGE);
    let n = d.open("dana@example.org", "Printer prints faded pages", "The printer on floor three prints faded pages. Badge zanzibar.");
    // The client dropped the subject (and its tag); the token in In-Reply-To still names PD-1.
    let r = d.ingest(&clients::thunderbird_reply("Alice Agent", ALICE, "support@example.test", "Lookup", &n.id(), &[], "/search zanzibar").raw);
    assert_eq!(r.outcome, Outcome::FollowUp { ticket: 1 }, "the agent path, not a customer's search");
    let text = body(&d.one_to(ALICE));
    assert!(text.contains("[PD-1] Printer prints faded pages"), "{text}");
}
