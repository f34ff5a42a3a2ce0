//! Several nodes on one PostgreSQL database (issue 15), with the real binary, real Dovecot +
//! Postfix and a private PostgreSQL cluster (`tests/harness/postgres.sh`):
//!
//! - three daemons, two IMAP mailboxes and a pipe; the node holding a mailbox's lease is killed
//!   with -9 again and again at random moments (seed printed; `POSTDESK_SEED=N` repeats a run);
//! - one node's database connection is cut through the fault proxy past the lease time;
//! - `postdesk migrate` moves a real SQLite desk, which then runs on PostgreSQL unchanged.
//!
//! The end state is checked, never the speed: every message on exactly one ticket, every
//! acknowledgement in the customer's INBOX exactly once. Waits are hang detectors only.

mod common;

use common::proxy::FaultProxy;
use common::{MailServers, clients, pg};
use common::rng::{Rng, seed};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_postdesk");

/// One node's configuration: the same for every node apart from `[store] node` (and its own
/// folder, so `data_dir` differs too).
fn node_config(s: &MailServers, url: &str, node: &str, batch: u32) -> String {
    format!(
        r#"
[desk]
domain = "desk.example.test"
data_dir = "var"
templates_dir = "templates"
secret = "postgres-nodes-test-secret-0123456789"

[store]
backend = "postgres"
url = "{url}"
node = "{node}"
lease_ttl = "3s"

[queues.support]
address = "support@example.test"
from_name = "Example Support"

[queues.billing]
address = "billing@example.test"
from_name = "Example Billing"

[mailboxes.support]
kind = "imap"
host = "127.0.0.1"
port = {imap}
tls = "none"
username = "support@example.test"
password = "{pw}"
batch_size = {batch}

[mailboxes.billing]
kind = "imap"
queue = "billing"
host = "127.0.0.1"
port = {imap}
tls = "none"
username = "billing@example.test"
password = "{pw}"
batch_size = {batch}

[mailboxes.pipe]
kind = "pipe"
queue = "support"

[outbound]
transport = "smtp"
host = "127.0.0.1"
port = {smtp}
tls = "none"
retry_initial = "1s"
retry_max = "2s"
poll_interval = "200ms"

[guard]
auto_mail_caps = ["10000/1h"]
auto_mail_total = "off"
new_tickets_per_sender = "10000/1h"
new_tickets_per_domain = "10000/1h"
"#,
        imap = s.port("IMAP_PORT"),
        smtp = s.port("SMTP_PORT"),
        pw = s.password()
    )
}

/// A daemon process with its own folder and log.
struct Node {
    name: String,
    _dir: tempfile::TempDir,
    cfg: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    starts: usize,
}

impl Node {
    fn new(name: &str, config: &str) -> Node {
        let dir = tempfile::Builder::new().prefix(&format!("pd-{name}-")).tempdir().unwrap();
        let cfg = common::write_config(dir.path(), config);
        let log = dir.path().join("daemon.log");
        Node { name: name.into(), _dir: dir, cfg, log, child: None, starts: 0 }
    }

    fn start(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(BIN).arg("--config").arg(&self.cfg).arg("run").env_remove("POSTDESK_LOG").stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.child = Some(child);
        self.starts += 1;
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL and reap.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, and the exit must be clean.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            Command::new("kill").arg("-TERM").arg(c.id().to_string()).status().unwrap();
            let status = c.wait().unwrap();
            assert!(status.success(), "{}: clean exit after SIGTERM: {status:?}; log tail:\n{}", self.name, self.tail(20));
        }
    }

    fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(n).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// `postdesk deliver --mailbox pipe` with this node's config, started (not waited for).
    fn deliver(&self, raw: &[u8]) -> Child {
        start_deliver(&self.cfg, raw)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn delivered(c: Child) -> Output {
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "deliver: {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

/// The mailbox leases: name → (holder, token).
fn mailbox_leases(url: &str) -> BTreeMap<String, (String, i64)> {
    pg::psql(url, "SELECT name, holder, token FROM leases WHERE name LIKE 'mailbox:%' ORDER BY name")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (f.len() == 3).then(|| (f[0].to_string(), (f[1].to_string(), f[2].parse().unwrap())))
        })
        .collect()
}

fn scalar(url: &str, sql: &str) -> i64 {
    pg::psql(url, sql).trim().parse().unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn cursor(url: &str, mailbox: &str) -> i64 {
    scalar(url, &format!("SELECT coalesce(max(last_uid), 0) FROM mailbox_cursors WHERE mailbox = '{mailbox}'"))
}

/// Inbound articles: Message-ID → the tickets it is on.
fn inbound_articles(url: &str) -> HashMap<String, Vec<i64>> {
    let mut out: HashMap<String, Vec<i64>> = HashMap::new();
    for l in pg::psql(url, "SELECT message_id, ticket_id FROM articles WHERE direction = 'inbound'").lines() {
        if let Some((id, t)) = l.rsplit_once('|') {
            out.entry(id.to_string()).or_default().push(t.parse().unwrap());
        }
    }
    out
}

/// Wait until every mailbox's cursor reached its last UID and the outbox is empty; a hang
/// detector only (generous), with the nodes' log tails when it fires.
fn wait_until_settled(url: &str, uids: &[(&str, i64)], acks: usize, nodes: &[Node]) {
    let start = Instant::now();
    let mut reported = 0;
    loop {
        let at: Vec<i64> = uids.iter().map(|(m, _)| cursor(url, m)).collect();
        let queued = scalar(url, "SELECT count(*) FROM outbox WHERE state = 'queued' AND id NOT IN (SELECT outbox_id FROM sentlog.sent)");
        let sent = scalar(url, "SELECT count(*) FROM outbox WHERE state = 'sent' OR id IN (SELECT outbox_id FROM sentlog.sent)");
        if uids.iter().zip(&at).all(|((_, n), c)| c >= n) && queued == 0 && sent as usize >= acks {
            println!("settled after {:?}: cursors {at:?}, {sent} sent", start.elapsed());
            return;
        }
        if start.elapsed().as_secs() / 10 > reported {
            reported = start.elapsed().as_secs() / 10;
            println!("still settling after {:?}: cursors {at:?} of {uids:?}, {queued} queued, {sent} of {acks} sent", start.elapsed());
            println!("  leases: {}", pg::psql(url, "SELECT name, holder, token, expires_at - now() FROM leases WHERE expires_at > now()").replace('\n', "; "));
            println!("  unsent: {}", pg::psql(url, "SELECT id, claimed_by, claimed_until - now(), attempts, next_attempt_at, last_error FROM outbox WHERE state = 'queued' AND id NOT IN (SELECT outbox_id FROM sentlog.sent) LIMIT 5").replace('\n', "; "));
        }
        if start.elapsed() > Duration::from_secs(150) {
            for n in nodes {
                println!("---- {} log tail:\n{}", n.name, n.tail(25));
            }
            println!("leases: {}", pg::psql(url, "SELECT name, holder, token, expires_at - now() FROM leases"));
            println!("outbox: {}", pg::psql(url, "SELECT id, state, claimed_by, claimed_until - now(), attempts, last_error FROM outbox WHERE state <> 'sent' AND id NOT IN (SELECT outbox_id FROM sentlog.sent) LIMIT 10"));
            panic!("not settled: cursors {at:?} of {uids:?}, {queued} queued, {sent} of {acks} sent");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Every message on exactly one ticket and nothing else stored; every acknowledgement in the
/// customer's INBOX exactly once.
fn check_end_state(s: &MailServers, url: &str, sent_by: &HashMap<String, String>, customers: &[String]) {
    let tickets = scalar(url, "SELECT count(*) FROM tickets") as usize;
    assert_eq!(tickets, sent_by.len(), "one ticket per new message, none lost, none doubled");
    let on = inbound_articles(url);
    for id in sent_by.keys() {
        assert_eq!(on.get(id).map(Vec::len), Some(1), "message {id} must be on exactly one ticket: {:?}", on.get(id));
    }
    assert_eq!(on.len(), sent_by.len(), "nothing else was stored");
    let mut want: HashMap<&str, usize> = HashMap::new();
    for c in sent_by.values() {
        *want.entry(c.as_str()).or_default() += 1;
    }
    let unconfirmed = pg::psql(url, "SELECT ticket_id, detail FROM events WHERE kind = 'delivery_unconfirmed' ORDER BY id");
    if !unconfirmed.trim().is_empty() {
        println!("delivery_unconfirmed events:\n{unconfirmed}");
    }
    let mut acks = 0;
    for u in customers {
        let expected = want.get(format!("{u}@example.test").as_str()).copied().unwrap_or(0);
        s.assert_acknowledged_once(u, expected);
        acks += expected;
    }
    println!("{} messages on {tickets} tickets, {acks} acknowledgements each delivered once", on.len());
}

fn customer_mail(from: &str, to: &str, n: usize) -> clients::Mail {
    clients::thunderbird_new("Customer", from, to, &format!("Case {n} from {from}"), &format!("Details of case {}.", common::spelled(&n.to_string())))
}

#[test]
fn three_nodes_survive_repeated_kill_minus_nine() {
    let mut rng = Rng(seed("three_nodes_survive_repeated_kill_minus_nine"));
    let customers: Vec<String> = (0..10).map(|i| format!("pgc{i}")).collect();
    let s = MailServers::start_with_users(&customers);
    let url = pg::fresh_database("three_nodes");
    let mut sent_by: HashMap<String, String> = HashMap::new(); // Message-ID → customer address
    let mut n = 0;

    // The backlog: 150 + 150 messages waiting on the server.
    for mailbox in ["support", "billing"] {
        for k in 0..150 {
            let from = format!("{}@example.test", customers[k % customers.len()]);
            let m = customer_mail(&from, &format!("{mailbox}@example.test"), n);
            s.drop_into(mailbox, &format!("{n:06}.pg"), &m.raw);
            sent_by.insert(m.message_id, from);
            n += 1;
        }
    }
    let mut uids: HashMap<&str, i64> = HashMap::new();
    for mailbox in ["support", "billing"] {
        uids.insert(mailbox, s.fetch_all(mailbox).len() as i64);
    }
    assert_eq!(uids.values().sum::<i64>(), 300, "Dovecot assigned UIDs to the backlog");

    let mut nodes: Vec<Node> = ["node-a", "node-b", "node-c"].iter().map(|name| Node::new(name, &node_config(&s, &url, name, 10))).collect();
    for node in &mut nodes {
        node.start();
    }
    // The three create the schema at once on the empty database (one of them does, under a lock).
    common::eventually(Duration::from_secs(30), "the schema", || (scalar(&url, "SELECT count(*) FROM pg_tables WHERE tablename = 'leases'") == 1).then_some(()));
    common::eventually(Duration::from_secs(30), "both mailboxes leased", || (mailbox_leases(&url).len() == 2).then_some(()));

    let mut holders: BTreeSet<String> = BTreeSet::new();
    let mut first_tokens: BTreeMap<String, i64> = mailbox_leases(&url).into_iter().map(|(k, (_, t))| (k, t)).collect();
    let mut kills = 0;
    let mut dupes = 0;
    let mut smtp_sent: HashMap<&str, i64> = HashMap::new();
    let rounds = 10;
    for round in 0..rounds {
        // Early rounds fall into the backlog, later ones into mail arriving while the nodes run.
        std::thread::sleep(Duration::from_millis(rng.range(100, 1500)));
        // More mail while the nodes run: over SMTP into both mailboxes …
        for _ in 0..4 {
            let mailbox = if rng.next().is_multiple_of(2) { "support" } else { "billing" };
            let from = format!("{}@example.test", customers[rng.range(0, customers.len() as u64) as usize]);
            let to = format!("{mailbox}@example.test");
            let m = customer_mail(&from, &to, n);
            s.send(&from, &[&to], &m.raw);
            sent_by.insert(m.message_id, from);
            *smtp_sent.entry(mailbox).or_default() += 1;
            n += 1;
        }
        // … and through the pipe on any node, some twice at once on two nodes.
        let mut pipes = Vec::new();
        for _ in 0..3 {
            let from = format!("{}@example.test", customers[rng.range(0, customers.len() as u64) as usize]);
            let m = customer_mail(&from, "support@example.test", n);
            n += 1;
            let a = rng.range(0, 3) as usize;
            pipes.push(nodes[a].deliver(&m.raw));
            if rng.next().is_multiple_of(2) {
                pipes.push(nodes[(a + 1) % 3].deliver(&m.raw));
            }
            sent_by.insert(m.message_id, from);
        }
        for p in pipes {
            if String::from_utf8_lossy(&delivered(p).stderr).contains("duplicate") {
                dupes += 1;
            }
        }
        // Kill -9 the node holding a mailbox (a random one of the two), then start it again.
        let leases = mailbox_leases(&url);
        for (name, (holder, token)) in &leases {
            holders.insert(holder.clone());
            first_tokens.entry(name.clone()).or_insert(*token);
        }
        // (A lease still naming a node killed earlier has no live holder to kill: the other one.)
        let live = |holder: &str, nd: &Node| holder.split_once('/').is_some_and(|(name, pid)| name == nd.name && pid.parse::<u32>().ok() == nd.pid());
        let names: Vec<&String> = leases.iter().filter(|(_, (h, _))| nodes.iter().any(|nd| live(h, nd))).map(|(k, _)| k).collect();
        let pick = if names.is_empty() { leases.keys().next().unwrap() } else { names[rng.range(0, names.len() as u64) as usize] };
        let (holder, _) = &leases[pick];
        match nodes.iter_mut().find(|nd| live(holder, nd)) {
            Some(v) => {
                println!("round {round}: kill -9 {holder} (holds {pick}); cursors support {} billing {}", cursor(&url, "support"), cursor(&url, "billing"));
                v.kill9();
                kills += 1;
                // Sometimes it comes back at once, sometimes only after another node took over.
                if rng.next().is_multiple_of(2) {
                    std::thread::sleep(Duration::from_millis(rng.range(0, 4000)));
                }
                v.start();
            }
            None => println!("round {round}: {pick} held by {holder}, not a live node (expired holder of a killed node)"),
        }
    }
    assert!(kills >= rounds / 2, "the test killed lease holders ({kills} of {rounds} rounds)");

    for (mailbox, more) in &smtp_sent {
        // Postfix delivers asynchronously: wait until the server has them all.
        let want = uids[mailbox] + more;
        common::eventually(Duration::from_secs(60), &format!("{want} messages in {mailbox}"), || (s.fetch_all(mailbox).len() as i64 >= want).then_some(()));
        *uids.get_mut(mailbox).unwrap() = want;
    }
    let want: Vec<(&str, i64)> = vec![("support", uids["support"]), ("billing", uids["billing"])];
    wait_until_settled(&url, &want, sent_by.len(), &nodes);
    let end = mailbox_leases(&url);
    for (holder, _) in end.values() {
        holders.insert(holder.clone());
    }
    // Everything on the server is flagged \Seen (after-commit action, settled after takeovers).
    for mailbox in ["support", "billing"] {
        common::eventually(Duration::from_secs(30), "all seen", || (common::unseen(&s, mailbox) == 0).then_some(()));
    }
    for node in &mut nodes {
        node.stop();
    }

    // A takeover really happened: new holders, and the fencing tokens grew.
    let grown: Vec<String> = end.iter().filter(|(k, (_, t))| *t > first_tokens[*k]).map(|(k, (_, t))| format!("{k}: {} → {t}", first_tokens[k])).collect();
    println!("{kills} kills; holders seen: {holders:?}; tokens grown: {grown:?}");
    assert!(!grown.is_empty(), "no mailbox lease changed hands: {end:?}");
    assert!(holders.len() >= 3, "holders seen: {holders:?}");

    let customers_all: Vec<String> = customers.clone();
    check_end_state(&s, &url, &sent_by, &customers_all);
    println!("{dupes} pipe deliveries were recognised as duplicates");
}

#[test]
fn a_node_cut_off_from_the_database_stops_and_another_takes_over() {
    let mut rng = Rng(seed("a_node_cut_off_from_the_database_stops_and_another_takes_over"));
    let customers: Vec<String> = (0..6).map(|i| format!("pgx{i}")).collect();
    let s = MailServers::start_with_users(&customers);
    let url = pg::fresh_database("cut_off");
    // Node A reaches the database only through the proxy.
    let proxy = FaultProxy::start(pg::PgCluster::get().port);
    let proxied = url.replacen(&format!(":{}/", pg::PgCluster::get().port), &format!(":{}/", proxy.port), 1);
    assert_ne!(proxied, url);

    let mut sent_by: HashMap<String, String> = HashMap::new();
    let mut n = 0;
    for (mailbox, count) in [("support", 200), ("billing", 60)] {
        for k in 0..count {
            let from = format!("{}@example.test", customers[(k + rng.range(0, 6) as usize) % customers.len()]);
            let m = customer_mail(&from, &format!("{mailbox}@example.test"), n);
            s.drop_into(mailbox, &format!("{n:06}.pg"), &m.raw);
            sent_by.insert(m.message_id, from);
            n += 1;
        }
    }
    let uids = [("support", s.fetch_all("support").len() as i64), ("billing", s.fetch_all("billing").len() as i64)];
    assert_eq!(uids[0].1 + uids[1].1, n as i64);

    let mut a = Node::new("node-a", &node_config(&s, &proxied, "node-a", 5));
    let mut others: Vec<Node> = ["node-b", "node-c"].iter().map(|name| Node::new(name, &node_config(&s, &url, name, 5))).collect();
    a.start();
    // A alone: it takes both mailboxes and starts on the backlog.
    let (taken, token) = common::eventually(Duration::from_secs(30), "node A reading support", || {
        let tables = scalar(&url, "SELECT count(*) FROM pg_tables WHERE tablename = 'leases'");
        if tables == 0 {
            return None;
        }
        let l = mailbox_leases(&url);
        let (holder, token) = l.get("mailbox:support")?.clone();
        (holder.starts_with("node-a/") && cursor(&url, "support") >= 1).then_some((cursor(&url, "support"), token))
    });
    proxy.refuse(true);
    proxy.cut_all();
    let at_cut = cursor(&url, "support");
    println!("cut node A off at support cursor {at_cut} (first seen {taken}), lease token {token}");
    assert!(at_cut < uids[0].1, "the cut falls into the backlog");
    for o in &mut others {
        o.start();
    }
    // Another node takes the mailbox over (after A's lease ran out) and goes on with the backlog.
    let new_holder = common::eventually(Duration::from_secs(60), "another node takes support over", || {
        let (holder, t) = mailbox_leases(&url).get("mailbox:support")?.clone();
        (!holder.starts_with("node-a/") && t > token).then_some(holder)
    });
    let moved = common::eventually(Duration::from_secs(60), "the backlog moves on without A", || {
        let c = cursor(&url, "support");
        (c > at_cut).then_some(c)
    });
    println!("{new_holder} took support over; cursor {moved}");
    // More mail while A is cut off.
    for k in 0..10 {
        let from = format!("{}@example.test", customers[k % customers.len()]);
        let m = customer_mail(&from, "support@example.test", n);
        n += 1;
        delivered(others[k % 2].deliver(&m.raw));
        sent_by.insert(m.message_id, from);
    }
    // Keep A cut off past another lease time, then give it the database back: it stands by.
    std::thread::sleep(Duration::from_millis(rng.range(3000, 5000)));
    assert!(a.child.as_mut().unwrap().try_wait().unwrap().is_none(), "A keeps running without its database:\n{}", a.tail(20));
    proxy.refuse(false);
    let refused = proxy.attempts();
    common::eventually(Duration::from_secs(60), "A reconnects", || (proxy.attempts() > refused && proxy.live() > 0).then_some(()));

    let nodes = vec![a, others.remove(0), others.remove(0)];
    wait_until_settled(&url, &uids, sent_by.len(), &nodes);
    for mailbox in ["support", "billing"] {
        common::eventually(Duration::from_secs(30), "all seen", || (common::unseen(&s, mailbox) == 0).then_some(()));
    }
    // A noticed: its renewal failed and it stopped reading the mailbox.
    let log = std::fs::read_to_string(&nodes[0].log).unwrap_or_default();
    let lost: Vec<&str> = log.lines().filter(|l| l.contains("lease lost") || l.contains("LeaseLost") || l.contains("lost the lease")).collect();
    for l in lost.iter().take(6) {
        println!("node A: {l}");
    }
    assert!(lost.iter().any(|l| l.contains("mailbox:support")), "node A says it lost the support lease:\n{}", nodes[0].tail(30));
    for mut node in nodes {
        node.stop();
    }
    check_end_state(&s, &url, &sent_by, &customers);
}

/// A Maildir + folder desk (no mail servers), as tests/cli.rs runs it; `store` is empty for
/// SQLite or a `[store]` section, `secret` empty or a `secret_file` line.
fn sqlite_desk(secret: &str, store: &str) -> String {
    format!(
        r#"
[desk]
name = "Example Support"
domain = "desk.example.test"
data_dir = "var"
templates_dir = "templates"
{secret}

{store}

[queues.support]
address = "support@example.test"
from_name = "Example Support"

[mailboxes.support]
kind = "maildir"
path = "var/maildir/support"
poll_interval = "100ms"

[mailboxes.pipe]
kind = "pipe"
queue = "support"

[outbound]
transport = "folder"
folder = "var/outbox"
poll_interval = "200ms"

[agents.alice]
name = "Alice Agent"
email = "alice@agents.example.test"
queues = ["support"]

[rules]
path = "rules.toml"
"#
    )
}

fn run(cfg: &std::path::Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("--config").arg(cfg).args(args).env_remove("POSTDESK_LOG").stdin(Stdio::null()).output().unwrap()
}

fn json(cfg: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = run(cfg, args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn pipe(cfg: &std::path::Path, raw: &[u8]) -> String {
    String::from_utf8_lossy(&delivered(start_deliver(cfg, raw)).stderr).into_owned()
}

/// `postdesk deliver --mailbox pipe` with `raw` on its stdin, running.
fn start_deliver(cfg: &std::path::Path, raw: &[u8]) -> Child {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .args(["deliver", "--mailbox", "pipe"])
        .env_remove("POSTDESK_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(raw).unwrap();
    child
}

/// Everything the CLI shows of the desk: the list and each ticket, as JSON and as text.
fn shown(cfg: &std::path::Path) -> (serde_json::Value, Vec<serde_json::Value>, Vec<String>) {
    let list = json(cfg, &["tickets", "list", "--json"]);
    let refs: Vec<String> = list.as_array().unwrap().iter().map(|t| t["ref"].as_str().unwrap().to_string()).collect();
    let shows = refs.iter().map(|r| json(cfg, &["tickets", "show", r, "--json"])).collect();
    let texts = refs.iter().map(|r| String::from_utf8_lossy(&run(cfg, &["tickets", "show", r]).stdout).into_owned()).collect();
    (list, shows, texts)
}

#[test]
fn migrate_moves_a_real_desk() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(dir.path(), &sqlite_desk("", ""));
    std::fs::write(dir.path().join("rules.toml"), "[[rule]]\nname = \"hold-invoices\"\n[rule.when]\nsubject = \"/invoice/i\"\n[rule.then]\nquarantine = true\n").unwrap();

    // Two tickets, a customer's follow-up, an agent's note, a quarantined invoice.
    let first = clients::thunderbird_new("Alice Example", "alice@example.org", "support@example.test", "Printer jammed", "Floor 3, the big one.");
    assert!(pipe(&cfg, &first.raw).contains("created PD-1"));
    let second = clients::thunderbird_new("Bob Example", "bob@example.org", "support@example.test", "VPN drops every hour", "It disconnects at :00.");
    assert!(pipe(&cfg, &second.raw).contains("created PD-2"));
    let more = clients::mutt_reply("alice@example.org", "support@example.test", "Printer jammed", &first.message_id, &[], "Still jammed after the restart.");
    pipe(&cfg, &more.raw);
    let t1 = json(&cfg, &["tickets", "show", "PD-1", "--json"]);
    let notice = t1["articles"].as_array().unwrap().iter().find(|a| a["kind"] == "notification" && a["to"].to_string().contains("alice@agents.example.test")).unwrap_or_else(|| panic!("alice was told of PD-1: {t1}")).clone();
    let note = clients::thunderbird_reply("Alice Agent", "alice@agents.example.test", "support@example.test", notice["subject"].as_str().unwrap(), notice["message_id"].as_str().unwrap(), &[], "/note\nVendor says a fix ships Friday.");
    pipe(&cfg, &note.raw);
    let invoice = clients::thunderbird_new("Vendor", "bob@example.org", "support@example.test", "Invoice 42", "Please pay.");
    assert!(pipe(&cfg, &invoice.raw).contains("quarantined"));
    let t1 = json(&cfg, &["tickets", "show", "PD-1", "--json"]);
    assert!(t1["articles"].as_array().unwrap().iter().any(|a| a["kind"] == "note"), "the agent's note is on PD-1: {t1}");

    // The daemon sends the queued mail into the folder (sent log and outbox rows to copy).
    let mut daemon = Command::new(BIN).arg("--config").arg(&cfg).arg("run").env_remove("POSTDESK_LOG").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let db = dir.path().join("var/postdesk.db");
    common::eventually(Duration::from_secs(30), "the outbox sent", || {
        let c = postdesk::store::Store::open(&db).ok()?.outbox_counts().ok()?;
        (c.queued == 0 && c.sent >= 3).then_some(())
    });
    Command::new("kill").arg("-TERM").arg(daemon.id().to_string()).status().unwrap();
    assert!(daemon.wait().unwrap().success());
    let before = shown(&cfg);
    assert_eq!(before.0.as_array().unwrap().len(), 2);
    let quarantined_before = json(&cfg, &["quarantine", "list", "--json"]);
    assert_eq!(quarantined_before.as_array().unwrap().len(), 1);

    // Migrate: verified counts and checksums.
    let url = pg::fresh_database("migrate");
    let out = run(&cfg, &["migrate", "--to", &url]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("migrate said:\n{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "migrate: {said}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("counts and checksums match"), "{said}");
    assert_eq!(scalar(&url, "SELECT count(*) FROM tickets"), 2);
    assert_eq!(scalar(&url, "SELECT count(*) FROM quarantine"), 1);

    // The same desk on PostgreSQL, signing with the key it had.
    let sqlite_cfg = std::fs::read_to_string(&cfg).unwrap();
    let key = dir.path().join("var/secret");
    assert!(key.exists(), "the SQLite desk made its signing key");
    std::fs::write(
        &cfg,
        sqlite_desk(&format!("secret_file = \"{}\"", key.display()), &format!("[store]\nbackend = \"postgres\"\nurl = \"{url}\"\nnode = \"migrated\"")),
    )
    .unwrap();
    let after = shown(&cfg);
    assert_eq!(after.0, before.0, "tickets list --json is the same on PostgreSQL");
    for (a, b) in after.1.iter().zip(&before.1) {
        assert_eq!(a, b, "tickets show --json is the same on PostgreSQL");
    }
    assert_eq!(after.2, before.2, "tickets show (text) is the same on PostgreSQL");
    assert_eq!(json(&cfg, &["quarantine", "list", "--json"]), quarantined_before);

    // A reply to the acknowledgement sent before the move threads by its signed token.
    let pd1 = before.1.iter().find(|t| t["id"] == 1).unwrap();
    let ack = pd1["articles"].as_array().unwrap().iter().find(|a| a["kind"] == "auto_reply").unwrap().clone();
    let reply = clients::thunderbird_reply("Alice Example", "alice@example.org", "support@example.test", "Printer jammed", ack["message_id"].as_str().unwrap(), &[], "It works now, thank you.");
    let eml = dir.path().join("reply.eml");
    std::fs::write(&eml, &reply.raw).unwrap();
    let threading = |cfg: &std::path::Path| json(cfg, &["rules", "test", eml.to_str().unwrap(), "--mailbox", "pipe", "--json"])["threading"].as_str().unwrap_or_default().to_string();
    let how = threading(&cfg);
    assert!(how.contains("follow-up on PD-1 (signed reply token") && how.contains("verified"), "the reply token verifies with the migrated key: {how}");
    // (With another key the token would not verify: the key is what carries over.)
    let pg_cfg = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, pg_cfg.replace(&format!("secret_file = \"{}\"", key.display()), "secret = \"not-the-desk-key-0123456789abcdef\"")).unwrap();
    let how = threading(&cfg);
    assert!(!how.contains("signed reply token"), "a different key must not verify the token: {how}");
    std::fs::write(&cfg, pg_cfg).unwrap();
    let said = pipe(&cfg, &reply.raw);
    assert!(said.contains("PD-1"), "{said}");
    let t1 = json(&cfg, &["tickets", "show", "PD-1", "--json"]);
    let arts = t1["articles"].as_array().unwrap();
    assert!(arts.iter().any(|a| a["message_id"] == reply.message_id.as_str()), "the reply is on PD-1: {t1}");
    assert_eq!(json(&cfg, &["tickets", "list", "--json"]).as_array().unwrap().len(), 2, "no new ticket");

    // Migrating again into the (now used) database is refused.
    std::fs::write(&cfg, sqlite_cfg).unwrap();
    let out = run(&cfg, &["migrate", "--to", &url]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "a second migrate into the same database must fail");
    assert!(err.contains("already holds a desk"), "{err}");
    assert_eq!(scalar(&url, "SELECT count(*) FROM tickets"), 2, "the refused migrate changed nothing");
}
