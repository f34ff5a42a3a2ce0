//! Shared pieces of the benchmarks (`cargo bench --bench NAME`, see docs/BENCHMARKS.md):
//! a seeded generator of realistic customer mail, fast Maildir preloading, a desk config for
//! the private test servers, raw SMTP/IMAP clients for timing, percentiles and a watchdog that
//! stops the servers when a benchmark overruns its time budget.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// xorshift64*: seeded, so every run generates the same mail.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo) as u64) as usize
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    pub fn hex(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n);
        while s.len() < n {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(n);
        s
    }
}

/// Benchmarks run only under `cargo bench` (which passes `--bench`); built any other way (a
/// test run of every target) they say so and do nothing.
pub fn bench_mode(name: &str) -> bool {
    if std::env::args().any(|a| a == "--bench") {
        return true;
    }
    println!("{name}: skipped; run it with `cargo bench --bench {name}` or scripts/bench.sh");
    false
}

/// The benchmark's working folder (databases, configs, daemon logs) under /var/tmp (a real disk,
/// not tmpfs: fsync must cost what it costs). Removed at the end unless BENCH_KEEP is set.
pub fn work_dir(name: &str) -> tempfile::TempDir {
    let mut d = tempfile::Builder::new().prefix(&format!("pd-bench-{name}-")).tempdir_in("/var/tmp").unwrap();
    if std::env::var_os("BENCH_KEEP").is_some() {
        d.disable_cleanup(true);
        eprintln!("{name}: keeping {}", d.path().display());
    }
    d
}

/// A benchmark parameter from the environment (`BENCH_...`), else the default.
pub fn param(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// Realistic customer mail
// ---------------------------------------------------------------------------------------------

const WORDS: &[&str] = &[
    "the", "printer", "invoice", "order", "account", "password", "reset", "cannot", "login", "error", "message", "please", "help",
    "since", "yesterday", "update", "screen", "shows", "again", "after", "restart", "shipping", "delivery", "refund", "customer",
    "number", "attached", "screenshot", "thanks", "regards", "we", "our", "team", "office", "still", "not", "working", "server",
    "connection", "timeout", "report", "monthly", "billing", "charged", "twice", "card", "subscription", "cancel", "upgrade",
    "license", "key", "install", "version", "windows", "mac", "phone", "app", "crashes", "when", "opening", "settings", "export",
    "data", "file", "missing", "page", "link", "broken", "email", "notification", "received", "urgent", "today", "meeting",
    "colleague", "manager", "could", "you", "check", "what", "happened", "is", "there", "any", "news", "on", "this", "issue",
    "it", "was", "fine", "last", "week", "and", "now", "nothing", "works", "for", "us", "a", "of", "to", "in",
];

const DOMAINS: &[&str] = &[
    "gmail.com", "outlook.com", "yahoo.com", "web.de", "gmx.net", "acme-corp.example", "initech.example", "globex.example",
    "umbrella.example", "hooli.example", "contoso.example", "fabrikam.example", "example.org", "example.net", "mail.example",
];

const FIRST: &[&str] = &["anna", "ben", "chloe", "david", "emma", "felix", "greta", "hugo", "ines", "jonas", "karla", "leo", "mia", "noah", "olivia", "paul"];
const LAST: &[&str] = &["schmidt", "miller", "garcia", "rossi", "dubois", "novak", "kowalski", "jensen", "silva", "tanaka", "smith", "meyer"];

/// One generated message.
pub struct Msg {
    pub message_id: String,
    pub from: String,
    pub raw: Vec<u8>,
    /// The Message-ID this one replies to.
    pub parent: Option<String>,
}

/// Writes mail the way the clients in tests/common/clients.rs do, with the envelope headers
/// (Received, DKIM, Authentication-Results) real mail carries: 5–30 KB, a mix of plain text,
/// multipart/alternative (text + HTML) and multipart/mixed with a small attachment; new
/// conversations and replies (In-Reply-To/References, quoted text) to earlier ones.
pub struct Gen {
    pub rng: Rng,
    customers: Vec<(String, String)>,
    /// (message id, customer index, subject) of earlier new conversations.
    opened: Vec<(String, usize, String)>,
    pub to: String,
    pub size: (usize, usize),
    counter: u64,
}

impl Gen {
    /// `customers` distinct senders; `domain_of(i)` overrides the generated domain.
    pub fn new(seed: u64, customers: usize, to: &str) -> Gen {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let customers = (0..customers)
            .map(|i| {
                let f = FIRST[rng.range(0, FIRST.len())];
                let l = LAST[rng.range(0, LAST.len())];
                let d = DOMAINS[rng.range(0, DOMAINS.len())];
                (format!("{} {}", cap(f), cap(l)), format!("{f}.{l}{i}@{d}"))
            })
            .collect();
        Gen { rng, customers, opened: Vec::new(), to: to.into(), size: (5_000, 30_000), counter: 0 }
    }

    /// Customers with fixed addresses (real mailboxes on the test servers).
    pub fn with_addresses(seed: u64, addresses: &[String], to: &str) -> Gen {
        let mut g = Gen::new(seed, 0, to);
        g.customers = addresses.iter().map(|a| (cap(a.split('@').next().unwrap_or("x")), a.clone())).collect();
        g
    }

    pub fn customers(&self) -> usize {
        self.customers.len()
    }

    fn words(&mut self, bytes: usize) -> String {
        let mut s = String::with_capacity(bytes + 80);
        let mut line = 0;
        let mut sentence_start = true;
        while s.len() < bytes {
            let w = WORDS[self.rng.range(0, WORDS.len())];
            if sentence_start {
                s.push_str(&cap(w));
                sentence_start = false;
            } else {
                s.push_str(w);
            }
            line += w.len() + 1;
            if self.rng.chance(0.08) {
                s.push('.');
                sentence_start = true;
            }
            if self.rng.chance(0.01) {
                s.push_str("\r\n\r\n");
                line = 0;
            } else if line > 68 {
                s.push_str("\r\n");
                line = 0;
            } else {
                s.push(' ');
            }
        }
        s.push_str(".\r\n");
        s
    }

    fn base64_lines(&mut self, bytes: usize) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::with_capacity(bytes * 4 / 3 + bytes / 38 + 4);
        let mut col = 0;
        for _ in 0..bytes.div_ceil(3) {
            let n = self.rng.next();
            for k in 0..4 {
                s.push(T[((n >> (6 * k)) & 63) as usize] as char);
            }
            col += 4;
            if col >= 76 {
                s.push_str("\r\n");
                col = 0;
            }
        }
        s.push_str("\r\n");
        s
    }

    /// The next message: a reply to an earlier conversation with probability `reply`.
    pub fn next(&mut self, reply: f64) -> Msg {
        self.counter += 1;
        let target = self.rng.range(self.size.0, self.size.1 + 1);
        let parent = if !self.opened.is_empty() && self.rng.chance(reply) {
            let k = self.rng.range(self.opened.len().saturating_sub(2000), self.opened.len());
            Some(self.opened[k].clone())
        } else {
            None
        };
        let cust = match &parent {
            Some((_, c, _)) => *c,
            None => self.rng.range(0, self.customers.len()),
        };
        let (name, from) = self.customers[cust].clone();
        let domain = from.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
        let id = format!("{}.{}.{}@{}", self.rng.hex(12), self.counter, self.rng.hex(6), if domain.ends_with("gmail.com") { "mail.gmail.com" } else { &domain });
        let subject = match &parent {
            Some((_, _, s)) => format!("Re: {s}"),
            None => {
                let mut s = self.words(40).replace("\r\n", " ");
                s.truncate(s.trim_end_matches(['.', ' ']).len().min(60));
                format!("{} #{}", s.trim(), self.rng.range(1000, 99999))
            }
        };
        let to = self.to.clone();
        let mut h = String::with_capacity(2048);
        let relay = self.rng.range(1, 250);
        h.push_str(&format!(
            "Return-Path: <{from}>\r\nReceived: from mx{relay}.{domain} (mx{relay}.{domain} [192.0.2.{relay}])\r\n\tby mail.example.test (Postfix) with ESMTPS id 4Z{}\r\n\tfor <{to}>; Mon, 30 Nov 2026 10:{:02}:{:02} +0000 (UTC)\r\n",
            self.rng.hex(10).to_uppercase(),
            self.rng.range(0, 60),
            self.rng.range(0, 60)
        ));
        h.push_str(&format!(
            "Received: by mx{relay}.{domain} with SMTP id {};\r\n\tMon, 30 Nov 2026 02:{:02}:{:02} -0800 (PST)\r\n",
            self.rng.hex(16),
            self.rng.range(0, 60),
            self.rng.range(0, 60)
        ));
        h.push_str(&format!(
            "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=20230601; t=1796000000;\r\n\tx=1796604800; h=to:subject:message-id:date:from:in-reply-to:references:mime-version:from:to:cc:subject;\r\n\tbh={}=;\r\n\tb={}\r\n\t {}\r\n\t {}==\r\n",
            self.rng.hex(43),
            self.rng.hex(70),
            self.rng.hex(70),
            self.rng.hex(60)
        ));
        h.push_str(&format!("Authentication-Results: mail.example.test;\r\n\tdkim=pass header.d={domain};\r\n\tspf=pass smtp.mailfrom={domain};\r\n\tdmarc=pass header.from={domain}\r\n"));
        h.push_str(&format!("Message-ID: <{id}>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\nFrom: {name} <{from}>\r\nTo: Example Support <{to}>\r\nSubject: {subject}\r\n"));
        if let Some((pid, _, _)) = &parent {
            h.push_str(&format!("In-Reply-To: <{pid}>\r\nReferences: <{pid}>\r\n"));
        }
        let budget = target.saturating_sub(h.len() + 200).max(300);
        let quote = if parent.is_some() { format!("\r\n\r\nOn Mon, 30 Nov 2026 at 09:00, Example Support wrote:\r\n> {}", self.words(300).replace("\r\n", "\r\n> ")) } else { String::new() };
        let kind = self.rng.range(0, 100);
        let body = if kind < 40 {
            // Thunderbird / mutt: text only.
            h.push_str("User-Agent: Mozilla Thunderbird\r\nContent-Type: text/plain; charset=UTF-8; format=flowed\r\nContent-Transfer-Encoding: 8bit\r\n\r\n");
            format!("{}{quote}\r\n", self.words(budget))
        } else if kind < 75 {
            // Gmail: multipart/alternative, the HTML repeating the text.
            let b = format!("000000000000{}", self.rng.hex(12));
            h.push_str(&format!("Content-Type: multipart/alternative; boundary=\"{b}\"\r\n\r\n"));
            let text = self.words(budget / 2);
            let html = format!("<div dir=\"ltr\">{}</div>", text.replace("\r\n\r\n", "</div><div><br></div><div>").replace("\r\n", " "));
            format!(
                "--{b}\r\nContent-Type: text/plain; charset=\"UTF-8\"\r\n\r\n{text}{quote}\r\n\r\n--{b}\r\nContent-Type: text/html; charset=\"UTF-8\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{}\r\n\r\n--{b}--\r\n",
                wrap_qp(&html)
            )
        } else {
            // Outlook / Thunderbird with a screenshot or PDF.
            let b = format!("------------{}", self.rng.hex(24));
            h.push_str(&format!("Content-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\n"));
            let text_len = (budget / 5).max(300);
            let text = self.words(text_len);
            let att = budget.saturating_sub(text_len) * 3 / 4;
            let (fname, ctype) = if self.rng.chance(0.5) { ("screenshot.png", "image/png") } else { ("invoice.pdf", "application/pdf") };
            format!(
                "This is a multi-part message in MIME format.\r\n--{b}\r\nContent-Type: text/plain; charset=UTF-8; format=flowed\r\nContent-Transfer-Encoding: 7bit\r\n\r\n{text}{quote}\r\n\r\n--{b}\r\nContent-Type: {ctype}; name=\"{fname}\"\r\nContent-Disposition: attachment; filename=\"{fname}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--{b}--\r\n",
                self.base64_lines(att.max(100))
            )
        };
        h.push_str(&body);
        if parent.is_none() {
            self.opened.push((id.clone(), cust, subject));
        }
        Msg { message_id: id, from, raw: h.into_bytes(), parent: parent.map(|p| p.0) }
    }
}

fn cap(w: &str) -> String {
    let mut c = w.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

/// Soft line breaks every 76 columns (the HTML has no `=` to escape).
fn wrap_qp(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 70 * 3);
    let mut col = 0;
    for ch in s.chars() {
        if col >= 72 {
            out.push_str("=\r\n");
            col = 0;
        }
        out.push(ch);
        col += 1;
    }
    out
}

/// A message with one binary attachment of `size` bytes (base64), like tests/common/clients.rs.
pub fn with_attachment(from: &str, to: &str, size: usize) -> Msg {
    let m = crate::common::clients::with_attachment(from, to, "Scan of the contract", "contract-scan.tiff", size);
    Msg { message_id: m.message_id, from: from.into(), raw: m.raw, parent: None }
}

// ---------------------------------------------------------------------------------------------
// Mail servers
// ---------------------------------------------------------------------------------------------

/// Write messages straight into `user`'s Maildir `cur/` (unseen), in order: Dovecot sorts new
/// files by the time stamp in their names, so UIDs follow the order given. Returns the bytes.
pub fn preload(s: &crate::common::MailServers, user: &str, msgs: &[Msg], first_stamp: u64) -> u64 {
    let dir = Path::new(&s.env["MAILDIR_ROOT"]).join(user).join("Maildir");
    let mut bytes = 0;
    for (i, m) in msgs.iter().enumerate() {
        let name = format!("{}.M{i}P{}Q1.bench,S={}", first_stamp + i as u64, std::process::id(), m.raw.len());
        let tmp = dir.join("tmp").join(&name);
        std::fs::write(&tmp, &m.raw).expect("write Maildir file");
        std::os::unix::fs::chown(&tmp, Some(5000), Some(5000)).expect("chown Maildir file");
        std::fs::rename(&tmp, dir.join("cur").join(format!("{name}:2,"))).expect("rename into cur/");
        bytes += m.raw.len() as u64;
    }
    bytes
}

/// Start the private Dovecot + Postfix with extra users, and a watchdog that stops them (and
/// the process) when `budget` is exceeded.
pub fn servers(extra_users: &[String], budget: Duration) -> crate::common::MailServers {
    let t = Instant::now();
    let s = crate::common::MailServers::start_with_users(extra_users);
    eprintln!("mail servers up in {:.2}s at {}", t.elapsed().as_secs_f64(), s.dir.path().display());
    watchdog(s.dir.path().to_path_buf(), budget);
    s
}

static CHILD: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Remember a child process for the watchdog to kill.
pub fn track_child(pid: u32) {
    CHILD.store(pid, std::sync::atomic::Ordering::SeqCst);
}

fn watchdog(dir: PathBuf, budget: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        eprintln!("benchmark exceeded its time budget of {budget:?}: stopping the mail servers and exiting");
        let pid = CHILD.load(std::sync::atomic::Ordering::SeqCst);
        if pid != 0 {
            let _ = std::process::Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        }
        let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/harness/mailservers.sh");
        let _ = std::process::Command::new("bash").arg(harness).arg("stop").arg(&dir).output();
        let _ = std::fs::remove_dir_all(&dir);
        std::process::exit(3);
    });
}

/// A desk on the private servers: `mailboxes` are IMAP users (queue of the same name), plain
/// loopback IMAP with IDLE; `outbound` is a TOML fragment. Flood control and the caps on
/// automatic mail are raised, since every generated customer writes many times a minute.
pub fn desk_toml(s: &crate::common::MailServers, data_dir: &Path, mailboxes: &[&str], outbound: &str) -> String {
    let mut t = format!(
        "[desk]\nname = \"Bench Support\"\ndomain = \"desk.example.test\"\ndata_dir = \"{}\"\ntemplates_dir = \"templates\"\nsecret = \"bench-secret-0123456789abcdef\"\n\n",
        data_dir.display()
    );
    for m in mailboxes {
        t.push_str(&format!(
            "[queues.{m}]\naddress = \"{m}@example.test\"\nfrom_name = \"Example {m}\"\n\n[mailboxes.{m}]\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"{m}@example.test\"\npassword = \"{}\"\n\n",
            s.port("IMAP_PORT"),
            s.password()
        ));
    }
    t.push_str(outbound);
    t.push_str("\n[guard]\nauto_mail_caps = [\"1000000/1h\"]\nauto_mail_total = \"off\"\nnew_tickets_per_sender = \"1000000/1h\"\nnew_tickets_per_domain = \"1000000/1h\"\n");
    t
}

pub fn endpoint(s: &crate::common::MailServers, user: &str) -> postdesk::config::Endpoint {
    postdesk::config::Endpoint {
        host: "127.0.0.1".into(),
        port: s.port("IMAP_PORT"),
        tls: postdesk::config::Tls::None,
        ca_file: None,
        username: Some(format!("{user}@example.test")),
        password: Some(postdesk::config::Secret::new(s.password())),
        connect_timeout: Duration::from_secs(10),
    }
}

/// A bare, blocking IMAP session for timing (plain loopback, TCP_NODELAY).
pub struct RawImap {
    r: BufReader<TcpStream>,
    w: TcpStream,
    tag: u32,
}

impl RawImap {
    pub fn login(port: u16, user: &str, password: &str) -> RawImap {
        let w = TcpStream::connect(("127.0.0.1", port)).expect("IMAP connect");
        w.set_nodelay(true).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = RawImap { r: BufReader::new(w.try_clone().unwrap()), w, tag: 0 };
        let mut greeting = String::new();
        c.r.read_line(&mut greeting).unwrap();
        assert!(greeting.starts_with("* OK"), "IMAP greeting: {greeting}");
        c.cmd(&format!("LOGIN {user} {password}"));
        c
    }

    /// Run a command; the untagged lines before the tagged OK.
    pub fn cmd(&mut self, command: &str) -> Vec<String> {
        self.tag += 1;
        let tag = format!("b{}", self.tag);
        self.w.write_all(format!("{tag} {command}\r\n").as_bytes()).unwrap();
        let mut out = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.r.read_line(&mut line).expect("IMAP read");
            assert!(n > 0, "IMAP connection closed during {command}");
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                assert!(rest.starts_with("OK"), "IMAP {command}: {line}");
                return out;
            }
            out.push(line);
        }
    }

    /// `MESSAGES` of a folder (STATUS: no IDLE delay, sees LMTP deliveries at once).
    pub fn messages(&mut self, folder: &str) -> u32 {
        let lines = self.cmd(&format!("STATUS {folder} (MESSAGES)"));
        lines
            .iter()
            .find_map(|l| l.split("MESSAGES ").nth(1).and_then(|r| r.trim_end().trim_end_matches(')').parse().ok()))
            .expect("STATUS MESSAGES")
    }
}

/// A bare, blocking SMTP client on one connection with TCP_NODELAY (lettre's sockets wait for
/// delayed ACKs, which would add ~40 ms to every submission).
pub struct RawSmtp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl RawSmtp {
    pub fn connect(port: u16) -> RawSmtp {
        let w = TcpStream::connect(("127.0.0.1", port)).expect("SMTP connect");
        w.set_nodelay(true).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = RawSmtp { r: BufReader::new(w.try_clone().unwrap()), w };
        c.expect("220");
        c.w.write_all(b"EHLO bench.example.test\r\n").unwrap();
        c.expect("250");
        c
    }

    fn expect(&mut self, code: &str) {
        loop {
            let mut line = String::new();
            self.r.read_line(&mut line).expect("SMTP read");
            assert!(line.starts_with(code), "SMTP: expected {code}, got {line:?}");
            if line.as_bytes().get(3) != Some(&b'-') {
                return;
            }
        }
    }

    /// One message; returns when the server answered 250 to the final dot.
    pub fn send(&mut self, from: &str, to: &str, raw: &[u8]) {
        self.w.write_all(format!("MAIL FROM:<{from}> BODY=8BITMIME\r\n").as_bytes()).unwrap();
        self.expect("250");
        self.w.write_all(format!("RCPT TO:<{to}>\r\n").as_bytes()).unwrap();
        self.expect("250");
        self.w.write_all(b"DATA\r\n").unwrap();
        self.expect("354");
        let mut data = Vec::with_capacity(raw.len() + 64);
        for line in raw.split_inclusive(|&b| b == b'\n') {
            if line.first() == Some(&b'.') {
                data.push(b'.');
            }
            data.extend_from_slice(line);
        }
        if !data.ends_with(b"\r\n") {
            data.extend_from_slice(b"\r\n");
        }
        data.extend_from_slice(b".\r\n");
        self.w.write_all(&data).unwrap();
        self.expect("250");
    }
}

/// Wait until `f` returns Some or `timeout` passes, checking every `every`.
pub fn wait_until<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(every);
    }
}

// ---------------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------------

/// p-th percentile (nearest rank) of `v` (sorted in place).
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

/// `p50=… p90=… p99=… max=…` in milliseconds.
pub fn summary_ms(v: &mut [f64]) -> String {
    format!("p50={:.1}ms p90={:.1}ms p99={:.1}ms max={:.1}ms n={}", pct(v, 50.0), pct(v, 90.0), pct(v, 99.0), pct(v, 100.0), v.len())
}

/// `p50=… p99=…` in microseconds.
pub fn summary_us(v: &mut [f64]) -> String {
    format!("p50={:.0}us p99={:.0}us max={:.0}us n={}", pct(v, 50.0) * 1e3, pct(v, 99.0) * 1e3, pct(v, 100.0) * 1e3, v.len())
}

/// A result line: printed to stdout (the script collects stdout).
pub fn report(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

/// Median time to fsync 100 KB written into a file in `dir` (what one commit costs the disk).
pub fn fsync_probe(dir: &Path) -> f64 {
    use std::io::{Seek, Write};
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![b'x'; 100_000];
    let mut v = Vec::new();
    for i in 0..40u64 {
        f.seek(std::io::SeekFrom::Start((i % 8) * 100_000)).unwrap();
        f.write_all(&block).unwrap();
        let t = Instant::now();
        f.sync_all().unwrap();
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let _ = std::fs::remove_file(&path);
    pct(&mut v, 50.0)
}

/// A templates folder and config file for a desk in `dir`.
pub fn write_config(dir: &Path, toml: &str) -> PathBuf {
    crate::common::write_config(dir, toml)
}

/// Hostname-free description of the machine, for the report.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())).unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores, {cpu}")
}
