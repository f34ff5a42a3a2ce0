//! PostgreSQL against SQLite, and two nodes against one (issue 15, docs/POSTGRES.md).
//!
//! `cargo bench --bench nodes` — a private Dovecot + Postfix and a private PostgreSQL cluster
//! (tests/harness/postgres.sh), everything on this machine:
//! 1. the pipeline alone (no IMAP): BENCH_NODES_N (default 3,000) generated 5–30 KB messages
//!    stored in batches of 200 (`Pipeline::ingest_batch`, the IMAP path) into a fresh SQLite
//!    file and into a fresh PostgreSQL database, BENCH_ROUNDS (default 2) rounds in turn;
//! 2. the daemon in process with four IMAP mailboxes holding BENCH_NODES_PER_BOX (default 750)
//!    messages each: SQLite (one daemon), PostgreSQL with one node, PostgreSQL with two nodes
//!    (two daemons on one database, each taking mailboxes by lease), timed from start until
//!    every mailbox cursor reaches its last UID. The second node runs on the same two cores, so
//!    this measures what sharing the work costs or gains here, not a second machine.
//!
//! Prints `nodes: …` lines; figures go in docs/BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use postdesk::clock::SystemClock;
use postdesk::desk::{Desk, KeyMode};
use postdesk::pipeline::Pipeline;
use postdesk::store::{Cursor, Store};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const BOXES: [&str; 4] = ["support", "billing", "sales", "hr"];

fn main() {
    if !bench_mode("nodes") {
        return;
    }
    let n = param("BENCH_NODES_N", 3000);
    let per_box = param("BENCH_NODES_PER_BOX", 750);
    let rounds = param("BENCH_ROUNDS", 2).max(1);
    report(&format!("nodes: machine: {}", machine()));
    let users: Vec<String> = BOXES[1..].iter().map(|b| b.to_string()).collect();
    let s = servers(&users, Duration::from_secs(1500));
    let work = work_dir("nodes");
    let t = Instant::now();
    let _ = common::pg::PgCluster::get();
    report(&format!("nodes: private PostgreSQL cluster up in {:.1}s", t.elapsed().as_secs_f64()));

    // 1. The pipeline alone.
    let mut g = Gen::new(0x5eed_0015, (n / 3).max(1), "support@example.test");
    let msgs: Vec<Msg> = (0..n).map(|_| g.next(0.3)).collect();
    let (mut lite, mut pg) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let dir = work.path().join(format!("pipeline-{round}"));
        lite.push(pipeline_only(&s, &dir.join("sqlite"), &msgs, None));
        pg.push(pipeline_only(&s, &dir.join("postgres"), &msgs, Some(common::pg::fresh_database("bench"))));
    }
    let (l, p) = (median(&mut lite), median(&mut pg));
    report(&format!(
        "nodes: pipeline, {n} messages in batches of 200: SQLite {} msg/s, PostgreSQL {} msg/s (medians {l:.0} / {p:.0}, PostgreSQL/SQLite = {:.2})",
        fmt(&lite),
        fmt(&pg),
        p / l
    ));

    // 2. The daemon, four mailboxes.
    let mut last = Vec::new();
    for (i, b) in BOXES.iter().enumerate() {
        let mut g = Gen::new(0x5eed_0100 + i as u64, (per_box / 3).max(1), &format!("{b}@example.test"));
        let m: Vec<Msg> = (0..per_box).map(|_| g.next(0.3)).collect();
        preload(&s, b, &m, 1_700_000_000 + (i * per_box) as u64);
        let mut imap = RawImap::login(s.port("IMAP_PORT"), &format!("{b}@example.test"), &s.password());
        assert_eq!(imap.messages("INBOX") as usize, per_box);
        let uidnext: u32 = imap.cmd("STATUS INBOX (UIDNEXT)").iter().find_map(|l| l.split("UIDNEXT ").nth(1).and_then(|r| r.trim_end().trim_end_matches(')').parse().ok())).unwrap();
        last.push(uidnext - 1);
    }
    let total = per_box * BOXES.len();
    for round in 0..rounds {
        for (label, nodes, pg) in [("SQLite, one daemon", 1, false), ("PostgreSQL, one node", 1, true), ("PostgreSQL, two nodes", 2, true)] {
            let dir = work.path().join(format!("daemon-{round}-{}", label.replace([',', ' '], "")));
            let url = pg.then(|| common::pg::fresh_database("nodes"));
            let (secs, per_node) = daemons(&s, &dir, url.as_deref(), nodes, &last);
            report(&format!(
                "nodes: daemon round {}: {label}: {total} messages in 4 mailboxes in {secs:.2}s = {:.0} msg/s; mailboxes per node {per_node:?}",
                round + 1,
                total as f64 / secs
            ));
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn fmt(v: &[f64]) -> String {
    v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
}

fn desk_config(s: &common::MailServers, dir: &Path, boxes: &[&str], postgres: Option<&str>, node: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut toml = desk_toml(s, &dir.join("var"), boxes, "[outbound]\ntransport = \"folder\"\nfolder = \"outbox\"\n");
    if let Some(url) = postgres {
        toml.push_str(&format!("\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\nnode = \"{node}\"\nlease_ttl = \"6s\"\n"));
    }
    write_config(dir, &toml)
}

/// Messages per second through `Pipeline::ingest_batch` (batches of 200) on SQLite or PostgreSQL.
fn pipeline_only(s: &common::MailServers, dir: &Path, msgs: &[Msg], postgres: Option<String>) -> f64 {
    let cfg = desk_config(s, dir, &["support"], postgres.as_deref(), "bench");
    let desk = Desk::load(&cfg, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
    let store = Arc::new(Store::connect(&desk.config.backend()).unwrap());
    let p = Pipeline::new(store, Arc::new(SystemClock));
    let all: Vec<(Vec<u8>, Cursor)> = msgs.iter().enumerate().map(|(i, m)| (m.raw.clone(), Cursor { uid_validity: 1, last_uid: i as u32 + 1 })).collect();
    let t = Instant::now();
    for b in all.chunks(200) {
        p.ingest_batch(&desk, "support", b).unwrap();
    }
    msgs.len() as f64 / t.elapsed().as_secs_f64()
}

/// Start `nodes` daemons in process on one database; seconds until every cursor is at its last
/// UID, and how many mailboxes each node ended up reading.
fn daemons(s: &common::MailServers, dir: &Path, postgres: Option<&str>, nodes: usize, last: &[u32]) -> (f64, Vec<usize>) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let t = Instant::now();
    let mut running = Vec::new();
    for i in 0..nodes {
        let d = dir.join(format!("node{i}"));
        let cfg = desk_config(s, &d, &BOXES, postgres, &format!("node{i}"));
        let desk = Desk::load(&cfg, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
        running.push(rt.block_on(postdesk::daemon::start(desk, &cfg, Arc::new(SystemClock))).unwrap());
    }
    let store = running[0].pipeline.store.clone();
    let secs = wait_until(Duration::from_secs(900), Duration::from_millis(10), || {
        BOXES.iter().zip(last).all(|(b, l)| store.cursor(b).ok().flatten().is_some_and(|c| c.last_uid >= *l)).then(|| t.elapsed().as_secs_f64())
    })
    .expect("every mailbox read within 15 minutes");
    let mut per_node = vec![0; nodes];
    if postgres.is_some() {
        for (name, holder, _) in store.leases().unwrap_or_default() {
            if name.starts_with("mailbox:")
                && let Some(i) = holder.strip_prefix("node").and_then(|h| h.split('/').next()).and_then(|i| i.parse::<usize>().ok())
            {
                per_node[i] += 1;
            }
        }
    } else {
        per_node[0] = BOXES.len();
    }
    for r in running {
        rt.block_on(r.stop());
    }
    (secs, per_node)
}
