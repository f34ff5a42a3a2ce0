//! Ingest throughput (issue 7, PRODUCT.md "Quality bars"): the daemon's rate from Dovecot into
//! tickets (acknowledgements queued) against a bare IMAP client fetching the same messages.
//!
//! `cargo bench --bench ingest` (BENCH_INGEST_N messages, default 5,000; BENCH_ROUNDS daemon
//! runs, default 2). Steps, all in one run against a private Dovecot + Postfix:
//! 1. generate N realistic messages (5–30 KB; 70 % new conversations, 30 % replies) and write
//!    them straight into support's Maildir; one STATUS makes Dovecot index them;
//! 2. bare client (async-imap, plain loopback): `UID FETCH 1:* (UID BODY.PEEK[])`, one warm-up
//!    and three measured rounds;
//! 3. for the breakdown: parse only, and the pipeline alone (no IMAP) on a fresh database: one
//!    transaction per message (`Pipeline::ingest`, the Maildir/`deliver` path) and batches of
//!    200 (`Pipeline::ingest_batch`, the IMAP path) on the same disk, batches on tmpfs
//!    (/dev/shm, where fsync costs nothing);
//! 4. the daemon in process (`postdesk::daemon::start`, IMAP plain loopback with IDLE, outbound
//!    to a folder), fresh database each round, timed from start until the mailbox cursor
//!    reaches the last UID.
//!
//! Prints `ingest: bare_fetch=… msg/s postdesk=… msg/s ratio=…` and the breakdown.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use futures::TryStreamExt;
use postdesk::clock::SystemClock;
use postdesk::desk::{Desk, KeyMode};
use postdesk::pipeline::{Delivery, Pipeline};
use postdesk::store::Store;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

fn main() {
    if !bench_mode("ingest") {
        return;
    }
    let n = param("BENCH_INGEST_N", 5000);
    // For profiling one part: BENCH_PHASES=bare,breakdown,daemon,maildir (default all).
    let phases = std::env::var("BENCH_PHASES").unwrap_or_else(|_| "bare,breakdown,daemon,maildir".into());
    let phase = |p: &str| phases.split(',').any(|x| x.trim() == p);
    let rounds = param("BENCH_ROUNDS", 2).max(1);
    report(&format!("ingest: machine: {}", machine()));
    let s = servers(&[], Duration::from_secs(900));
    let work = work_dir("ingest");
    log_to_file(&work.path().join("daemon.log"));

    // 1. Generate and preload.
    let mut g = Gen::new(0x5eed_0001, (n / 3).max(1), "support@example.test");
    let t = Instant::now();
    let msgs: Vec<Msg> = (0..n).map(|_| g.next(0.3)).collect();
    let gen_s = t.elapsed().as_secs_f64();
    let replies = msgs.iter().filter(|m| m.parent.is_some()).count();
    let t = Instant::now();
    let bytes = preload(&s, "support", &msgs, 1_700_000_000);
    let write_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut imap = RawImap::login(s.port("IMAP_PORT"), "support@example.test", &s.password());
    let count = imap.messages("INBOX");
    let index_s = t.elapsed().as_secs_f64();
    assert_eq!(count as usize, n, "Dovecot sees every preloaded message");
    let uidnext: u32 = imap.cmd("STATUS INBOX (UIDNEXT)").iter().find_map(|l| l.split("UIDNEXT ").nth(1).and_then(|r| r.trim_end().trim_end_matches(')').parse().ok())).unwrap();
    let last_uid = uidnext - 1;
    report(&format!(
        "ingest: corpus: {n} messages ({} new, {replies} replies), {:.1} MB, mean {:.1} KB; generated in {gen_s:.1}s, written to the Maildir at {:.0} msg/s, indexed by Dovecot in {index_s:.1}s",
        n - replies,
        bytes as f64 / 1e6,
        bytes as f64 / n as f64 / 1024.0,
        n as f64 / write_s
    ));

    // 2. Bare client.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ep = endpoint(&s, "support");
    let mut bare = Vec::new();
    for round in 0..if phase("bare") { 4 } else { 0 } {
        let (got, b, secs) = rt.block_on(bare_fetch(&ep));
        assert_eq!(got, n, "bare fetch got every message");
        assert_eq!(b, bytes, "bare fetch got every byte");
        if round > 0 {
            bare.push(n as f64 / secs);
        }
    }
    bare.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let bare_rate = bare.get(bare.len() / 2).copied().unwrap_or(f64::NAN);
    report(&format!("ingest: bare_fetch rounds: {} msg/s (median {bare_rate:.0} msg/s, {:.0} MB/s)", fmt_rates(&bare), bare_rate * bytes as f64 / n as f64 / 1e6));

    // 3. Breakdown without IMAP.
    if phase("breakdown") {
    let t = Instant::now();
    for m in &msgs {
        std::hint::black_box(postdesk::message::parse(&m.raw).ok());
    }
    let parse_rate = n as f64 / t.elapsed().as_secs_f64();
    // The same parse on every core at once: the most any intake that parses could reach here,
    // with no store, no guard and no IMAP server beside it.
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let t = Instant::now();
    std::thread::scope(|sc| {
        for share in msgs.chunks(msgs.len().div_ceil(cores)) {
            sc.spawn(move || share.iter().for_each(|m| std::mem::drop(std::hint::black_box(postdesk::message::parse(&m.raw).ok()))));
        }
    });
    let parse_all_cores = n as f64 / t.elapsed().as_secs_f64();
    report(&format!(
        "ingest: parse alone on all {cores} cores {parse_all_cores:.0} msg/s = {:.2} of the bare fetch (an upper bound of the ratio for any intake that parses each message)",
        parse_all_cores / bare_rate
    ));
    let fsync_ms = fsync_probe(work.path());
    let single = pipeline_only(&s, &work.path().join("pipeline-single"), &msgs, 1);
    let batched = pipeline_only(&s, &work.path().join("pipeline-batch"), &msgs, 200);
    let shm = tempfile::Builder::new().prefix("pd-bench-").tempdir_in("/dev/shm").ok();
    let shm_rate = shm.as_ref().map(|d| pipeline_only(&s, d.path(), &msgs, 200));
    drop(shm);
    report(&format!(
        "ingest: breakdown: parse_only={parse_rate:.0} msg/s; Pipeline on disk (synchronous=FULL): one transaction per message {single:.0} msg/s, batches of 200 {batched:.0} msg/s; batches of 200 on tmpfs {} msg/s; fsync of 100 KB on this disk p50 {fsync_ms:.2} ms",
        shm_rate.map(|r| format!("{r:.0}")).unwrap_or("n/a".into())
    ));
    }

    // 4. The daemon.
    let mut rates = Vec::new();
    for round in 0..if phase("daemon") { rounds } else { 0 } {
        let fsync_ms = fsync_probe(work.path());
        let dir = work.path().join(format!("daemon-{round}"));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = write_config(&dir, &desk_toml(&s, &dir.join("var"), &["support"], "[outbound]\ntransport = \"folder\"\nfolder = \"outbox\"\n"));
        let desk = Desk::load(&cfg, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
        let drt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let t = Instant::now();
        let running = drt.block_on(postdesk::daemon::start(desk, &cfg, Arc::new(SystemClock))).unwrap();
        let store = running.pipeline.store.clone();
        let mut first = None;
        let done = wait_until(Duration::from_secs(600), Duration::from_millis(5), || {
            let c = store.cursor("support").ok().flatten();
            if first.is_none() && c.is_some() {
                first = Some(t.elapsed());
            }
            c.filter(|c| c.last_uid >= last_uid).map(|_| t.elapsed())
        })
        .expect("daemon reached the last UID within 10 minutes");
        let rate = n as f64 / done.as_secs_f64();
        let steady = (n - 1) as f64 / (done - first.unwrap()).as_secs_f64();
        let counts = store.outbox_counts().unwrap();
        let tickets = count_tickets(&store);
        rates.push(rate);
        // Let the folder transport drain before stopping (not timed).
        let drained = wait_until(Duration::from_secs(120), Duration::from_millis(50), || (store.outbox_counts().ok()?.queued == 0).then_some(t.elapsed()));
        drt.block_on(running.stop());
        report(&format!(
            "ingest: daemon round {}: {n} messages in {:.2}s = {rate:.0} msg/s (first message stored after {:.0} ms; {steady:.0} msg/s after it); {tickets} tickets, {} acks queued at the end, outbox drained after {}; fsync p50 {fsync_ms:.2} ms before the round",
            round + 1,
            done.as_secs_f64(),
            first.unwrap().as_secs_f64() * 1e3,
            counts.queued + counts.sent,
            drained.map(|d| format!("{:.1}s", d.as_secs_f64())).unwrap_or("(not within 120 s)".into())
        ));
    }
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let best = rates.last().copied().unwrap_or(f64::NAN);
    report(&format!("ingest: bare_fetch={bare_rate:.0} msg/s postdesk={best:.0} msg/s ratio={:.3} (target >= 0.5; best of {rounds} daemon rounds: {})", best / bare_rate, fmt_rates(&rates)));

    // 5. The same messages through the Maildir intake (the embedded default), same daemon.
    let mut md_rates = Vec::new();
    for round in 0..if phase("maildir") { rounds } else { 0 } {
        let dir = work.path().join(format!("maildir-{round}"));
        let md = dir.join("Maildir");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(md.join(sub)).unwrap();
        }
        for (i, m) in msgs.iter().enumerate() {
            std::fs::write(md.join("new").join(format!("{}.M{i}P1Q1.bench", 1_700_000_000 + i)), &m.raw).unwrap();
        }
        let toml = format!(
            "[desk]\nname = \"Bench Support\"\ndomain = \"desk.example.test\"\ndata_dir = \"var\"\ntemplates_dir = \"templates\"\nsecret = \"bench-secret-0123456789abcdef\"\n\n[queues.support]\naddress = \"support@example.test\"\nfrom_name = \"Example support\"\n\n[mailboxes.support]\nkind = \"maildir\"\npath = \"{}\"\n\n[outbound]\ntransport = \"folder\"\nfolder = \"outbox\"\n\n[guard]\nauto_mail_caps = [\"1000000/1h\"]\nauto_mail_total = \"off\"\nnew_tickets_per_sender = \"1000000/1h\"\nnew_tickets_per_domain = \"1000000/1h\"\n",
            md.display()
        );
        let cfg = write_config(&dir, &toml);
        let desk = Desk::load(&cfg, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
        let drt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let t = Instant::now();
        let running = drt.block_on(postdesk::daemon::start(desk, &cfg, Arc::new(SystemClock))).unwrap();
        let store = running.pipeline.store.clone();
        let new_dir = md.join("new");
        let done = wait_until(Duration::from_secs(600), Duration::from_millis(5), || {
            (std::fs::read_dir(&new_dir).ok()?.next().is_none()).then(|| t.elapsed())
        })
        .expect("daemon emptied new/ within 10 minutes");
        let rate = n as f64 / done.as_secs_f64();
        let tickets = count_tickets(&store);
        md_rates.push(rate);
        drt.block_on(running.stop());
        report(&format!("ingest: maildir round {}: {n} messages in {:.2}s = {rate:.0} msg/s; {tickets} tickets", round + 1, done.as_secs_f64()));
    }
    if !md_rates.is_empty() {
        let md_best = md_rates.iter().copied().fold(f64::NAN, f64::max);
        report(&format!("ingest: maildir={md_best:.0} msg/s imap={best:.0} msg/s maildir/imap={:.2} (target >= 0.9)", md_best / best));
    }
    drop(imap);
    drop(s);
}

/// `UID FETCH 1:* (UID BODY.PEEK[])` over one session: (messages, body bytes, seconds).
async fn bare_fetch(ep: &postdesk::config::Endpoint) -> (usize, u64, f64) {
    let mut session = postdesk::intake::imap::connect(ep).await.expect("login");
    session.select("INBOX").await.expect("select");
    let t = Instant::now();
    let mut stream = session.uid_fetch("1:*", "(UID BODY.PEEK[])").await.expect("fetch");
    let (mut n, mut bytes) = (0, 0u64);
    while let Some(f) = stream.try_next().await.expect("fetch item") {
        if let Some(b) = f.body() {
            n += 1;
            bytes += b.len() as u64;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    drop(stream);
    let _ = session.logout().await;
    (n, bytes, secs)
}

/// Every message through `Pipeline::ingest`, one transaction each, on a fresh database in `dir`.
/// Every message through the pipeline on a fresh database in `dir`: one transaction each
/// (`Pipeline::ingest`, the Maildir and `deliver` path) when `batch` is 1, else in batches of
/// `batch` (`Pipeline::ingest_batch`, what the IMAP intake does with each FETCH).
fn pipeline_only(s: &common::MailServers, dir: &Path, msgs: &[Msg], batch: usize) -> f64 {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = write_config(dir, &desk_toml(s, &dir.join("var"), &["support"], "[outbound]\ntransport = \"folder\"\nfolder = \"outbox\"\n"));
    let desk = Desk::load(&cfg, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
    let store = Arc::new(Store::open(&desk.config.desk.database).unwrap());
    let p = Pipeline::new(store, Arc::new(SystemClock));
    let all: Vec<(Vec<u8>, postdesk::store::Cursor)> = msgs.iter().enumerate().map(|(i, m)| (m.raw.clone(), postdesk::store::Cursor { uid_validity: 1, last_uid: i as u32 + 1 })).collect();
    let t = Instant::now();
    if batch <= 1 {
        for (raw, cursor) in &all {
            p.ingest(&desk, Delivery { mailbox: "support", raw, cursor: Some(*cursor), truncated_from: None }).unwrap();
        }
    } else {
        for b in all.chunks(batch) {
            p.ingest_batch(&desk, "support", b).unwrap();
        }
    }
    msgs.len() as f64 / t.elapsed().as_secs_f64()
}

fn count_tickets(store: &Store) -> usize {
    store.list_tickets(&postdesk::store::TicketFilter::default()).map(|t| t.len()).unwrap_or(0)
}

fn fmt_rates(v: &[f64]) -> String {
    v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
}

/// The daemon logs like the binary does (INFO, one line per message), into a file.
fn log_to_file(path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new("info")).with_ansi(false).with_writer(std::sync::Mutex::new(f)).try_init();
}
