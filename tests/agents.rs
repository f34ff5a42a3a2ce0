//! Agents by mail, through the library with a real SQLite file (no servers): notifications,
//! replies that reach the customer anonymised and threaded, commands (all or nothing), notes,
//! escalation, and the refusal of mail that merely claims an agent's address.

mod common;

use common::clients;
use postdesk::clock::ManualClock;
use postdesk::desk::{Desk, KeyMode};
use postdesk::pipeline::{Delivery, Outcome, Pipeline, Report};
use postdesk::ticket::{ArticleKind, Priority, Status};
use std::sync::Arc;
use time::macros::datetime;

const DESK: &str = r#"
[desk]
name = "Example Support"
domain = "desk.example.test"
data_dir = "var"
templates_dir = "templates"
secret = "agents-test-secret-0123456789"

[queues.support]
address = "support@example.test"
from_name = "Example Support"
escalate_to = "second"

[queues.second]
address = "second@example.test"
from_name = "Example Support (tier 2)"

[mailboxes.support]
kind = "pipe"

[agents.alice]
name = "Alice Agent"
email = "alice@agents.example.test"
queues = ["support"]

[agents.carol]
name = "Carol Agent"
email = "carol@agents.example.test"
queues = ["support"]

[agents.bob]
name = "Bob Expert"
email = "bob@agents.example.test"
tier = 2
"#;

struct Desk2 {
    _dir: tempfile::TempDir,
    desk: Desk,
    p: Pipeline,
    sent: std::cell::Cell<usize>,
    clock: ManualClock,
}

fn setup(extra: &str) -> Desk2 {
    let dir = tempfile::tempdir().unwrap();
    let path = common::write_config(dir.path(), &format!("{DESK}\n{extra}"));
    let desk = Desk::load(&path, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
    let store = Arc::new(common::test_store(&desk.config.desk.database));
    let clock = ManualClock::new(datetime!(2026-11-30 09:00 UTC));
    let p = Pipeline::new(store, Arc::new(clock.clone()));
    Desk2 { _dir: dir, desk, p, sent: std::cell::Cell::new(0), clock }
}

/// A queued mail, parsed.
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

impl Desk2 {
    fn ingest(&self, raw: &[u8]) -> Report {
        self.p.ingest(&self.desk, Delivery { mailbox: "support", raw, cursor: None, truncated_from: None }).unwrap()
    }
    /// Mail queued since the last call.
    fn new_mail(&self) -> Vec<Out> {
        // In the order the mail was queued (the worker's sending order puts agents' replies first).
        let mut all = self.p.store.due_outbound("9999", 10_000).unwrap();
        all.sort_by_key(|m| m.id);
        let new: Vec<Out> = all.iter().skip(self.sent.get()).map(|m| Out { to: m.recipients.clone(), raw: String::from_utf8(m.raw.clone()).unwrap() }).collect();
        self.sent.set(all.len());
        new
    }
    fn ticket(&self) -> postdesk::ticket::TicketDetail {
        self.p.store.ticket_detail(1).unwrap().unwrap()
    }
}

fn to<'a>(mails: &'a [Out], who: &str) -> Vec<&'a Out> {
    mails.iter().filter(|m| m.to.iter().any(|t| t == who)).collect()
}

/// An agent answering a notification from Thunderbird.
fn agent_reply(agent: &str, notification: &Out, body: &str) -> Vec<u8> {
    clients::thunderbird_reply("Agent", agent, "support@example.test", &notification.h("subject"), &notification.id(), &[], body).raw
}

fn open_ticket(d: &Desk2) -> (Out, Out) {
    let m = clients::thunderbird_new("Dana Customer", "dana@example.org", "support@example.test", "VPN broken", "The VPN drops every hour.");
    assert!(matches!(d.ingest(&m.raw).outcome, Outcome::Created { ticket: 1 }));
    let mut mails = d.new_mail();
    assert_eq!(mails.len(), 3, "ack + two tier-1 notifications");
    let ack = mails.remove(mails.iter().position(|m| m.to == ["dana@example.org"]).unwrap());
    assert!(to(&mails, "bob@agents.example.test").is_empty(), "tier 2 is not told of new tickets");
    let n = mails.into_iter().find(|m| m.to == ["alice@agents.example.test"]).unwrap();
    assert!(n.h("subject").contains("[PD-1]") && n.raw.contains("The VPN drops every hour."), "{}", n.raw);
    assert_eq!(n.h("auto-submitted"), "auto-generated");
    (ack, n)
}

#[test]
fn agent_reply_reaches_the_customer_anonymised_and_threaded() {
    let d = setup("");
    let (ack, n) = open_ticket(&d);
    let r = d.ingest(&agent_reply("alice@agents.example.test", &n, "/take\nHello Dana, please update the VPN client to 5.2."));
    assert_eq!(r.outcome, Outcome::FollowUp { ticket: 1 });
    let mails = d.new_mail();
    let reply = to(&mails, "dana@example.org");
    assert_eq!(reply.len(), 1, "{:?}", r.actions);
    let reply = reply[0];
    assert!(reply.h("from").contains("Alice Agent via Example Support") && reply.h("from").contains("<support@example.test>"), "{}", reply.h("from"));
    assert!(!reply.raw.contains("alice@agents.example.test"), "agent address leaked:\n{}", reply.raw);
    assert!(reply.raw.contains("please update the VPN client"));
    assert!(!reply.raw.contains("/take"), "commands are removed from what the customer sees");
    assert!(reply.h("subject").contains("[PD-1]"));
    assert_eq!(reply.h("in-reply-to"), format!("<{}>", ack.id()), "threads under our last mail to the customer");
    assert!(reply.h("auto-submitted").is_empty(), "a person's reply is not automatic");
    let t = d.ticket();
    assert_eq!(t.ticket.owner.as_deref(), Some("alice@agents.example.test"));
    assert_eq!(t.ticket.status, Status::Open);
    assert!(t.ticket.first_response_at.is_some());
    assert!(t.articles.iter().any(|a| a.kind == ArticleKind::AgentReply && a.direction == postdesk::ticket::Direction::Outbound));

    // The customer answers the agent: the owner is told, with the customer's new text.
    let dana = clients::gmail_reply("Dana", "dana@example.org", "support@example.test", &reply.h("subject"), &reply.id(), &[], "Updated, still broken.");
    assert_eq!(d.ingest(&dana.raw).outcome, Outcome::FollowUp { ticket: 1 });
    let mails = d.new_mail();
    let told = to(&mails, "alice@agents.example.test");
    assert_eq!(told.len(), 1);
    assert!(told[0].raw.contains("Updated, still broken.") && !told[0].raw.contains("Thank you for writing"), "quote-stripped: {}", told[0].raw);
    assert!(to(&mails, "carol@agents.example.test").is_empty(), "owned tickets only go to the owner");
}

#[test]
fn commands_only_notes_and_status_notices() {
    let d = setup("");
    let (_, n) = open_ticket(&d);
    d.ingest(&agent_reply("alice@agents.example.test", &n, "/status pending\n/priority high\n/tag vpn, network"));
    let mails = d.new_mail();
    let t = d.ticket().ticket;
    assert_eq!((t.status, t.priority), (Status::Pending, Priority::High));
    assert_eq!(t.tags, vec!["network".to_string(), "vpn".to_string()]);
    let notice = to(&mails, "dana@example.org");
    assert_eq!(notice.len(), 1, "commands only: the customer gets the pending notice, no reply");
    assert!(notice[0].h("subject").contains("We need your reply"), "{}", notice[0].raw);

    // A note stays internal; other agents on the ticket hear of it.
    d.ingest(&agent_reply("carol@agents.example.test", &to(&d_notifications(&d, &n), "carol@agents.example.test")[0].clone_out(), "/note\nVendor says a fix ships Friday."));
    let mails = d.new_mail();
    assert!(to(&mails, "dana@example.org").is_empty(), "notes never reach the customer");
    let alice = to(&mails, "alice@agents.example.test");
    assert_eq!(alice.len(), 1);
    assert!(alice[0].raw.contains("Vendor says a fix ships Friday."));
    assert!(d.ticket().articles.iter().any(|a| a.kind == ArticleKind::Note && a.body_text.contains("Friday")));
}

/// The notification carol got for ticket 1 (re-read from the outbox).
fn d_notifications(d: &Desk2, _n: &Out) -> Vec<Out> {
    d.p.store.due_outbound("9999", 10_000).unwrap().into_iter().map(|m| Out { to: m.recipients, raw: String::from_utf8(m.raw).unwrap() }).filter(|o| o.h("subject").contains("New ticket")).collect()
}

trait CloneOut {
    fn clone_out(&self) -> Out;
}
impl CloneOut for &Out {
    fn clone_out(&self) -> Out {
        Out { to: self.to.clone(), raw: self.raw.clone() }
    }
}

#[test]
fn a_failed_command_applies_nothing_and_tells_the_agent() {
    let d = setup("");
    let (_, n) = open_ticket(&d);
    d.ingest(&agent_reply("alice@agents.example.test", &n, "/take\n/priority whenever\n/assign nobody-here\nDear Dana, fixed."));
    let mails = d.new_mail();
    assert!(to(&mails, "dana@example.org").is_empty(), "nothing half-done: no reply sent");
    let back = to(&mails, "alice@agents.example.test");
    assert_eq!(back.len(), 1);
    assert!(back[0].raw.contains("unknown priority") && back[0].raw.contains("no agent `nobody-here`"), "{}", back[0].raw);
    let t = d.ticket().ticket;
    assert_eq!(t.owner, None, "/take was not applied either");
    assert_eq!(t.priority, Priority::Normal);
}

#[test]
fn spoofed_agent_mail_cannot_run_commands_or_post() {
    let d = setup("");
    let (ack, n) = open_ticket(&d);
    // Right From, no token (a new mail with the subject tag): handled as customer mail.
    let spoof = clients::outlook_subject_only_reply("Alice", "alice@agents.example.test", "support@example.test", &n.h("subject"), "/close\nClosing this.");
    d.ingest(&spoof.raw);
    // A real token, but issued to another address (the customer's ack), with an agent's From.
    let stolen = clients::thunderbird_reply("Alice", "alice@agents.example.test", "support@example.test", &ack.h("subject"), &ack.id(), &[], "/status resolved\nDone.");
    d.ingest(&stolen.raw);
    // An agent's token replayed by someone else.
    let replay = agent_reply("mallory@example.net", &n, "/assign alice\nHi");
    d.ingest(&replay);
    let t = d.ticket();
    assert_eq!(t.ticket.status, Status::New);
    assert_eq!(t.ticket.owner, None);
    assert!(d.new_mail().iter().all(|m| !m.raw.contains("Closing this.") && !m.raw.contains("Done.") || m.to.iter().all(|t| t.ends_with("agents.example.test"))), "nothing was posted to the customer as the agent");
    assert!(t.articles.iter().all(|a| a.kind != ArticleKind::AgentReply));
    // Not a participant of PD-1: the spoofs opened new linked tickets, flagged for the agents.
    let spoofed = d.p.store.ticket_detail(2).unwrap().unwrap();
    assert!(spoofed.events.iter().any(|e| e.kind == "unauthenticated_agent"), "{:?}", spoofed.events);
    assert!(t.events.iter().any(|e| e.kind == "possibly_related"), "{:?}", t.events);
}

#[test]
fn a_reply_token_copied_to_others_does_not_carry_an_agents_commands() {
    let d = setup("");
    // Anyone can open a ticket in an agent's name and copy themselves on it (forged From).
    let raw = String::from_utf8(clients::thunderbird_new("Alice Agent", "alice@agents.example.test", "support@example.test", "Refund for contractor Eve", "Please refund Eve.").raw).unwrap();
    let raw = raw.replacen("To: support@example.test\r\n", "To: support@example.test\r\nCc: eve@evil.example\r\n", 1);
    assert!(raw.contains("Cc: eve@evil.example"));
    assert!(matches!(d.ingest(raw.as_bytes()).outcome, Outcome::Created { ticket: 1 }));
    let mails = d.new_mail();
    let carol = to(&mails, "carol@agents.example.test");
    // Carol answers her notification: the reply goes to the "requester" with Eve copied, and
    // Eve sees its Message-ID.
    d.ingest(&agent_reply("carol@agents.example.test", carol[0], "We will look at it."));
    let reply = d.new_mail().into_iter().find(|m| m.to.iter().any(|t| t == "eve@evil.example")).expect("the reply reaches Eve");
    assert!(reply.to.iter().any(|t| t == "alice@agents.example.test"));
    // Eve forges Alice's From and answers that reply with commands.
    let forged = clients::thunderbird_reply("Alice Agent", "alice@agents.example.test", "support@example.test", &reply.h("subject"), &reply.id(), &[], "/assign carol\n/cc victim@third.example\nPHISH TEXT");
    let r = d.ingest(&forged.raw);
    assert!(r.actions.iter().any(|a| a.contains("others were copied on")), "{:?}", r.actions);
    let t = d.ticket();
    assert!(t.events.iter().any(|e| e.kind == "unauthenticated_agent" && e.detail.contains("others were copied on")), "the reason is on the ticket: {:?}", t.events);
    assert_eq!(t.ticket.owner, None, "no command ran");
    assert!(!t.ticket.participants.iter().any(|p| p == "victim@third.example"));
    assert!(d.new_mail().iter().all(|m| !m.to.iter().any(|t| t == "victim@third.example")), "nothing went to the victim");
    // Alice's own notification still carries her commands.
    let own = d.p.store.due_outbound("9999", 10_000).unwrap().into_iter().find(|m| m.recipients == ["alice@agents.example.test"] && String::from_utf8_lossy(&m.raw).contains("Refund")).unwrap();
    let own = Out { to: own.recipients, raw: String::from_utf8(own.raw).unwrap() };
    d.ingest(&agent_reply("alice@agents.example.test", &own, "/take\nMine."));
    assert_eq!(d.ticket().ticket.owner.as_deref(), Some("alice@agents.example.test"));
}

#[test]
fn escalation_moves_ownership_to_tier_two() {
    let d = setup("");
    let (_, n) = open_ticket(&d);
    d.ingest(&agent_reply("alice@agents.example.test", &n, "/take\n/escalate\n/note\nNeeds someone who knows the VPN concentrator."));
    let mails = d.new_mail();
    let t = d.ticket().ticket;
    assert_eq!((t.tier, t.queue.as_str(), t.owner.as_deref()), (2, "second", None));
    let bob = to(&mails, "bob@agents.example.test");
    assert_eq!(bob.len(), 1, "tier 2 is told");
    assert!(bob[0].h("subject").contains("Escalated") && bob[0].raw.contains("VPN concentrator") && bob[0].raw.contains("The VPN drops every hour."), "{}", bob[0].raw);
    // Bob takes it from his notification.
    d.ingest(&agent_reply("bob@agents.example.test", bob[0], "/take\nDana, I am looking into it."));
    assert_eq!(d.ticket().ticket.owner.as_deref(), Some("bob@agents.example.test"));
    assert_eq!(to(&d.new_mail(), "dana@example.org").len(), 1);
    // /assign hands it back to a named agent who is told.
    let bob_n = d.p.store.due_outbound("9999", 10_000).unwrap().into_iter().find(|m| m.recipients == ["bob@agents.example.test"]).unwrap();
    let bob_n = Out { to: bob_n.recipients, raw: String::from_utf8(bob_n.raw).unwrap() };
    d.ingest(&agent_reply("bob@agents.example.test", &bob_n, "/assign carol"));
    assert_eq!(d.ticket().ticket.owner.as_deref(), Some("carol@agents.example.test"));
    assert_eq!(to(&d.new_mail(), "carol@agents.example.test").len(), 1);
}

#[test]
fn dkim_requirement_for_agents() {
    let d = setup("[security]\nrequire_dkim = true\ntrusted_authserv_ids = [\"mx.example.test\"]\n");
    let (_, n) = open_ticket(&d);
    d.ingest(&agent_reply("alice@agents.example.test", &n, "/take\nHi"));
    assert_eq!(d.ticket().ticket.owner, None, "no Authentication-Results: refused");
    assert!(!d.ticket().ticket.participants.iter().any(|p| p == "alice@agents.example.test"), "a refused agent address joins nothing");
    let mut signed = b"Authentication-Results: mx.example.test; dkim=pass header.d=agents.example.test header.s=s1\r\n".to_vec();
    signed.extend(agent_reply("alice@agents.example.test", &n, "/take\nHi again"));
    d.ingest(&signed);
    assert_eq!(d.ticket().ticket.owner.as_deref(), Some("alice@agents.example.test"));
}

/// A new ticket whose first mail Cc'd `n` people (a mass Cc).
fn open_mass_cc_ticket(d: &Desk2, n: usize) -> Out {
    let cc: Vec<String> = (0..n).map(|i| format!("person{i}@example.net")).collect();
    let m = clients::thunderbird_new("Dana Customer", "dana@example.org", "support@example.test", "VPN broken", "The VPN drops every hour.");
    let raw = String::from_utf8(m.raw).unwrap().replacen("To: support@example.test\r\n", &format!("To: support@example.test\r\nCc: {}\r\n", cc.join(", ")), 1);
    assert!(matches!(d.ingest(raw.as_bytes()).outcome, Outcome::Created { ticket: 1 }));
    d.new_mail().into_iter().find(|m| m.to == ["alice@agents.example.test"]).expect("notification")
}

/// One mail Cc'ing 300 people: the ticket takes `limits.max_participants` (20) of them, a reply
/// goes to at most `limits.max_recipients` (10) outside addresses, and the agent's notification
/// says who those are before anyone answers (issue 17.3).
#[test]
fn a_mass_cc_is_capped_and_the_agent_sees_who_a_reply_reaches() {
    let d = setup("");
    let n = open_mass_cc_ticket(&d, 300);
    let t = d.ticket();
    assert_eq!(t.ticket.participants.len(), 20, "{:?}", t.ticket.participants);
    assert!(t.events.iter().any(|e| e.kind == "participants_capped" && e.detail.contains("281 address(es)")), "{:?}", t.events);
    let body = postdesk::message::parse(n.raw.as_bytes()).unwrap().body_text;
    let shown = body.lines().find(|l| l.starts_with("A public reply goes to:")).unwrap_or_else(|| panic!("{body}")).to_string();
    let r = d.ingest(&agent_reply("alice@agents.example.test", &n, "Hello all, we are on it."));
    assert_eq!(r.outcome, Outcome::FollowUp { ticket: 1 });
    let mails = d.new_mail();
    let reply = to(&mails, "dana@example.org");
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].to.len(), 10, "{:?}", reply[0].to);
    for addr in &reply[0].to {
        assert!(shown.contains(addr.as_str()), "{addr} not announced in: {shown}");
    }
    assert_eq!(shown.matches('@').count(), 10, "{shown}");
}

/// `/cc` takes only real addresses and at most a few at a time; tags lose control characters
/// (ESC would reach `tickets show` on a terminal) (issue 17.5).
#[test]
fn cc_addresses_are_validated_and_capped_and_tags_lose_control_characters() {
    let d = setup("");
    let (_, n) = open_ticket(&d);
    d.ingest(&agent_reply("alice@agents.example.test", &n, "/cc evil@x..y\nHello."));
    let back = d.new_mail();
    assert!(to(&back, "dana@example.org").is_empty(), "a failed command applies nothing");
    assert!(to(&back, "alice@agents.example.test")[0].raw.contains("`evil@x..y` is not an email address"));
    let many: Vec<String> = (0..11).map(|i| format!("p{i}@example.net")).collect();
    d.ingest(&agent_reply("alice@agents.example.test", &n, &format!("/cc {}\nHello.", many.join(" "))));
    let back = d.new_mail();
    assert!(to(&back, "alice@agents.example.test")[0].raw.contains("at most 10 addresses"), "{}", back[0].raw);
    assert_eq!(d.ticket().ticket.participants, vec!["dana@example.org".to_string()]);

    d.ingest(&agent_reply("alice@agents.example.test", &n, "/tag red\u{1b}[31mhot\u{7}\n/cc carol.customer@example.net"));
    let t = d.ticket().ticket;
    assert!(t.tags.iter().all(|tag| !tag.contains(char::is_control)), "{:?}", t.tags);
    assert!(t.tags.iter().any(|tag| tag.starts_with("red")), "{:?}", t.tags);
    assert!(t.participants.contains(&"carol.customer@example.net".to_string()), "{:?}", t.participants);
}

/// Issue 12 item 1: a quoted local part in a customer's Cc (RFC 5322 §3.4.1) is a real address;
/// it was stored as `@example.org` and then broke every agent reply.
#[test]
fn quoted_local_part_cc_is_kept_and_replies_reach_everyone() {
    let d = setup("");
    let raw = "Message-ID: <q1@example.org>\r\nFrom: Dana Customer <dana@example.org>\r\nTo: support@example.test\r\n\
Cc: \"john doe\"@example.org, Team: eve@example.org, (a comment) frank@example.org;\r\nSubject: VPN broken\r\n\r\nThe VPN drops.\r\n";
    assert!(matches!(d.ingest(raw.as_bytes()).outcome, Outcome::Created { ticket: 1 }));
    let participants = d.ticket().ticket.participants;
    assert!(participants.iter().all(|p| !p.starts_with('@')), "{participants:?}");
    for who in ["\"john doe\"@example.org", "eve@example.org", "frank@example.org"] {
        assert!(participants.iter().any(|p| p == who), "{who} missing from {participants:?}");
    }
    let mails = d.new_mail();
    let n = mails.into_iter().find(|m| m.to == ["alice@agents.example.test"]).unwrap();
    let r = d.ingest(&agent_reply("alice@agents.example.test", &n, "Hello all, fixed."));
    let mails = d.new_mail();
    let reply = to(&mails, "dana@example.org");
    assert_eq!(reply.len(), 1, "{:?}", r.actions);
    assert!(reply[0].to.iter().any(|t| t == "\"john doe\"@example.org"), "{:?}", reply[0].to);
}

/// A participant that is not an address at all (stored before the fix, or typed by hand): the
/// reply goes to everyone else and the ticket records the one left out.
#[test]
fn one_unusable_participant_does_not_stop_a_reply() {
    let d = setup("");
    let (_, n) = open_ticket(&d);
    let mut tx = d.p.store.begin().unwrap();
    tx.add_participant(1, "@example.org", "cc").unwrap();
    tx.add_participant(1, "carl@example.org", "cc").unwrap();
    tx.commit().unwrap();
    let r = d.ingest(&agent_reply("alice@agents.example.test", &n, "Hello Dana, fixed."));
    let mails = d.new_mail();
    let reply = to(&mails, "dana@example.org");
    assert_eq!(reply.len(), 1, "{:?}", r.actions);
    assert!(reply[0].to.iter().any(|t| t == "carl@example.org"), "{:?}", reply[0].to);
    assert!(!reply[0].to.iter().any(|t| t == "@example.org"), "{:?}", reply[0].to);
    let events = d.ticket().events;
    assert!(events.iter().any(|e| e.kind == "recipient_refused" && e.detail.contains("@example.org")), "{events:?}");
}

/// A reply nobody can receive is never dropped silently: the agent hears of it, the ticket too.
#[test]
fn a_reply_that_cannot_be_sent_at_all_tells_the_agent() {
    let d = setup("");
    let (_, n) = open_ticket(&d);
    let mut tx = d.p.store.begin().unwrap();
    tx.mark_undeliverable("dana@example.org", "hard bounce, status 5.1.1", "2026-11-30T09:00:00Z").unwrap();
    tx.commit().unwrap();
    d.ingest(&agent_reply("alice@agents.example.test", &n, "Hello Dana, fixed."));
    let mails = d.new_mail();
    assert!(to(&mails, "dana@example.org").is_empty());
    let back = to(&mails, "alice@agents.example.test");
    assert_eq!(back.len(), 1, "the agent is told the reply was not sent");
    assert!(back[0].raw.contains("dana@example.org") && back[0].raw.contains("undeliverable"), "{}", back[0].raw);
    let events = d.ticket().events;
    assert!(events.iter().any(|e| e.kind == "reply_not_sent"), "{events:?}");
}

const SIGNED_DESK: &str = "[security]\nrequire_dkim = true\ntrusted_authserv_ids = [\"mx.example.test\"]\n\n[self_service]\n\n[approvals]\napprovers = [\"cab@example.org\"]\n\n[groups.vendor]\nname = \"Vendor Inc.\"\naddress = \"help@vendor.example\"\nticket_pattern = '\\[Vendor #(\\d+)\\]'\n";

fn dkim_pass(domain: &str, raw: &[u8]) -> Vec<u8> {
    let mut signed = format!("Authentication-Results: mx.example.test; dkim=pass header.d={domain} header.s=s1\r\n").into_bytes();
    signed.extend_from_slice(raw);
    signed
}

#[test]
fn with_dkim_required_a_reply_token_alone_brings_nobody_in() {
    let d = setup(SIGNED_DESK);
    let (ack, _) = open_ticket(&d);
    // Whoever holds a copy of Dana's acknowledgement (a forward) and forges her From.
    let copy_spy = |raw: Vec<u8>| String::from_utf8(raw).unwrap().replacen("To: support@example.test\r\n", "To: support@example.test\r\nCc: spy@evil.example\r\n", 1).into_bytes();
    let forged = copy_spy(clients::thunderbird_reply("Dana Customer", "dana@example.org", "support@example.test", &ack.h("subject"), &ack.id(), &[], "Adding a colleague.").raw);
    assert!(matches!(d.ingest(&forged).outcome, Outcome::FollowUp { ticket: 1 }), "threads as before");
    assert!(!d.ticket().ticket.participants.iter().any(|p| p == "spy@evil.example"), "a token is not enough when DKIM is required");
    // Dana's real mail, signed: her colleague joins.
    let real = copy_spy(clients::thunderbird_reply("Dana Customer", "dana@example.org", "support@example.test", &ack.h("subject"), &ack.id(), &[], "Adding a colleague, really.").raw);
    d.ingest(&dkim_pass("example.org", &real));
    assert!(d.ticket().ticket.participants.iter().any(|p| p == "spy@evil.example"));
}

#[test]
fn dkim_requirement_covers_approvers_groups_and_the_requesters_close() {
    let d = setup(SIGNED_DESK);
    let (ack, n) = open_ticket(&d);
    // An authenticated agent makes it a change and hands it to the vendor: the approver is asked.
    d.ingest(&dkim_pass("agents.example.test", &agent_reply("alice@agents.example.test", &n, "/type change\n/forward vendor\nPlease look.")));
    let mails = d.new_mail();
    let request = to(&mails, "cab@example.org");
    assert_eq!(request.len(), 1, "{:?}", mails.iter().map(|m| &m.to).collect::<Vec<_>>());
    assert_eq!(d.ticket().ticket.approval.as_deref(), Some("requested"));
    let handoff = to(&mails, "help@vendor.example")[0].clone_out();

    // A forged approver: the token is real (stolen from the approval request), DKIM is missing.
    let forged = clients::thunderbird_reply("CAB", "cab@example.org", "support@example.test", &request[0].h("subject"), &request[0].id(), &[], "/approve");
    d.ingest(&forged.raw);
    assert_eq!(d.ticket().ticket.approval.as_deref(), Some("requested"), "a forged approver decides nothing");
    // A forged vendor reply carrying the hand-off's Message-ID is no internal note.
    let vendor = format!("From: help@vendor.example\r\nTo: support@example.test\r\nSubject: [Vendor #77] {}\r\nIn-Reply-To: <{}>\r\nMessage-ID: <v1@vendor.example>\r\n\r\nAll fixed, close it.\r\n", handoff.h("subject"), handoff.id());
    d.ingest(vendor.as_bytes());
    assert!(!d.ticket().articles.iter().any(|a| a.kind == ArticleKind::Note && a.body_text.contains("All fixed")), "a forged group reply is no note");
    // The requester's /close without DKIM closes nothing.
    let close = clients::thunderbird_reply("Dana", "dana@example.org", "support@example.test", &ack.h("subject"), &ack.id(), &[], "/close\nNever mind.");
    d.ingest(&close.raw);
    assert_ne!(d.ticket().ticket.status, Status::Closed, "an unauthenticated /close closes nothing");

    // The same three, authenticated, work.
    d.ingest(&dkim_pass("vendor.example", vendor.replace("v1@", "v2@").as_bytes()));
    assert!(d.ticket().articles.iter().any(|a| a.kind == ArticleKind::Note && a.body_text.contains("All fixed")));
    d.ingest(&dkim_pass("example.org", &clients::thunderbird_reply("CAB", "cab@example.org", "support@example.test", &request[0].h("subject"), &request[0].id(), &[], "/approve").raw));
    assert_eq!(d.ticket().ticket.approval.as_deref(), Some("approved"));
    d.ingest(&dkim_pass("example.org", &clients::thunderbird_reply("Dana", "dana@example.org", "support@example.test", &ack.h("subject"), &ack.id(), &[], "/close\nDone now.").raw));
    assert_eq!(d.ticket().ticket.status, Status::Closed);
}

#[test]
fn commands_from_an_old_notification_are_refused_with_a_pointer_to_a_fresh_one() {
    let d = setup("[security]\ncommand_token_max_age = \"30d\"\n");
    let (_, n) = open_ticket(&d);
    d.clock.advance(time::Duration::days(31));
    d.ingest(&agent_reply("alice@agents.example.test", &n, "/status resolved\nDana, all done."));
    let mails = d.new_mail();
    assert!(to(&mails, "dana@example.org").is_empty(), "nothing reached the customer");
    assert_eq!(d.ticket().ticket.status, Status::New, "nothing was applied");
    let back = to(&mails, "alice@agents.example.test");
    assert_eq!(back.len(), 1);
    let text = postdesk::message::parse(back[0].raw.as_bytes()).unwrap().body_text;
    assert!(text.contains("fresh notification"), "{text}");
    assert!(d.ticket().events.iter().any(|e| e.kind == "commands_rejected"), "{:?}", d.ticket().events);
}
