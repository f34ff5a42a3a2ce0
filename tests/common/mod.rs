//! Shared helpers for integration tests: a private Dovecot + Postfix started by
//! `tests/harness/mailservers.sh`, mail clients that behave like real ones, and a desk config
//! written into a temp folder.
#![allow(dead_code)]

pub mod clients;
pub mod pg;
pub mod proxy;
pub mod rng;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A running private Dovecot + Postfix pair; stopped on drop.
pub struct MailServers {
    pub dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
}

fn harness() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/harness/mailservers.sh")
}

impl MailServers {
    pub fn start() -> MailServers {
        Self::start_with_users(&[])
    }

    /// Start with extra users besides the harness' default ones.
    pub fn start_with_users(extra: &[String]) -> MailServers {
        Self::start_with_env(&[("EXTRA_USERS", &extra.join(" "))])
    }

    /// Start that also offers SASL XOAUTH2/OAUTHBEARER, checking tokens at `introspect_url`.
    pub fn start_with_oauth(introspect_url: &str) -> MailServers {
        Self::start_with_env(&[("OAUTH_URL", introspect_url)])
    }

    fn start_with_env(env: &[(&str, &str)]) -> MailServers {
        let dir = tempfile::Builder::new().prefix("pd-mail-").tempdir().expect("tempdir");
        let out = Command::new("bash").arg(harness()).arg("start").arg(dir.path()).envs(env.iter().copied()).output().expect("run mailservers.sh");
        assert!(
            out.status.success(),
            "mail servers did not start:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(dir.path().join("env")).expect("env file");
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        MailServers { dir, env }
    }

    /// Drop a message straight into a user's Maildir `new/` (how an MDA delivers; fast preloading).
    pub fn drop_into(&self, user: &str, name: &str, raw: &[u8]) {
        let dir = Path::new(&self.env["MAILDIR_ROOT"]).join(user).join("Maildir");
        let tmp = dir.join("tmp").join(name);
        std::fs::write(&tmp, raw).unwrap();
        // Dovecot's mail uid (no process per file: backlog tests drop thousands).
        let _ = std::os::unix::fs::chown(&tmp, Some(5000), Some(5000));
        std::fs::rename(&tmp, dir.join("new").join(name)).unwrap();
    }

    /// Stop and start both servers on the same folder (same ports, same mail).
    pub fn restart(&self) {
        let out = Command::new("bash").arg(harness()).arg("stop").arg(self.dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(1500));
        let out = Command::new("bash").arg(harness()).arg("start").arg(self.dir.path()).output().unwrap();
        assert!(out.status.success(), "restart: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn port(&self, key: &str) -> u16 {
        self.env[key].parse().unwrap_or_else(|_| panic!("{key} in env file"))
    }

    pub fn ca_file(&self) -> String {
        self.env["CA_FILE"].clone()
    }

    pub fn password(&self) -> String {
        self.env.get("PASSWORD").cloned().unwrap_or_else(|| "secret".into())
    }

    /// Send raw message bytes over SMTP (plain loopback port), like a mail client's submission.
    pub fn send(&self, from: &str, to: &[&str], raw: &[u8]) {
        smtp_send(self.port("SMTP_PORT"), from, to, raw).unwrap_or_else(|e| panic!("SMTP send failed: {e}"));
    }

    /// All messages in `user`'s INBOX (raw bytes), via IMAP with STARTTLS against the private CA.
    pub fn fetch_all(&self, user: &str) -> Vec<Vec<u8>> {
        imap_fetch_all(self, user, "INBOX")
    }

    /// Wait until `user`'s INBOX holds a message satisfying `pred`; returns it.
    pub fn wait_for(&self, user: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            for m in self.fetch_all(user) {
                let s = String::from_utf8_lossy(&m).into_owned();
                if pred(&s) {
                    return s;
                }
            }
            if start.elapsed() > timeout {
                let all: Vec<String> = self.fetch_all(user).iter().map(|m| String::from_utf8_lossy(m).chars().take(600).collect()).collect();
                panic!("no matching message for {user} within {timeout:?}; mailbox has {} message(s):\n{}", all.len(), all.join("\n-----\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Count messages in `user`'s INBOX matching `pred`.
    pub fn count(&self, user: &str, pred: impl Fn(&str) -> bool) -> usize {
        self.fetch_all(user).iter().filter(|m| pred(&String::from_utf8_lossy(m))).count()
    }

    /// `user` got exactly `expected` distinct acknowledgements, none twice. Waits (up to a
    /// minute) for the INBOX to hold them first: a mail the desk sent is one Postfix accepted,
    /// and its delivery follows on Postfix's own time.
    pub fn assert_acknowledged_once(&self, user: &str, expected: usize) {
        let mine = eventually(std::time::Duration::from_secs(60), &format!("{user}'s {expected} acknowledgements in the INBOX"), || {
            let mine: Vec<String> = self
                .fetch_all(user)
                .iter()
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .filter(|m| m.contains("Auto-Submitted: auto-replied"))
                .map(|m| header(&m, "message-id").unwrap())
                .collect();
            (mine.len() >= expected).then_some(mine)
        });
        let distinct: std::collections::HashSet<&String> = mine.iter().collect();
        assert_eq!(distinct.len(), expected, "{user}: one acknowledgement per ticket");
        assert_eq!(mine.len(), distinct.len(), "{user}: an acknowledgement was delivered twice");
    }
}

impl Drop for MailServers {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(harness()).arg("stop").arg(self.dir.path()).output();
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

pub fn smtp_send(port: u16, from: &str, to: &[&str], raw: &[u8]) -> Result<(), String> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor, address::Envelope};
    let env = Envelope::new(Some(from.parse().map_err(|e| format!("{e}"))?), to.iter().map(|t| t.parse().unwrap()).collect()).map_err(|e| e.to_string())?;
    // lettre's connection pool spawns a task when built: build and drop it inside the runtime.
    rt().block_on(async {
        let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1").port(port).build();
        t.send_raw(&env, raw).await.map(|_| ()).map_err(|e| e.to_string())
    })
}

fn imap_fetch_all(s: &MailServers, user: &str, folder: &str) -> Vec<Vec<u8>> {
    use futures::TryStreamExt;
    let endpoint = postdesk::config::Endpoint {
        host: "localhost".into(),
        port: s.port("IMAP_PORT"),
        tls: postdesk::config::Tls::StartTls,
        ca_file: Some(s.ca_file().into()),
        username: Some(format!("{user}@example.test")),
        password: Some(postdesk::config::Secret::new(s.password())),
        connect_timeout: Duration::from_secs(10),
    };
    rt().block_on(async {
        let mut session = postdesk::intake::imap::connect(&endpoint).await.expect("test IMAP login");
        session.examine(folder).await.expect("examine");
        let items: Vec<_> = match session.uid_fetch("1:*", "BODY.PEEK[]").await {
            Ok(stream) => stream.try_collect().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let out = items.iter().filter_map(|f| f.body().map(|b| b.to_vec())).collect();
        let _ = session.logout().await;
        out
    })
}

/// Header value from raw message text (first occurrence, unfolded).
pub fn header(raw: &str, name: &str) -> Option<String> {
    let p = postdesk::message::parse(raw.as_bytes()).ok()?;
    p.header(name).map(str::to_string)
}

/// Write a desk config into `dir` (templates copied from the repo) and return its path.
pub fn write_config(dir: &Path, body: &str) -> PathBuf {
    copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"), &dir.join("templates"));
    let path = dir.join("postdesk.toml");
    std::fs::write(&path, body).unwrap();
    path
}

/// Copy a folder recursively.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Wait until `f` returns Some, polling every 50 ms.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Messages in another folder of `user`.
pub fn imap_fetch_folder(s: &MailServers, user: &str, folder: &str) -> Vec<Vec<u8>> {
    imap_fetch_all(s, user, folder)
}

/// How many messages in `user`'s INBOX lack `\Seen`.
pub fn unseen(s: &MailServers, user: &str) -> usize {
    let endpoint = postdesk::config::Endpoint {
        host: "127.0.0.1".into(),
        port: s.port("IMAP_PORT"),
        tls: postdesk::config::Tls::None,
        ca_file: None,
        username: Some(format!("{user}@example.test")),
        password: Some(postdesk::config::Secret::new(s.password())),
        connect_timeout: Duration::from_secs(10),
    };
    rt().block_on(async {
        let mut session = postdesk::intake::imap::connect(&endpoint).await.expect("test IMAP login");
        session.examine("INBOX").await.expect("examine");
        let n = session.uid_search("UNSEEN").await.expect("search").len();
        let _ = session.logout().await;
        n
    })
}

/// Stop or start only Postfix of the running pair (an SMTP outage).
pub fn postfix(s: &MailServers, action: &str) {
    let etc = s.dir.path().join("postfix/etc");
    let out = Command::new("postfix").arg("-c").arg(&etc).arg(action).output().expect("postfix");
    assert!(out.status.success(), "postfix {action}: {}", String::from_utf8_lossy(&out.stderr));
    if action == "start" {
        // wait for the greeting
        eventually(Duration::from_secs(15), "postfix greeting", || {
            use std::io::Read;
            let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port("SMTP_PORT"))).ok()?;
            c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let mut buf = [0u8; 64];
            let n = c.read(&mut buf).ok()?;
            buf[..n].starts_with(b"220").then_some(())
        });
    }
}

/// Deliver straight into a mailbox over Dovecot's LMTP socket (bypassing Postfix).
pub fn lmtp_deliver(s: &MailServers, rcpt: &str, raw: &[u8]) {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let sock = UnixStream::connect(&s.env["LMTP_SOCKET"]).expect("LMTP socket");
    let mut r = BufReader::new(sock.try_clone().unwrap());
    let mut w = sock;
    let mut line = String::new();
    let mut expect = |r: &mut BufReader<UnixStream>, code: &str| loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with(code), "LMTP: expected {code}, got {line}");
        if line.as_bytes().get(3) == Some(&b' ') {
            break;
        }
    };
    expect(&mut r, "220");
    for (cmd, code) in [("LHLO test\r\n".to_string(), "250"), ("MAIL FROM:<test@example.test>\r\n".into(), "250"), (format!("RCPT TO:<{rcpt}>\r\n"), "250"), ("DATA\r\n".into(), "354")] {
        w.write_all(cmd.as_bytes()).unwrap();
        expect(&mut r, code);
    }
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    for l in text.lines() {
        if l.starts_with('.') {
            w.write_all(b".").unwrap();
        }
        w.write_all(l.as_bytes()).unwrap();
        w.write_all(b"\r\n").unwrap();
    }
    w.write_all(b".\r\n").unwrap();
    expect(&mut r, "250");
    w.write_all(b"QUIT\r\n").unwrap();
}

/// Reply with Debian's real mutt, as `user` would: open the user's Maildir, pick the newest
/// message whose subject matches `subject_pattern`, `<reply>` with quoting, type `body` above the
/// quote, send over SMTP to the test Postfix. mutt sets In-Reply-To/References itself.
pub fn mutt_reply(s: &MailServers, user: &str, subject_pattern: &str, body: &str) {
    let work = s.dir.path().join(format!("mutt-{user}-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let body_file = work.join("body.txt");
    std::fs::write(&body_file, format!("{body}\n\n")).unwrap();
    // The "editor": put the agent's text above the quoted message mutt prepared.
    let editor = work.join("editor.sh");
    std::fs::write(&editor, format!("#!/bin/sh\ncat '{}' \"$1\" > \"$1.new\" && mv \"$1.new\" \"$1\"\n", body_file.display())).unwrap();
    Command::new("chmod").arg("+x").arg(&editor).status().unwrap();
    let maildir = format!("{}/{user}/Maildir", s.env["MAILDIR_ROOT"]);
    let rc = work.join("muttrc");
    std::fs::write(
        &rc,
        format!(
            "set from = \"{user}@example.test\"\nset realname = \"{user}\"\nset use_from = yes\nset smtp_url = \"smtp://127.0.0.1:{port}/\"\nset editor = \"{editor}\"\nset edit_headers = no\nset fast_reply = yes\nset include = yes\nset askcc = no\nset askbcc = no\nset confirmappend = no\nset quit = yes\nset record = \"\"\nset postpone = no\nset move = no\nset mbox_type = Maildir\nset folder = \"{maildir}\"\nset spoolfile = \"{maildir}\"\nset sort = date-received\nset charset = utf-8\nset send_charset = utf-8\nset abort_unmodified = no\nset ssl_ca_certificates_file = \"{ca}\"\n",
            port = s.port("SMTP_PORT"),
            editor = editor.display(),
            ca = s.ca_file()
        ),
    )
    .unwrap();
    let keys = format!("push '<limit>~s {subject_pattern}<enter><last-entry><reply><send-message><quit>'");
    let cmd = format!("mutt -n -F '{}' -f '{maildir}' -e \"{keys}\"", rc.display());
    // script(1) gives mutt the terminal it insists on; the timeout keeps a stuck prompt from
    // hanging the suite.
    let out = Command::new("timeout")
        .arg("60")
        .arg("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .env("HOME", &work)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run mutt under script(1)");
    assert!(out.status.success(), "mutt failed: {}\n{}", String::from_utf8_lossy(&out.stdout).chars().rev().take(2000).collect::<String>().chars().rev().collect::<String>(), String::from_utf8_lossy(&out.stderr));
}

/// The digits of `text` spelled out (`"Question 42"` → `"four two"`): test mail from one sender
/// whose texts differ only in numbers has the same shape, which the desk takes for a responder
/// loop (`guard.loop_reply_window`); real people's mails differ in words.
pub fn spelled(text: &str) -> String {
    const WORDS: [&str; 10] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    text.chars().filter_map(|c| c.to_digit(10)).map(|d| WORDS[d as usize]).collect::<Vec<_>>().join(" ")
}

/// Which backend the store-driven suites run on: `POSTDESK_TEST_BACKEND=postgres` gives each
/// store a fresh database in the private cluster (`pg.rs`); otherwise SQLite. scripts/test.sh
/// runs the pipeline, agents, rules, SLA, knowledge and CSAT suites once on each.
pub fn on_postgres() -> bool {
    std::env::var("POSTDESK_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// The store for a test desk: SQLite at `database`, or a fresh PostgreSQL database.
pub fn test_store(database: &Path) -> postdesk::store::Store {
    if on_postgres() {
        let hint = database.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let url = pg::fresh_database(&hint);
        postdesk::store::Store::connect(&postdesk::store::Backend::Postgres(url)).expect("PostgreSQL store")
    } else {
        postdesk::store::Store::open(database).expect("SQLite store")
    }
}
