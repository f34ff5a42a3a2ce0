//! Operating the desk against the real test servers, through the real binary: `check --connect`
//! (one line per mailbox and for SMTP, with hints for the usual mistakes).

mod common;

use common::MailServers;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_postdesk");

fn desk(s: &MailServers, dir: &std::path::Path, mailboxes: &str, smtp: &str) -> std::path::PathBuf {
    let body = format!(
        "[desk]\ndomain = \"desk.example.test\"\ndata_dir = \"var\"\ntemplates_dir = \"templates\"\nsecret = \"ops-test-secret-0123456789\"\n\n\
         [queues.support]\naddress = \"support@example.test\"\nfrom_name = \"Example Support\"\n\n{mailboxes}\n[outbound]\n{smtp}\n"
    );
    let _ = s;
    common::write_config(dir, &body)
}

fn imap_box(s: &MailServers, name: &str, port_key: &str, tls: &str, password: &str) -> String {
    format!(
        "[mailboxes.{name}]\nkind = \"imap\"\nqueue = \"support\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"{tls}\"\nca_file = \"{}\"\nusername = \"support@example.test\"\npassword = \"{password}\"\nconnect_timeout = \"5s\"\n\n",
        s.port(port_key),
        s.ca_file()
    )
}

fn check_connect(cfg: &std::path::Path) -> (i32, String) {
    let out = Command::new(BIN).arg("--config").arg(cfg).args(["check", "--connect"]).env_remove("POSTDESK_LOG").output().unwrap();
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn check_connect_logs_in_everywhere_and_explains_failures() {
    let s = MailServers::start();
    let dir = tempfile::tempdir().unwrap();
    let smtp = format!(
        "transport = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\nusername = \"support@example.test\"\npassword = \"{}\"",
        s.port("SMTP_PORT"),
        s.ca_file(),
        s.password()
    );
    let good = format!("{}{}", imap_box(&s, "tls", "IMAPS_PORT", "implicit", &s.password()), imap_box(&s, "starttls", "IMAP_PORT", "starttls", &s.password()));
    let cfg = desk(&s, dir.path(), &good, &smtp);
    let (code, out) = check_connect(&cfg);
    println!("{out}");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok      mailbox tls") && out.contains("ok      mailbox starttls") && out.contains("ok      outbound"), "{out}");
    assert!(out.contains("IDLE offered") && out.contains("STARTTLS, logged in"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("ok      outbound (smtp") && l.ends_with("TLS, logged in")), "{out}");

    // A wrong password, implicit TLS on the STARTTLS port, and an SMTP login that fails.
    let bad = format!("{}{}", imap_box(&s, "wrongpw", "IMAPS_PORT", "implicit", "not-the-password"), imap_box(&s, "wrongport", "IMAP_PORT", "implicit", &s.password()));
    let bad_smtp = smtp.replace(&format!("password = \"{}\"", s.password()), "password = \"nope\"");
    let dir2 = tempfile::tempdir().unwrap();
    let cfg = desk(&s, dir2.path(), &bad, &bad_smtp);
    let (code, out) = check_connect(&cfg);
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    let line = |what: &str| out.lines().find(|l| l.contains(what)).unwrap_or_default().to_string();
    assert!(line("mailbox wrongpw").starts_with("FAILED") && line("mailbox wrongpw").contains("refused the login"), "{out}");
    assert!(line("mailbox wrongport").starts_with("FAILED") && line("mailbox wrongport").contains("hint"), "{out}");
    assert!(line("outbound (smtp").starts_with("FAILED") && line("outbound (smtp").contains("refused the login"), "{out}");
    assert!(!out.contains("not-the-password") && !out.contains("\"nope\""), "no password in the output: {out}");
}
