//! End-to-end against a real Dovecot and Postfix on 127.0.0.1 (started by tests/harness), the
//! daemon running in process, customers and agents using mail clients' header conventions.
//! Scenarios 1–3 of the product contract, over every TLS mode, plus restart and SMTP outage.

mod common;

use common::{MailServers, clients, header};
use postdesk::clock::SystemClock;
use postdesk::daemon::Running;
use postdesk::desk::{Desk, KeyMode};
use postdesk::store::{Store, TicketFilter};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// How the desk reaches the servers.
struct Wiring {
    imap_tls: &'static str,
    smtp_tls: &'static str,
    after: &'static str,
    /// Extra config sections (agents, guard, …).
    extra: &'static str,
}

fn desk_toml(s: &MailServers, dir: &std::path::Path, w: &Wiring) -> String {
    let imap_port = if w.imap_tls == "implicit" { s.port("IMAPS_PORT") } else { s.port("IMAP_PORT") };
    let (smtp_port, smtp_auth) = if w.smtp_tls == "implicit" {
        (s.port("SMTPS_PORT"), format!("username = \"support@example.test\"\npassword = \"{}\"\n", s.password()))
    } else {
        (s.port("SMTP_PORT"), String::new())
    };
    let after = if w.after == "move" { "after = \"move\"\nmove_to = \"Processed\"\n" } else { "" };
    format!(
        r#"
[desk]
name = "Example Support"
domain = "desk.example.test"
data_dir = "{data}"
templates_dir = "templates"
secret = "an-hmac-key-for-tests-only-0123456789"

[queues.support]
address = "support@example.test"
from_name = "Example Support"

[queues.billing]
address = "billing@example.test"
from_name = "Example Billing"

[mailboxes.support]
kind = "imap"
host = "localhost"
port = {imap_port}
tls = "{imap_tls}"
ca_file = "{ca}"
username = "support@example.test"
password = "{pw}"
{after}
[mailboxes.billing]
kind = "imap"
host = "localhost"
port = {imap_port}
tls = "{imap_tls}"
ca_file = "{ca}"
username = "billing@example.test"
password = "{pw}"
{after}
[outbound]
transport = "smtp"
host = "localhost"
port = {smtp_port}
tls = "{smtp_tls}"
ca_file = "{ca}"
{smtp_auth}retry_initial = "1s"
retry_max = "2s"
poll_interval = "500ms"
{extra}
"#,
        extra = w.extra,
        data = dir.join("var").display(),
        imap_tls = w.imap_tls,
        smtp_tls = w.smtp_tls,
        ca = s.ca_file(),
        pw = s.password(),
    )
}

/// The daemon running in process on its own runtime.
struct Daemon {
    rt: tokio::runtime::Runtime,
    running: Option<Running>,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(s: &MailServers, w: &Wiring) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let config = common::write_config(dir.path(), &desk_toml(s, dir.path(), w));
        Self::start_at(dir, config)
    }

    fn start_at(dir: tempfile::TempDir, config: PathBuf) -> Daemon {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let desk = Desk::load(&config, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
        let running = rt.block_on(postdesk::daemon::start(desk, &config, Arc::new(SystemClock))).unwrap();
        Daemon { rt, running: Some(running), config, _dir: dir }
    }

    fn stop(mut self) -> (tempfile::TempDir, PathBuf) {
        let running = self.running.take().unwrap();
        self.rt.block_on(running.stop());
        (self._dir, self.config)
    }

    fn store(&self) -> Arc<Store> {
        self.running.as_ref().unwrap().pipeline.store.clone()
    }

    fn tickets(&self) -> Vec<postdesk::ticket::Ticket> {
        let mut t = self.store().list_tickets(&TicketFilter::default()).unwrap();
        t.reverse();
        t
    }

    fn articles(&self, id: i64) -> Vec<postdesk::ticket::Article> {
        self.store().ticket_detail(id).unwrap().unwrap().articles
    }
}

fn id_of(raw: &str) -> String {
    header(raw, "message-id").unwrap().trim().trim_matches(['<', '>']).to_string()
}

#[test]
fn scenarios_1_2_3_over_implicit_tls() {
    let s = MailServers::start();
    let d = Daemon::start(&s, &Wiring { imap_tls: "implicit", smtp_tls: "implicit", after: "seen", extra: "" });

    // 1. A customer mails support@ → a ticket and an acknowledgement with its reference.
    let first = clients::thunderbird_new("Alice Example", "alice@example.test", "support@example.test", "Printer on floor 3 is jammed", "It says PC LOAD LETTER.");
    s.send("alice@example.test", &["support@example.test"], &first.raw);
    let ack = s.wait_for("alice", WAIT, |m| m.contains("[PD-1]"));
    assert_eq!(header(&ack, "subject").unwrap(), "[PD-1] Printer on floor 3 is jammed");
    assert!(header(&ack, "from").unwrap().contains("support@example.test"), "{ack}");
    assert_eq!(header(&ack, "in-reply-to").unwrap(), format!("<{}>", first.message_id));
    assert!(header(&ack, "references").unwrap().contains(&first.message_id));
    assert_eq!(header(&ack, "auto-submitted").unwrap(), "auto-replied");
    assert!(id_of(&ack).ends_with("@desk.example.test"));
    let t = d.tickets();
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].requester.as_str(), t[0].queue.as_str()), ("alice@example.test", "support"));

    // 2. Replies that carry In-Reply-To/References (Thunderbird, Gmail, mutt) join the ticket.
    let ack_id = id_of(&ack);
    let r1 = clients::thunderbird_reply("Alice Example", "alice@example.test", "support@example.test", "[PD-1] Printer on floor 3 is jammed", &ack_id, std::slice::from_ref(&first.message_id), "Tried turning it off and on.");
    s.send("alice@example.test", &["support@example.test"], &r1.raw);
    let r2 = clients::gmail_reply("Alice Example", "alice@example.test", "support@example.test", "[PD-1] Printer on floor 3 is jammed", &r1.message_id, &[first.message_id.clone(), ack_id.clone()], "Still jammed.");
    s.send("alice@example.test", &["support@example.test"], &r2.raw);
    let r3 = clients::mutt_reply("alice@example.test", "support@example.test", "Printer on floor 3 is jammed", &first.message_id, &[], "Subject tag removed, still threads.");
    s.send("alice@example.test", &["support@example.test"], &r3.raw);
    common::eventually(WAIT, "three replies on PD-1", || (d.articles(1).iter().filter(|a| a.kind == postdesk::ticket::ArticleKind::Customer).count() == 4).then_some(()));
    assert_eq!(d.tickets().len(), 1);

    // 3. Outlook-style reply with only the subject tag, from the requester → same ticket.
    let r4 = clients::outlook_subject_only_reply("Alice Example", "alice@example.test", "support@example.test", "[PD-1] Printer on floor 3 is jammed", "Any news?");
    s.send("alice@example.test", &["support@example.test"], &r4.raw);
    common::eventually(WAIT, "subject-tag reply on PD-1", || (d.articles(1).iter().any(|a| a.message_id == r4.message_id)).then_some(()));

    //    The same tag from a stranger → a new ticket, linked; the stranger learns nothing of PD-1.
    let evil = clients::outlook_subject_only_reply("Mallory", "mallory@example.test", "support@example.test", "[PD-1] Printer on floor 3 is jammed", "Please send me the details.");
    s.send("mallory@example.test", &["support@example.test"], &evil.raw);
    let mack = s.wait_for("mallory", WAIT, |m| m.contains("[PD-2]"));
    assert!(!mack.contains("PC LOAD LETTER") && !mack.contains("Alice") && !mack.contains("[PD-1]"), "{mack}");
    let t = d.tickets();
    assert_eq!(t.len(), 2);
    assert_eq!(t[1].requester, "mallory@example.test");
    assert!(!d.articles(1).iter().any(|a| a.from == "mallory@example.test"));
    assert!(!t[0].participants.contains(&"mallory@example.test".to_string()));
    let events = d.store().ticket_detail(2).unwrap().unwrap().events;
    assert!(events.iter().any(|e| e.kind == "possibly_related" && e.detail.contains("PD-1")), "{events:?}");

    // Exactly one acknowledgement each; follow-ups are not acknowledged.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(s.count("alice", |m| m.contains("Auto-Submitted: auto-replied")), 1);
    assert_eq!(s.count("mallory", |m| m.contains("Auto-Submitted: auto-replied")), 1);
    // Processed mail is flagged \Seen on the server (after the commit).
    common::eventually(WAIT, "support INBOX all seen", || (common::unseen(&s, "support") == 0).then_some(()));
    d.stop();
}

#[test]
fn starttls_intake_plain_smtp_two_mailboxes_move_and_restart() {
    let s = MailServers::start();
    let d = Daemon::start(&s, &Wiring { imap_tls: "starttls", smtp_tls: "none", after: "move", extra: "" });

    let b = clients::thunderbird_new("Bob Example", "bob@example.test", "billing@example.test", "Invoice 2026-117 is wrong", "Charged twice.");
    s.send("bob@example.test", &["billing@example.test"], &b.raw);
    let ack = s.wait_for("bob", WAIT, |m| m.contains("[PD-1]"));
    assert!(header(&ack, "from").unwrap().contains("Example Billing") && ack.contains("billing@example.test"), "{ack}");
    assert_eq!(d.tickets()[0].queue, "billing");
    // moved out of INBOX after the commit
    common::eventually(WAIT, "billing INBOX empty", || s.fetch_all("billing").is_empty().then_some(()));
    assert_eq!(common::imap_fetch_folder(&s, "billing", "Processed").len(), 1);

    // Stop; mail arrives while the daemon is down; restart resumes at the cursor, no duplicates.
    for i in 0..3 {
        let m = clients::thunderbird_new("Carol", "carol@example.test", "support@example.test", &format!("Before stop {i}"), &format!("x {}", common::spelled(&i.to_string())));
        s.send("carol@example.test", &["support@example.test"], &m.raw);
    }
    common::eventually(WAIT, "carol's three acks", || (s.count("carol", |m| m.contains("Before stop")) == 3).then_some(()));
    let (dir, config) = d.stop();
    for i in 0..3 {
        let m = clients::thunderbird_new("Carol", "carol@example.test", "support@example.test", &format!("While down {i}"), &format!("x {}", common::spelled(&i.to_string())));
        s.send("carol@example.test", &["support@example.test"], &m.raw);
    }
    common::eventually(WAIT, "mail waiting in support INBOX", || (s.fetch_all("support").len() == 3).then_some(()));
    let d = Daemon::start_at(dir, config);
    common::eventually(WAIT, "seven tickets", || (d.tickets().len() == 7).then_some(()));
    common::eventually(WAIT, "six acks for carol", || (s.count("carol", |m| m.contains("Auto-Submitted: auto-replied")) == 6).then_some(()));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(d.tickets().len(), 7);
    assert_eq!(s.count("carol", |m| m.contains("Auto-Submitted: auto-replied")), 6);
    d.stop();
}

#[test]
fn smtp_outage_keeps_mail_queued_until_the_server_is_back() {
    let s = MailServers::start();
    let d = Daemon::start(&s, &Wiring { imap_tls: "starttls", smtp_tls: "none", after: "seen", extra: "" });
    // Deliver straight into support's mailbox (LMTP), then take Postfix down before the ack goes.
    common::postfix(&s, "stop");
    let m = clients::thunderbird_new("Alice Example", "alice@example.test", "support@example.test", "Email is down", "Help.");
    common::lmtp_deliver(&s, "support@example.test", &m.raw);
    let store = d.store();
    common::eventually(WAIT, "ticket created", || (d.tickets().len() == 1).then_some(()));
    // The server is down: the outbound side says so, and the mail keeps its attempts (an outage
    // is the server's trouble, not the mail's, and must never fail it for good).
    let down = common::eventually(WAIT, "the outbound side reports the server down", || {
        store.health().unwrap().into_iter().find(|h| h.component == "outbound" && !h.ok)
    });
    assert!(down.detail.contains("connect"), "{down:?}");
    let c = store.outbox_counts().unwrap();
    assert_eq!((c.queued, c.failed), (1, 0));
    assert_eq!(store.due_outbound("9999", 10).unwrap()[0].attempts, 0);
    common::postfix(&s, "start");
    let ack = s.wait_for("alice", WAIT, |m| m.contains("[PD-1]"));
    assert!(ack.contains("Email is down"));
    common::eventually(WAIT, "outbox drained", || (store.outbox_counts().unwrap().sent == 1).then_some(()));
    common::eventually(WAIT, "the outbound side reports ok again", || store.health().unwrap().into_iter().find(|h| h.component == "outbound" && h.ok));

    // Both servers restart under the daemon: it reconnects (IDLE session lost) and carries on.
    s.restart();
    let m2 = clients::thunderbird_new("Alice Example", "alice@example.test", "support@example.test", "After the restart", "Still there?");
    s.send("alice@example.test", &["support@example.test"], &m2.raw);
    s.wait_for("alice", Duration::from_secs(40), |m| m.contains("[PD-2]"));
    assert_eq!(d.tickets().len(), 2);
    d.stop();
}

const AGENTS: &str = r#"
[agents.agent]
name = "Andy Agent"
email = "agent@example.test"
queues = ["support"]

[agents.agent2]
name = "Tess Tier-Two"
email = "agent2@example.test"
tier = 2
"#;

#[test]
fn scenarios_4_5_6_agents_work_from_their_mail_clients() {
    let s = MailServers::start();
    let d = Daemon::start(&s, &Wiring { imap_tls: "starttls", smtp_tls: "none", after: "seen", extra: AGENTS });
    let first = clients::thunderbird_new("Alice Example", "alice@example.test", "support@example.test", "Toner empty on floor 2", "The printer says toner empty.");
    s.send("alice@example.test", &["support@example.test"], &first.raw);
    let ack = s.wait_for("alice", WAIT, |m| m.contains("[PD-1]"));
    // 4. The agent of the queue is notified.
    let note = s.wait_for("agent", WAIT, |m| m.contains("[PD-1]") && m.contains("New ticket"));
    assert!(note.contains("The printer says toner empty."), "{note}");
    assert_eq!(s.count("agent2", |_| true), 0, "tier 2 hears nothing yet");

    //    The agent answers from mutt: the customer gets it from support@, threaded, anonymised.
    common::mutt_reply(&s, "agent", "PD-1", "/take\nHello Alice, a new toner cartridge is on its way.");
    let reply = s.wait_for("alice", WAIT, |m| m.contains("toner cartridge is on its way"));
    let from = header(&reply, "from").unwrap();
    assert!(from.contains("Andy Agent via Example Support") && from.contains("support@example.test"), "{from}");
    assert!(!reply.contains("agent@example.test"), "the agent's address leaked:\n{reply}");
    assert!(!reply.contains("/take"));
    assert!(header(&reply, "subject").unwrap().contains("[PD-1]"));
    assert_eq!(header(&reply, "in-reply-to").unwrap(), format!("<{}>", id_of(&ack)));
    assert!(header(&reply, "references").unwrap().contains(&first.message_id));
    common::eventually(WAIT, "owner set by /take", || (d.tickets()[0].owner.as_deref() == Some("agent@example.test")).then_some(()));
    let t = &d.tickets()[0];
    assert_eq!(t.status, postdesk::ticket::Status::Open);
    assert!(d.articles(1).iter().any(|a| a.kind == postdesk::ticket::ArticleKind::AgentReply && a.direction == postdesk::ticket::Direction::Outbound));

    // 5. Commands and an internal note, from a Gmail-style client answering the notification.
    let nid = id_of(&note);
    let nsub = header(&note, "subject").unwrap();
    let cmds = clients::gmail_reply("Andy", "agent@example.test", "support@example.test", &nsub, &nid, &[], "/status pending\n/priority high\n/tag printer");
    s.send("agent@example.test", &["support@example.test"], &cmds.raw);
    let pending = s.wait_for("alice", WAIT, |m| m.contains("We need your reply"));
    assert!(header(&pending, "subject").unwrap().contains("[PD-1]"));
    let t = d.tickets().remove(0);
    assert_eq!((t.status, t.priority, t.tags.clone()), (postdesk::ticket::Status::Pending, postdesk::ticket::Priority::High, vec!["printer".to_string()]));
    let secret = clients::thunderbird_reply("Andy", "agent@example.test", "support@example.test", &nsub, &nid, &[], "/note\nThe cartridge is on back order until Friday.");
    s.send("agent@example.test", &["support@example.test"], &secret.raw);
    common::eventually(WAIT, "note stored", || d.articles(1).iter().any(|a| a.kind == postdesk::ticket::ArticleKind::Note && a.body_text.contains("back order")).then_some(()));

    //    A command error gets a short answer to the agent, and nothing is done.
    let bad = clients::gmail_reply("Andy", "agent@example.test", "support@example.test", &nsub, &nid, &[], "/status someday\nAlice, fixed!");
    s.send("agent@example.test", &["support@example.test"], &bad.raw);
    let err = s.wait_for("agent", WAIT, |m| m.contains("Not applied"));
    assert!(err.contains("unknown status"), "{err}");

    // 6. The agent's From without a reply token (Outlook keeping only the subject) cannot act.
    let spoof = clients::outlook_subject_only_reply("Andy", "agent@example.test", "support@example.test", &nsub, "/close\nAlice, all done, closing.");
    s.send("mallory@example.test", &["support@example.test"], &spoof.raw);
    common::eventually(WAIT, "spoof recorded", || {
        d.store().ticket_detail(1).unwrap().unwrap().events.iter().any(|e| e.kind == "possibly_related" && e.detail.contains("agent@example.test")).then_some(())
    });

    //    /escalate: tier 2 is told with the full context, and owns it after /take.
    let esc = clients::thunderbird_reply("Andy", "agent@example.test", "support@example.test", &nsub, &nid, &[], "/escalate\n/note\nNeeds the printer vendor contract.");
    s.send("agent@example.test", &["support@example.test"], &esc.raw);
    let t2 = s.wait_for("agent2", WAIT, |m| m.contains("Escalated"));
    assert!(t2.contains("printer vendor contract") && t2.contains("The printer says toner empty."), "{t2}");
    common::mutt_reply(&s, "agent2", "Escalated", "/take\nAlice, I will call the vendor today.");
    s.wait_for("alice", WAIT, |m| m.contains("call the vendor today"));
    common::eventually(WAIT, "tier 2 owns it", || (d.tickets()[0].owner.as_deref() == Some("agent2@example.test")).then_some(()));

    // Notes and command errors never reached the customer; the spoof changed nothing.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.count("alice", |m| m.contains("back order") || m.contains("all done, closing") || m.contains("fixed!")), 0);
    let t = d.tickets().remove(0);
    assert_eq!((t.tier, t.status), (2, postdesk::ticket::Status::Pending));
    d.stop();
}

#[test]
fn large_attachments_and_oversize_mail() {
    let s = MailServers::start();
    let d = Daemon::start(&s, &Wiring { imap_tls: "starttls", smtp_tls: "none", after: "seen", extra: "[limits]\nmax_message_size = \"30MB\"\n" });
    // 20 MB attachment (~27 MB on the wire): stored with its name and size.
    let big = clients::with_attachment("bob@example.test", "support@example.test", "Crash dump", "dump.bin", 20 * 1024 * 1024);
    s.send("bob@example.test", &["support@example.test"], &big.raw);
    s.wait_for("bob", Duration::from_secs(60), |m| m.contains("[PD-1]"));
    let a = &d.articles(1)[0];
    assert_eq!(a.attachments.len(), 1, "{:?}", a.attachments);
    assert_eq!((a.attachments[0].name.as_str(), a.attachments[0].size), ("dump.bin", 20 * 1024 * 1024));
    // 25 MB attachment (~34 MB on the wire) is over the 30 MB limit: a notice, and the message
    // stays unread and unflagged on the server.
    let huge = clients::with_attachment("carol@example.test", "support@example.test", "Video of the problem", "video.mp4", 25 * 1024 * 1024);
    s.send("carol@example.test", &["support@example.test"], &huge.raw);
    let notice = s.wait_for("carol", Duration::from_secs(60), |m| m.contains("too large"));
    assert!(header(&notice, "subject").unwrap().contains("[PD-2]"), "{notice}");
    let t = d.store().ticket_detail(2).unwrap().unwrap();
    assert!(t.articles[0].body_text.contains("over the limit"), "{:?}", t.articles[0].body_text);
    assert!(t.events.iter().any(|e| e.kind == "too_large"));
    // A later message is processed normally, and only the oversize one is left unseen.
    let m = clients::thunderbird_new("Alice", "alice@example.test", "support@example.test", "Small one", "x");
    s.send("alice@example.test", &["support@example.test"], &m.raw);
    s.wait_for("alice", WAIT, |m| m.contains("[PD-3]"));
    assert_eq!(common::unseen(&s, "support"), 1, "the oversize message is untouched");
    // and stays so across a restart (settle skips it)
    let (dir, cfg) = d.stop();
    let d = Daemon::start_at(dir, cfg);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(common::unseen(&s, "support"), 1);
    assert_eq!(d.tickets().len(), 3);
    d.stop();
}

/// A mail robot answering every new mail in `user`'s INBOX until `stop` is set. `polite` robots
/// mark their answers as RFC 3834 auto-replies; rude ones strip every header and tag, so each
/// answer looks like a new conversation.
fn responder(s: &MailServers, user: &'static str, polite: bool, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<usize> {
    let env = s.env.clone();
    let port = s.port("SMTP_PORT");
    let servers = MailServers { dir: tempfile::tempdir().unwrap(), env };
    std::thread::spawn(move || {
        let mut answered = std::collections::HashSet::new();
        let mut sent = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for m in servers.fetch_all(user) {
                let m = String::from_utf8_lossy(&m).into_owned();
                let id = header(&m, "message-id").unwrap_or_default();
                if !answered.insert(id.clone()) {
                    continue;
                }
                let raw = if polite {
                    format!("From: {user}@example.test\r\nTo: support@example.test\r\nSubject: Out of office: {}\r\nAuto-Submitted: auto-replied\r\nIn-Reply-To: {id}\r\nMessage-ID: <ooo-{sent}-{}@example.test>\r\n\r\nI am on vacation.\r\n", header(&m, "subject").unwrap_or_default(), std::process::id())
                } else {
                    format!("From: {user}@example.test\r\nTo: support@example.test\r\nSubject: I am away (message {sent})\r\nMessage-ID: <rude-{sent}-{}@example.test>\r\n\r\nI am away until Monday.\r\n", std::process::id())
                };
                let _ = common::smtp_send(port, &format!("{user}@example.test"), &["support@example.test"], raw.as_bytes());
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // the tempdir of this view is not the servers' folder; never stop the servers from here
        std::mem::forget(servers);
        sent
    })
}

#[test]
fn automatic_mail_loops_lists_and_duplicates() {
    let s = MailServers::start_with_users(&["announce".to_string()]);
    let d = Daemon::start(&s, &Wiring { imap_tls: "starttls", smtp_tls: "none", after: "seen", extra: "[guard]\nauto_mail_caps = [\"3/1d\"]\n" });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // 8. A rude responder (no RFC 3834 headers, every answer a new conversation) facing our
    //    acknowledgements: its second answer (same subject and text, seconds after our mail)
    //    is taken for a loop and not answered, before the cap of 3 automatic mails per day.
    let rude = responder(&s, "vacation", false, stop.clone());
    //    A polite responder (Auto-Submitted: auto-replied) is never answered at all.
    let polite = responder(&s, "external", true, stop.clone());
    s.send("vacation@example.test", &["support@example.test"], &clients::thunderbird_new("V", "vacation@example.test", "support@example.test", "Hello", "x").raw);
    s.send("external@example.test", &["support@example.test"], &clients::thunderbird_new("E", "external@example.test", "support@example.test", "Hello", "x").raw);
    // Mailing-list mail: a ticket, no answer.
    let list = b"From: announce@example.test\r\nTo: support@example.test\r\nSubject: [announce] Maintenance tonight\r\nList-Id: <announce.example.test>\r\nList-Unsubscribe: <mailto:announce-leave@example.test>\r\nPrecedence: list\r\nMessage-ID: <list-1@example.test>\r\n\r\nServers go down at 22:00.\r\n";
    s.send("announce@example.test", &["support@example.test"], list);
    // One message to two of our mailboxes, and the same message delivered twice: one ticket.
    let both = clients::thunderbird_new("Bob", "bob@example.test", "support@example.test, billing@example.test", "Both desks", "x");
    s.send("bob@example.test", &["support@example.test", "billing@example.test"], &both.raw);
    s.send("bob@example.test", &["support@example.test"], &both.raw);

    common::eventually(Duration::from_secs(30), "the rude loop is detected", || {
        d.tickets().iter().filter(|t| t.requester == "vacation@example.test").any(|t| d.store().ticket_detail(t.id).unwrap().unwrap().events.iter().any(|e| e.kind == "ack_suppressed" && e.detail.contains("mail loop suspected"))).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rude_sent = rude.join().unwrap();
    let polite_sent = polite.join().unwrap();
    assert_eq!(s.count("vacation", |m| m.contains("Auto-Submitted")), 2, "the loop is broken after two acknowledgements");
    assert!(rude_sent <= 2, "the rude robot got 2 answers to answer: {rude_sent}");
    assert_eq!(s.count("external", |m| m.contains("Auto-Submitted")), 1, "the polite robot got only the first acknowledgement");
    assert_eq!(polite_sent, 1);
    assert_eq!(s.count("announce", |_| true), 0);
    let tickets = d.tickets();
    assert_eq!(tickets.iter().filter(|t| t.requester == "bob@example.test").count(), 1, "one ticket for the message sent to two desks and twice");
    assert_eq!(s.count("bob", |m| m.contains("Auto-Submitted")), 1);
    let suppressed = tickets.iter().filter(|t| t.requester == "vacation@example.test").flat_map(|t| d.store().ticket_detail(t.id).unwrap().unwrap().events).filter(|e| e.kind == "ack_suppressed").count();
    assert!(suppressed >= 1, "every suppressed acknowledgement is recorded on its ticket");
    assert!(tickets.iter().filter(|t| t.requester == "vacation@example.test").count() <= 3, "such a pair opens at most three tickets");
    d.stop();
}

#[test]
fn a_bounce_of_our_mail_lands_on_its_ticket() {
    let s = MailServers::start();
    let d = Daemon::start(&s, &Wiring { imap_tls: "starttls", smtp_tls: "none", after: "seen", extra: "" });
    // A customer whose mailbox is gone: Postfix accepts our acknowledgement, delivery fails at
    // Dovecot, and Postfix's real DSN comes back to support@.
    let m = clients::thunderbird_new("Ghost", "ghost@example.test", "support@example.test", "Printer", "Hello");
    common::lmtp_deliver(&s, "support@example.test", &m.raw);
    common::eventually(Duration::from_secs(30), "the bounce on PD-1", || {
        let t = d.store().ticket_detail(1).ok()??;
        t.events.iter().any(|e| e.kind == "bounce").then_some(())
    });
    let t = d.store().ticket_detail(1).unwrap().unwrap();
    assert_eq!(d.tickets().len(), 1, "the bounce opened no ticket");
    let ev = t.events.iter().find(|e| e.kind == "bounce").unwrap();
    assert!(ev.detail.contains("ghost@example.test") && ev.detail.contains("5."), "{ev:?}");
    assert!(t.articles.iter().any(|a| a.kind == postdesk::ticket::ArticleKind::System), "the DSN is on the ticket");
    assert!(!t.ticket.participants.iter().any(|p| p.contains("mailer-daemon") || p.contains("MAILER-DAEMON")));
    // The real DSN names our signed Message-ID for ghost: the address is marked undeliverable…
    let marks = d.store().undeliverable_marks("0000").unwrap();
    assert_eq!(marks.iter().map(|m| m.address.as_str()).collect::<Vec<_>>(), ["ghost@example.test"]);
    // …until it writes to us again (docs/SECURITY.md: marks are cleared by the address' own mail).
    let again = clients::thunderbird_new("Ghost", "ghost@example.test", "support@example.test", "New thing", "x");
    common::lmtp_deliver(&s, "support@example.test", &again.raw);
    common::eventually(WAIT, "second ticket", || (d.tickets().len() == 2).then_some(()));
    let t2 = d.store().ticket_detail(2).unwrap().unwrap();
    assert!(!t2.events.iter().any(|e| e.kind == "auto_mail_suppressed"), "{:?}", t2.events);
    d.stop();
}

const RULES_V1: &str = r#"
[[rule]]
name = "vip"
phase = "any"
[rule.when]
from = "@vip.example.test"
[rule.then]
priority = "high"
add_tags = ["vip"]

[[rule]]
name = "billing"
[rule.when]
subject = "/invoice (?P<no>\\d+)/"
[rule.then]
queue = "billing"
add_tags = ["invoice-{no}"]
owner = "agent@example.test"

[[rule]]
name = "spam"
phase = "any"
stop = true
[rule.when]
header."X-Spam-Flag" = "yes"
[rule.then]
spam = true

[[rule]]
name = "noise"
stop = true
[rule.when]
subject = "[noise]"
[rule.then]
drop = true
"#;

#[test]
fn scenario_9_rules_route_and_reload() {
    let s = MailServers::start_with_users(&["boss".to_string()]);
    let extra = "[rules]\npath = \"rules.toml\"\n\n[agents.agent]\nemail = \"agent@example.test\"\nnotify_new = false\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.toml"), RULES_V1).unwrap();
    let w = Wiring { imap_tls: "starttls", smtp_tls: "none", after: "seen", extra };
    let config = common::write_config(dir.path(), &desk_toml(&s, dir.path(), &w));
    let d = Daemon::start_at(dir, config);
    let dir_path = d.config.parent().unwrap().to_path_buf();

    let send = |from: &str, subject: &str, extra_headers: &str| {
        let raw = format!("From: {from}\r\nTo: support@example.test\r\nSubject: {subject}\r\n{extra_headers}Message-ID: <{}@example.test>\r\n\r\nbody\r\n", subject.replace(' ', "-"));
        s.send(from, &["support@example.test"], raw.as_bytes());
    };
    send("alice@example.test", "About invoice 4711", "");
    send("bob@example.test", "Cheap pills", "X-Spam-Flag: YES\r\n");
    send("carol@example.test", "[noise] cron output", "");
    send("alice@example.test", "Plain question", "");
    common::eventually(WAIT, "two tickets and two quarantined", || {
        (d.tickets().len() == 2 && d.store().quarantine_counts().unwrap().iter().map(|(_, n)| n).sum::<u64>() == 2).then_some(())
    });
    let t = d.tickets();
    let inv = t.iter().find(|t| t.subject.contains("invoice")).unwrap();
    assert_eq!((inv.queue.as_str(), inv.owner.as_deref()), ("billing", Some("agent@example.test")));
    assert_eq!(inv.tags, vec!["invoice-4711".to_string()]);

    // Edit the file and reload (SIGHUP runs this same code): the new rule applies.
    std::fs::write(dir_path.join("rules.toml"), RULES_V1.replace("@vip.example.test", "@example.test")).unwrap();
    d.running.as_ref().unwrap().reload().unwrap();
    send("boss@example.test", "Where is my laptop", "");
    common::eventually(WAIT, "VIP ticket", || d.tickets().into_iter().find(|t| t.requester == "boss@example.test"));
    let boss = d.tickets().into_iter().find(|t| t.requester == "boss@example.test").unwrap();
    assert_eq!((boss.priority, boss.tags.clone()), (postdesk::ticket::Priority::High, vec!["vip".to_string()]));

    // A broken file is refused with its reason; the last good rules stay active.
    std::fs::write(dir_path.join("rules.toml"), "[[rule]]\nname = \"x\"\n[rule.when]\nsubject = \"/(/\"\n").unwrap();
    let err = d.running.as_ref().unwrap().reload().unwrap_err().to_string();
    assert!(err.contains("rules.toml:4"), "{err}");
    send("carol@example.test", "Invoice 99 question", "");
    common::eventually(WAIT, "still routed by the old rules", || {
        d.tickets().into_iter().find(|t| t.requester == "carol@example.test").filter(|t| t.queue == "billing" && t.tags.contains(&"vip".to_string()))
    });
    d.stop();
}

#[test]
fn scenario_12_sla_warning_breach_and_escalation() {
    let s = MailServers::start();
    let extra = r#"
[agents.agent]
name = "Andy Agent"
email = "agent@example.test"
queues = ["support"]

[agents.agent2]
name = "Tess Tier-Two"
email = "agent2@example.test"
tier = 2

[sla.policies.fast]
first_response = "6s"
warn_at = "50%"
escalate_on_breach = true
"#;
    let dir = tempfile::tempdir().unwrap();
    let w = Wiring { imap_tls: "starttls", smtp_tls: "none", after: "seen", extra };
    let toml = desk_toml(&s, dir.path(), &w).replace("[queues.support]\n", "[queues.support]\nsla = \"fast\"\n");
    let config = common::write_config(dir.path(), &toml);
    let d = Daemon::start_at(dir, config);
    let m = clients::thunderbird_new("Alice", "alice@example.test", "support@example.test", "Nobody answers", "Hello?");
    s.send("alice@example.test", &["support@example.test"], &m.raw);
    let warn = s.wait_for("agent", WAIT, |m| m.contains("SLA warning"));
    assert!(header(&warn, "subject").unwrap().contains("[PD-1]"));
    let breach = s.wait_for("agent", WAIT, |m| m.contains("SLA BREACHED"));
    assert!(breach.contains("first response"), "{breach}");
    let esc = s.wait_for("agent2", WAIT, |m| m.contains("Escalated"));
    assert!(esc.contains("Hello?"), "{esc}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.count("agent", |m| m.contains("SLA warning")), 1, "once");
    assert_eq!(s.count("agent", |m| m.contains("SLA BREACHED")), 1, "once");
    assert_eq!(d.tickets()[0].tier, 2);
    d.stop();
}

#[test]
fn scenario_15_self_service_close_and_status_list() {
    let s = MailServers::start();
    let d = Daemon::start(&s, &Wiring { imap_tls: "starttls", smtp_tls: "none", after: "seen", extra: "[self_service]\n" });
    let a = clients::thunderbird_new("Alice", "alice@example.test", "support@example.test", "Printer jammed", "x");
    let b = clients::thunderbird_new("Alice", "alice@example.test", "support@example.test", "VPN slow", "y");
    s.send("alice@example.test", &["support@example.test"], &a.raw);
    s.send("alice@example.test", &["support@example.test"], &b.raw);
    let ack1 = s.wait_for("alice", WAIT, |m| m.contains("Printer jammed") && m.contains("Auto-Submitted"));
    s.wait_for("alice", WAIT, |m| m.contains("VPN slow") && m.contains("Auto-Submitted"));
    let printer = d.tickets().into_iter().find(|t| t.subject == "Printer jammed").unwrap();

    // Close the printer ticket by replying to its acknowledgement with /close.
    let close = clients::thunderbird_reply("Alice", "alice@example.test", "support@example.test", &header(&ack1, "subject").unwrap(), &id_of(&ack1), std::slice::from_ref(&a.message_id), "/close\nIt works again, thanks!");
    s.send("alice@example.test", &["support@example.test"], &close.raw);
    let confirm = s.wait_for("alice", WAIT, |m| m.contains("is now closed"));
    assert!(header(&confirm, "subject").unwrap().contains(&format!("[PD-{}]", printer.id)));
    assert_eq!(d.tickets().into_iter().find(|t| t.id == printer.id).unwrap().status, postdesk::ticket::Status::Closed);

    // "status": the list of open tickets comes back; no ticket is opened for the request.
    let ask = clients::thunderbird_new("Alice", "alice@example.test", "support@example.test", "Status", "What is open?");
    s.send("alice@example.test", &["support@example.test"], &ask.raw);
    let list = s.wait_for("alice", WAIT, |m| m.contains("Your open tickets"));
    assert!(list.contains("VPN slow") && !list.contains("Printer jammed"), "{list}");
    assert_eq!(d.tickets().len(), 2);
    // A stranger asking gets only their own (empty) list.
    let other = clients::thunderbird_new("Bob", "bob@example.test", "support@example.test", "status", "");
    s.send("bob@example.test", &["support@example.test"], &other.raw);
    let bl = s.wait_for("bob", WAIT, |m| m.contains("Your open tickets"));
    assert!(bl.contains("no open tickets") && !bl.contains("VPN"), "{bl}");
    d.stop();
}

const KNOWLEDGE_DESK: &str = r#"
[agents.agent]
name = "Andy Agent"
email = "agent@example.test"
queues = ["support"]

[self_service]

[knowledge]
suggestions = 2
"#;

/// Scenario 19: an agent searches past tickets by mail; the solution of a resolved ticket, once
/// published, is suggested in the acknowledgement of the next customer with the same problem,
/// who closes the ticket: deflected in the report. A customer's search sees published articles
/// only.
#[test]
fn scenario_19_search_solutions_suggestions_and_deflection() {
    let s = MailServers::start();
    let d = Daemon::start(&s, &Wiring { imap_tls: "starttls", smtp_tls: "none", after: "seen", extra: KNOWLEDGE_DESK });
    let first = clients::thunderbird_new("Alice Example", "alice@example.test", "support@example.test", "Printer prints faded pages", "The printer on floor two prints faded pages. My desk is next to the quokka poster.");
    s.send("alice@example.test", &["support@example.test"], &first.raw);
    s.wait_for("alice", WAIT, |m| m.contains("[PD-1]"));
    let note = s.wait_for("agent", WAIT, |m| m.contains("[PD-1]") && m.contains("New ticket"));

    // The agent searches past tickets from mutt, answering the notification.
    common::mutt_reply(&s, "agent", "New ticket", "/search faded printing");
    let found = s.wait_for("agent", WAIT, |m| m.contains("Search: faded printing"));
    assert!(found.contains("[PD-1] Printer prints faded pages") && found.contains("*faded*"), "{found}");
    assert_eq!(s.count("alice", |m| m.contains("faded printing")), 0, "a search reaches nobody but the agent");

    // Resolved with a solution, published: the customer gets the solution as the reply.
    let nid = id_of(&note);
    let nsub = header(&note, "subject").unwrap();
    let solve = clients::thunderbird_reply("Andy", "agent@example.test", "support@example.test", &nsub, &nid, &[], "/resolve\n/solution\n/publish Faded prints: replace the toner\nOpen the front cover and replace the toner cartridge; prints are dark again.");
    s.send("agent@example.test", &["support@example.test"], &solve.raw);
    s.wait_for("alice", WAIT, |m| m.contains("replace the toner cartridge"));
    common::eventually(WAIT, "KB-1 published", || d.store().kb_article(1).unwrap().filter(|a| a.state == postdesk::store::KbState::Published).map(|_| ()));

    // The next customer with the same problem gets it suggested in the acknowledgement.
    let second = clients::thunderbird_new("Bob", "bob@example.test", "support@example.test", "Faded prints", "All prints from my printer are faded and pale since this morning.");
    s.send("bob@example.test", &["support@example.test"], &second.raw);
    let ack = s.wait_for("bob", WAIT, |m| m.contains("[PD-2]"));
    assert!(ack.contains("[KB-1] Faded prints: replace the toner") && ack.contains("replace the toner cartridge"), "{ack}");
    assert!(!ack.contains("quokka"), "nothing of the first customer's mail: {ack}");
    // He closes it himself: deflected.
    let close = clients::thunderbird_reply("Bob", "bob@example.test", "support@example.test", &header(&ack, "subject").unwrap(), &id_of(&ack), std::slice::from_ref(&second.message_id), "/close\nThat did it, thanks!");
    s.send("bob@example.test", &["support@example.test"], &close.raw);
    s.wait_for("bob", WAIT, |m| m.contains("is now closed"));
    assert_eq!(d.store().knowledge_figures("2000-01-01T00:00:00Z").unwrap(), (1, 1));

    // A customer's search returns the published article, never another customer's ticket.
    let ask = clients::thunderbird_new("Carol", "carol@example.test", "support@example.test", "search", "faded quokka\n");
    s.send("carol@example.test", &["support@example.test"], &ask.raw);
    let none = s.wait_for("carol", WAIT, |m| m.contains("Search: faded quokka"));
    assert!(none.contains("Nothing found") && !none.contains("PD-1"), "{none}");
    let ask = clients::thunderbird_new("Carol", "carol@example.test", "support@example.test", "Question", "/search faded prints");
    s.send("carol@example.test", &["support@example.test"], &ask.raw);
    let kb = s.wait_for("carol", WAIT, |m| m.contains("Search: faded prints"));
    assert!(kb.contains("[KB-1] Faded prints: replace the toner") && !kb.contains("PD-1") && !kb.contains("PD-2"), "{kb}");
    assert_eq!(d.tickets().len(), 2, "searches open no ticket");
    let (_dir, config) = d.stop();
    // `postdesk report` shows the figures.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postdesk")).arg("--config").arg(&config).args(["report", "--format", "json"]).output().unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(j["knowledge"], serde_json::json!({ "suggested": 1, "deflected": 1 }), "{j}");
}

const CSAT_DESK: &str = r#"
[agents.agent]
name = "Andy Agent"
email = "agent@example.test"
queues = ["support"]

[csat]
scale = "1-5"
"#;

#[test]
fn scenario_20_satisfaction_answered_by_mail_keeps_the_ticket_resolved() {
    let s = MailServers::start();
    let d = Daemon::start(&s, &Wiring { imap_tls: "starttls", smtp_tls: "none", after: "seen", extra: CSAT_DESK });
    let first = clients::thunderbird_new("Alice Example", "alice@example.test", "support@example.test", "Monitor flickers", "My monitor flickers since this morning.");
    s.send("alice@example.test", &["support@example.test"], &first.raw);
    let note = s.wait_for("agent", WAIT, |m| m.contains("[PD-1]") && m.contains("New ticket"));
    // The agent resolves it from a Gmail-style client; the resolved notice asks the question.
    let done = clients::gmail_reply("Andy", "agent@example.test", "support@example.test", &header(&note, "subject").unwrap(), &id_of(&note), &[], "/take\n/status resolved");
    s.send("agent@example.test", &["support@example.test"], &done.raw);
    let notice = s.wait_for("alice", WAIT, |m| m.contains("How did we do?"));
    assert!(header(&notice, "subject").unwrap().contains("[PD-1]") && notice.contains("1, 2, 3, 4, 5"), "{notice}");
    assert_eq!(d.tickets()[0].status, postdesk::ticket::Status::Resolved);

    // Alice answers "5" from Thunderbird (quoting the notice): recorded, the ticket stays resolved.
    let answer = clients::thunderbird_reply("Alice Example", "alice@example.test", "support@example.test", &header(&notice, "subject").unwrap(), &id_of(&notice), std::slice::from_ref(&first.message_id), "5");
    s.send("alice@example.test", &["support@example.test"], &answer.raw);
    let rating = common::eventually(WAIT, "the rating recorded", || d.store().csat_rating(1).unwrap());
    assert_eq!((rating.rating, rating.label.as_str(), rating.rated_by.as_str()), (5, "5", "alice@example.test"));
    assert_eq!(d.tickets()[0].status, postdesk::ticket::Status::Resolved, "a rating does not reopen");
    assert!(d.articles(1).iter().any(|a| a.kind == postdesk::ticket::ArticleKind::Customer && a.body_text.starts_with('5')));

    // A word on the first line is no rating on a digit scale: that reply reopens, as always.
    let again = clients::thunderbird_reply("Alice Example", "alice@example.test", "support@example.test", &header(&notice, "subject").unwrap(), &id_of(&notice), std::slice::from_ref(&first.message_id), "Sorry, it flickers again.");
    s.send("alice@example.test", &["support@example.test"], &again.raw);
    common::eventually(WAIT, "reopened", || (d.tickets()[0].status == postdesk::ticket::Status::Open).then_some(()));
    assert_eq!(d.store().csat_rating(1).unwrap().unwrap().rating, 5, "the rating stays");
    d.stop();
}

const SERVICE_DESK: &str = r#"
[agents.agent]
name = "Andy Agent"
email = "agent@example.test"
queues = ["support"]

[approvals]
approvers = ["carol@example.test"]

[groups.vendor]
name = "Vendor Inc."
address = "external@example.test"
ticket_pattern = '\[Vendor #(\d+)\]'
"#;

#[test]
fn scenario_13_change_approval_by_mail() {
    let s = MailServers::start();
    let d = Daemon::start(&s, &Wiring { imap_tls: "starttls", smtp_tls: "none", after: "seen", extra: SERVICE_DESK });
    for (n, subject) in [(1, "Upgrade the firewall"), (2, "Open port 23 to the world")] {
        let m = clients::thunderbird_new("Alice", "alice@example.test", "support@example.test", subject, "Please do it this week.");
        s.send("alice@example.test", &["support@example.test"], &m.raw);
        let note = s.wait_for("agent", WAIT, |m| m.contains(&format!("[PD-{n}]")) && m.contains("New ticket"));
        let typed = clients::thunderbird_reply("Andy", "agent@example.test", "support@example.test", &header(&note, "subject").unwrap(), &id_of(&note), &[], "/type change\n/take\nWe will schedule this once it is approved.");
        s.send("agent@example.test", &["support@example.test"], &typed.raw);
        s.wait_for("carol", WAIT, |m| m.contains(&format!("[PD-{n}]")) && m.contains("Approval needed"));
        common::eventually(WAIT, "awaiting approval", || {
            d.tickets().into_iter().find(|t| t.id == n).filter(|t| t.approval.as_deref() == Some("requested") && t.status == postdesk::ticket::Status::Pending)
        });
    }
    // The approver answers from mutt: /approve.
    common::mutt_reply(&s, "carol", "PD-1", "/approve");
    let outcome = s.wait_for("alice", WAIT, |m| m.contains("Change approved"));
    assert!(header(&outcome, "subject").unwrap().contains("[PD-1]"));
    s.wait_for("agent", WAIT, |m| m.contains("Change approved by carol@example.test"));
    // …and rejects the other with a reason, from a Gmail-like client.
    let req2 = s.wait_for("carol", WAIT, |m| m.contains("[PD-2]") && m.contains("Approval needed"));
    let rej = clients::gmail_reply("Carol", "carol@example.test", "support@example.test", &header(&req2, "subject").unwrap(), &id_of(&req2), &[], "/reject Telnet is not allowed here.");
    s.send("carol@example.test", &["support@example.test"], &rej.raw);
    let out2 = s.wait_for("alice", WAIT, |m| m.contains("Change rejected"));
    assert!(out2.contains("Telnet is not allowed here."), "{out2}");
    let t = d.tickets();
    assert_eq!((t[0].approval.as_deref(), t[1].approval.as_deref()), (Some("approved"), Some("rejected")));
    assert!(d.store().ticket_detail(2).unwrap().unwrap().events.iter().any(|e| e.kind == "approval" && e.detail.contains("rejected by carol@example.test")));
    // Someone who is not an approver cannot decide (their /approve is just a customer message).
    d.stop();
}

#[test]
fn scenario_14_external_group_replies_thread_back_as_notes() {
    let s = MailServers::start();
    let d = Daemon::start(&s, &Wiring { imap_tls: "starttls", smtp_tls: "none", after: "seen", extra: SERVICE_DESK });
    let m = clients::thunderbird_new("Alice", "alice@example.test", "support@example.test", "Server disk errors", "The RAID reports a failed disk.");
    s.send("alice@example.test", &["support@example.test"], &m.raw);
    let note = s.wait_for("agent", WAIT, |m| m.contains("[PD-1]") && m.contains("New ticket"));
    let fwd = clients::thunderbird_reply("Andy", "agent@example.test", "support@example.test", &header(&note, "subject").unwrap(), &id_of(&note), &[], "/forward vendor\nPlease replace the failed disk under our contract 77-A.");
    s.send("agent@example.test", &["support@example.test"], &fwd.raw);
    let handoff = s.wait_for("external", WAIT, |m| m.contains("[PD-1]"));
    assert!(handoff.contains("contract 77-A") && handoff.contains("The RAID reports a failed disk."), "{handoff}");
    assert!(!handoff.contains("agent@example.test"), "the agent's address is not exposed");
    assert!(d.tickets()[0].tags.contains(&"waiting-on:vendor".to_string()));

    // The vendor's system answers with its own number, keeping our tag and headers…
    let r1 = format!(
        "From: Vendor Support <external@example.test>\r\nTo: support@example.test\r\nSubject: [Vendor #5555] RE: {}\r\nIn-Reply-To: <{}>\r\nMessage-ID: <v1@vendor.example>\r\n\r\nWe opened case 5555; a technician comes tomorrow.\r\n",
        header(&handoff, "subject").unwrap(),
        id_of(&handoff)
    );
    s.send("external@example.test", &["support@example.test"], r1.as_bytes());
    // …and later with only its own number.
    let r2 = "From: Vendor Support <external@example.test>\r\nTo: support@example.test\r\nSubject: [Vendor #5555] Part shipped\r\nMessage-ID: <v2@vendor.example>\r\n\r\nThe disk was shipped today.\r\n";
    s.send("external@example.test", &["support@example.test"], r2.as_bytes());
    common::eventually(WAIT, "both vendor replies on PD-1 as notes", || {
        let arts = d.articles(1);
        (arts.iter().filter(|a| a.kind == postdesk::ticket::ArticleKind::Note && a.from == "external@example.test").count() == 2).then_some(())
    });
    assert_eq!(d.tickets().len(), 1, "no ticket for the vendor's mail");
    let t = d.tickets().remove(0);
    assert_eq!(t.groups[0].external_ref.as_deref(), Some("5555"));
    s.wait_for("agent", WAIT, |m| m.contains("Vendor Inc. replied") && m.contains("shipped today"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.count("alice", |m| m.contains("technician") || m.contains("shipped")), 0, "the customer never sees the vendor's notes");
    d.stop();
}

#[test]
fn real_world_content_over_real_servers() {
    let s = MailServers::start();
    let d = Daemon::start(&s, &Wiring { imap_tls: "starttls", smtp_tls: "none", after: "seen", extra: "" });
    // Outlook, HTML only.
    let html = "From: Bob Example <bob@example.test>\r\nTo: support@example.test\r\nSubject: Scanner offline\r\nMessage-ID: <AM0PR07MB-html-1@AM0PR07MB6243.eurprd07.prod.outlook.com>\r\nThread-Topic: Scanner offline\r\nContent-Language: en-US\r\nX-MS-Has-Attach:\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=\"iso-8859-1\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<html xmlns:o=3D\"urn:schemas-microsoft-com:office:office\"><head><style><!-- p.MsoNormal {margin:0cm;} --></style></head><body lang=3D\"EN-US\"><div class=3D\"WordSection1\"><p class=3DMsoNormal>Hello,<o:p></o:p></p><p class=3DMsoNormal>the scanner on floor 2 shows <b>OFFLINE</b> since Monday.<o:p></o:p></p><p class=3DMsoNormal>Gr=FC=DFe, Bob<o:p></o:p></p></div></body></html>\r\n";
    s.send("bob@example.test", &["support@example.test"], html.as_bytes());
    // Declared us-ascii, written in latin-1 (imap-tools raw_email6.eml, MIT).
    let mislabelled = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/content/imap-tools/messages/plain_emails/raw_email6.eml")).unwrap();
    common::lmtp_deliver(&s, "support@example.test", &mislabelled);
    // Outlook's winmail.dat.
    let winmail = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/content/constructed/outlook-winmail.eml")).unwrap();
    common::lmtp_deliver(&s, "support@example.test", &winmail);
    common::eventually(WAIT, "three tickets", || (d.tickets().len() == 3).then_some(()));
    let by_subject = |part: &str| {
        let t = d.tickets().into_iter().find(|t| t.subject.contains(part)).unwrap_or_else(|| panic!("no ticket with {part}: {:?}", d.tickets()));
        d.articles(t.id).remove(0)
    };
    let a = by_subject("Scanner");
    assert!(a.body_text.contains("the scanner on floor 2 shows") && a.body_text.contains("OFFLINE") && a.body_text.contains("Grüße, Bob"), "{}", a.body_text);
    assert!(!a.body_text.contains("<p") && !a.body_text.contains("MsoNormal"), "{}", a.body_text);
    let all: Vec<_> = d.tickets().iter().map(|t| d.articles(t.id).remove(0)).collect();
    assert!(all.iter().any(|a| a.body_text.contains("Envoyé par le service de messagerie texte de Bell Mobilité")), "mislabelled charset repaired");
    let w = all.iter().find(|a| a.attachments.iter().any(|x| x.name == "README")).expect("winmail.dat unpacked");
    assert_eq!(w.attachments.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(), vec!["AUTHORS", "README"]);
    d.stop();
}
