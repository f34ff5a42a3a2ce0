//! Memory of the real binary (issue 7, PRODUCT.md: steady-state RSS under 40 MB; a 25 MB
//! attachment does not multiply memory use), plus the backlog check (20,000 messages waiting
//! at start-up are ingested without starving IDLE on the other mailboxes).
//!
//! `target/release/postdesk run` with three IMAP mailboxes (support, billing, sales; plain
//! loopback, IDLE) and SMTP outbound to the private Postfix:
//! 1. steady state: one mail to each mailbox, acknowledgements received, 10 s idle: VmRSS;
//! 2. one mail with a 25 MB attachment (~34 MB encoded) over SMTP: peak (VmHWM after resetting
//!    it through /proc/PID/clear_refs, and RSS sampled every 10 ms) until it is stored;
//! 3. stop; BENCH_BACKLOG (default 20,000) messages written into support's Maildir; start again:
//!    peak RSS until the cursor reaches the last UID; meanwhile a customer mails billing@ and
//!    we time until that message is stored and until its acknowledgement is in their INBOX.
//!
//! `cargo bench --bench memory`

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_postdesk");

fn main() {
    if !bench_mode("memory") {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--stage") {
        return stage(&args[i + 1..]);
    }
    let backlog = param("BENCH_BACKLOG", 20_000);
    report(&format!("memory: machine: {}", machine()));
    let customers: Vec<String> = (0..200).map(|i| format!("c{i:03}")).collect();
    let mut users = customers.clone();
    users.push("sales".into());
    let s = servers(&users, Duration::from_secs(900));
    let work = work_dir("memory");
    let outbound = format!("[outbound]\ntransport = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n", s.port("SMTP_PORT"));
    let cfg = write_config(work.path(), &desk_toml(&s, &work.path().join("var"), &["support", "billing", "sales"], &outbound));
    let db = work.path().join("var/postdesk.db");
    let log = work.path().join("daemon.log");
    let imap_port = s.port("IMAP_PORT");
    let pw = s.password();
    let mut smtp = RawSmtp::connect(s.port("SMTP_PORT"));

    // 1. Steady state.
    let mut d = Daemon::spawn(&cfg, &log);
    let mut alice = RawImap::login(imap_port, "alice@example.test", &pw);
    let mut g = Gen::with_addresses(0x5eed_0004, &["alice@example.test".to_string()], "support@example.test");
    for mb in ["support", "billing", "sales"] {
        let before = alice.messages("INBOX");
        let m = g.next(0.0);
        smtp.send(&m.from, &format!("{mb}@example.test"), &m.raw);
        wait_until(Duration::from_secs(20), Duration::from_millis(20), || (alice.messages("INBOX") > before).then_some(())).unwrap_or_else(|| panic!("acknowledgement from {mb}"));
    }
    std::thread::sleep(Duration::from_secs(10));
    let st = d.status();
    report(&format!(
        "memory: steady state (3 IMAP mailboxes in IDLE, SMTP outbound, 3 mails handled, 10 s idle): VmRSS={:.1} MB (RssAnon={:.1} MB RssFile={:.1} MB) VmHWM={:.1} MB threads={} (target < 40 MB)",
        st.rss, st.anon, st.file, st.hwm, st.threads
    ));
    let steady = st.rss;

    // 2. A 25 MB attachment.
    let att = with_attachment("alice@example.test", "support@example.test", 25 * 1024 * 1024);
    let raw_mb = att.raw.len() as f64 / 1048576.0;
    let cursor0 = cursor(&db, "support").unwrap_or(0);
    d.reset_hwm();
    let sampler = Sampler::start(d.pid());
    let t = Instant::now();
    smtp.send(&att.from, "support@example.test", &att.raw);
    let accepted = t.elapsed();
    let stored = wait_until(Duration::from_secs(120), Duration::from_millis(10), || (cursor(&db, "support").unwrap_or(0) > cursor0).then(|| t.elapsed())).expect("attachment mail stored within 120 s");
    std::thread::sleep(Duration::from_secs(2));
    let peak_sampled = sampler.stop();
    let st = d.status();
    std::thread::sleep(Duration::from_secs(8));
    let after = d.status();
    report(&format!(
        "memory: 25 MB attachment ({raw_mb:.1} MB encoded): peak VmHWM={:.1} MB (sampled peak {:.1} MB) = steady + {:.1} MB = {:.1}x the encoded size on top of steady; SMTP accepted after {:.1}s, stored after {:.1}s; VmRSS 10 s later {:.1} MB",
        st.hwm,
        peak_sampled,
        st.hwm - steady,
        (st.hwm - steady) / raw_mb,
        accepted.as_secs_f64(),
        stored.as_secs_f64(),
        after.rss
    ));

    // Where the attachment's memory goes: each step of the daemon's path alone, in a fresh
    // process (this binary with --stage), peak over the RSS before the step.
    let eml = work.path().join("attachment.eml");
    std::fs::write(&eml, &att.raw).unwrap();
    let uid = cursor(&db, "support").unwrap_or(0);
    let fetch = run_stage(&["fetch", &imap_port.to_string(), &pw, &uid.to_string()]);
    let parse = run_stage(&["parse", eml.to_str().unwrap()]);
    let ingest = run_stage(&["ingest", eml.to_str().unwrap(), cfg.to_str().unwrap()]);
    report(&format!(
        "memory: 25 MB attachment, each step alone over the RSS before it: IMAP fetch as intake does it (async-imap's response) +{fetch:.1} MB; message::parse +{parse:.1} MB; Pipeline::ingest of the bytes in memory (parse, guard, SQLite insert of the raw bytes, commit) +{ingest:.1} MB"
    ));
    drop(att);

    // 3. Backlog at start-up.
    let t = Instant::now();
    d.stop();
    let stop_s = t.elapsed().as_secs_f64();
    let addrs: Vec<String> = customers.iter().map(|c| format!("{c}@example.test")).collect();
    let mut g = Gen::with_addresses(0x5eed_0005, &addrs, "support@example.test");
    let msgs: Vec<Msg> = (0..backlog).map(|_| g.next(0.3)).collect();
    let bytes = preload(&s, "support", &msgs, 1_710_000_000);
    drop(msgs);
    let mut sup = RawImap::login(imap_port, "support@example.test", &pw);
    let total = sup.messages("INBOX");
    let uidnext: u32 = sup.cmd("STATUS INBOX (UIDNEXT)").iter().find_map(|l| l.split("UIDNEXT ").nth(1).and_then(|r| r.trim_end().trim_end_matches(')').parse().ok())).unwrap();
    drop(sup);
    let last_uid = uidnext - 1;
    let start_cursor = cursor(&db, "support").unwrap_or(0);
    report(&format!("memory: backlog: {backlog} messages ({:.0} MB) waiting in support's INBOX ({total} in all); the daemon stopped in {stop_s:.1}s", bytes as f64 / 1e6));

    let mut bob = RawImap::login(imap_port, "bob@example.test", &pw);
    let fsync_ms = fsync_probe(work.path());
    let mut d = Daemon::spawn(&cfg, &log);
    let sampler = Sampler::start(d.pid());
    let t = Instant::now();
    // Once the backlog is well under way, a new customer mails billing@, one mail at a time until
    // the backlog is through: each timed from its SMTP submission until it is stored (billing's
    // cursor moved) and until the acknowledgement is in the customer's INBOX.
    wait_until(Duration::from_secs(120), Duration::from_millis(10), || (cursor(&db, "support").unwrap_or(0) >= start_cursor + (backlog as u32 / 10).min(2000)).then_some(()));
    let at_uid = cursor(&db, "support").unwrap_or(0);
    let mut billing_mail = Gen::with_addresses(0x5eed_0006, &["bob@example.test".to_string()], "billing@example.test");
    let (mut stored_ms, mut acked_ms, mut missed) = (Vec::new(), Vec::new(), 0);
    let mut done = None;
    while done.is_none() {
        let (billing_at, bob_at) = (cursor(&db, "billing").unwrap_or(0), bob.messages("INBOX"));
        let bm = billing_mail.next(0.0);
        let tb = Instant::now();
        smtp.send(&bm.from, "billing@example.test", &bm.raw);
        let mut b_stored = None;
        let acked = wait_until(Duration::from_secs(15), Duration::from_millis(5), || {
            if b_stored.is_none() && cursor(&db, "billing").unwrap_or(0) > billing_at {
                b_stored = Some(tb.elapsed());
            }
            (bob.messages("INBOX") > bob_at).then(|| tb.elapsed())
        });
        match (b_stored, acked) {
            (Some(s), Some(a)) => {
                stored_ms.push(s.as_secs_f64() * 1000.0);
                acked_ms.push(a.as_secs_f64() * 1000.0);
            }
            _ => missed += 1,
        }
        if cursor(&db, "support").unwrap_or(0) >= last_uid {
            done = Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = d.status();
    let anon = d.anon_mappings();
    let peak_sampled = sampler.stop();
    let queued = outbox_queued(&db);
    let done = done.expect("backlog ingested");
    report(&format!("memory: backlog: resident anonymous memory at the end, largest mappings: {anon}"));
    let n = last_uid - start_cursor;
    report(&format!(
        "memory: backlog: {n} messages ingested in {:.1}s = {:.0} msg/s by the binary; peak VmHWM={:.1} MB (sampled peak {peak_sampled:.1} MB); VmRSS at the end {:.1} MB (RssAnon {:.1} MB, RssFile {:.1} MB, {} threads); {queued} acknowledgements still queued when the cursor reached the last UID; fsync p50 {fsync_ms:.2} ms before",
        done.as_secs_f64(),
        n as f64 / done.as_secs_f64(),
        st.hwm,
        st.rss,
        st.anon,
        st.file,
        st.threads
    ));
    report(&format!(
        "memory: backlog vs a new customer: {} mails to billing@, one at a time, from support's cursor at {}/{n} until the backlog was through: stored {}; acknowledgement in the customer's INBOX {} (target p99 < 1000 ms); missed {missed}",
        acked_ms.len() + missed,
        at_uid - start_cursor,
        summary_ms(&mut stored_ms),
        summary_ms(&mut acked_ms)
    ));
    std::thread::sleep(Duration::from_secs(5));
    let idle = d.status();
    report(&format!(
        "memory: after the backlog, 5 s later: VmRSS={:.1} MB (RssAnon {:.1} MB, RssFile {:.1} MB, {} threads), outbox still queued {}",
        idle.rss,
        idle.anon,
        idle.file,
        idle.threads,
        outbox_queued(&db)
    ));
    let t = Instant::now();
    d.stop();
    report(&format!("memory: SIGTERM with the outbox busy: exited in {:.1}s", t.elapsed().as_secs_f64()));
    drop(alice);
    drop(bob);
    drop(s);
}

/// Run one step in a fresh process; its peak over the RSS before the step, in MB.
fn run_stage(args: &[&str]) -> f64 {
    let out = Command::new(std::env::current_exe().unwrap()).arg("--bench").arg("--stage").args(args).output().expect("run stage");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| l.strip_prefix("stage-peak-mb=")).and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| {
        eprintln!("stage {args:?} failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
        f64::NAN
    })
}

fn self_mb(key: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
}

/// `--stage fetch PORT PASSWORD UID | parse FILE | ingest FILE CONFIG`: do one step and print
/// `stage-peak-mb=` (VmHWM after the step minus VmRSS before it, HWM reset just before).
fn stage(args: &[String]) {
    let begin = || {
        std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
        self_mb("VmRSS:")
    };
    let peak = match args[0].as_str() {
        "fetch" => {
            use futures::TryStreamExt;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let ep = postdesk::config::Endpoint {
                host: "127.0.0.1".into(),
                port: args[1].parse().unwrap(),
                tls: postdesk::config::Tls::None,
                ca_file: None,
                username: Some("support@example.test".into()),
                password: Some(postdesk::config::Secret::new(args[2].clone())),
                connect_timeout: Duration::from_secs(10),
            };
            rt.block_on(async {
                let mut s = postdesk::intake::imap::connect(&ep).await.unwrap();
                s.select("INBOX").await.unwrap();
                let before = begin();
                // As src/intake/imap.rs `fetch` does: collect the FETCH items; the pipeline reads
                // the bodies where they are (no copy).
                let items: Vec<async_imap::types::Fetch> = s.uid_fetch(&args[3], "(UID BODY.PEEK[])").await.unwrap().try_collect().await.unwrap();
                let bodies: Vec<(u32, &[u8])> = items.iter().filter_map(|f| Some((f.uid?, f.body()?))).collect();
                assert!(bodies.first().is_some_and(|(_, b)| b.len() > 30_000_000), "fetched the attachment mail");
                let peak = self_mb("VmHWM:") - before;
                let _ = s.logout().await;
                peak
            })
        }
        "parse" => {
            let raw = std::fs::read(&args[1]).unwrap();
            let before = begin();
            let p = postdesk::message::parse(&raw).unwrap();
            std::hint::black_box(&p);
            self_mb("VmHWM:") - before
        }
        "ingest" => {
            let raw = std::fs::read(&args[1]).unwrap();
            let dir = tempfile::tempdir_in("/var/tmp").unwrap();
            let text = std::fs::read_to_string(&args[2]).unwrap();
            let cfg = dir.path().join("postdesk.toml");
            let data = text.lines().find(|l| l.starts_with("data_dir")).unwrap().to_string();
            std::fs::write(&cfg, text.replace(&data, &format!("data_dir = \"{}\"", dir.path().join("var").display()))).unwrap();
            common::copy_tree(&Path::new(&args[2]).parent().unwrap().join("templates"), &dir.path().join("templates"));
            let desk = postdesk::desk::Desk::load(&cfg, postdesk::desk::KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
            let store = Arc::new(postdesk::store::Store::open(&desk.config.desk.database).unwrap());
            let p = postdesk::pipeline::Pipeline::new(store, Arc::new(postdesk::clock::SystemClock));
            let before = begin();
            let r = p.ingest(&desk, postdesk::pipeline::Delivery { mailbox: "support", raw: &raw, cursor: None, truncated_from: None }).unwrap();
            assert!(matches!(r.outcome, postdesk::pipeline::Outcome::Created { .. }), "{:?}", r.outcome);
            self_mb("VmHWM:") - before
        }
        other => panic!("unknown stage {other}"),
    };
    println!("stage-peak-mb={peak:.1}");
}

/// The real binary, stderr appended to `log`.
struct Daemon {
    child: Child,
}

struct Status {
    rss: f64,
    hwm: f64,
    anon: f64,
    file: f64,
    threads: u32,
}

impl Daemon {
    fn spawn(cfg: &Path, log: &Path) -> Daemon {
        let before = std::fs::read_to_string(log).map(|l| l.len()).unwrap_or(0);
        let logf = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(BIN).arg("--config").arg(cfg).arg("run").stdout(Stdio::null()).stderr(logf).spawn().unwrap();
        track_child(child.id());
        let ok = wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
            let l = std::fs::read_to_string(log).ok()?;
            (l[before..].matches("IMAP connected").count() >= 3).then_some(())
        });
        assert!(ok.is_some(), "daemon did not connect its 3 mailboxes; log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        Daemon { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The largest resident anonymous mappings (smaps): heap, arenas, stacks, SQLite's caches.
    fn anon_mappings(&self) -> String {
        let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", self.pid())).unwrap_or_default();
        let mut maps: Vec<(u64, String)> = Vec::new();
        let mut name = String::new();
        for line in smaps.lines() {
            let mut w = line.split_whitespace();
            match (w.next(), w.next()) {
                (Some("Anonymous:"), Some(kb)) => maps.push((kb.parse().unwrap_or(0), name.clone())),
                (Some(range), Some(_)) if range.contains('-') && !range.ends_with(':') => {
                    let path = line.split_whitespace().nth(5).unwrap_or("");
                    let (a, b) = range.split_once('-').unwrap();
                    let size = (u64::from_str_radix(b, 16).unwrap_or(0) - u64::from_str_radix(a, 16).unwrap_or(0)) / 1024;
                    name = format!("{} {size} kB", if path.is_empty() { "[anon]" } else { path });
                }
                _ => {}
            }
        }
        maps.sort_by(|a, b| b.0.cmp(&a.0));
        maps.iter().take(8).map(|(kb, n)| format!("{:.1} MB in {n}", *kb as f64 / 1024.0)).collect::<Vec<_>>().join("; ")
    }

    fn status(&self) -> Status {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let kb = |k: &str| s.lines().find(|l| l.starts_with(k)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0;
        let threads = s.lines().find(|l| l.starts_with("Threads:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0);
        Status { rss: kb("VmRSS:"), hwm: kb("VmHWM:"), anon: kb("RssAnon:"), file: kb("RssFile:"), threads }
    }

    /// Reset VmHWM to the current RSS (Linux: `5` into clear_refs).
    fn reset_hwm(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").expect("reset VmHWM through /proc/PID/clear_refs");
    }

    fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let _ = self.child.wait();
        track_child(0);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Samples VmRSS every 10 ms; `stop` returns the largest value seen, in MB.
struct Sampler {
    stop: Arc<AtomicBool>,
    max_kb: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max_kb = Arc::new(AtomicU64::new(0));
        let (s2, m2) = (stop.clone(), max_kb.clone());
        let path = PathBuf::from(format!("/proc/{pid}/status"));
        let handle = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                if let Ok(s) = std::fs::read_to_string(&path)
                    && let Some(kb) = s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok())
                {
                    m2.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Sampler { stop, max_kb, handle: Some(handle) }
    }

    fn stop(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.max_kb.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

fn open_ro(db: &Path) -> Option<rusqlite::Connection> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    c.busy_timeout(Duration::from_secs(5)).ok()?;
    Some(c)
}

fn cursor(db: &Path, mailbox: &str) -> Option<u32> {
    open_ro(db)?.query_row("SELECT last_uid FROM mailbox_cursors WHERE mailbox = ?", [mailbox], |r| r.get(0)).ok()
}

/// Queued mail not yet marked sent in the sent log (as `Store::outbox_counts` counts it).
fn outbox_queued(db: &Path) -> i64 {
    let c = match open_ro(db) {
        Some(c) => c,
        None => return -1,
    };
    let _ = c.execute("ATTACH DATABASE ?1 AS sentlog", [format!("{}-sent", db.display())]);
    c.query_row("SELECT COUNT(*) FROM outbox WHERE state = 'queued' AND id NOT IN (SELECT outbox_id FROM sentlog.sent)", [], |r| r.get::<_, i64>(0)).unwrap_or(-1)
}
