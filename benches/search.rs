//! Search (issue 16, docs/KNOWLEDGE.md): a desk of BENCH_SEARCH_TICKETS (default 100,000)
//! tickets written straight into SQLite (a customer message and an agent reply each, through the
//! real schema, so the `article_fts` trigger indexes them as ingest does) and
//! BENCH_SEARCH_ARTICLES (default 500) published knowledge articles. Words follow a Zipf law over
//! a vocabulary of 20,000 (help-desk words first, then a long tail), as real text does. Then:
//! - search latency: BENCH_SEARCH_QUERIES (default 2,000) queries of 1–3 words drawn from the
//!   same law, through `Store::search_tickets` (top 10 tickets) and `Store::search_kb`: p50/p99;
//!   the same for the most common words alone (the worst case: most tickets match);
//! - suggestion lookup for a new ticket (`Tx::suggest_kb`, 16 words): p50/p99;
//! - index size: the FTS5 tables' pages (`dbstat`) against the whole database;
//! - ingest cost of the index: BENCH_SEARCH_INGEST (default 2,000) generated 5–30 KB messages
//!   through `Pipeline::ingest_many` in batches of 100, alternating rounds with the trigger in
//!   place and dropped (same database), CPU per message.
//!
//! `cargo bench --bench search`

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use postdesk::desk::{Desk, KeyMode};
use postdesk::pipeline::Pipeline;
use postdesk::search::Query;
use postdesk::store::Store;
use rusqlite::params;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// The commonest words of any text (they take the top ranks of the law; queries skip them).
const COMMON: &[&str] = &[
    "the", "to", "and", "a", "is", "i", "it", "of", "in", "on", "my", "we", "not", "for", "this", "with", "please", "can",
    "you", "that", "be", "have", "but", "since", "again", "when", "thanks", "hello", "our", "at",
];

const DOMAIN_WORDS: &[&str] = &[
    "printer", "toner", "error", "password", "reset", "login", "vpn", "email", "outlook", "laptop", "screen", "network", "wifi",
    "server", "slow", "crash", "update", "install", "license", "account", "locked", "invoice", "refund", "order", "delivery",
    "phone", "keyboard", "mouse", "monitor", "driver", "backup", "restore", "file", "folder", "share", "access", "denied",
    "certificate", "expired", "browser", "chrome", "firefox", "teams", "meeting", "calendar", "sync", "mobile", "app", "battery",
    "charger", "scanner", "paper", "jam", "faded", "cartridge", "floor", "office", "badge", "door", "camera", "microphone",
    "headset", "audio", "video", "disk", "full", "memory", "cpu", "fan", "noise", "overheating", "blue", "shutdown", "boot",
    "bios", "windows", "mac", "linux", "citrix", "remote", "desktop", "connection", "timeout", "dns", "proxy", "firewall",
    "port", "database", "report", "export", "import", "excel", "word", "pdf", "signature", "spam", "phishing", "virus", "malware",
];

fn vocabulary() -> Vec<String> {
    let mut v: Vec<String> = COMMON.iter().chain(DOMAIN_WORDS).map(|w| w.to_string()).collect();
    let mut i = 0u64;
    while v.len() < 20_000 {
        // Pronounceable tail words: consonant-vowel pairs from the index.
        let (c, vw) = (b"bcdfghklmnprstvz", b"aeiou");
        let mut n = i;
        let mut w = String::new();
        for _ in 0..3 {
            w.push(c[(n % 16) as usize] as char);
            n /= 16;
            w.push(vw[(n % 5) as usize] as char);
            n /= 5;
        }
        w.push_str(&(i / 6400).to_string().chars().map(|d| (b'a' + d as u8 - b'0') as char).collect::<String>());
        v.push(w);
        i += 1;
    }
    v
}

/// A query word: drawn from the same law, the common words skipped (people search for nouns).
fn query_text(rng: &mut Rng, z: &Zipf, vocab: &[String], words: usize) -> String {
    let mut out = Vec::new();
    while out.len() < words {
        let k = z.draw(rng);
        if k >= COMMON.len() {
            out.push(vocab[k].as_str());
        }
    }
    out.join(" ")
}

/// Zipf(1) over `n` ranks by inverse CDF on precomputed cumulative weights.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Zipf {
        let mut acc = 0.0;
        let cdf = (1..=n)
            .map(|k| {
                acc += 1.0 / k as f64;
                acc
            })
            .collect::<Vec<_>>();
        let total = acc;
        Zipf { cdf: cdf.into_iter().map(|c| c / total).collect() }
    }
    fn draw(&self, rng: &mut Rng) -> usize {
        let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

fn text(rng: &mut Rng, z: &Zipf, vocab: &[String], words: usize) -> String {
    (0..words).map(|_| vocab[z.draw(rng)].as_str()).collect::<Vec<_>>().join(" ")
}

fn main() {
    if !bench_mode("search") {
        return;
    }
    let tickets = param("BENCH_SEARCH_TICKETS", 100_000);
    let articles = param("BENCH_SEARCH_ARTICLES", 500);
    let queries = param("BENCH_SEARCH_QUERIES", 2000);
    let ingest = param("BENCH_SEARCH_INGEST", 2000);
    report(&format!("search: machine: {}", machine()));
    let budget = Duration::from_secs(900);
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        eprintln!("search benchmark exceeded {budget:?}; exiting");
        std::process::exit(3);
    });
    let work = work_dir("search");
    let db = work.path().join("var/postdesk.db");
    let cfg = write_config(
        work.path(),
        "[desk]\nname = \"Bench Support\"\ndomain = \"desk.example.test\"\ndata_dir = \"var\"\ntemplates_dir = \"templates\"\nsecret = \"bench-secret-0123456789abcdef\"\n\n[queues.support]\naddress = \"support@example.test\"\nfrom_name = \"Example Support\"\n\n[mailboxes.support]\nkind = \"pipe\"\n\n[guard]\nauto_mail_caps = [\"1000000/1h\"]\nauto_mail_total = \"off\"\nnew_tickets_per_sender = \"1000000/1h\"\nnew_tickets_per_domain = \"1000000/1h\"\n",
    );
    let desk = Desk::load(&cfg, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
    drop(Store::open(&db).unwrap()); // migrations

    let vocab = vocabulary();
    let z = Zipf::new(vocab.len());
    let mut rng = Rng(0x5eed_0016);
    let t = Instant::now();
    {
        let mut conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;").unwrap();
        let tx = conn.transaction().unwrap();
        {
            let mut ticket = tx.prepare("INSERT INTO tickets (subject, status, priority, queue, requester, requester_domain, created_at, updated_at, tier) VALUES (?, 'resolved', 'normal', 'support', ?, 'example.org', '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z', 1) RETURNING id").unwrap();
            let mut article = tx.prepare("INSERT INTO articles (ticket_id, direction, kind, from_addr, to_addrs, subject, message_id, body_text, created_at) VALUES (?, ?, ?, ?, 'support@example.test', ?, ?, ?, '2025-01-01T00:00:00Z')").unwrap();
            for i in 0..tickets {
                let n = rng.range(3, 8);
                let subject = text(&mut rng, &z, &vocab, n);
                let from = format!("c{i}@example.org");
                let id: i64 = ticket.query_row(params![subject, from], |r| r.get(0)).unwrap();
                let n = rng.range(40, 121);
                let body = text(&mut rng, &z, &vocab, n);
                article.execute(params![id, "inbound", "customer", from, subject, format!("c{i}@example.org"), body]).unwrap();
                let n = rng.range(20, 61);
                let body = text(&mut rng, &z, &vocab, n);
                article.execute(params![id, "outbound", "agent_reply", "agent@example.test", format!("Re: {subject}"), format!("a{i}@desk.example.test"), body]).unwrap();
            }
            let mut kb = tx.prepare("INSERT INTO kb_articles (title, body, state, author, created_at, updated_at) VALUES (?, ?, 'published', 'agent@example.test', '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z')").unwrap();
            for _ in 0..articles {
                let n = rng.range(4, 9);
                let title = text(&mut rng, &z, &vocab, n);
                let n = rng.range(60, 200);
                let body = text(&mut rng, &z, &vocab, n);
                kb.execute(params![title, body]).unwrap();
            }
        }
        tx.commit().unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    report(&format!("search: seeded {tickets} tickets ({} articles indexed) and {articles} published articles in {secs:.1}s ({:.0} tickets/s with the index trigger)", tickets * 2, tickets as f64 / secs));

    let store = Arc::new(Store::open(&db).unwrap());
    let index = store.search_index_bytes().unwrap().unwrap_or(0);
    let total = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    report(&format!("search: index size {:.1} MB of a {:.1} MB database ({:.0} bytes per ticket)", index as f64 / 1e6, total as f64 / 1e6, index as f64 / tickets.max(1) as f64));

    // Typical queries: 1–3 words from the same law as the text.
    let mut qrng = Rng(0x5eed_0017);
    let mut lat = Vec::new();
    let mut kb_lat = Vec::new();
    let mut hits = 0usize;
    for _ in 0..queries {
        let n = qrng.range(1, 4);
        let q = Query::parse(&query_text(&mut qrng, &z, &vocab, n)).unwrap();
        let t = Instant::now();
        hits += store.search_tickets(&q, 10).unwrap().len();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        store.search_kb(&q, 10).unwrap();
        kb_lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    report(&format!("search: tickets, 1-3 word queries: {} ({:.1} hits/query)", summary_ms(&mut lat), hits as f64 / queries as f64));
    report(&format!("search: published articles, same queries: {}", summary_ms(&mut kb_lat)));
    let mut worst = Vec::new();
    for w in ["printer", "toner", "error", "printer error"] {
        let q = Query::parse(w).unwrap();
        for _ in 0..20 {
            let t = Instant::now();
            store.search_tickets(&q, 10).unwrap();
            worst.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let share = store.search_tickets(&Query::parse("printer").unwrap(), usize::MAX).unwrap().len();
    report(&format!("search: tickets, the most common words alone (printer, toner, error, \"printer error\"; printer is in {share} tickets): {}", summary_ms(&mut worst)));
    let mut sugg = Vec::new();
    for _ in 0..200 {
        let terms = postdesk::search::suggestion_terms(&text(&mut qrng, &z, &vocab, 5), &text(&mut qrng, &z, &vocab, 60));
        let tx = store.begin().unwrap();
        let t = Instant::now();
        tx.suggest_kb(&terms, 2, 3).unwrap();
        sugg.push(t.elapsed().as_secs_f64() * 1e3);
    }
    report(&format!("search: suggestion lookup for a new ticket ({articles} published articles, 16 words): {}", summary_ms(&mut sugg)));

    // Ingest with and without the index trigger, alternating rounds on the same database.
    let pipeline = Pipeline::new(store.clone(), Arc::new(postdesk::clock::SystemClock));
    let mut g = Gen::new(0x5eed_0018, 5000, "support@example.test");
    let trigger = "CREATE TRIGGER IF NOT EXISTS article_fts_insert AFTER INSERT ON articles WHEN new.kind IN ('customer', 'agent_reply', 'note') BEGIN INSERT INTO article_fts (rowid, subject, body_text) VALUES (new.id, new.subject, substr(new.body_text, 1, 65536)); END;";
    let (mut with, mut without) = ((0.0, 0usize), (0.0, 0usize));
    let rounds = 4;
    for round in 0..rounds * 2 {
        let indexed = round % 2 == 0;
        {
            let c = rusqlite::Connection::open(&db).unwrap();
            c.execute_batch(if indexed { trigger } else { "DROP TRIGGER IF EXISTS article_fts_insert" }).unwrap();
        }
        let msgs: Vec<Vec<u8>> = (0..ingest / rounds / 2).map(|_| g.next(0.3).raw).collect();
        let cpu = cpu_seconds();
        for chunk in msgs.chunks(100) {
            pipeline.ingest_many(&desk, "support", chunk).unwrap();
        }
        let spent = cpu_seconds() - cpu;
        let slot = if indexed { &mut with } else { &mut without };
        slot.0 += spent;
        slot.1 += msgs.len();
    }
    rusqlite::Connection::open(&db).unwrap().execute_batch(trigger).unwrap();
    let (a, b) = (with.0 / with.1.max(1) as f64 * 1e3, without.0 / without.1.max(1) as f64 * 1e3);
    report(&format!("search: ingest CPU per message (5-30 KB mail, batches of 100): {a:.2} ms with the index, {b:.2} ms without ({:+.1} %), {} messages each", (a - b) / b * 100.0, with.1));
}

/// CPU seconds (user + system) of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
