//! Acknowledgement latency with IDLE (issue 7, PRODUCT.md: p99 under 2 s): the daemon runs in
//! process (IMAP plain loopback with IDLE, outbound SMTP to the private Postfix); BENCH_LATENCY_M
//! (default 200) customer mails are submitted one at a time over SMTP to Postfix, and each is
//! timed from the start of its SMTP transaction until the acknowledgement is in the customer's
//! INBOX, seen by a persistent IMAP session polling STATUS every 2 ms (not IDLE: Dovecot delays
//! IDLE notifications by 500 ms). The moment the daemon stored the message (its mailbox cursor
//! moved) splits the figure into intake and outbound.
//!
//! `cargo bench --bench latency`

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use postdesk::clock::SystemClock;
use postdesk::desk::{Desk, KeyMode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const ACK_TIMEOUT: Duration = Duration::from_secs(15);

fn main() {
    if !bench_mode("latency") {
        return;
    }
    let m = param("BENCH_LATENCY_M", 200);
    report(&format!("latency: machine: {}", machine()));
    let s = servers(&[], Duration::from_secs(900));
    let work = work_dir("latency");
    let f = std::fs::File::create(work.path().join("daemon.log")).unwrap();
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new("info")).with_ansi(false).with_writer(std::sync::Mutex::new(f)).try_init();

    let outbound = format!("[outbound]\ntransport = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n", s.port("SMTP_PORT"));
    let cfg = write_config(work.path(), &desk_toml(&s, &work.path().join("var"), &["support"], &outbound));
    let desk = Desk::load(&cfg, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let running = rt.block_on(postdesk::daemon::start(desk, &cfg, Arc::new(SystemClock))).unwrap();
    let store = running.pipeline.store.clone();

    let mut g = Gen::with_addresses(0x5eed_0002, &["alice@example.test".to_string()], "support@example.test");
    let mut poll = RawImap::login(s.port("IMAP_PORT"), "alice@example.test", &s.password());
    let mut smtp = RawSmtp::connect(s.port("SMTP_PORT"));
    let mut acks = poll.messages("INBOX");
    let mut stored_uid = 0u32;

    let (mut total, mut intake, mut outbound_ms, mut accept) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut missed = 0;
    let mut sent_ids = Vec::new();
    let warmup = 3;
    let t_all = Instant::now();
    for i in 0..warmup + m {
        let msg = g.next(0.0);
        // Idle gap, so every mail meets a daemon that went back to IDLE.
        std::thread::sleep(Duration::from_millis(g.rng.range(50, 300) as u64));
        let t0 = Instant::now();
        smtp.send(&msg.from, "support@example.test", &msg.raw);
        let t_accept = t0.elapsed();
        let mut t_stored = None;
        let got = wait_until(ACK_TIMEOUT, Duration::from_millis(2), || {
            if t_stored.is_none()
                && let Some(c) = store.cursor("support").ok().flatten()
                && c.last_uid > stored_uid
            {
                stored_uid = c.last_uid;
                t_stored = Some(t0.elapsed());
            }
            (poll.messages("INBOX") > acks).then(|| t0.elapsed())
        });
        acks = poll.messages("INBOX");
        if i < warmup {
            continue;
        }
        sent_ids.push(msg.message_id.clone());
        match got {
            Some(t) => {
                total.push(t.as_secs_f64() * 1e3);
                accept.push(t_accept.as_secs_f64() * 1e3);
                if let Some(st) = t_stored {
                    intake.push(st.as_secs_f64() * 1e3);
                    outbound_ms.push((t - st).as_secs_f64() * 1e3);
                }
            }
            None => {
                missed += 1;
                total.push(ACK_TIMEOUT.as_secs_f64() * 1e3);
                eprintln!("mail {i}: no acknowledgement within {ACK_TIMEOUT:?}");
            }
        }
    }
    let wall = t_all.elapsed();
    rt.block_on(running.stop());

    // Every acknowledgement answers one of our mails, exactly once.
    let inbox: Vec<String> = s.fetch_all("alice").iter().map(|r| String::from_utf8_lossy(r).into_owned()).collect();
    let answered: std::collections::HashSet<String> =
        inbox.iter().filter_map(|r| common::header(r, "in-reply-to")).map(|v| v.trim().trim_matches(['<', '>']).to_string()).collect();
    let matched = sent_ids.iter().filter(|id| answered.contains(*id)).count();

    report(&format!("latency: {m} mails, one at a time, SMTP submission -> acknowledgement in the customer's INBOX ({:.0}s wall)", wall.as_secs_f64()));
    report(&format!("latency: ack {} (target p99 < 2000ms); missed={missed}", summary_ms(&mut total)));
    report(&format!("latency: intake (submission -> stored by the daemon) {}", summary_ms(&mut intake)));
    report(&format!("latency: outbound (stored -> ack in INBOX) {}", summary_ms(&mut outbound_ms)));
    report(&format!("latency: SMTP submission until 250 {}", summary_ms(&mut accept)));
    report(&format!("latency: check: {matched} of {m} mails have their acknowledgement in alice's INBOX; {} messages there in all", inbox.len()));
    drop(poll);
    drop(s);
}
