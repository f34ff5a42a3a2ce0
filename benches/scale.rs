//! Scale (issue 7, PRODUCT.md: ingest rate and threading lookup stay flat from an empty database
//! to 1 million tickets). One database grows through BENCH_SCALE_SIZES (default
//! `0,100000,1000000` tickets of history); at each size, in process and without mail servers:
//! - ingest: BENCH_SCALE_FRESH (default 3,000) fresh messages (70 % new, 30 % replies to each
//!   other) through `Pipeline::ingest_batch` in batches of 100 (one transaction each, as the IMAP
//!   intake stores a FETCH), alternating with a small reference database: msgs/s, CPU per
//!   message, batch p50/p99;
//! - threading lookup: `thread::decide` for replies whose References name an old message, by the
//!   customer's Message-ID (table `message_ids`) and by our signed token (ticket lookup):
//!   p50/p99 of the decision alone, inside a write transaction like the pipeline's;
//! - replies to old tickets through the whole pipeline, one transaction each (`Pipeline::ingest`,
//!   the Maildir and `deliver` path): p50/p99.
//!
//! History is written straight into SQLite (schema of src/store/migrations): per ticket the
//! ticket, its requester, the customer's message, our acknowledgement (signed Message-ID, outbox
//! row sent), half with a second customer message, their `message_ids`, `deliveries` and an
//! event, spread over the past three years (the automatic-mail log keeps only the guard's longest
//! window, as the daemon prunes it). Raw message bytes are left
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
    ref_rate: f64,
    cpu: f64,
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
    let fresh = param("BENCH_SCALE_FRESH", 3000);
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
    // BENCH_SCALE_DB=FILE keeps the database (and its history) for later runs: generating a
    // million tickets takes minutes.
    let db = std::env::var("BENCH_SCALE_DB").map(std::path::PathBuf::from).unwrap_or_else(|_| work.path().join("var/postdesk.db"));
    let cfg = write_config(
        work.path(),
        &format!("[desk]\nname = \"Bench Support\"\ndomain = \"desk.example.test\"\ndata_dir = \"var\"\ndatabase = \"{}\"\ntemplates_dir = \"templates\"\nsecret = \"bench-secret-0123456789abcdef\"\n\n[queues.support]\naddress = \"support@example.test\"\nfrom_name = \"Example Support\"\n\n[mailboxes.support]\nkind = \"pipe\"\n\n[guard]\nauto_mail_caps = [\"1000000/1h\"]\nauto_mail_total = \"off\"\nnew_tickets_per_sender = \"1000000/1h\"\nnew_tickets_per_domain = \"1000000/1h\"\n", db.display()),
    );
    let desk = Desk::load(&cfg, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
    drop(Store::open(&db).unwrap()); // migrations
    restore_indexes(&db, work.path());

    // The reference: a database that stays small, measured side by side with the growing one.
    let ref_db = work.path().join("reference/postdesk.db");
    drop(Store::open(&ref_db).unwrap());
    let mut history = history_tickets(&db);
    let mut rng = Rng(0x5eed_0003);
    let mut points = Vec::new();
    for (si, &size) in sizes.iter().enumerate() {
        if size > history {
            let t = Instant::now();
            let rows = grow(&db, history, size, &desk, &mut rng);
            let secs = t.elapsed().as_secs_f64();
            report(&format!("scale: generated tickets {history}..{size} ({rows} rows) in {secs:.1}s; database {:.0} MB", file_mb(&db)));
            history = size;
        }
        let store = Arc::new(Store::open(&db).unwrap());
        let pipeline = Pipeline::new(store.clone(), Arc::new(SystemClock));
        let reference = Pipeline::new(Arc::new(Store::open(&ref_db).unwrap()), Arc::new(SystemClock));

        // Fresh messages, in batches of 100 (one transaction each, as the IMAP intake stores a
        // FETCH) alternating between this database and the small reference one: the disk is shared (fsync latency here swings between 0.3 and 4 ms from
        // minute to minute), so only figures taken side by side compare. CPU time per message
        // (this thread's, from /proc) does not depend on the disk at all.
        // Seeded by the clock: a database kept from an earlier run (BENCH_SCALE_DB) must not see
        // the same messages again.
        let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let mut g = Gen::new(run ^ (si as u64) << 56, 300, "support@example.test");
        let msgs: Vec<Msg> = (0..2 * fresh + 100).map(|_| g.next(0.3)).collect();
        for (i, m) in msgs[..100].iter().enumerate() {
            ingest(if i % 2 == 0 { &pipeline } else { &reference }, &desk, &m.raw); // warm-up
        }
        let fsync_before = fsync_probe(work.path());
        let (mut big, mut small) = (Side::default(), Side::default());
        for (i, chunk) in msgs[100..].chunks(100).enumerate() {
            if i % 2 == 0 { big.chunk(&pipeline, &desk, chunk) } else { small.chunk(&reference, &desk, chunk) }
        }
        let fsync_after = fsync_probe(work.path());
        let rate = pct(&mut big.rates, 50.0);
        let ref_rate = pct(&mut small.rates, 50.0);
        let cpu = pct(&mut big.cpu_us, 50.0);
        let ref_cpu = pct(&mut small.cpu_us, 50.0);
        let ingest_p99 = pct(&mut big.lat, 99.0);
        let ingest_line = format!(
            "ingest={rate:.0} msg/s vs {ref_rate:.0} msg/s on the small reference database side by side (x{:.2}); CPU {cpu:.0} us/msg vs {ref_cpu:.0} us/msg (x{:.2}); written {:.0} KB/msg vs {:.0} KB/msg; per batch of 100 {} (reference p50={:.1}ms p99={:.1}ms); fsync of 100 KB on this disk p50 {fsync_before:.2} ms before, {fsync_after:.2} ms after",
            rate / ref_rate,
            cpu / ref_cpu,
            pct(&mut big.written_kb, 50.0),
            pct(&mut small.written_kb, 50.0),
            summary_ms(&mut big.lat),
            pct(&mut small.lat, 50.0),
            pct(&mut small.lat, 99.0)
        );

        // Old conversations to reply to: 4,000 random tickets (with an empty history, those just stored).
        let pool = sample(&db, 4000, &mut rng);
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
                let d = postdesk::thread::decide(&o.requester, &[], &[ancestor], &format!("Re: {}", o.subject), &mut tx, &desk.signer, &desk.refs, time::OffsetDateTime::now_utc().unix_timestamp()).unwrap();
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
            "scale: tickets={size}: {ingest_line}; {lookup_line}; reply_to_old_ticket {}; database {:.0} MB",
            summary_ms(&mut reply_lat),
            file_mb(&db)
        ));
        points.push(Point { tickets: size, ingest_rate: rate, ref_rate, cpu, ingest_p99, lookup_p50, lookup_p99, cold_p99 });
        drop(pipeline);
        drop(store);
    }
    if let (Some(a), Some(b)) = (points.first(), points.last()) {
        report(&format!(
            "scale: flatness {} -> {} tickets: ingest rate relative to the reference database x{:.2} -> x{:.2}, CPU per message x{:.2}, batch p99 x{:.2}, cached lookup p50 x{:.2} p99 x{:.2}, first-touch lookup p99 {:.0}us -> {:.0}us",
            a.tickets,
            b.tickets,
            a.ingest_rate / a.ref_rate,
            b.ingest_rate / b.ref_rate,
            b.cpu / a.cpu,
            b.ingest_p99 / a.ingest_p99,
            b.lookup_p50 / a.lookup_p50,
            b.lookup_p99 / a.lookup_p99,
            a.cold_p99 * 1e3,
            b.cold_p99 * 1e3
        ));
    }
}

/// Figures of one database during the interleaved ingest.
#[derive(Default)]
struct Side {
    rates: Vec<f64>,
    cpu_us: Vec<f64>,
    lat: Vec<f64>,
    /// Bytes handed to write(2) (WAL frames, checkpoints) per message, KB.
    written_kb: Vec<f64>,
}

impl Side {
    /// One chunk as one batch (`Pipeline::ingest_batch`: one transaction, as the IMAP intake
    /// stores each FETCH).
    fn chunk(&mut self, p: &Pipeline, desk: &Desk, chunk: &[Msg]) {
        let batch: Vec<(Vec<u8>, postdesk::store::Cursor)> =
            chunk.iter().enumerate().map(|(i, m)| (m.raw.clone(), postdesk::store::Cursor { uid_validity: 1, last_uid: i as u32 + 1 })).collect();
        let (t, cpu, written) = (Instant::now(), thread_cpu_ns(), thread_written());
        let reports = p.ingest_batch(desk, "support", &batch).expect("ingest batch");
        let secs = t.elapsed().as_secs_f64();
        self.written_kb.push((thread_written() - written) as f64 / 1024.0 / chunk.len() as f64);
        self.lat.push(secs * 1e3);
        self.rates.push(chunk.len() as f64 / secs);
        self.cpu_us.push((thread_cpu_ns() - cpu) as f64 / 1e3 / chunk.len() as f64);
        assert!(reports.iter().all(|r| !matches!(r.outcome, postdesk::pipeline::Outcome::Duplicate { .. })), "fresh messages are fresh");
    }
}

/// Bytes this thread passed to write(2) so far (`wchar` of /proc/thread-self/io).
fn thread_written() -> u64 {
    std::fs::read_to_string("/proc/thread-self/io").ok().and_then(|s| s.lines().find_map(|l| l.strip_prefix("wchar:")).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

/// CPU time of this thread so far (ns), from the scheduler's statistics.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

fn ingest(p: &Pipeline, desk: &Desk, raw: &[u8]) -> postdesk::pipeline::Report {
    p.ingest(desk, Delivery { mailbox: "support", raw, cursor: None, truncated_from: None }).expect("ingest")
}

fn file_mb(db: &Path) -> f64 {
    let wal = std::fs::metadata(format!("{}-wal", db.display())).map(|m| m.len()).unwrap_or(0);
    (std::fs::metadata(db).map(|m| m.len()).unwrap_or(0) + wal) as f64 / 1e6
}

/// Tickets of generated history (their requesters are `customerN@…`).
fn history_tickets(db: &Path) -> usize {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("SELECT COUNT(*) FROM tickets WHERE requester LIKE 'customer%'", [], |r| r.get::<_, i64>(0)).unwrap() as usize
}

/// Up to `n` random tickets with the customer's first message and our acknowledgement.
fn sample(db: &Path, n: usize, rng: &mut Rng) -> Vec<Old> {
    let c = rusqlite::Connection::open(db).unwrap();
    let max: i64 = c.query_row("SELECT COALESCE(MAX(id), 0) FROM tickets", [], |r| r.get(0)).unwrap();
    let mut stmt = c
        .prepare(
            "SELECT t.requester,
                (SELECT message_id FROM articles WHERE ticket_id = t.id AND direction = 'inbound' ORDER BY id LIMIT 1),
                (SELECT message_id FROM articles WHERE ticket_id = t.id AND direction = 'outbound' ORDER BY id LIMIT 1),
                (SELECT subject FROM articles WHERE ticket_id = t.id AND direction = 'outbound' ORDER BY id LIMIT 1)
             FROM tickets t WHERE t.id = ?",
        )
        .unwrap();
    let mut out = Vec::new();
    for _ in 0..n * 2 {
        if out.len() >= n || max == 0 {
            break;
        }
        let id = rng.range(1, max as usize + 1) as i64;
        let row = stmt.query_row([id], |r| {
            Ok(match (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?) {
                (requester, Some(inbound_id), Some(outbound_id), Some(subject)) => Some(Old { requester, inbound_id, outbound_id, subject }),
                _ => None,
            })
        });
        if let Ok(Some(o)) = row {
            out.push(o);
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

/// Every index of the schema, as a freshly migrated database has it (a kept database whose
/// history load was interrupted would lack the indexes `grow` drops while loading).
fn restore_indexes(db: &Path, scratch: &Path) {
    let fresh = scratch.join("schema.db");
    drop(Store::open(&fresh).unwrap());
    let want: Vec<(String, String)> = rusqlite::Connection::open(&fresh)
        .unwrap()
        .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let conn = rusqlite::Connection::open(db).unwrap();
    for (name, sql) in want {
        let have: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = ?", [&name], |r| r.get(0)).unwrap();
        if have == 0 {
            eprintln!("scale: restoring index {name}");
            conn.execute_batch(&sql).unwrap();
        }
    }
}

/// Add history tickets `from..to` straight into SQLite. Fast path for a bulk load: the
/// secondary indexes are dropped and rebuilt afterwards (the same CREATE INDEX statements), and
/// the rows of the two tables keyed by random text (`message_ids`, `deliveries`) go through
/// staging tables and are inserted in key order at the end (random-key inserts into a tree
/// larger than the page cache write every leaf many times); the result is the daemon's schema
/// with the same rows.
fn grow(db: &Path, from: usize, to: usize, desk: &Desk, rng: &mut Rng) -> u64 {
    let t_grow = Instant::now();
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -262144; PRAGMA foreign_keys = OFF;").unwrap();
    let indexes: Vec<(String, String)> = conn
        .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    conn.execute_batch(
        "PRAGMA temp_store = FILE; BEGIN;
         CREATE TEMP TABLE stage_ids (message_id TEXT, ticket_id INTEGER, article_id INTEGER);
         CREATE TEMP TABLE stage_keys (dedupe_key TEXT, article_id INTEGER, outcome TEXT, created_at TEXT);",
    )
    .unwrap();
    for (name, _) in &indexes {
        conn.execute_batch(&format!("DROP INDEX {name};")).unwrap();
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let three_years = 3 * 365 * 86400;
    let horizon = desk.config.guard.auto_mail_horizon().as_secs() as i64;
    let mut rows = 0u64;
    {
        let mut ticket = conn.prepare("INSERT INTO tickets (subject, status, priority, queue, requester, requester_domain, created_at, updated_at, tier, first_response_at) VALUES (?, ?, 'normal', 'support', ?, ?, ?, ?, 1, ?)").unwrap();
        let mut part = conn.prepare("INSERT INTO participants (ticket_id, email, role) VALUES (?, ?, 'requester')").unwrap();
        let mut article = conn.prepare("INSERT INTO articles (ticket_id, direction, kind, from_addr, to_addrs, subject, message_id, body_text, mailbox, guard_class, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)").unwrap();
        let mut outbox = conn.prepare("INSERT INTO outbox (ticket_id, article_id, kind, message_id, envelope_from, recipients, raw, state, attempts, next_attempt_at, created_at, sent_at) VALUES (?, ?, 'auto_reply', ?, 'support@example.test', ?, ?, 'sent', 1, ?, ?, ?)").unwrap();
        let mut automail = conn.prepare("INSERT INTO auto_mail_log (recipient, ticket_id, created_at) VALUES (?, ?, ?)").unwrap();
        let mut event = conn.prepare("INSERT INTO events (ticket_id, kind, detail, created_at) VALUES (?, 'status', ?, ?)").unwrap();
        let mut mid = conn.prepare("INSERT INTO temp.stage_ids VALUES (?, ?, ?)").unwrap();
        let mut delivery = conn.prepare("INSERT INTO temp.stage_keys VALUES (?, ?, ?, ?)").unwrap();
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
            ticket.execute(params![subject, status, requester, domain, t0, t2, t1]).unwrap();
            let id = conn.last_insert_rowid();
            part.execute(params![id, requester]).unwrap();
            let inbound_id = format!("{}.{k}@{}", rng.hex(16), if domain == "gmail.com" { "mail.gmail.com" } else { domain });
            article.execute(params![id, "inbound", "customer", requester, "support@example.test", subject, inbound_id, text(rng, 400), "support", "human", t0]).unwrap();
            let a1 = conn.last_insert_rowid();
            mid.execute(params![inbound_id, id, a1]).unwrap();
            delivery.execute(params![rng.hex(64), a1, "created", t0]).unwrap();
            let outbound_id = desk.signer.message_id(id, &requester, 0);
            let tagged = desk.refs.tagged_subject(id, &subject);
            article.execute(params![id, "outbound", "auto_reply", "support@example.test", requester, tagged, outbound_id, text(rng, 300), None::<String>, None::<String>, t0]).unwrap();
            let a2 = conn.last_insert_rowid();
            outbox.execute(params![id, a2, outbound_id, requester, b"(history)".as_slice(), t0, t0, t0]).unwrap();
            mid.execute(params![outbound_id, id, a2]).unwrap();
            // The daemon prunes the automatic-mail log past the guard's longest window
            // (`Pipeline::housekeeping_tick`): only acknowledgements within it stay.
            if created > now - horizon {
                automail.execute(params![requester, id, t0]).unwrap();
            }
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
            // Commit often: a page cache full of dirty pages makes SQLite spill, and each spill
            // sorts the whole dirty list.
            if (k + 1).is_multiple_of(2_000) {
                conn.execute_batch("COMMIT; BEGIN;").unwrap();
            }
        }
        eprintln!("scale: rows written after {:.1}s", t_grow.elapsed().as_secs_f64());
    }
    conn.execute_batch(
        "INSERT OR IGNORE INTO message_ids SELECT * FROM temp.stage_ids ORDER BY message_id;
         INSERT OR IGNORE INTO deliveries SELECT * FROM temp.stage_keys ORDER BY dedupe_key;
         DROP TABLE temp.stage_ids; DROP TABLE temp.stage_keys;",
    )
    .unwrap();
    eprintln!("scale: message_ids and deliveries after {:.1}s", t_grow.elapsed().as_secs_f64());
    for (_, sql) in &indexes {
        conn.execute_batch(sql).unwrap();
    }
    eprintln!("scale: indexes rebuilt after {:.1}s", t_grow.elapsed().as_secs_f64());
    conn.execute_batch("COMMIT; PRAGMA journal_mode = WAL;").unwrap();
    rows
}
