//! A time-bounded fuzz run on the stable toolchain (issue 12): corpus messages from
//! `tests/fixtures/` mutated at random, random MIME structures and the pathological shapes of
//! `common/hostile.rs`, each through parse → guard → thread → a dry-run ingest (the path
//! `rules test` uses, rolled back). No panic, no hang, bounded output per input.
//!
//! `POSTDESK_FUZZ_SECS` (default 60) sets the length of the run, `POSTDESK_FUZZ_SEED` replays a
//! run; both are printed, with inputs run, inputs/s and the slowest input. A failing input is
//! written to `target/tmp/fuzz-failure-SEED-N.eml`, the slowest to `target/tmp/fuzz-slowest.eml`.

mod common;
#[path = "common/hostile.rs"]
mod hostile;

use postdesk::clock::ManualClock;
use postdesk::desk::{Desk, KeyMode};
use postdesk::message::{self, MAX_HEADERS, MAX_IDS, MAX_PARTS};
use postdesk::pipeline::{Delivery, Outcome, Pipeline};
use postdesk::store::Store;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use time::macros::datetime;

/// Far above any input's cost even on a loaded debug build (the slowest seen, a 230 KB text
/// bounce, takes 3-9 s there): only a hang or superlinear work trips it.
const PER_INPUT_LIMIT: Duration = Duration::from_secs(60);
/// Inputs are kept under this size, so every bound below is a multiple of it; the desk's
/// `max_message_size` is below it, so the oversize path runs too.
const MAX_INPUT: usize = 256 * 1024;

const DESK: &str = r#"
[desk]
domain = "desk.example.test"
data_dir = "var"
templates_dir = "templates"
secret = "fuzz-test-secret-0123456789abcdef"

[queues.support]
address = "support@example.test"
from_name = "Example Support"

[mailboxes.support]
kind = "pipe"

[agents.alice]
name = "Alice Agent"
email = "alice@agents.example.test"
queues = ["support"]

[limits]
max_message_size = "200KB"
"#;

fn corpus() -> Vec<Vec<u8>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if !p.extension().is_some_and(|x| ["md", "toml", "tsv", "upstream", "gitattributes", "expected"].iter().any(|s| x == *s)) {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"), &mut files);
    files.sort();
    let msgs: Vec<Vec<u8>> = files.iter().filter_map(|p| std::fs::read(p).ok()).filter(|r| r.len() <= MAX_INPUT).collect();
    assert!(msgs.len() >= 50, "the fixtures hold at least 50 messages (found {})", msgs.len());
    msgs
}

/// One random change to `m`: the edits that break parsers (cut, repeat, splice, stray CR/LF,
/// NUL and 8-bit bytes, header and boundary lines, deep quoting).
fn mutate(rng: &mut StdRng, m: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    const LINES: &[&str] = &[
        "\r\n",
        "\n\n",
        "\r",
        "--b\r\n",
        "--b--\r\n",
        "Content-Type: multipart/mixed; boundary=\"b\"\r\n",
        "Content-Type: message/rfc822\r\n\r\n",
        "Content-Transfer-Encoding: base64\r\n",
        "Content-Transfer-Encoding: quoted-printable\r\n",
        "Content-Disposition: attachment; filename*0*=utf-8''%E2%82; filename*1*=%AC.txt\r\n",
        "References: <a@b> <a@b> <pd.1.x.y@desk.example.test>\r\n",
        "In-Reply-To: <pd.1.aaaa.bbbb@desk.example.test>\r\n",
        "From: \"q\\\"uoted\"@example.org\r\n",
        "Cc: Group: a@b.c, (comment) <d@e.f>;, \"x y\"@z.org\r\n",
        "Subject: =?utf-8?B?w6k=?= [PD-1] =?iso-2022-jp?B?GyRCJEgbKEI=?=\r\n",
        "Auto-Submitted: auto-replied\r\n",
        "Return-Path: <>\r\n",
        "Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n",
        "Content-Type: application/ms-tnef; name=winmail.dat\r\n",
        "=?\r\n",
        "> > > >\r\n",
        "/status closed\r\n",
        "---- Original email message ----\r\n",
    ];
    let len = m.len();
    let at = if len == 0 { 0 } else { rng.gen_range(0..=len) };
    match rng.gen_range(0..9) {
        0 if len > 0 => m.truncate(at),
        1 if len > 0 => {
            let i = rng.gen_range(0..len);
            m[i] = rng.r#gen();
        }
        2 => {
            let n = rng.gen_range(1..16);
            let bytes: Vec<u8> = (0..n).map(|_| *[0u8, b'\r', b'\n', b'=', b'"', b'<', b'>', b':', 0xff, 0xc3].get(rng.gen_range(0..10)).unwrap()).collect();
            m.splice(at..at, bytes);
        }
        3 if len > 0 => {
            let end = (at + rng.gen_range(1..4096)).min(len);
            m.drain(at..end);
        }
        4 if len > 0 => {
            // Repeat a slice many times (the shape of the quadratic References).
            let start = at.saturating_sub(rng.gen_range(1..200));
            let piece = m[start..at].to_vec();
            let times = rng.gen_range(1..2000).min(MAX_INPUT / piece.len().max(1));
            for _ in 0..times {
                m.splice(at..at, piece.iter().copied());
            }
        }
        5 => {
            let other = &corpus[rng.gen_range(0..corpus.len())];
            let from = rng.gen_range(0..=other.len());
            m.splice(at..at, other[from..].iter().copied());
        }
        _ => {
            let line = LINES[rng.gen_range(0..LINES.len())];
            m.splice(at..at, line.bytes());
        }
    }
    m.truncate(MAX_INPUT);
}

/// A random MIME tree: multiparts, nested messages, encodings and headers, depth-first.
fn structure(rng: &mut StdRng, depth: usize, out: &mut String) {
    let kinds = ["text/plain; charset=utf-8", "text/html; charset=iso-8859-1", "application/pdf; name=\"a.pdf\"", "multipart/mixed", "multipart/alternative", "message/rfc822", "application/ms-tnef"];
    let kind = kinds[rng.gen_range(0..kinds.len())];
    let boundary = format!("b{}", rng.gen_range(0..4)); // reused on purpose
    if kind.starts_with("multipart/") && depth < 60 {
        out.push_str(&format!("Content-Type: {kind}; boundary=\"{boundary}\"\r\n\r\n"));
        for _ in 0..rng.gen_range(0..6) {
            out.push_str(&format!("--{boundary}\r\n"));
            structure(rng, depth + 1, out);
        }
        if rng.gen_bool(0.8) {
            out.push_str(&format!("--{boundary}--\r\n"));
        }
    } else if kind == "message/rfc822" && depth < 60 {
        out.push_str(&format!("Content-Type: {kind}\r\n\r\nFrom: inner{depth}@example.org\r\nSubject: level {depth}\r\nMessage-ID: <n{depth}@x>\r\n"));
        structure(rng, depth + 1, out);
    } else {
        let cte = ["7bit", "base64", "quoted-printable", "8bit"][rng.gen_range(0..4)];
        out.push_str(&format!("Content-Type: {kind}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"));
        let body = ["w6nDqcOp\r\n", "caf=E9 =\r\n soft break=3D\r\n", "<p>Hi<blockquote>quoted</blockquote>\r\n", "> old\r\n-- \r\nsig\r\n", "\u{fffd}\u{200b}\r\n"];
        for _ in 0..rng.gen_range(1..8) {
            out.push_str(body[rng.gen_range(0..body.len())]);
        }
    }
}

fn random_message(rng: &mut StdRng) -> Vec<u8> {
    let mut m = format!("From: Fuzz <fuzz{}@example.org>\r\nTo: support@example.test\r\nSubject: fuzz\r\nMessage-ID: <f{}@example.org>\r\n", rng.gen_range(0..50), rng.r#gen::<u32>());
    structure(rng, 0, &mut m);
    m.truncate(MAX_INPUT);
    m.into_bytes()
}

/// Peak resident memory of this process (Linux), for the printed figures.
fn peak_rss_mb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// Parse, guard and a dry-run ingest of one input; the properties that must hold for any input.
fn check_one(desk: &Desk, pipeline: &Pipeline, raw: &[u8]) -> Result<(), String> {
    if let Ok(p) = message::parse(raw) {
        let v = postdesk::guard::classify(&p, raw, &desk.identity);
        let _ = (v.class, p.ancestors());
        if p.references.len() > MAX_IDS || p.in_reply_to.len() > MAX_IDS || p.headers.len() > MAX_HEADERS || p.files.len() > MAX_PARTS * 64 {
            return Err(format!("unbounded parse: {} refs, {} headers, {} files", p.references.len(), p.headers.len(), p.files.len()));
        }
        // Text is decoded from the input: it can grow by charset decoding, not without limit.
        let text = p.body_text.len() + p.body_html.as_ref().map_or(0, String::len) + p.visible_text.len();
        if text > 16 * raw.len() + 65536 {
            return Err(format!("{text} bytes of text from {} bytes of input", raw.len()));
        }
    }
    let r = pipeline.dry_run(desk, Delivery { mailbox: "support", raw, cursor: None, truncated_from: None }).map_err(|e| format!("dry run: {e}"))?;
    match r.outcome {
        Outcome::Quarantined { reason } if reason.starts_with("internal error") => Err(reason),
        _ => Ok(()),
    }
}

#[test]
fn fuzz_parse_guard_thread_dry_run() {
    let secs: u64 = std::env::var("POSTDESK_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let seed: u64 = std::env::var("POSTDESK_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("fuzz: seed {seed} (replay with POSTDESK_FUZZ_SEED={seed}), {secs} s");
    let mut rng = StdRng::seed_from_u64(seed);
    let corpus = corpus();

    let dir = tempfile::tempdir().unwrap();
    let desk = Arc::new(Desk::load(&common::write_config(dir.path(), DESK), KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}")));
    let store = Arc::new(Store::open(&desk.config.desk.database).unwrap());
    let pipeline = Pipeline::new(store, Arc::new(ManualClock::new(datetime!(2026-11-30 09:00 UTC))));
    // A few real tickets, so mutated replies can thread onto them.
    for raw in corpus.iter().take(10) {
        pipeline.ingest(&desk, Delivery { mailbox: "support", raw, cursor: None, truncated_from: None }).unwrap();
    }

    let hostile: Vec<Vec<u8>> = hostile::all(128 * 1024).into_iter().map(|(_, r)| r).collect();
    let (start, mut n) = (Instant::now(), 0u64);
    let (mut slowest, mut slowest_len, mut bytes) = (Duration::ZERO, 0usize, 0usize);
    while start.elapsed() < Duration::from_secs(secs) {
        let raw = match rng.gen_range(0..10) {
            0 => random_message(&mut rng),
            1 => {
                let mut m = hostile[rng.gen_range(0..hostile.len())].clone();
                mutate(&mut rng, &mut m, &corpus);
                m
            }
            _ => {
                let mut m = corpus[rng.gen_range(0..corpus.len())].clone();
                for _ in 0..rng.gen_range(1..6) {
                    mutate(&mut rng, &mut m, &corpus);
                }
                m
            }
        };
        // Each input on its own thread: a panic or a hang is caught and reported with the input.
        let (tx, rx) = mpsc::channel();
        let (d, p, input) = (desk.clone(), pipeline.clone(), raw.clone());
        let t0 = Instant::now();
        let worker = std::thread::spawn(move || {
            let _ = tx.send(check_one(&d, &p, &input));
        });
        let failure = match rx.recv_timeout(PER_INPUT_LIMIT) {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(mpsc::RecvTimeoutError::Timeout) => Some(format!("no result within {PER_INPUT_LIMIT:?}")),
            Err(mpsc::RecvTimeoutError::Disconnected) => Some("panicked (see above)".to_string()),
        };
        if let Some(why) = failure {
            let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-failure-{seed}-{n}.eml"));
            let _ = std::fs::write(&path, &raw);
            panic!("fuzz input {n} (seed {seed}, {} bytes, saved to {}): {why}", raw.len(), path.display());
        }
        let _ = worker.join();
        let took = t0.elapsed();
        if took > slowest {
            (slowest, slowest_len) = (took, raw.len());
            // Kept for `POSTDESK_BENCH_FILE=… cargo bench --bench parse`.
            let _ = std::fs::write(Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-slowest.eml"), &raw);
        }
        bytes += raw.len();
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "fuzz: seed {seed}: {n} inputs ({:.1} MB) in {secs:.1} s, {:.0} inputs/s; slowest input {:.3} s ({} bytes); peak RSS {} MB",
        bytes as f64 / 1e6,
        n as f64 / secs,
        slowest.as_secs_f64(),
        slowest_len,
        peak_rss_mb().map_or("?".into(), |m| m.to_string())
    );
    assert!(n > 0, "at least one input ran");
    if let Some(mb) = peak_rss_mb() {
        assert!(mb < 2048, "peak memory {mb} MB for inputs of at most {} KB", MAX_INPUT / 1024);
    }
}
