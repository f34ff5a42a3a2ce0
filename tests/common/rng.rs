//! A tiny seeded generator (xorshift64*) for the tests that make random choices, and the seed
//! they print so a failing run can be repeated (`POSTDESK_SEED=…`).

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    /// An index below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `POSTDESK_SEED` or a fresh seed, printed with the test's name.
pub fn seed(test: &str) -> u64 {
    let s = std::env::var("POSTDESK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    println!("{test}: seed {s} (rerun with POSTDESK_SEED={s})");
    s
}
