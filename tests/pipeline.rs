//! The pipeline's decisions, driven through the library with a real SQLite file and a manual
//! clock (no mail servers): duplicates, loops, flood control, caps on automatic mail, the
//! closed-ticket policies and plus-addressed reply tokens.

mod common;

use common::clients;
use postdesk::clock::ManualClock;
use postdesk::desk::{Desk, KeyMode};
use postdesk::pipeline::{Delivery, Outcome, Pipeline, Report};
use postdesk::store::{Store, TicketFilter};
use postdesk::ticket::Status;
use std::sync::Arc;
use time::macros::datetime;

struct Bench {
    _dir: tempfile::TempDir,
    desk: Desk,
    pipeline: Pipeline,
    clock: ManualClock,
}

fn bench(extra: &str) -> Bench {
    bench_with(extra, "")
}

fn bench_with(extra: &str, guard: &str) -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        r#"
[desk]
domain = "desk.example.test"
data_dir = "var"
templates_dir = "templates"
secret = "pipeline-test-secret-0123456789"

[queues.support]
address = "support@example.test"
from_name = "Example Support"
{extra}

[queues.billing]
address = "billing@example.test"

[mailboxes.support]
kind = "pipe"

[mailboxes.billing]
kind = "pipe"

[guard]
{guard}
"#
    );
    let path = common::write_config(dir.path(), &cfg);
    let desk = Desk::load(&path, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
    let store = Arc::new(common::test_store(&desk.config.desk.database));
    let clock = ManualClock::new(datetime!(2026-11-30 09:00 UTC));
    let pipeline = Pipeline::new(store, Arc::new(clock.clone()));
    Bench { _dir: dir, desk, pipeline, clock }
}

impl Bench {
    fn ingest_to(&self, mailbox: &str, raw: &[u8]) -> Report {
        self.pipeline.ingest(&self.desk, Delivery { mailbox, raw, cursor: None, truncated_from: None }).unwrap()
    }
    fn ingest(&self, raw: &[u8]) -> Report {
        self.ingest_to("support", raw)
    }
    fn store(&self) -> &Store {
        &self.pipeline.store
    }
    fn tickets(&self) -> usize {
        self.store().list_tickets(&TicketFilter::default()).unwrap().len()
    }
    fn queued(&self) -> Vec<String> {
        let mut all = self.store().due_outbound("9999", 1000).unwrap();
        all.sort_by_key(|m| m.id); // queued order, not sending order
        all.into_iter().map(|m| String::from_utf8(m.raw).unwrap()).collect()
    }
    fn set_status(&self, ticket: i64, s: Status) {
        let mut tx = self.store().begin().unwrap();
        tx.set_status(ticket, s, "2026-11-30T09:00:00Z").unwrap();
        tx.commit().unwrap();
    }
    fn status(&self, ticket: i64) -> Status {
        self.store().ticket_detail(ticket).unwrap().unwrap().ticket.status
    }
}

/// A word per number ("ab", "ac", …): subjects that differ in shape, so a test about caps is not
/// taken for a responder loop (same subject and text, digits aside, right after our mail).
fn word(i: usize) -> String {
    let l = |n: usize| (b'a' + (n % 26) as u8) as char;
    format!("{}{}", l(i / 26), l(i))
}

fn new_mail(from: &str, subject: &str) -> clients::Mail {
    clients::thunderbird_new("Customer", from, "support@example.test", subject, "Body text.")
}

fn header_of(raw: &str, name: &str) -> String {
    common::header(raw, name).unwrap_or_default()
}

#[test]
fn duplicates_and_copies_to_two_mailboxes_make_one_ticket() {
    let b = bench("");
    let m = clients::thunderbird_new("Alice", "alice@example.org", "support@example.test, billing@example.test", "Both of you", "x");
    assert!(matches!(b.ingest_to("support", &m.raw).outcome, Outcome::Created { ticket: 1 }));
    // the copy that reached billing@ picked up its own Received header
    let mut copy = b"Received: from mx by billing; Mon, 30 Nov 2026 10:00:01 +0100\r\n".to_vec();
    copy.extend_from_slice(&m.raw);
    assert_eq!(b.ingest_to("billing", &copy).outcome, Outcome::Duplicate { ticket: Some(1) });
    assert_eq!(b.ingest_to("support", &m.raw).outcome, Outcome::Duplicate { ticket: Some(1) });
    assert_eq!(b.tickets(), 1);
    assert_eq!(b.queued().len(), 1);
}

#[test]
fn automatic_mail_never_gets_an_acknowledgement() {
    let b = bench("");
    let first = new_mail("alice@example.org", "Printer");
    b.ingest(&first.raw);
    let ack = b.queued().remove(0);
    let ack_id = header_of(&ack, "message-id");
    let ack_id = ack_id.trim_matches(['<', '>']);

    // Out-of-office answer to our acknowledgement: joins the ticket, changes nothing, no mail.
    let ooo = format!("From: alice@example.org\r\nTo: support@example.test\r\nSubject: Automatic reply: [PD-1] Printer\r\nAuto-Submitted: auto-replied\r\nIn-Reply-To: <{ack_id}>\r\nMessage-ID: <ooo-1@example.org>\r\n\r\nI am away.\r\n");
    b.set_status(1, Status::Pending);
    let r = b.ingest(ooo.as_bytes());
    assert_eq!(r.outcome, Outcome::FollowUp { ticket: 1 });
    assert_eq!(b.status(1), Status::Pending, "an out-of-office must not reopen");

    // List mail and no-reply senders open tickets but are never answered.
    let list = b"From: announce@lists.example.org\r\nTo: support@example.test\r\nSubject: Newsletter\r\nList-Id: <announce.lists.example.org>\r\nMessage-ID: <l1@example.org>\r\n\r\nNews.\r\n";
    assert!(matches!(b.ingest(list).outcome, Outcome::Created { .. }));
    let noreply = b"From: no-reply@shop.example.org\r\nTo: support@example.test\r\nSubject: Your order\r\nMessage-ID: <n1@example.org>\r\n\r\nShipped.\r\n";
    assert!(matches!(b.ingest(noreply).outcome, Outcome::Created { .. }));
    // Our own mail coming back is dropped.
    assert!(matches!(b.ingest(ack.as_bytes()).outcome, Outcome::Dropped { .. }));
    assert_eq!(b.queued().len(), 1, "only the first acknowledgement");
}

#[test]
fn caps_on_automatic_mail_per_recipient() {
    let b = bench_with("", "new_tickets_per_sender = \"off\"");
    // Caps apply per recipient over several windows (default 10 per 10 min, 40 per day).
    let mut acks = 0;
    for i in 0..60 {
        let r = b.ingest(&new_mail("robot@example.org", &format!("Alert {}", word(i))).raw);
        acks += r.mails.len();
        if i % 5 == 4 {
            b.clock.advance(time::Duration::minutes(11));
        }
    }
    assert_eq!(acks, 40, "40 per day");
    let tickets = b.store().list_tickets(&TicketFilter::default()).unwrap();
    let suppressed = tickets.iter().flat_map(|t| b.store().ticket_detail(t.id).unwrap().unwrap().events).filter(|e| e.kind == "auto_mail_suppressed" && e.detail.contains("cap of 40")).count();
    assert!(suppressed > 0, "every suppressed send is recorded on its ticket");
    b.clock.advance(time::Duration::days(1));
    assert_eq!(b.ingest(&new_mail("robot@example.org", "Next day").raw).mails.len(), 1);
}

#[test]
fn the_automatic_mail_log_keeps_what_the_caps_read_and_no_more() {
    let b = bench_with("", "new_tickets_per_sender = \"off\"");
    // Default windows: 10 per 10 min and 40 per day per recipient, the loop window 2 min:
    // rows of the last day are read, older ones are not.
    assert_eq!(b.desk.config.guard.auto_mail_horizon(), std::time::Duration::from_secs(86400));
    for i in 0..5 {
        assert_eq!(b.ingest(&new_mail(&format!("old{i}@example.org"), "x").raw).mails.len(), 1);
    }
    b.clock.advance(time::Duration::hours(23));
    let acks: usize = (0..10).map(|i| b.ingest(&new_mail("same@example.org", &format!("y {}", word(i))).raw).mails.len()).sum();
    assert_eq!(acks, 10);
    assert_eq!(b.pipeline.housekeeping_tick(&b.desk).unwrap(), 0, "all within the day");
    b.clock.advance(time::Duration::hours(2));
    assert_eq!(b.pipeline.housekeeping_tick(&b.desk).unwrap(), 5, "the five acknowledgements of 25 hours ago");
    assert_eq!(b.pipeline.housekeeping_tick(&b.desk).unwrap(), 0);
    // The ten of two hours ago are still counted against the daily cap of 40.
    let mut later = 0;
    for i in 10..50 {
        later += b.ingest(&new_mail("same@example.org", &format!("z {}", word(i))).raw).mails.len();
        if i % 5 == 4 {
            b.clock.advance(time::Duration::minutes(11));
        }
    }
    assert_eq!(later, 30, "the daily cap counts the ten kept rows");
}

#[test]
fn ten_in_ten_minutes_cap() {
    let b = bench_with("", "new_tickets_per_sender = \"off\"");
    let acks: usize = (0..15).map(|i| b.ingest(&new_mail(&format!("user{i}@example.org"), "x").raw).mails.len()).sum();
    assert_eq!(acks, 15, "different recipients are not capped together");
    let acks: usize = (0..15).map(|i| b.ingest(&new_mail("same@example.org", &format!("y {}", word(i))).raw).mails.len()).sum();
    assert_eq!(acks, 10);
}

#[test]
fn flood_control_appends_or_quarantines() {
    let b = bench("");
    // default: 20 new tickets per sender per hour, then mail goes onto the latest open ticket
    for i in 0..25 {
        b.ingest(&new_mail("flood@example.org", &format!("Spam {i}")).raw);
    }
    assert_eq!(b.tickets(), 20);
    let d = b.store().ticket_detail(20).unwrap().unwrap();
    assert_eq!(d.articles.iter().filter(|a| a.direction == postdesk::ticket::Direction::Inbound).count(), 6);
    assert!(d.events.iter().any(|e| e.kind == "flood"));
    // an hour later the sender may open tickets again
    b.clock.advance(time::Duration::minutes(61));
    assert!(matches!(b.ingest(&new_mail("flood@example.org", "Later").raw).outcome, Outcome::Created { ticket: 21 }));
}

#[test]
fn flood_control_quarantine_action_and_domain_rate() {
    let dir_cfg = "";
    let b = bench(dir_cfg);
    drop(b);
    let dir = tempfile::tempdir().unwrap();
    let path = common::write_config(
        dir.path(),
        r#"
[desk]
domain = "desk.example.test"
data_dir = "var"
templates_dir = "templates"
[queues.support]
address = "support@example.test"
[mailboxes.support]
kind = "pipe"
[guard]
new_tickets_per_sender = "off"
new_tickets_per_domain = "3/1h"
flood_action = "quarantine"
"#,
    );
    let desk = Desk::load(&path, KeyMode::Persistent).unwrap();
    let p = Pipeline::new(Arc::new(common::test_store(&desk.config.desk.database)), Arc::new(ManualClock::new(datetime!(2026-11-30 09:00 UTC))));
    let outcomes: Vec<Outcome> =
        (0..5).map(|i| p.ingest(&desk, Delivery { mailbox: "support", raw: &new_mail(&format!("u{i}@bulk.example.org"), "x").raw, cursor: None, truncated_from: None }).unwrap().outcome).collect();
    assert_eq!(outcomes.iter().filter(|o| matches!(o, Outcome::Created { .. })).count(), 3);
    assert!(matches!(&outcomes[4], Outcome::Quarantined { reason } if reason.contains("bulk.example.org")), "{outcomes:?}");
    assert_eq!(p.store.quarantine_counts().unwrap(), vec![("flood".to_string(), 2)]);
}

fn reply_to_ack(b: &Bench, from: &str) -> Vec<u8> {
    let ack = b.queued().remove(0);
    clients::outlook_subject_only_reply("Customer", from, "support@example.test", &header_of(&ack, "subject"), "More.").raw
}

#[test]
fn closed_ticket_policies() {
    // reopen (default)
    let b = bench("");
    b.ingest(&new_mail("alice@example.org", "Printer").raw);
    b.set_status(1, Status::Closed);
    assert_eq!(b.ingest(&reply_to_ack(&b, "alice@example.org")).outcome, Outcome::FollowUp { ticket: 1 });
    assert_eq!(b.status(1), Status::Open);

    // new_ticket: linked
    let b = bench("on_closed = \"new_ticket\"");
    b.ingest(&new_mail("alice@example.org", "Printer").raw);
    b.set_status(1, Status::Closed);
    assert_eq!(b.ingest(&reply_to_ack(&b, "alice@example.org")).outcome, Outcome::Created { ticket: 2 });
    assert_eq!(b.status(1), Status::Closed);

    // reject: the ticket stays closed, the sender gets a notice
    let b = bench("on_closed = \"reject\"");
    b.ingest(&new_mail("alice@example.org", "Printer").raw);
    b.set_status(1, Status::Closed);
    let r = b.ingest(&reply_to_ack(&b, "alice@example.org"));
    assert!(matches!(r.outcome, Outcome::Quarantined { .. }));
    assert_eq!(r.mails.len(), 1);
    assert!(b.queued()[1].contains("is closed"), "{}", b.queued()[1]);
    assert_eq!(b.status(1), Status::Closed);
    assert_eq!(b.tickets(), 1);

    // reopen_within: old closed tickets get a new linked one
    let b = bench("reopen_within = \"7d\"");
    b.ingest(&new_mail("alice@example.org", "Printer").raw);
    b.set_status(1, Status::Closed);
    b.clock.advance(time::Duration::days(8));
    assert_eq!(b.ingest(&reply_to_ack(&b, "alice@example.org")).outcome, Outcome::Created { ticket: 2 });
}

#[test]
fn plus_addressed_reply_tokens() {
    let b = bench("plus_addressing = true");
    b.ingest(&new_mail("alice@example.org", "Printer").raw);
    let ack = b.queued().remove(0);
    let reply_to = header_of(&ack, "reply-to");
    let addr = reply_to.rsplit_once('<').map(|(_, a)| a.trim_end_matches('>')).unwrap_or(&reply_to).to_string();
    assert!(addr.starts_with("support+pd.1."), "{reply_to}");
    // A client that drops every header and the subject tag still threads via the address.
    let bare = format!("From: alice@example.org\r\nTo: {addr}\r\nSubject: hello again\r\nMessage-ID: <bare@example.org>\r\n\r\nx\r\n");
    assert_eq!(b.ingest(bare.as_bytes()).outcome, Outcome::FollowUp { ticket: 1 });
    // The same address used by someone else does not join the ticket.
    let evil = format!("From: mallory@example.net\r\nTo: {addr}\r\nSubject: hello\r\nMessage-ID: <evil@example.net>\r\n\r\nx\r\n");
    assert!(matches!(b.ingest(evil.as_bytes()).outcome, Outcome::Created { .. }));
}

#[test]
fn unprocessable_input_is_quarantined_and_intake_moves_on() {
    let b = bench("");
    let r = b.pipeline.ingest(&b.desk, Delivery { mailbox: "support", raw: b"\x00\x01binary", cursor: Some(postdesk::store::Cursor { uid_validity: 7, last_uid: 3 }), truncated_from: None }).unwrap();
    assert!(matches!(r.outcome, Outcome::Quarantined { .. }));
    assert_eq!(b.store().cursor("support").unwrap().unwrap().last_uid, 3, "the cursor moves past it");
    assert_eq!(b.store().quarantine_counts().unwrap(), vec![("not_mail".to_string(), 1)]);
}

fn status_request(from: &str) -> Vec<u8> {
    clients::thunderbird_new("Customer", from, "support@example.test", "status", "?").raw
}

/// Status requests are requests: they count toward the sender's flood limit with new tickets, so
/// a forged sender cannot make the desk mail a victim once per forged mail (issue 17.4).
#[test]
fn status_requests_count_toward_the_sender_flood_limit() {
    let b = bench_with("", "new_tickets_per_sender = \"3/1h\"\n[self_service]\n");
    b.ingest(&new_mail("victim@example.org", "First").raw);
    let answered: Vec<bool> = (0..4).map(|_| matches!(b.ingest(&status_request("victim@example.org")).outcome, Outcome::Answered { .. })).collect();
    assert_eq!(answered, [true, true, false, false], "1 ticket + 2 answers reach 3 per hour");
    assert_eq!(b.queued().len(), 3, "one acknowledgement and two status lists");
    // The new-ticket side sees the answers too.
    assert!(matches!(b.ingest(&new_mail("victim@example.org", "Second").raw).outcome, Outcome::FollowUp { .. }), "appended by flood control");
    b.clock.advance(time::Duration::minutes(61));
    assert!(matches!(b.ingest(&status_request("victim@example.org")).outcome, Outcome::Answered { .. }));
}

/// One cap on automatic mail for the whole desk, whoever it goes to: forged senders spread over
/// many victims meet it (issue 17.4).
#[test]
fn automatic_mail_has_a_desk_wide_cap() {
    let b = bench_with("", "auto_mail_total = \"5/1h\"\n[self_service]\n");
    let acks: usize = (0..8).map(|i| b.ingest(&new_mail(&format!("victim{i}@example.org"), "Hello").raw).mails.len()).sum();
    assert_eq!(acks, 5);
    assert!(b.ingest(&status_request("other@example.org")).mails.is_empty(), "a status list meets the same cap");
    assert_eq!(b.queued().len(), 5);
    let t = b.store().ticket_detail(6).unwrap().unwrap();
    assert!(t.events.iter().any(|e| e.kind == "auto_mail_suppressed" && e.detail.contains("desk-wide cap of 5")), "{:?}", t.events);
    b.clock.advance(time::Duration::minutes(61));
    assert_eq!(b.ingest(&new_mail("late@example.org", "Hello").raw).mails.len(), 1);
}

/// Issue 12 item 5: junk before the header section (a forwarding client's separator line, a
/// line of spaces) is skipped as MTAs do; the stored raw message keeps every byte.
#[test]
fn leading_junk_before_the_headers_is_skipped_and_kept() {
    let b = bench("");
    for (i, junk) in ["---- Original email message ----\r\n", "   \r\n"].iter().enumerate() {
        let raw = format!("{junk}From: Alice <alice{i}@example.org>\r\nTo: support@example.test\r\nSubject: Printer {i}\r\nMessage-ID: <junk{i}@example.org>\r\n\r\nIt jams.\r\n");
        let r = b.ingest(raw.as_bytes());
        let Outcome::Created { ticket } = r.outcome else { panic!("{junk:?}: {:?}", r.outcome) };
        let t = b.store().ticket_detail(ticket).unwrap().unwrap();
        assert_eq!(t.ticket.requester, format!("alice{i}@example.org"));
        assert_eq!(t.ticket.subject, format!("Printer {i}"));
        assert!(t.articles[0].body_text.contains("It jams."), "{:?}", t.articles[0].body_text);
    }
}

/// Issue 12 item 5: a From without a usable address falls back to Sender, then Reply-To, then
/// the next From address (RFC 5322 §3.6.2), not `unknown@invalid`.
#[test]
fn sender_falls_back_to_sender_reply_to_and_next_from() {
    let b = bench("");
    let cases = [
        ("From: Broken <>\r\nSender: real-sender@example.org\r\nReply-To: rt@example.org\r\n", "real-sender@example.org"),
        ("From: \"Broken\" <not an address>\r\nReply-To: rt@example.org\r\n", "rt@example.org"),
        ("From: Nobody <@>, second@example.org\r\n", "second@example.org"),
    ];
    for (i, (from, want)) in cases.iter().enumerate() {
        let raw = format!("{from}To: support@example.test\r\nSubject: Fallback {i}\r\nMessage-ID: <fb{i}@example.org>\r\n\r\nhello\r\n");
        let r = b.ingest(raw.as_bytes());
        let Outcome::Created { ticket } = r.outcome else { panic!("{from:?}: {:?}", r.outcome) };
        assert_eq!(b.store().ticket_detail(ticket).unwrap().unwrap().ticket.requester, *want, "{from:?}");
    }
}

/// Issue 12 item 6: a References header with 100k Message-IDs is cut to a bounded list before
/// threading, and the cut is recorded on the ticket.
#[test]
fn huge_reference_lists_are_bounded_and_the_cut_is_recorded() {
    let b = bench("");
    let mut raw = String::from("From: alice@example.org\r\nTo: support@example.test\r\nSubject: many refs\r\nMessage-ID: <many@example.org>\r\nReferences:");
    for i in 0..100_000 {
        raw.push_str(&format!(" <r{i}@example.org>\r\n"));
    }
    raw.push_str("\r\nbody\r\n");
    let r = b.ingest(raw.as_bytes());
    let Outcome::Created { ticket } = r.outcome else { panic!("{:?}", r.outcome) };
    let events = b.store().ticket_detail(ticket).unwrap().unwrap().events;
    let cut = events.iter().find(|e| e.kind == "parse_limits").unwrap_or_else(|| panic!("{events:?}"));
    assert!(cut.detail.contains("References") && cut.detail.contains("100000"), "{}", cut.detail);
}

fn participants(b: &Bench, ticket: i64) -> Vec<String> {
    b.store().ticket_detail(ticket).unwrap().unwrap().ticket.participants
}

#[test]
fn a_stranger_copying_our_message_ids_gets_a_new_linked_ticket() {
    let b = bench("");
    let first = new_mail("alice@example.org", "Printer");
    b.ingest(&first.raw);
    let ack = b.queued().remove(0);
    let ack_id = header_of(&ack, "message-id").trim_matches(['<', '>']).to_string();
    // Mallory copies the acknowledgement's Message-ID and the customer's own into her headers.
    for (i, parent) in [ack_id.as_str(), first.message_id.as_str()].into_iter().enumerate() {
        let m = clients::thunderbird_reply("Mallory", "mallory@example.net", "support@example.test", "[PD-1] Printer", parent, std::slice::from_ref(&first.message_id), "Let me in.");
        let r = b.ingest(&m.raw);
        assert_eq!(r.outcome, Outcome::Created { ticket: 2 + i as i64 }, "{:?}", r.actions);
        assert!(r.threading.as_deref().unwrap_or("").contains("not a participant"), "{:?}", r.threading);
    }
    assert!(!participants(&b, 1).contains(&"mallory@example.net".to_string()), "{:?}", participants(&b, 1));
    // The customer herself still threads by the same headers.
    let m = clients::thunderbird_reply("Alice", "alice@example.org", "support@example.test", "[PD-1] Printer", &ack_id, std::slice::from_ref(&first.message_id), "More.");
    assert_eq!(b.ingest(&m.raw).outcome, Outcome::FollowUp { ticket: 1 });
}

#[test]
fn addresses_a_participant_copies_join_as_the_queue_says() {
    for (policy, joins) in [("", true), ("cc_policy = \"join\"", true), ("cc_policy = \"ignore\"", false)] {
        let b = bench(policy);
        let first = new_mail("alice@example.org", "Printer");
        b.ingest(&first.raw);
        let ack = b.queued().remove(0);
        let ack_id = header_of(&ack, "message-id").trim_matches(['<', '>']).to_string();
        let reply = clients::thunderbird_reply("Alice", "alice@example.org", "support@example.test, Carol <carol@example.org>", "[PD-1] Printer", &ack_id, std::slice::from_ref(&first.message_id), "Copying Carol.");
        assert_eq!(b.ingest(&reply.raw).outcome, Outcome::FollowUp { ticket: 1 });
        assert_eq!(participants(&b, 1).contains(&"carol@example.org".to_string()), joins, "{policy}: {:?}", participants(&b, 1));
        // Carol answering the thread joins the ticket only when she was let in.
        let carol = clients::thunderbird_reply("Carol", "carol@example.org", "support@example.test", "[PD-1] Printer", &reply.message_id, std::slice::from_ref(&ack_id), "Me too.");
        let expected = if joins { Outcome::FollowUp { ticket: 1 } } else { Outcome::Created { ticket: 2 } };
        assert_eq!(b.ingest(&carol.raw).outcome, expected, "{policy}");
    }
}

/// A forged From of a participant with the ticket's tag (no token, no DKIM) lands on the ticket,
/// as forged mail from that address always could, but brings nobody in: copied addresses join
/// only on proof (our token for the sender, or DKIM).
#[test]
fn a_forged_participant_with_the_tag_cannot_bring_others_in() {
    let b = bench("");
    let first = new_mail("alice@example.org", "Printer");
    b.ingest(&first.raw);
    let forged = clients::thunderbird_new("Alice", "alice@example.org", "support@example.test, Eve <eve@evil.example>", "[PD-1] Printer", "Please copy Eve.");
    assert_eq!(b.ingest(&forged.raw).outcome, Outcome::FollowUp { ticket: 1 });
    assert!(!participants(&b, 1).contains(&"eve@evil.example".to_string()), "{:?}", participants(&b, 1));
}

/// A delivery status notification (RFC 3464) as Postfix writes it: `failed` for each address,
/// and the returned message's headers naming `original` when given.
fn dsn(from: &str, failed: &[&str], original: Option<&str>) -> Vec<u8> {
    let recipients: String = failed.iter().map(|r| format!("Final-Recipient: rfc822; {r}\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n")).collect();
    let returned = original.map(|id| format!("--b1\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: Example Support <support@example.test>\r\nSubject: [PD-1] Printer\r\nMessage-ID: <{id}>\r\n\r\n")).unwrap_or_default();
    format!(
        "From: Mail Delivery System <{from}>\r\nTo: support@example.test\r\nSubject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-{}@mx.example.net>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nThis is the mail system.\r\n\r\n--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n{recipients}{returned}--b1--\r\n",
        failed.join("-").replace('@', "."),
    )
    .into_bytes()
}

fn undeliverable(b: &Bench) -> Vec<String> {
    b.store().undeliverable_marks("0000").unwrap().into_iter().map(|m| m.address).collect()
}

#[test]
fn forged_bounces_change_nothing() {
    let b = bench("");
    let first = new_mail("alice@example.org", "Printer");
    b.ingest(&first.raw);
    let ack_id = header_of(&b.queued()[0], "message-id").trim_matches(['<', '>']).to_string();
    // A made-up DSN naming the customer (and anyone else), with no original message.
    let r = b.ingest(&dsn("MAILER-DAEMON@evil.example.net", &["alice@example.org", "andy@example.test"], None));
    assert!(matches!(&r.outcome, Outcome::Quarantined { reason } if reason.contains("unverified bounce")), "{:?}", r.outcome);
    // One naming the customer's own Message-ID (not one of ours), or a copy of ours for someone else.
    b.ingest(&dsn("MAILER-DAEMON@evil.example.net", &["alice@example.org"], Some(&first.message_id)));
    let r = b.ingest(&dsn("MAILER-DAEMON@evil.example.net", &["bob@example.org"], Some(&ack_id)));
    assert!(matches!(&r.outcome, Outcome::Quarantined { .. }), "{:?}", r.outcome);
    assert_eq!(undeliverable(&b), Vec::<String>::new());
    assert_eq!(b.tickets(), 1, "no bounce opened or joined a ticket");
    assert!(!b.store().ticket_detail(1).unwrap().unwrap().events.iter().any(|e| e.kind == "bounce"));
    // The customer still gets every answer.
    assert_eq!(b.ingest(&new_mail("alice@example.org", "Scanner").raw).mails.len(), 1);
}

#[test]
fn a_genuine_bounce_marks_the_address_until_it_writes_again_or_the_mark_expires() {
    let b = bench("");
    b.ingest(&new_mail("alice@example.org", "Printer").raw);
    let ack_id = header_of(&b.queued()[0], "message-id").trim_matches(['<', '>']).to_string();
    let r = b.ingest(&dsn("MAILER-DAEMON@mx.example.org", &["alice@example.org"], Some(&ack_id)));
    assert_eq!(r.outcome, Outcome::FollowUp { ticket: 1 }, "{:?}", r.actions);
    assert_eq!(undeliverable(&b), vec!["alice@example.org".to_string()]);
    // Marks expire (default 30 days): still active after 29 days, gone after 31.
    let at = |days: i64| postdesk::clock::rfc3339(datetime!(2026-11-30 09:00 UTC) + time::Duration::days(days) - time::Duration::days(30));
    assert_eq!(b.store().undeliverable_marks(&at(29)).unwrap().len(), 1);
    assert_eq!(b.store().undeliverable_marks(&at(31)).unwrap().len(), 0);
    // The address writing to us again clears the mark: it gets its acknowledgement.
    b.clock.advance(time::Duration::days(1));
    assert_eq!(b.ingest(&new_mail("alice@example.org", "Scanner").raw).mails.len(), 1);
    assert_eq!(undeliverable(&b), Vec::<String>::new());
}

#[test]
fn sender_controlled_text_is_one_short_line_in_our_mail() {
    let b = bench("");
    let long = "printer ".repeat(2000);
    let raw = format!("From: =?utf-8?q?Eve=0D=0ABcc:_victim@example.org=0D=0A=0D=0AWire_money_now?= <eve@example.org>\r\nTo: support@example.test\r\nSubject: Broken\x07 {long}\r\nMessage-ID: <eve-1@example.org>\r\n\r\nHello.\r\n");
    let r = b.ingest(raw.as_bytes());
    assert!(matches!(r.outcome, Outcome::Created { .. }), "{:?}", r.outcome);
    let ack = b.queued().remove(0);
    let body = ack.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
    assert!(!body.lines().any(|l| l.starts_with("Bcc:") || l.starts_with("Wire money")), "sender text broke into lines:\n{body}");
    assert!(body.contains("Hello Eve Bcc: victim@example.org Wire money now,"), "{body}");
    assert!(!ack.contains('\x07'), "control characters are removed");
    let subject = header_of(&ack, "subject");
    assert!(subject.starts_with("[PD-1] Broken printer") && subject.chars().count() <= 210, "{} chars: {subject}", subject.chars().count());
    assert!(body.lines().all(|l| l.len() <= 998), "no line over RFC 5322's limit");
}

/// A responder that answers every mail at once with the same text, without our tag, our
/// headers or any Auto-Submitted marking.
fn responder_mail(n: usize) -> Vec<u8> {
    format!("From: Helpdesk Bot <bot@vendor.example>\r\nTo: support@example.test\r\nSubject: Your request {n}\r\nMessage-ID: <bot-{n}@vendor.example>\r\n\r\nThank you for contacting us. Your case number is {}. An engineer will reply within 24 hours.\r\n", 1000 + n).into_bytes()
}

#[test]
fn a_responder_that_neither_tags_nor_quotes_is_stopped_after_three_tickets() {
    let b = bench_with("", "new_tickets_per_sender = \"off\"");
    // The bot's first mail is something else (an alert); then it answers each acknowledgement.
    let alert = b"From: bot@vendor.example\r\nTo: support@example.test\r\nSubject: Disk almost full\r\nMessage-ID: <alert@vendor.example>\r\n\r\n/var is 91% full on host db3.\r\n";
    let mut outcomes = vec![b.ingest(alert).outcome];
    b.clock.advance(time::Duration::seconds(3));
    // It answers each of our mails within seconds; it stops when we stop writing.
    let mut n = 1;
    while b.queued().len() >= n && n < 12 {
        outcomes.push(b.ingest(&responder_mail(n)).outcome);
        b.clock.advance(time::Duration::seconds(3));
        n += 1;
    }
    assert_eq!(b.tickets(), 3, "{outcomes:?}");
    assert_eq!(b.queued().len(), 2, "two acknowledgements, then the loop is broken");
    let third = b.store().ticket_detail(3).unwrap().unwrap();
    assert!(third.events.iter().any(|e| e.kind == "ack_suppressed" && e.detail.contains("mail loop suspected")), "{:?}", third.events);
    // A person writing twice within seconds, with different words, still gets two tickets.
    b.ingest(&new_mail("alice@example.org", "Printer").raw);
    let second = clients::thunderbird_new("Alice", "alice@example.org", "support@example.test", "Scanner", "The scanner is broken too.");
    assert!(matches!(b.ingest(&second.raw).outcome, Outcome::Created { .. }));
}

#[test]
fn a_batch_is_parsed_in_parallel_and_stored_in_arrival_order() {
    // Enough messages that the batch is parsed on several threads (8 or more per thread).
    let b = bench("");
    let raws: Vec<Vec<u8>> = (0..41).map(|i| new_mail(&format!("c{i}@example.org"), &format!("Printer {} jammed", word(i))).raw).collect();
    let reports = b.pipeline.ingest_many(&b.desk, "support", &raws).unwrap();
    assert_eq!(reports.len(), 41);
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(r.subject, format!("Printer {} jammed", word(i)), "report {i} out of order");
        assert!(matches!(r.outcome, Outcome::Created { ticket } if ticket == i as i64 + 1), "{i}: {:?}", r.outcome);
    }
    // Not mail in the middle of a batch is quarantined in its place; the rest are stored.
    let mut mixed: Vec<Vec<u8>> = (0..20).map(|i| new_mail(&format!("d{i}@example.org"), &format!("Laptop {} slow", word(i))).raw).collect();
    mixed.insert(10, b"no header section here at all".to_vec());
    let reports = b.pipeline.ingest_many(&b.desk, "support", &mixed).unwrap();
    assert!(matches!(reports[10].outcome, Outcome::Quarantined { .. }), "{:?}", reports[10].outcome);
    assert_eq!(reports[11].subject, format!("Laptop {} slow", word(10)));
    assert_eq!(b.tickets(), 61);
}
