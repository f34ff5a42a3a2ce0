//! Fault tests with the real binary, real Dovecot + Postfix and a real SQLite file: kill -9 at
//! random moments during ingest, then check that every message is on exactly one ticket and
//! every acknowledgement arrived exactly once. Seeds are printed; `POSTDESK_SOAK=1` runs longer.

mod common;

use common::{MailServers, clients};
use common::rng::{Rng, seed};
use postdesk::store::{Store, TicketFilter};
use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_postdesk");

fn config(s: &MailServers, dir: &std::path::Path) -> std::path::PathBuf {
    common::write_config(
        dir,
        &format!(
            r#"
[desk]
domain = "desk.example.test"
data_dir = "var"
templates_dir = "templates"
secret = "fault-test-secret-0123456789"

[queues.support]
address = "support@example.test"
from_name = "Example Support"

[mailboxes.support]
kind = "imap"
host = "127.0.0.1"
port = {imap}
tls = "none"
username = "support@example.test"
password = "{pw}"
batch_size = 25

[outbound]
transport = "smtp"
host = "127.0.0.1"
port = {smtp}
tls = "none"
retry_initial = "1s"
retry_max = "2s"
poll_interval = "200ms"

[guard]
auto_mail_caps = ["1000/1h"]
auto_mail_total = "off"
new_tickets_per_sender = "1000/1h"
"#,
            imap = s.port("IMAP_PORT"),
            smtp = s.port("SMTP_PORT"),
            pw = s.password()
        ),
    )
}

fn spawn(cfg: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(BIN).arg("--config").arg(cfg).arg("run").stdout(Stdio::null()).stderr(log).spawn().unwrap()
}

#[test]
fn kill_minus_nine_during_ingest_loses_nothing_and_doubles_nothing() {
    let soak = std::env::var("POSTDESK_SOAK").is_ok();
    let (customers, per_customer, replies_per_customer, kills) = if soak { (40, 15, 10, 200) } else { (20, 10, 5, 30) };
    let mut rng = Rng(seed("kill_minus_nine_during_ingest"));

    let users: Vec<String> = (0..customers).map(|i| format!("cust{i}")).collect();
    let s = MailServers::start_with_users(&users);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&s, dir.path());
    let log = dir.path().join("daemon.log");

    // Preload: new tickets first, then replies to them (In-Reply-To the customer's own mail).
    let mut parents: BTreeMap<String, String> = BTreeMap::new(); // reply id -> parent id
    let mut new_ids: HashMap<String, String> = HashMap::new(); // message id -> customer
    let mut n = 0;
    for (ci, u) in users.iter().enumerate() {
        for k in 0..per_customer {
            let m = clients::thunderbird_new("Customer", &format!("{u}@example.test"), "support@example.test", &format!("Problem {k} of customer {ci}"), &format!("Details of case {}.", common::spelled(&k.to_string())));
            s.drop_into("support", &format!("{:06}.new.{ci}.{k}", n), &m.raw);
            new_ids.insert(m.message_id.clone(), u.clone());
            n += 1;
        }
    }
    assert_eq!(s.fetch_all("support").len(), n, "Dovecot assigned UIDs to the new mail");
    let ids: Vec<(String, String)> = new_ids.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (ci, u) in users.iter().enumerate() {
        let own: Vec<&String> = ids.iter().filter(|(_, c)| c == u).map(|(id, _)| id).collect();
        for k in 0..replies_per_customer {
            let parent = own[rng.range(0, own.len() as u64) as usize];
            let m = clients::mutt_reply(&format!("{u}@example.test"), "support@example.test", &format!("Problem of customer {ci}"), parent, &[], &format!("More details {k}."));
            s.drop_into("support", &format!("{:06}.reply.{ci}.{k}", n), &m.raw);
            parents.insert(m.message_id, parent.clone());
            n += 1;
        }
    }
    assert_eq!(s.fetch_all("support").len(), n);
    println!("preloaded {n} messages ({} new tickets, {} replies)", new_ids.len(), parents.len());

    // Kill -9 at random moments.
    let start = Instant::now();
    for i in 0..kills {
        let mut child = spawn(&cfg, &log);
        let after = rng.range(30, 700);
        std::thread::sleep(Duration::from_millis(after));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if i % 10 == 9 {
            println!("{} kills done ({:?})", i + 1, start.elapsed());
        }
    }

    // Final run until everything is in and every acknowledgement went out.
    let before = std::fs::read_to_string(&log).map(|l| l.len()).unwrap_or(0);
    let mut child = spawn(&cfg, &log);
    common::eventually(Duration::from_secs(20), "final daemon ready", || {
        std::fs::read_to_string(&log).ok().filter(|l| l[before..].contains("postdesk started")).map(|_| ())
    });
    let db = dir.path().join("var/postdesk.db");
    common::eventually(Duration::from_secs(120), "all messages stored and the outbox drained", || {
        let store = Store::open(&db).ok()?;
        let c = store.outbox_counts().ok()?;
        let cursor = store.cursor("support").ok()??;
        (cursor.last_uid as usize >= n && c.queued == 0 && c.sent as usize >= new_ids.len()).then_some(())
    });
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let status = child.wait().unwrap();
    if !status.success() {
        let logtext = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = logtext.lines().rev().take(15).collect();
        panic!("clean exit after SIGTERM: {status:?}; log tail:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }

    // Every message on exactly one ticket; replies on their parent's ticket.
    let store = Store::open(&db).unwrap();
    let tickets = store.list_tickets(&TicketFilter::default()).unwrap();
    assert_eq!(tickets.len(), new_ids.len(), "one ticket per new message, none duplicated");
    let mut where_is: HashMap<String, Vec<i64>> = HashMap::new();
    for t in &tickets {
        for a in store.ticket_detail(t.id).unwrap().unwrap().articles {
            if a.direction == postdesk::ticket::Direction::Inbound {
                where_is.entry(a.message_id).or_default().push(t.id);
            }
        }
    }
    for id in new_ids.keys().chain(parents.keys()) {
        assert_eq!(where_is.get(id).map(Vec::len), Some(1), "message {id} must be on exactly one ticket: {:?}", where_is.get(id));
    }
    for (reply, parent) in &parents {
        assert_eq!(where_is[reply], where_is[parent], "reply {reply} threads with its parent");
    }
    assert_eq!(where_is.len(), n, "nothing else was stored");

    // Every acknowledgement arrived, exactly once.
    let logtext = std::fs::read_to_string(&log).unwrap_or_default();
    for l in logtext.lines().filter(|l| l.contains("ERROR") || l.contains("cannot record") || l.contains("WARN")).take(20) {
        println!("log: {l}");
    }
    let mut acks = 0;
    for u in &users {
        s.assert_acknowledged_once(u, per_customer);
        acks += per_customer;
    }
    println!("{n} messages, {} tickets, {acks} acknowledgements, {kills} kills, {:?}", tickets.len(), start.elapsed());
    // The server copies are all flagged \Seen (after-commit action, settled after restarts).
    common::eventually(Duration::from_secs(10), "all seen", || (common::unseen(&s, "support") == 0).then_some(()));
}
