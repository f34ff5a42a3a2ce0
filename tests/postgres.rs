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

use common::{MailServers, clients, pg};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_postdesk");

/// xorshift64*: a tiny seeded generator so a failing run can be repeated.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn seed(test: &str) -> u64 {
    let seed = std::env::var("POSTDESK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    println!("{test}: seed {seed} (rerun with POSTDESK_SEED={seed})");
    seed
}

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
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&self.cfg)
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
    loop {
        let at: Vec<i64> = uids.iter().map(|(m, _)| cursor(url, m)).collect();
        let queued = scalar(url, "SELECT count(*) FROM outbox WHERE state = 'queued' AND id NOT IN (SELECT outbox_id FROM sentlog.sent)");
        let sent = scalar(url, "SELECT count(*) FROM outbox WHERE state = 'sent' OR id IN (SELECT outbox_id FROM sentlog.sent)");
        if uids.iter().zip(&at).all(|((_, n), c)| c >= n) && queued == 0 && sent as usize >= acks {
            println!("settled after {:?}: cursors {at:?}, {sent} sent", start.elapsed());
            return;
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
    let mut acks = 0;
    for u in customers {
        let expected = want.get(format!("{u}@example.test").as_str()).copied().unwrap_or(0);
        let mine = common::eventually(Duration::from_secs(60), &format!("{u}'s {expected} acknowledgements in the INBOX"), || {
            let mine: Vec<String> = s
                .fetch_all(u)
                .iter()
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .filter(|m| m.contains("Auto-Submitted: auto-replied"))
                .map(|m| common::header(&m, "message-id").unwrap())
                .collect();
            (mine.len() >= expected).then_some(mine)
        });
        let distinct: HashSet<&String> = mine.iter().collect();
        assert_eq!(distinct.len(), expected, "{u}: one acknowledgement per ticket");
        assert_eq!(mine.len(), distinct.len(), "{u}: an acknowledgement was delivered twice");
        acks += mine.len();
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
            let mailbox = if rng.next() % 2 == 0 { "support" } else { "billing" };
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
            if rng.next() % 2 == 0 {
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
                if rng.next() % 2 == 0 {
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
