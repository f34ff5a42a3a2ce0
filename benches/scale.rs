//! Scale (issue 7, PRODUCT.md: ingest rate and threading lookup stay flat from an empty database
//! to 1 million tickets). One database grows through BENCH_SCALE_SIZES (default
//! `0,100000,1000000` tickets of history); at each size, in process and without mail servers:
//! - ingest: BENCH_SCALE_FRESH (default 1,000) fresh messages (70 % new, 30 % replies to each
//!   other) through `Pipeline::ingest`, one transaction each as the daemon does: msgs/s and
//!   per-message p50/p99;
//! - threading lookup: `thread::decide` for replies whose References name an old message, by the
//!   customer's Message-ID (table `message_ids`) and by our signed token (ticket lookup):
//!   p50/p99 of the decision alone, inside a write transaction like the pipeline's;
//! - replies to old tickets through the whole pipeline: p50/p99.
//! History is written straight into SQLite (schema of src/store/migrations): per ticket the
//! ticket, its requester, the customer's message, our acknowledgement (signed Message-ID, outbox
//! row sent), half with a second customer message, their `message_ids`, `deliveries`, an event
//! and the automatic-mail log, spread over the past three years. Raw message bytes are left
//! out of the history (they would make the file ~30 GB; `raw_messages` is keyed by article id
//! and only appended to).
//!
//! `cargo bench --bench scale`

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use postdesk::clock::SystemClock;
use postdesk::desk::{Desk, KeyMode};
use postdesk::pipeline::{Delivery, Pipeline};
use postdesk::store::Store;
use rusqlite::params;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// An old conversation to reply to.
#[derive(Clone)]
struct Old {
    requester: String,
    inbound_id: String,
    outbound_id: String,
    subject: String,
}

struct Point {
    tickets: usize,
    ingest_rate: f64,
    ingest_p99: f64,
    lookup_p50: f64,
    lookup_p99: f64,
    cold_p99: f64,
}

fn main() {
    if !bench_mode("scale") {
        return;
    }
    let sizes: Vec<usize> = std::env::var("BENCH_SCALE_SIZES")
        .unwrap_or_else(|_| "0,100000,1000000".into())
        .split(',')
        .map(|s| s.trim().replace('_', "").parse().expect("BENCH_SCALE_SIZES: numbers"))
        .collect();
    let fresh = param("BENCH_SCALE_FRESH", 1000);
    let lookups = param("BENCH_SCALE_LOOKUPS", 2000);
    let old_replies = param("BENCH_SCALE_REPLIES", 300);
    report(&format!("scale: machine: {}", machine()));
    let budget = Duration::from_secs(900);
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        eprintln!("scale benchmark exceeded {budget:?}; exiting");
        std::process::exit(3);
    });

    let work = work_dir("scale");
    let cfg = write_config(
        work.path(),
        "[desk]\nname = \"Bench Support\"\ndomain = \"desk.example.test\"\ndata_dir = \"var\"\ntemplates_dir = \"templates\"\nsecret = \"bench-secret-0123456789abcdef\"\n\n[queues.support]\naddress = \"support@example.test\"\nfrom_name = \"Example Support\"\n\n[mailboxes.support]\nkind = \"pipe\"\n\n[guard]\nauto_mail_caps = [\"1000000/1h\"]\nnew_tickets_per_sender = \"1000000/1h\"\nnew_tickets_per_domain = \"1000000/1h\"\n",
    );
    let desk = Desk::load(&cfg, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
    let db = desk.config.desk.database.clone();
    drop(Store::open(&db).unwrap()); // migrations

    let mut history = 0usize;
    let mut sample: Vec<Old> = Vec::new();
    let mut rng = Rng(0x5eed_0003);
    let mut points = Vec::new();
    for (si, &size) in sizes.iter().enumerate() {
        if size > history {
            let t = Instant::now();
            let rows = grow(&db, history, size, &desk, &mut sample, &mut rng);
            let secs = t.elapsed().as_secs_f64();
            report(&format!("scale: generated tickets {history}..{size} ({rows} rows) in {secs:.1}s; database {:.0} MB", file_mb(&db)));
            history = size;
        }
        let store = Arc::new(Store::open(&db).unwrap());
        let pipeline = Pipeline::new(store.clone(), Arc::new(SystemClock));

        // Fresh messages through the pipeline.
        let mut g = Gen::new(0x5eed_1000 + si as u64, 300, "support@example.test");
        let msgs: Vec<Msg> = (0..fresh + 50).map(|_| g.next(0.3)).collect();
        for m in &msgs[..50] {
            ingest(&pipeline, &desk, &m.raw); // warm-up
        }
        if std::env::var("BENCH_DEBUG").is_ok() {
            let c = rusqlite::Connection::open(&db).unwrap();
            let jm: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
            eprintln!("journal_mode={jm}");
            for m in &msgs[50..55] {
                let r = ingest(&pipeline, &desk, &m.raw);
                eprintln!("{:?} {:?}", r.outcome, r.actions);
                assert!(!matches!(r.outcome, postdesk::pipeline::Outcome::Duplicate { .. }), "fresh messages are fresh");
            }
        }
        // The machine is shared: the rate is the median over chunks of 100 messages, so a burst
        // of someone else's disk traffic moves one chunk, not the figure.
        let mut lat = Vec::with_capacity(fresh);
        let mut chunks = Vec::new();
        let t = Instant::now();
        for chunk in msgs[50..].chunks(100) {
            let tc = Instant::now();
            for m in chunk {
                let t1 = Instant::now();
                ingest(&pipeline, &desk, &m.raw);
                lat.push(t1.elapsed().as_secs_f64() * 1e3);
            }
            chunks.push(chunk.len() as f64 / tc.elapsed().as_secs_f64());
        }
        let overall = fresh as f64 / t.elapsed().as_secs_f64();
        let rate = pct(&mut chunks, 50.0);
        let ingest_p99 = pct(&mut lat, 99.0);
        let ingest_line = summary_ms(&mut lat);

        // Old conversations to reply to: the sampled history, or (empty history) what was just stored.
        let pool: Vec<Old> = if sample.is_empty() { recent(&store, &desk) } else { sample.clone() };
        // Two passes over the same replies: the first touches each old ticket's pages for the
        // first time since the store was opened (as a reply to an old ticket does), the second
        // finds them in SQLite's page cache.
        let picks: Vec<(usize, bool)> = (0..lookups).map(|i| (rng.range(0, pool.len()), i % 2 == 1)).collect();
        let mut passes = Vec::new();
        for _ in 0..2 {
            let (mut by_id, mut by_token) = (Vec::with_capacity(lookups), Vec::with_capacity(lookups));
            for &(k, via_token) in &picks {
                let o = &pool[k];
                let ancestor = if via_token { o.outbound_id.as_str() } else { o.inbound_id.as_str() };
                let mut tx = store.begin().unwrap();
                let t1 = Instant::now();
                let d = postdesk::thread::decide(&o.requester, &[], &[ancestor], &format!("Re: {}", o.subject), &mut tx, &desk.signer, &desk.refs).unwrap();
                let ms = t1.elapsed().as_secs_f64() * 1e3;
                drop(tx);
                assert!(d.ticket().is_some(), "reply to an old message threads: {d:?} for {ancestor}");
                if via_token { by_token.push(ms) } else { by_id.push(ms) }
            }
            passes.push((by_id, by_token));
        }
        let (mut cold_id, mut cold_token) = passes.remove(0);
        let (mut by_id, mut by_token) = passes.remove(0);
        let mut cold: Vec<f64> = cold_id.iter().chain(cold_token.iter()).copied().collect();
        let mut warm: Vec<f64> = by_id.iter().chain(by_token.iter()).copied().collect();
        let (lookup_p50, lookup_p99, cold_p99) = (pct(&mut warm, 50.0), pct(&mut warm, 99.0), pct(&mut cold, 99.0));
        let lookup_line = format!(
            "thread_lookup first touch: by_message_id {} by_token {}; again (cached): by_message_id {} by_token {}",
            summary_us(&mut cold_id),
            summary_us(&mut cold_token),
            summary_us(&mut by_id),
            summary_us(&mut by_token)
        );

        // Replies to old tickets through the whole pipeline.
        let mut reply_lat = Vec::with_capacity(old_replies);
        for i in 0..old_replies {
            let o = &pool[rng.range(0, pool.len())];
            let raw = format!(
                "From: Customer <{}>\r\nTo: support@example.test\r\nSubject: Re: {}\r\nMessage-ID: <r{si}.{i}.{}@bench.example>\r\nIn-Reply-To: <{}>\r\nReferences: <{}> <{}>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nAny news on this? It happened again today.\r\n",
                o.requester,
                o.subject,
                rng.hex(8),
                o.outbound_id,
                o.inbound_id,
                o.outbound_id
            );
            let t1 = Instant::now();
            let r = ingest(&pipeline, &desk, raw.as_bytes());
            reply_lat.push(t1.elapsed().as_secs_f64() * 1e3);
            assert!(matches!(r.outcome, postdesk::pipeline::Outcome::FollowUp { .. }), "reply to an old ticket is a follow-up: {:?}", r.outcome);
        }
        report(&format!(
            "scale: tickets={size}: ingest={rate:.0} msg/s (median of chunks; overall {overall:.0} msg/s; per message {ingest_line}); {lookup_line}; reply_to_old_ticket {}; database {:.0} MB",
            summary_ms(&mut reply_lat),
            file_mb(&db)
        ));
        points.push(Point { tickets: size, ingest_rate: rate, ingest_p99, lookup_p50, lookup_p99, cold_p99 });
        drop(pipeline);
        drop(store);
    }
    if let (Some(a), Some(b)) = (points.first(), points.last()) {
        report(&format!(
            "scale: flatness {} -> {} tickets: ingest rate x{:.2}, ingest p99 x{:.2}, cached lookup p50 x{:.2} p99 x{:.2}, first-touch lookup p99 {:.0}us -> {:.0}us",
            a.tickets,
            b.tickets,
            b.ingest_rate / a.ingest_rate,
            b.ingest_p99 / a.ingest_p99,
            b.lookup_p50 / a.lookup_p50,
            b.lookup_p99 / a.lookup_p99,
            a.cold_p99 * 1e3,
            b.cold_p99 * 1e3
        ));
    }
}

fn ingest(p: &Pipeline, desk: &Desk, raw: &[u8]) -> postdesk::pipeline::Report {
    p.ingest(desk, Delivery { mailbox: "support", raw, cursor: None, truncated_from: None }).expect("ingest")
}

fn file_mb(db: &Path) -> f64 {
    let wal = std::fs::metadata(format!("{}-wal", db.display())).map(|m| m.len()).unwrap_or(0);
    (std::fs::metadata(db).map(|m| m.len()).unwrap_or(0) + wal) as f64 / 1e6
}

/// Conversations stored so far (the empty-history case): customer message and our ack.
fn recent(store: &Store, desk: &Desk) -> Vec<Old> {
    let mut out = Vec::new();
    for t in store.list_tickets(&postdesk::store::TicketFilter::default()).unwrap() {
        let d = store.ticket_detail(t.id).unwrap().unwrap();
        let inbound = d.articles.iter().find(|a| a.direction == postdesk::ticket::Direction::Inbound);
        let ack = d.articles.iter().find(|a| a.direction == postdesk::ticket::Direction::Outbound);
        if let (Some(i), Some(a)) = (inbound, ack) {
            out.push(Old { requester: t.requester.clone(), inbound_id: i.message_id.clone(), outbound_id: a.message_id.clone(), subject: desk.refs.tagged_subject(t.id, &t.subject) });
        }
    }
    out
}

const WORDS: &[&str] = &["printer", "invoice", "order", "account", "cannot", "login", "error", "please", "help", "refund", "shipping", "broken", "update", "the", "is", "not", "working", "since", "monday"];
const DOMAINS: &[&str] = &["gmail.com", "outlook.com", "yahoo.com", "web.de", "gmx.net", "acme-corp.example", "initech.example", "globex.example", "umbrella.example", "hooli.example", "contoso.example", "fabrikam.example", "example.org", "example.net", "mail.example"];

fn text(rng: &mut Rng, n: usize) -> String {
    let mut s = String::with_capacity(n + 16);
    while s.len() < n {
        s.push_str(WORDS[rng.range(0, WORDS.len())]);
        s.push(' ');
    }
    s
}

/// Add history tickets `from..to` straight into SQLite; keeps a sample of ~4,000 of them.
fn grow(db: &Path, from: usize, to: usize, desk: &Desk, sample: &mut Vec<Old>, rng: &mut Rng) -> u64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -1048576; PRAGMA foreign_keys = OFF; BEGIN;").unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let three_years = 3 * 365 * 86400;
    let stride = ((to - from) / 4000).max(1);
    let mut rows = 0u64;
    {
        let mut ticket = conn.prepare("INSERT INTO tickets (subject, status, priority, queue, requester, requester_domain, created_at, updated_at, tier, first_response_at) VALUES (?, ?, 'normal', 'support', ?, ?, ?, ?, 1, ?)").unwrap();
        let mut part = conn.prepare("INSERT INTO participants (ticket_id, email, role) VALUES (?, ?, 'requester')").unwrap();
        let mut article = conn.prepare("INSERT INTO articles (ticket_id, direction, kind, from_addr, to_addrs, subject, message_id, body_text, mailbox, guard_class, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)").unwrap();
        let mut mid = conn.prepare("INSERT OR IGNORE INTO message_ids (message_id, ticket_id, article_id) VALUES (?, ?, ?)").unwrap();
        let mut delivery = conn.prepare("INSERT OR IGNORE INTO deliveries (dedupe_key, article_id, outcome, created_at) VALUES (?, ?, ?, ?)").unwrap();
        let mut outbox = conn.prepare("INSERT INTO outbox (ticket_id, article_id, kind, message_id, envelope_from, recipients, raw, state, attempts, next_attempt_at, created_at, sent_at) VALUES (?, ?, 'auto_reply', ?, 'support@example.test', ?, ?, 'sent', 1, ?, ?, ?)").unwrap();
        let mut automail = conn.prepare("INSERT INTO auto_mail_log (recipient, ticket_id, created_at) VALUES (?, ?, ?)").unwrap();
        let mut event = conn.prepare("INSERT INTO events (ticket_id, kind, detail, created_at) VALUES (?, 'status', ?, ?)").unwrap();
        let ts = |secs: i64| postdesk::clock::rfc3339(time::OffsetDateTime::from_unix_timestamp(secs).unwrap());
        for k in from..to {
            let created = now - 86400 - rng.range(0, three_years) as i64;
            let (c, d) = (rng.range(0, to / 3 + 1), rng.range(0, DOMAINS.len()));
            let domain = DOMAINS[d];
            let requester = format!("customer{c}@{domain}");
            let subject = format!("{} {}", text(rng, 30).trim(), k);
            let status = match rng.range(0, 20) {
                0 => "open",
                1 => "pending",
                2 | 3 => "resolved",
                _ => "closed",
            };
            let (t0, t1, t2) = (ts(created), ts(created + 600), ts(created + 86400));
            let id: i64 = {
                ticket.execute(params![subject, status, requester, domain, t0, t2, t1]).unwrap();
                conn.last_insert_rowid()
            };
            part.execute(params![id, requester]).unwrap();
            let inbound_id = format!("{}.{k}@{}", rng.hex(16), if domain == "gmail.com" { "mail.gmail.com" } else { domain });
            article.execute(params![id, "inbound", "customer", requester, "support@example.test", subject, inbound_id, text(rng, 400), "support", "human", t0]).unwrap();
            let a1 = conn.last_insert_rowid();
            mid.execute(params![inbound_id, id, a1]).unwrap();
            delivery.execute(params![rng.hex(64), a1, "created", t0]).unwrap();
            let outbound_id = desk.signer.message_id(id, &requester);
            let tagged = desk.refs.tagged_subject(id, &subject);
            article.execute(params![id, "outbound", "auto_reply", "support@example.test", requester, tagged, outbound_id, text(rng, 300), None::<String>, None::<String>, t0]).unwrap();
            let a2 = conn.last_insert_rowid();
            mid.execute(params![outbound_id, id, a2]).unwrap();
            outbox.execute(params![id, a2, outbound_id, requester, b"(history)".as_slice(), t0, t0, t0]).unwrap();
            automail.execute(params![requester, id, t0]).unwrap();
            event.execute(params![id, format!("new -> {status}"), t2]).unwrap();
            rows += 10;
            if rng.chance(0.5) {
                let reply_id = format!("{}.{k}.r@{domain}", rng.hex(16));
                article.execute(params![id, "inbound", "customer", requester, "support@example.test", format!("Re: {tagged}"), reply_id, text(rng, 300), "support", "human", t1]).unwrap();
                let a3 = conn.last_insert_rowid();
                mid.execute(params![reply_id, id, a3]).unwrap();
                delivery.execute(params![rng.hex(64), a3, "follow_up", t1]).unwrap();
                rows += 3;
            }
            if (k - from) % stride == 0 {
                sample.push(Old { requester, inbound_id, outbound_id, subject: tagged });
            }
            if (k + 1) % 100_000 == 0 {
                conn.execute_batch("COMMIT; BEGIN;").unwrap();
                eprintln!("scale: {} tickets written", k + 1);
            }
        }
    }
    conn.execute_batch("COMMIT; PRAGMA journal_mode = WAL;").unwrap();
    rows
}
