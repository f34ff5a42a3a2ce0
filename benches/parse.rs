//! Parse + guard cost on pathological input (issue 12 item 6): `cargo bench --bench parse`.
//! The shapes of `tests/common/hostile.rs` (100k References, header floods, MIME nesting and
//! part floods, nested messages, long lines, deep quoting…), each about `POSTDESK_BENCH_MB`
//! (default 2) MB, through what the pipeline runs before its write transaction: parse, guard,
//! ancestors. Best of three runs each (the machine is shared); the last line is the worst case
//! in seconds per MB, the figure to quote. `POSTDESK_BENCH_FILE=PATH` times one file instead.

#[path = "../tests/common/hostile.rs"]
mod hostile;

use postdesk::guard::{self, Identity};
use postdesk::message;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn main() {
    // The daemon parses on tokio's blocking pool, whose threads have 2 MiB stacks: so does this.
    let run = std::thread::Builder::new().stack_size(2 << 20).spawn(measure).expect("thread");
    run.join().expect("bench thread");
}

fn measure() {
    let mb: f64 = std::env::var("POSTDESK_BENCH_MB").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let me = Identity { domain: "desk.example.test".into(), own_addresses: vec!["support@example.test".into()] };
    let mut worst = (0.0f64, "");
    println!("{:<28} {:>8} {:>10} {:>10}", "input", "MB", "s", "s/MB");
    // `POSTDESK_BENCH_FILE=path` times one message instead (a slow fuzz input, say).
    let inputs = match std::env::var("POSTDESK_BENCH_FILE") {
        Ok(path) => vec![("file", std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))],
        Err(_) => hostile::all((mb * 1e6) as usize),
    };
    for (name, raw) in inputs {
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let t0 = Instant::now();
            if let Ok(p) = message::parse(black_box(&raw)) {
                black_box(guard::classify(&p, &raw, &me));
                black_box(p.ancestors().len());
            }
            best = best.min(t0.elapsed());
        }
        let size = raw.len() as f64 / 1e6;
        let per_mb = best.as_secs_f64() / size;
        println!("{name:<28} {size:>8.2} {:>10.3} {per_mb:>10.3}", best.as_secs_f64());
        if per_mb > worst.0 {
            worst = (per_mb, name);
        }
    }
    println!("worst case: {:.3} s per MB ({})", worst.0, worst.1);
}
