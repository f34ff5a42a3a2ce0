//! The documented command-line interface, driven through the real binary on a Maildir + folder
//! desk (no mail servers): check, deliver exit codes, tickets list/show JSON, rules test without
//! side effects, and the daemon's Maildir loop, SIGHUP reload and SIGTERM shutdown.

mod common;

use common::clients;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_postdesk");

const DESK: &str = r#"
[desk]
name = "Example Support"
domain = "desk.example.test"
data_dir = "var"
templates_dir = "templates"

[queues.support]
address = "support@example.test"
from_name = "Example Support"

[mailboxes.support]
kind = "maildir"
path = "var/maildir/support"
poll_interval = "100ms"

[mailboxes.pipe]
kind = "pipe"
queue = "support"

[outbound]
transport = "folder"
folder = "var/outbox"
poll_interval = "200ms"
"#;

struct Desk {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Desk {
    fn new() -> Desk {
        let dir = tempfile::tempdir().unwrap();
        let config = common::write_config(dir.path(), DESK);
        Desk { dir, config }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&self.config).args(args).env_remove("POSTDESK_LOG");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn deliver(&self, raw: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self.cmd(&["deliver", "--mailbox", "pipe"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(raw).unwrap();
        child.wait_with_output().unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// JSON from a command whatever its exit code (`status` exits 1 or 2 when not all is well).
    fn json_any(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stderr)))
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn shipped_configs_pass_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut configs = vec![root.join("config/postdesk.toml")];
    for e in std::fs::read_dir(root.join("config/examples")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "toml") {
            configs.push(e.path());
        }
    }
    assert!(configs.len() >= 3);
    for c in configs {
        let out = Command::new(BIN).arg("--config").arg(&c).arg("check").output().unwrap();
        assert!(out.status.success(), "{}: {}", c.display(), stderr(&out));
    }
}

#[test]
fn check_reports_every_problem_with_file_line_and_key() {
    let d = Desk::new();
    std::fs::write(
        &d.config,
        "[desk]\ndomain = \"desk.example.test\"\ntemplates_dir = \"templates\"\nfavourite = 1\n\n[queues.support]\naddress = \"nobody\"\n\n[mailboxes.support]\nkind = \"carrier-pigeon\"\n",
    )
    .unwrap();
    std::fs::write(d.path("templates/acknowledgement.txt.hbs"), "Hi {{ticket.no_such_thing}}").unwrap();
    let out = d.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let cfg = d.config.display().to_string();
    assert!(err.contains(&format!("{cfg}:4: desk.favourite: unknown key")), "{err}");
    assert!(err.contains(&format!("{cfg}:7: queues.support.address: `nobody` is not an email address")), "{err}");
    assert!(err.contains(&format!("{cfg}:10: mailboxes.support.kind: unknown kind `carrier-pigeon`")), "{err}");
    // The template is checked too (once the config itself is valid).
    std::fs::write(&d.config, DESK).unwrap();
    let err = stderr(&d.run(&["check"]));
    assert!(err.contains("acknowledgement.txt.hbs") && err.contains("no_such_thing"), "{err}");
}

/// Plain SMTP with a password to a host that is not loopback is refused with its line, unless the
/// config says `none_insecure`, which `check` then reports (issue 17.7).
#[test]
fn check_refuses_plaintext_passwords_beyond_loopback() {
    let d = Desk::new();
    let smtp = |tls: &str| DESK.replace("transport = \"folder\"\nfolder = \"var/outbox\"", &format!("transport = \"smtp\"\nhost = \"smtp.example.org\"\ntls = \"{tls}\"\nusername = \"support\"\npassword = \"pw\""));
    std::fs::write(&d.config, smtp("none")).unwrap();
    let out = d.run(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr(&out).contains("outbound.tls: `none` would send the password in clear to smtp.example.org"), "{}", stderr(&out));
    std::fs::write(&d.config, smtp("none_insecure")).unwrap();
    let out = d.run(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("warning: outbound: plain TCP to smtp.example.org:25 (not loopback): mail and the password cross the network in clear"), "{text}");
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn deliver_exit_codes_and_duplicates() {
    let d = Desk::new();
    let m = clients::thunderbird_new("Alice Example", "alice@example.org", "support@example.test", "VPN drops every hour", "It disconnects at :00.");
    let out = d.deliver(&m.raw);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("created PD-1"), "{}", stderr(&out));

    // The same message again (an MTA retry, or a second copy): no second ticket.
    let out = d.deliver(&m.raw);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("duplicate"), "{}", stderr(&out));
    assert_eq!(d.json(&["tickets", "list", "--json"]).as_array().unwrap().len(), 1);

    // Not mail at all → EX_DATAERR.
    assert_eq!(d.deliver(b"\x00\x01 this is not mail").status.code(), Some(65));
    // Unknown mailbox or broken config → EX_TEMPFAIL so the MTA retries.
    let out = d.cmd(&["deliver", "--mailbox", "nope"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(75));
    std::fs::write(&d.config, "[desk\n").unwrap();
    assert_eq!(d.deliver(&m.raw).status.code(), Some(75));
}

#[test]
fn tickets_json_follows_the_contract() {
    let d = Desk::new();
    let m = clients::thunderbird_new("Alice Example", "alice@example.org", "support@example.test", "Printer jammed", "Floor 3.");
    assert!(d.deliver(&m.raw).status.success());
    let list = d.json(&["tickets", "list", "--json"]);
    let t = &list[0];
    for k in ["id", "ref", "subject", "status", "priority", "queue", "owner", "requester", "participants", "tags", "created_at", "updated_at"] {
        assert!(t.get(k).is_some(), "missing {k} in {t}");
    }
    assert_eq!(t["ref"], "PD-1");
    assert_eq!(t["status"], "new");
    assert_eq!(t["owner"], Value::Null);
    assert_eq!(t["requester"], "alice@example.org");
    assert!(time::OffsetDateTime::parse(t["created_at"].as_str().unwrap(), &time::format_description::well_known::Rfc3339).is_ok());

    let show = d.json(&["tickets", "show", "PD-1", "--json"]);
    let arts = show["articles"].as_array().unwrap();
    assert_eq!(arts.len(), 2, "{show}");
    assert_eq!(arts[0]["direction"], "inbound");
    assert_eq!(arts[0]["kind"], "customer");
    assert_eq!(arts[0]["message_id"], m.message_id.as_str());
    assert!(arts[0]["body_text"].as_str().unwrap().contains("Floor 3."));
    assert_eq!(arts[1]["direction"], "outbound");
    assert_eq!(arts[1]["kind"], "auto_reply");
    assert!(arts[1]["subject"].as_str().unwrap().contains("[PD-1]"));
    for k in ["id", "from", "to", "created_at", "attachments"] {
        assert!(arts[0].get(k).is_some(), "missing {k}");
    }
    // by numeric id too, and filters
    assert_eq!(d.json(&["tickets", "show", "1", "--json"])["id"], 1);
    assert_eq!(d.json(&["tickets", "list", "--status", "closed", "--json"]).as_array().unwrap().len(), 0);
    assert_eq!(d.json(&["tickets", "list", "--queue", "support", "--json"]).as_array().unwrap().len(), 1);
    let out = d.run(&["tickets", "show", "PD-99"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no ticket PD-99"));
}

#[test]
fn rules_test_is_a_dry_run() {
    let d = Desk::new();
    let first = clients::thunderbird_new("Alice Example", "alice@example.org", "support@example.test", "Printer jammed", "Floor 3.");
    assert!(d.deliver(&first.raw).status.success());
    let eml = d.path("reply.eml");
    let reply = clients::mutt_reply("alice@example.org", "support@example.test", "[PD-1] Printer jammed", &first.message_id, &[], "Still jammed.");
    std::fs::write(&eml, &reply.raw).unwrap();
    let out = d.run(&["rules", "test", eml.to_str().unwrap(), "--mailbox", "support"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("guard:     human"), "{text}");
    assert!(text.contains("follow-up on PD-1"), "{text}");

    let ooo = d.path("ooo.eml");
    std::fs::write(&ooo, b"From: bob@example.org\r\nTo: support@example.test\r\nSubject: Out of office\r\nAuto-Submitted: auto-replied\r\nMessage-ID: <ooo1@example.org>\r\n\r\nAway.\r\n").unwrap();
    let j = d.json(&["rules", "test", ooo.to_str().unwrap(), "--json"]);
    assert_eq!(j["verdict"]["class"], "auto_reply");
    assert_eq!(j["mails"].as_array().unwrap().len(), 0, "{j}");
    assert_eq!(j["outcome"]["outcome"], "created");

    // Nothing was written: still one ticket with its two articles.
    assert_eq!(d.json(&["tickets", "list", "--json"]).as_array().unwrap().len(), 1);
    assert_eq!(d.json(&["tickets", "show", "PD-1", "--json"])["articles"].as_array().unwrap().len(), 2);
}

/// Our Message-IDs are signed reply tokens (`pd.TICKET.NONCE.SIG@domain`): whoever holds one can
/// write to the ticket, so neither the "mail sent" log line nor `rules test --json` shows one
/// whole (issue 17.11).
#[test]
fn reply_tokens_stay_out_of_logs_and_dry_runs() {
    // Both token formats: pd.TICKET.NONCE.MAC and pd.TICKET.NONCE.HOUR.MAC.
    let token = regex::Regex::new(r"pd\.\d+\.[0-9a-f]{12}\.([0-9a-f]+\.)?[0-9a-f]{20,}").unwrap();
    let d = Desk::new();
    let eml = d.path("new.eml");
    let m = clients::thunderbird_new("Alice Example", "alice@example.org", "support@example.test", "Printer jammed", "Floor 3.");
    std::fs::write(&eml, &m.raw).unwrap();
    let out = d.run(&["rules", "test", eml.to_str().unwrap(), "--json"]);
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(json.contains("\"mails\"") && json.contains("acknowledgement"), "{json}");
    assert!(!token.is_match(&json), "{json}");

    let log = std::fs::File::create(d.path("daemon.log")).unwrap();
    let mut child = d.cmd(&["run"]).stderr(log).stdout(Stdio::null()).spawn().unwrap();
    let newdir = d.path("var/maildir/support/new");
    common::eventually(Duration::from_secs(10), "Maildir created", || newdir.is_dir().then_some(()));
    std::fs::write(newdir.join("1700000000.1.host"), &m.raw).unwrap();
    let ack = common::eventually(Duration::from_secs(10), "acknowledgement in the outbox", || outbox_files(&d).into_iter().next());
    let sent = common::eventually(Duration::from_secs(10), "mail sent logged", || {
        let l = std::fs::read_to_string(d.path("daemon.log")).unwrap();
        l.contains("mail sent").then_some(l)
    });
    signal(&child, "TERM");
    common::eventually(Duration::from_secs(15), "daemon exit", || child.try_wait().unwrap());
    let id = common::header(&ack, "message-id").unwrap();
    assert!(token.is_match(&id), "{id}");
    assert!(sent.contains("pd.1.…@desk.example.test"), "{sent}");
    assert!(!token.is_match(&sent), "{sent}");

    // A reply to that mail: the dry run explains the threading without showing the token.
    let reply = clients::gmail_reply("Alice Example", "alice@example.org", "support@example.test", "[PD-1] Printer jammed", id.trim_matches(['<', '>']), std::slice::from_ref(&m.message_id), "Still.");
    std::fs::write(&eml, &reply.raw).unwrap();
    let out = d.run(&["rules", "test", eml.to_str().unwrap(), "--json"]);
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(json.contains("signed reply token <pd.1.…@desk.example.test>"), "{json}");
    assert!(!token.is_match(&json), "{json}");
}

fn outbox_files(d: &Desk) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d.path("var/outbox"))
        .map(|rd| rd.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "eml")).map(|e| std::fs::read_to_string(e.path()).unwrap()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn signal(child: &std::process::Child, sig: &str) {
    assert!(Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status().unwrap().success());
}

#[test]
fn daemon_maildir_loop_reload_and_shutdown() {
    let d = Desk::new();
    let log = std::fs::File::create(d.path("daemon.log")).unwrap();
    let mut child = d.cmd(&["run"]).stderr(log).stdout(Stdio::null()).spawn().unwrap();
    let newdir = d.path("var/maildir/support/new");
    // The daemon makes new/ before tmp/: wait for the last one.
    common::eventually(Duration::from_secs(10), "Maildir created", || d.path("var/maildir/support/tmp").is_dir().then_some(()));

    let m = clients::thunderbird_new("Alice Example", "alice@example.org", "support@example.test", "Printer jammed", "Floor 3.");
    std::fs::write(d.dir.path().join("var/maildir/support/tmp/1.eml"), &m.raw).unwrap();
    std::fs::rename(d.path("var/maildir/support/tmp/1.eml"), newdir.join("1700000000.1.host")).unwrap();
    let ack = common::eventually(Duration::from_secs(10), "acknowledgement in the outbox", || outbox_files(&d).into_iter().next());
    assert!(ack.contains("Subject: [PD-1] Printer jammed"), "{ack}");
    assert!(ack.contains(&format!("In-Reply-To: <{}>", m.message_id)), "{ack}");
    assert!(ack.contains("Auto-Submitted: auto-replied"), "{ack}");
    assert!(newdir.read_dir().unwrap().next().is_none(), "processed file left new/");

    // The customer answers the acknowledgement (Gmail): same ticket, no second acknowledgement.
    let ack_id = common::header(&ack, "message-id").unwrap();
    let ack_id = ack_id.trim_matches(['<', '>']);
    let r = clients::gmail_reply("Alice Example", "alice@example.org", "support@example.test", "[PD-1] Printer jammed", ack_id, std::slice::from_ref(&m.message_id), "Now it is on fire.");
    std::fs::write(newdir.join("1700000001.2.host"), &r.raw).unwrap();
    common::eventually(Duration::from_secs(10), "reply on PD-1", || {
        (d.json(&["tickets", "show", "PD-1", "--json"])["articles"].as_array().unwrap().len() == 3).then_some(())
    });
    assert_eq!(d.json(&["tickets", "list", "--json"]).as_array().unwrap().len(), 1);

    // SIGHUP with a broken template: the old templates stay active and the daemon says why.
    std::fs::write(d.path("templates/acknowledgement.subject.hbs"), "{{#if}}").unwrap();
    signal(&child, "HUP");
    common::eventually(Duration::from_secs(10), "reload failure logged", || {
        std::fs::read_to_string(d.path("daemon.log")).unwrap().contains("reload failed").then_some(())
    });
    let m2 = clients::thunderbird_new("Bob", "bob@example.org", "support@example.test", "Second", "x");
    std::fs::write(newdir.join("1700000002.3.host"), &m2.raw).unwrap();
    let acks = common::eventually(Duration::from_secs(10), "second acknowledgement", || {
        let f = outbox_files(&d);
        (f.len() == 2).then_some(f)
    });
    assert!(acks.iter().any(|a| a.contains("Subject: [PD-2] Second")), "{acks:?}");

    // A good template after SIGHUP takes effect.
    std::fs::write(d.path("templates/acknowledgement.subject.hbs"), "We got it: {{ticket.subject}}").unwrap();
    signal(&child, "HUP");
    common::eventually(Duration::from_secs(10), "reload logged", || {
        std::fs::read_to_string(d.path("daemon.log")).unwrap().contains("reloaded").then_some(())
    });
    let m3 = clients::thunderbird_new("Carol", "carol@example.org", "support@example.test", "Third", "x");
    std::fs::write(newdir.join("1700000003.4.host"), &m3.raw).unwrap();
    common::eventually(Duration::from_secs(10), "third acknowledgement with the new template", || {
        outbox_files(&d).iter().any(|a| a.contains("Subject: [PD-3] We got it: Third")).then_some(())
    });

    signal(&child, "TERM");
    let status = common::eventually(Duration::from_secs(15), "daemon exit", || child.try_wait().unwrap());
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn sighup_with_a_broken_rules_file_keeps_the_last_good_rules() {
    let d = Desk::new();
    std::fs::write(d.path("rules.toml"), "[[rule]]\nname = \"vip\"\n[rule.when]\nfrom = \"@vip.example\"\n[rule.then]\npriority = \"urgent\"\n").unwrap();
    std::fs::write(&d.config, format!("{DESK}\n[rules]\npath = \"rules.toml\"\n")).unwrap();
    assert!(d.run(&["check"]).status.success());
    let log = std::fs::File::create(d.path("daemon.log")).unwrap();
    let mut child = d.cmd(&["run"]).stderr(log).stdout(Stdio::null()).spawn().unwrap();
    let newdir = d.path("var/maildir/support/new");
    common::eventually(Duration::from_secs(10), "Maildir created", || newdir.is_dir().then_some(()));
    std::fs::write(d.path("rules.toml"), "[[rule]]\nname = \"vip\"\n[rule.when]\nfrom = \"/(broken/\"\n").unwrap();
    signal(&child, "HUP");
    let logtext = common::eventually(Duration::from_secs(10), "reload failure logged", || {
        std::fs::read_to_string(d.path("daemon.log")).ok().filter(|l| l.contains("reload failed"))
    });
    assert!(logtext.contains("rules.toml:4"), "{logtext}");
    let m = clients::thunderbird_new("Boss", "boss@vip.example", "support@example.test", "Urgent thing", "x");
    std::fs::write(newdir.join("1.host"), &m.raw).unwrap();
    let t = common::eventually(Duration::from_secs(10), "ticket", || d.json(&["tickets", "list", "--json"]).as_array().and_then(|a| a.first().cloned()));
    assert_eq!(t["priority"], "urgent", "the last good rules stayed active");
    signal(&child, "TERM");
    assert!(common::eventually(Duration::from_secs(15), "exit", || child.try_wait().unwrap()).success());
}

#[test]
fn report_counts_a_seeded_desk() {
    let d = Desk::new();
    for i in 0..3 {
        let m = clients::thunderbird_new("C", &format!("c{i}@example.org"), "support@example.test", &format!("Problem {i}"), "x");
        assert!(d.deliver(&m.raw).status.success());
    }
    let j = d.json(&["report", "--since", "1d", "--format", "json"]);
    assert_eq!(j["by_queue"]["support"]["opened"], 3, "{j}");
    assert_eq!(j["by_queue"]["support"]["active"], 3);
    assert_eq!(j["backlog_by_age"]["<1d"], 3);
    let html = String::from_utf8(d.run(&["report", "--format", "html"]).stdout).unwrap();
    assert!(html.contains("<svg") && html.contains("Opened and resolved per queue"));
    assert_eq!(d.run(&["report", "--since", "yesterday-ish"]).status.code(), Some(1));
}

#[test]
fn configuration_items_are_linked_from_the_inventory() {
    let d = Desk::new();
    std::fs::write(d.path("cis.csv"), "name,type,owner,location\nweb01,server,ops@example.com,rack 3\nPRN-0042,printer,facilities@example.com,floor 3\n").unwrap();
    std::fs::write(&d.config, format!("{DESK}\n[cis]\nfile = \"cis.csv\"\n")).unwrap();
    let m = clients::thunderbird_new("C", "c@example.org", "support@example.test", "web01 is slow", "Also printer prn-0042 jams.");
    assert!(d.deliver(&m.raw).status.success());
    let t = d.json(&["tickets", "show", "PD-1", "--json"]);
    assert_eq!(t["cis"], serde_json::json!(["PRN-0042", "web01"]), "{t}");
    assert_eq!(d.json(&["tickets", "list", "--ci", "WEB01", "--json"]).as_array().unwrap().len(), 1);
    assert_eq!(d.json(&["tickets", "list", "--ci", "db99", "--json"]).as_array().unwrap().len(), 0);
    let cis = d.json(&["cis", "--json"]);
    assert_eq!(cis[0]["name"], "web01");
    assert_eq!(cis[0]["tickets"], 1);
    assert_eq!(cis[1]["attributes"]["location"], "floor 3");
}

#[test]
fn catalog_and_knowledge_base_shape_the_acknowledgement() {
    let d = Desk::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::write(
        &d.config,
        format!("{DESK}\n[self_service]\n[catalog]\nfile = \"{}\"\n[kb]\nfolder = \"{}\"\n", root.join("config/catalog.toml").display(), root.join("config/kb").display()),
    )
    .unwrap();
    assert!(d.run(&["check"]).status.success(), "{}", stderr(&d.run(&["check"])));
    // A password request without the username: filed as the service, the ack asks for it and
    // suggests the self-help article.
    let m = clients::thunderbird_new("C", "c@example.org", "support@example.test", "Locked out - password reset please", "I cannot log in to reset my password.");
    assert!(d.deliver(&m.raw).status.success());
    let t = d.json(&["tickets", "show", "PD-1", "--json"]);
    assert_eq!((t["service"].as_str(), t["type"].as_str()), (Some("password-reset"), Some("service_request")));
    let ack = t["articles"][1]["body_text"].as_str().unwrap().to_string();
    assert!(ack.contains("\"Password reset\" request") && ack.contains("- Username"), "{ack}");
    assert!(ack.contains("Reset your own password"), "{ack}");
    // The catalog by mail.
    let ask = clients::thunderbird_new("C", "c@example.org", "support@example.test", "Catalog", "");
    let out = d.deliver(&ask.raw);
    assert!(stderr(&out).contains("answered"), "{}", stderr(&out));
    assert_eq!(d.json(&["tickets", "list", "--json"]).as_array().unwrap().len(), 1, "no ticket for the request");
    let store = postdesk::store::Store::open(&d.path("var/postdesk.db")).unwrap();
    let list = store.due_outbound("9999", 10).unwrap().into_iter().map(|m| String::from_utf8(m.raw).unwrap()).find(|m| m.contains("What you can ask us for")).expect("catalog mail queued");
    assert!(list.contains("Firewall change") && list.contains("Cost center"), "{list}");
}

#[test]
fn a_second_daemon_on_the_same_database_exits_naming_the_first() {
    let d = Desk::new();
    let log = std::fs::File::create(d.path("daemon.log")).unwrap();
    let mut first = d.cmd(&["run"]).stderr(log).stdout(Stdio::null()).spawn().unwrap();
    common::eventually(Duration::from_secs(60), "the first daemon started", || {
        std::fs::read_to_string(d.path("daemon.log")).unwrap().contains("postdesk started").then_some(())
    });
    let mut second = d.cmd(&["run"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let status = common::eventually(Duration::from_secs(60), "the second daemon exits", || second.try_wait().unwrap());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "a second daemon on the same database must not run: {err}");
    assert!(err.contains(&format!("pid {}", first.id())), "the message names the running daemon's pid: {err}");

    // Beside the daemon, `deliver` and the CLI keep working.
    let m = clients::thunderbird_new("Alice Example", "alice@example.org", "support@example.test", "Printer jammed", "Floor 3.");
    let out = d.deliver(&m.raw);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(d.json(&["tickets", "list", "--json"]).as_array().unwrap().len(), 1);
    signal(&first, "TERM");
    assert!(common::eventually(Duration::from_secs(60), "exit", || first.try_wait().unwrap()).success());

    // Once it is gone, a new daemon starts (the kernel dropped the lock).
    let log = std::fs::File::create(d.path("daemon2.log")).unwrap();
    let mut again = d.cmd(&["run"]).stderr(log).stdout(Stdio::null()).spawn().unwrap();
    common::eventually(Duration::from_secs(60), "a new daemon started", || {
        std::fs::read_to_string(d.path("daemon2.log")).unwrap().contains("postdesk started").then_some(())
    });
    signal(&again, "TERM");
    assert!(common::eventually(Duration::from_secs(60), "exit", || again.try_wait().unwrap()).success());
}

#[test]
fn tickets_list_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let d = Desk::new();
    for i in 0..3 {
        let m = clients::thunderbird_new("Customer", &format!("c{i}@example.org"), "support@example.test", &format!("Question {i}"), "Hello");
        assert!(d.deliver(&m.raw).status.success());
    }
    for args in [&["tickets", "list"][..], &["tickets", "list", "--json"], &["tickets", "show", "PD-1"], &["report"]] {
        // The reader is gone before the command writes its first byte (`… | head -0`).
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = d.cmd(args).stdout(writer).stderr(Stdio::piped()).output().unwrap();
        let err = stderr(&out);
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
        assert!(out.status.success() || out.status.signal() == Some(libc_sigpipe()), "{args:?} ends quietly: {:?} {err}", out.status);
    }
}

/// SIGPIPE's number on Linux.
fn libc_sigpipe() -> i32 {
    13
}

/// Issue 12 item 4: mail over `limits.max_message_size` piped to `deliver` keeps every byte (in
/// quarantine, for an admin), the sender is told, and nobody is told it stayed on a server.
#[test]
fn oversize_mail_through_deliver_is_kept_whole() {
    let d = Desk::new();
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, format!("{cfg}\n[limits]\nmax_message_size = \"64KB\"\n")).unwrap();
    let body = "0123456789abcdef".repeat(16 * 1024); // 256 KiB
    let m = clients::thunderbird_new("Alice Example", "alice@example.org", "support@example.test", "Huge scan", &body);
    let out = d.deliver(&m.raw);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("mail server"), "{}", stderr(&out));
    let show = d.json(&["tickets", "show", "PD-1", "--json"]);
    let text = show.to_string();
    assert!(!text.contains("left on the mail server"), "{text}");
    assert!(text.contains("quarantine"), "the ticket says where the message is kept: {text}");
    let db = rusqlite::Connection::open(d.path("var/postdesk.db")).unwrap();
    let kept: Vec<u8> = db.query_row("SELECT raw FROM quarantine WHERE reason = 'too_large'", [], |r| r.get(0)).unwrap();
    assert!(kept == m.raw, "the quarantined bytes are the message as received");
    let to_sender: i64 = db.query_row("SELECT COUNT(*) FROM outbox WHERE recipients LIKE '%alice@example.org%'", [], |r| r.get(0)).unwrap();
    assert_eq!(to_sender, 1, "the sender is told");
}

/// Issue 12 item 5: a forwarded message whose first line is a separator is mail, not EX_DATAERR.
#[test]
fn deliver_accepts_mail_with_a_junk_first_line() {
    let d = Desk::new();
    let m = clients::thunderbird_new("Alice Example", "alice@example.org", "support@example.test", "Forwarded", "See below.");
    let mut raw = b"---- Original email message ----\r\n".to_vec();
    raw.extend_from_slice(&m.raw);
    let out = d.deliver(&raw);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("created PD-1"), "{}", stderr(&out));
}

#[test]
fn undeliverable_list_and_clear() {
    let d = Desk::new();
    let m = clients::thunderbird_new("Alice Example", "alice@example.org", "support@example.test", "Printer jammed", "Floor 3.");
    assert!(d.deliver(&m.raw).status.success());
    let ack = d.json(&["tickets", "show", "PD-1", "--json"])["articles"][1]["message_id"].as_str().unwrap().to_string();
    // The acknowledgement bounced: a DSN naming it and its recipient.
    let dsn = format!(
        "From: MAILER-DAEMON@mx.example.org\r\nTo: support@example.test\r\nSubject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-1@mx.example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\nFinal-Recipient: rfc822; alice@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{ack}>\r\n\r\n--b--\r\n"
    );
    assert!(d.deliver(dsn.as_bytes()).status.success());
    let list = d.json(&["undeliverable", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["address"], "alice@example.org");
    assert!(list[0]["reason"].as_str().unwrap().contains("5.1.1"), "{list}");
    let text = d.run(&["undeliverable", "list"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("alice@example.org"));
    let out = d.run(&["undeliverable", "clear", "Alice@Example.org"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(d.json(&["undeliverable", "list", "--json"]).as_array().unwrap().len(), 0);
    let again = d.run(&["undeliverable", "clear", "alice@example.org"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("not marked undeliverable"), "{}", stderr(&again));
}

#[test]
fn deliver_never_replaces_an_unusable_signing_key() {
    let d = Desk::new();
    let m = clients::thunderbird_new("Alice Example", "alice@example.org", "support@example.test", "VPN", "x");
    std::fs::create_dir_all(d.path("var")).unwrap();
    std::fs::write(d.path("var/secret"), b"\xff\xfe damaged, but long enough to look like a key").unwrap();
    let out = d.deliver(&m.raw);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a signing key"), "{}", stderr(&out));
    assert_eq!(std::fs::read(d.path("var/secret")).unwrap(), b"\xff\xfe damaged, but long enough to look like a key");
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn data_files_are_private_whatever_the_umask() {
    let d = Desk::new();
    let m = clients::thunderbird_new("Alice Example", "alice@example.org", "support@example.test", "VPN", "x");
    // An MTA running `deliver` with umask 022.
    let mut c = Command::new("sh");
    c.arg("-c").arg(format!("umask 022; exec '{BIN}' --config '{}' deliver --mailbox pipe", d.config.display())).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &m.raw).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&d.path("var")), 0o700, "data dir");
    for f in ["var/postdesk.db", "var/postdesk.db-sent", "var/secret"] {
        assert_eq!(mode(&d.path(f)), 0o600, "{f}");
    }
    for f in ["var/postdesk.db-wal", "var/postdesk.db-shm"] {
        if d.path(f).exists() {
            assert_eq!(mode(&d.path(f)), 0o600, "{f}");
        }
    }
}

#[test]
fn check_warns_about_readable_secrets() {
    use std::os::unix::fs::PermissionsExt;
    let d = Desk::new();
    std::fs::write(d.path("old.key"), "the previous signing key, long\n").unwrap();
    std::fs::set_permissions(d.path("old.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = std::fs::read_to_string(&d.config).unwrap().replace("[desk]\n", "[desk]\nsecret = \"an inline signing key, 0123456789\"\nprevious_secret_file = \"old.key\"\nprevious_secret_until = \"2027-01-31\"\n");
    std::fs::write(&d.config, text).unwrap();
    std::fs::set_permissions(&d.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = d.run(&["check"]);
    assert!(out.status.success(), "warnings are not errors: {}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("old.key") && err.contains("desk.previous_secret_file") && err.contains("0644"), "{err}");
    assert!(err.contains("desk.secret") && err.contains("inline") && err.contains("world-readable"), "{err}");
    // Private files and a private config: no warnings.
    std::fs::set_permissions(d.path("old.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&d.config, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = d.run(&["check"]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn concurrent_delivers_on_a_fresh_data_dir_all_succeed() {
    let d = Desk::new();
    let outs: Vec<Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let d = &d;
                scope.spawn(move || {
                    let m = clients::thunderbird_new("Customer", &format!("c{i}@example.org"), "support@example.test", &format!("Question {i}"), "Hello");
                    d.deliver(&m.raw)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, out) in outs.iter().enumerate() {
        assert!(out.status.success(), "deliver {i}: {:?} {}", out.status, stderr(out));
    }
    assert_eq!(d.json(&["tickets", "list", "--json"]).as_array().unwrap().len(), 12, "every message on a ticket of its own");
}


#[test]
fn status_quarantine_and_backup_for_the_admin() {
    let d = Desk::new();
    // No daemon yet: critical.
    let out = d.run(&["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not running"));

    // A rule quarantines invoices; one arrives through the pipe.
    std::fs::write(d.path("rules.toml"), "[[rule]]\nname = \"hold-invoices\"\n[rule.when]\nsubject = \"/invoice/i\"\n[rule.then]\nquarantine = true\n").unwrap();
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, format!("{cfg}\n[rules]\npath = \"rules.toml\"\n")).unwrap();
    let m = clients::thunderbird_new("Bob Vendor", "bob@example.org", "support@example.test", "Invoice 42", "Please pay.");
    let out = d.deliver(&m.raw);
    assert!(stderr(&out).contains("quarantined"), "{}", stderr(&out));
    let list = d.json(&["quarantine", "list", "--json"]);
    let q = &list.as_array().unwrap()[0];
    assert_eq!(q["reason"], "rule");
    let id = q["id"].as_i64().unwrap().to_string();
    let raw = d.run(&["quarantine", "show", &id, "--raw"]);
    assert_eq!(raw.stdout, m.raw, "show --raw gives the bytes as received");
    let shown = String::from_utf8_lossy(&d.run(&["quarantine", "show", &id]).stdout).into_owned();
    assert!(shown.contains("hold-invoices") && shown.contains("Subject: Invoice 42"), "{shown}");

    // The daemon runs; the quarantine wants a look: warning.
    let log = std::fs::File::create(d.path("daemon.log")).unwrap();
    let mut child = d.cmd(&["run"]).stderr(log).stdout(Stdio::null()).spawn().unwrap();
    let status = common::eventually(Duration::from_secs(60), "the daemon and its mailbox report", || {
        let v = d.json_any(&["status", "--json"]);
        let s = v["components"].to_string();
        (s.contains("running (pid") && s.contains("watching")).then_some(v)
    });
    assert_eq!(status["state"], "warning", "{status}");
    assert_eq!(d.run(&["status"]).status.code(), Some(1));

    // The admin fixes the rule and releases the message: it becomes a ticket, acknowledged.
    std::fs::write(d.path("rules.toml"), "").unwrap();
    let out = d.run(&["quarantine", "release", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("created PD-1"), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(d.json(&["quarantine", "list", "--json"]).as_array().unwrap().len(), 0);
    common::eventually(Duration::from_secs(60), "the acknowledgement sent", || outbox_files(&d).into_iter().find(|f| f.contains("Invoice 42")));
    let v = common::eventually(Duration::from_secs(60), "all well", || {
        let v = d.json_any(&["status", "--json"]);
        (v["state"] == "ok").then_some(v)
    });
    assert_eq!(d.run(&["status"]).status.code(), Some(0), "{v}");

    // Our own acknowledgement comes back through the pipe: kept, and released only with --force.
    let ack = outbox_files(&d).into_iter().find(|f| f.contains("Invoice 42")).unwrap();
    let out = d.deliver(ack.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let list = d.json(&["quarantine", "list", "--json"]);
    let own = list.as_array().unwrap().iter().find(|q| q["reason"] == "own_mail").expect("own mail kept");
    let own_id = own["id"].as_i64().unwrap().to_string();
    let out = d.run(&["quarantine", "release", &own_id]);
    assert!(!out.status.success() && stderr(&out).contains("--force"), "{}", stderr(&out));
    let out = d.run(&["quarantine", "delete", &own_id]);
    assert!(out.status.success());
    assert_eq!(d.json(&["quarantine", "list", "--json"]).as_array().unwrap().len(), 0);

    // A backup while the daemon runs; restored into a fresh data dir, it holds the ticket and the
    // key, so the customer's reply to the old acknowledgement still threads onto PD-1.
    // An OAuth2 refresh token kept in the data dir (`postdesk oauth login`) is backed up too.
    std::fs::create_dir_all(d.path("var/oauth")).unwrap();
    std::fs::write(d.path("var/oauth/support.refresh"), "refresh-token-value").unwrap();
    let out = d.run(&["backup", d.path("backup").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    signal(&child, "TERM");
    assert!(common::eventually(Duration::from_secs(60), "exit", || child.try_wait().unwrap()).success());
    use std::os::unix::fs::PermissionsExt;
    for f in ["postdesk.db", "postdesk.db-sent", "secret", "oauth/support.refresh"] {
        let mode = std::fs::metadata(d.path("backup").join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    std::fs::remove_dir_all(d.path("var")).unwrap();
    std::fs::create_dir_all(d.path("var")).unwrap();
    for f in ["postdesk.db", "postdesk.db-sent", "secret"] {
        std::fs::copy(d.path("backup").join(f), d.path("var").join(f)).unwrap();
    }
    let ack_id = common::header(&ack, "message-id").unwrap();
    let reply = clients::gmail_reply("Bob Vendor", "bob@example.org", "support@example.test", "Re: Invoice 42", ack_id.trim_matches(['<', '>']), std::slice::from_ref(&m.message_id), "Paid?");
    let out = d.deliver(&reply.raw);
    assert!(stderr(&out).contains("added to PD-1"), "{}", stderr(&out));
}

/// GET `path` from 127.0.0.1:`port`: (status code, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

#[test]
fn metrics_and_health_over_http() {
    let d = Desk::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, format!("{cfg}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n")).unwrap();
    let log = std::fs::File::create(d.path("daemon.log")).unwrap();
    let mut child = d.cmd(&["run"]).stderr(log).stdout(Stdio::null()).spawn().unwrap();
    let newdir = d.path("var/maildir/support/new");
    common::eventually(Duration::from_secs(60), "Maildir created", || newdir.is_dir().then_some(()));
    let m = clients::thunderbird_new("Alice Example", "alice@example.org", "support@example.test", "Printer jammed", "Floor 3.");
    std::fs::write(newdir.join("1700000000.1.host"), &m.raw).unwrap();
    common::eventually(Duration::from_secs(60), "acknowledgement sent", || outbox_files(&d).into_iter().next());
    let metrics = common::eventually(Duration::from_secs(60), "metrics show the mail", || {
        let (code, body) = http_get(port, "/metrics")?;
        (code == 200 && body.contains("postdesk_outbox_mails{state=\"sent\"} 1")).then_some(body)
    });
    for line in [
        "postdesk_messages_ingested_total{mailbox=\"support\",class=\"human\"} 1",
        "postdesk_tickets_created_total{mailbox=\"support\"} 1",
        "postdesk_outbox_mails{state=\"queued\"} 0",
        "postdesk_mailbox_up{mailbox=\"support\"} 1",
        "postdesk_outbound_up 1",
        "postdesk_quarantine_messages 0",
        "# EOF",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    assert_eq!(http_get(port, "/health").map(|(c, _)| c), Some(200));
    assert_eq!(http_get(port, "/nothing").map(|(c, _)| c), Some(404));
    signal(&child, "TERM");
    assert!(common::eventually(Duration::from_secs(60), "exit", || child.try_wait().unwrap()).success());
}

#[test]
fn logs_are_plain_without_a_terminal_and_json_on_request() {
    for (env, json) in [(None, false), (Some("json"), true)] {
        let d = Desk::new();
        let log = std::fs::File::create(d.path("daemon.log")).unwrap();
        let mut cmd = d.cmd(&["run"]);
        if let Some(f) = env {
            cmd.env("POSTDESK_LOG_FORMAT", f);
        }
        let mut child = cmd.stderr(log).stdout(Stdio::null()).spawn().unwrap();
        common::eventually(Duration::from_secs(60), "started", || std::fs::read_to_string(d.path("daemon.log")).unwrap().contains("postdesk started").then_some(()));
        signal(&child, "TERM");
        assert!(common::eventually(Duration::from_secs(60), "exit", || child.try_wait().unwrap()).success());
        let text = std::fs::read_to_string(d.path("daemon.log")).unwrap();
        assert!(!text.contains('\x1b'), "no colour codes when stderr is a file:\n{text}");
        for line in text.lines().filter(|l| !l.is_empty()) {
            assert_eq!(serde_json::from_str::<Value>(line).is_ok(), json, "{line}");
        }
    }
}

#[test]
fn a_maildir_backlog_is_stored_in_batches_each_message_once() {
    let d = Desk::new();
    let newdir = d.path("var/maildir/support/new");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(d.path(&format!("var/maildir/support/{sub}"))).unwrap();
    }
    // More than one batch (200) waiting before the daemon starts.
    for i in 0..450 {
        // One domain each: a desk takes at most 200 new tickets an hour from one domain.
        let m = clients::thunderbird_new("Customer", &format!("c@d{i}.example.org"), "support@example.test", &format!("Question {}", common::spelled(&i.to_string())), "Hello");
        std::fs::write(newdir.join(format!("17000000{i:04}.{i}.host")), &m.raw).unwrap();
    }
    let log = std::fs::File::create(d.path("daemon.log")).unwrap();
    let mut child = d.cmd(&["run"]).stderr(log).stdout(Stdio::null()).spawn().unwrap();
    common::eventually(Duration::from_secs(120), "new/ emptied", || (std::fs::read_dir(&newdir).unwrap().count() == 0).then_some(()));
    common::eventually(Duration::from_secs(120), "every acknowledgement written", || (outbox_files(&d).len() == 450).then_some(()));
    signal(&child, "TERM");
    let st = common::eventually(Duration::from_secs(60), "exit", || child.try_wait().unwrap());
    assert!(st.success());
    assert_eq!(std::fs::read_dir(d.path("var/maildir/support/cur")).unwrap().count(), 450);
    assert_eq!(d.json(&["tickets", "list", "--json"]).as_array().unwrap().len(), 450, "each message on a ticket of its own");
}

#[test]
fn tickets_search_ranks_with_snippets_and_refuses_bad_queries() {
    let d = Desk::new();
    for (who, subject, body) in [
        ("ann", "Printer toner empty", "The printer on floor three is out of toner; prints are faded."),
        ("ben", "VPN drops", "The VPN drops every hour. Could the printer driver be the cause?"),
        ("cat", "Café menu", "Please add crème brûlée to the café menu."),
    ] {
        let m = clients::thunderbird_new(who, &format!("{who}@example.org"), "support@example.test", subject, body);
        assert!(d.deliver(&m.raw).status.success());
    }
    let j = d.json(&["tickets", "search", "printer", "--json"]);
    let hits = j["tickets"].as_array().unwrap();
    assert_eq!(hits.iter().map(|h| h["ref"].as_str().unwrap()).collect::<Vec<_>>(), ["PD-1", "PD-2"], "subject and body match ranks first: {j}");
    for k in ["id", "ref", "subject", "status", "snippet", "score"] {
        assert!(hits[0].get(k).is_some(), "missing {k} in {}", hits[0]);
    }
    assert_eq!(hits[0]["status"], "new");
    assert!(hits[0]["snippet"].as_str().unwrap().contains("*Printer*"), "{}", hits[0]);
    assert_eq!(j["articles"], serde_json::json!([]));
    // Every word must occur; diacritics folded; several words as separate arguments.
    assert_eq!(d.json(&["tickets", "search", "printer", "toner", "--json"])["tickets"].as_array().unwrap().len(), 1);
    assert_eq!(d.json(&["tickets", "search", "creme", "brulee", "--json"])["tickets"][0]["ref"], "PD-3");
    assert_eq!(d.json(&["tickets", "search", "printer", "--limit", "1", "--json"])["tickets"].as_array().unwrap().len(), 1);
    // FTS5 syntax is only words here.
    assert_eq!(d.json(&["tickets", "search", "\"printer\" OR *", "--json"])["tickets"].as_array().unwrap().len(), 0, "`or` is a word that no ticket has");
    assert_eq!(d.json(&["tickets", "search", "body:printer", "--json"])["tickets"].as_array().unwrap().len(), 0, "no column filter: `body` is a word too");
    // Text output: reference, status, subject, snippet.
    let out = d.run(&["tickets", "search", "toner"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("PD-1") && text.contains("Printer toner empty") && text.contains("*toner*"), "{text}");
    // Bad queries get a clear answer.
    let out = d.run(&["tickets", "search", "***"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nothing to search for"), "{}", stderr(&out));
    assert_eq!(d.run(&["tickets", "search"]).status.code(), Some(2));
    assert_eq!(d.run(&["tickets", "search", "printer", "--limit", "0"]).status.code(), Some(1));
    let huge = "printer ".repeat(12_000); // 96 KB, under the kernel's limit for one argument
    let out = d.run(&["tickets", "search", &huge]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("PD-1"), "{}", stderr(&out));
    assert!(stderr(&out).contains("a long query: searched for its first 1 word(s) only: printer"), "{}", stderr(&out));
    // Knowledge articles and the report's figures.
    assert_eq!(d.json(&["kb", "list", "--json"]), serde_json::json!([]));
    let out = d.run(&["kb", "show", "KB-1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no article KB-1"));
    assert_eq!(d.run(&["kb", "withdraw", "nonsense"]).status.code(), Some(1));
    assert_eq!(d.json(&["report", "--format", "json"])["knowledge"], serde_json::json!({ "suggested": 0, "deflected": 0 }));
}

#[test]
fn deliver_hands_mail_to_the_running_daemon_and_stores_it_itself_without_one() {
    let d = Desk::new();
    let log = std::fs::File::create(d.path("daemon.log")).unwrap();
    let mut child = Reap(d.cmd(&["run"]).stderr(log).stdout(Stdio::null()).spawn().unwrap());
    let daemon_log = || std::fs::read_to_string(d.path("daemon.log")).unwrap();
    common::eventually(Duration::from_secs(10), "the deliver socket", || d.path("var/deliver.sock").exists().then_some(()));
    assert_eq!(mode(&d.path("var/deliver.sock")), 0o600, "only the desk's user may hand mail over");

    // The daemon stores it and answers after its commit: the ticket is there when deliver exits.
    let m1 = clients::thunderbird_new("Alice", "alice@example.org", "support@example.test", "Printer", "Jammed.");
    let out = d.deliver(&m1.raw);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim(), "created PD-1");
    assert_eq!(d.json(&["tickets", "show", "PD-1", "--json"])["subject"], "Printer");
    assert!(daemon_log().contains("handed over by deliver: created PD-1"), "{}", daemon_log());
    // Same answers as storing it here: a duplicate, not mail (65), an unknown mailbox (75).
    assert_eq!(stderr(&d.deliver(&m1.raw)).trim(), "duplicate of a stored message on PD-1");
    let junk = d.deliver(b"no header here");
    assert_eq!(junk.status.code(), Some(65), "{}", stderr(&junk));
    let mut c = d.cmd(&["deliver", "--mailbox", "nope"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut c.stdin.take().unwrap(), &m1.raw).unwrap();
    let unknown = c.wait_with_output().unwrap();
    assert_eq!(unknown.status.code(), Some(75), "{}", stderr(&unknown));
    assert!(stderr(&unknown).contains("no mailbox named `nope`"), "{}", stderr(&unknown));
    // A mailbox the running daemon does not have yet (mailboxes change with a restart) is stored
    // by deliver itself from the configuration it reads.
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, format!("{cfg}\n[mailboxes.newpipe]\nkind = \"pipe\"\nqueue = \"support\"\n")).unwrap();
    let m4 = clients::thunderbird_new("Dora", "dora@example.org", "support@example.test", "New box", "Hi.");
    let mut c = d.cmd(&["deliver", "--mailbox", "newpipe"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut c.stdin.take().unwrap(), &m4.raw).unwrap();
    let new_box = c.wait_with_output().unwrap();
    assert_eq!(stderr(&new_box).trim(), "created PD-2", "{}", stderr(&new_box));
    assert!(daemon_log().contains("a mailbox this daemon does not have"), "{}", daemon_log());
    // The acknowledgement goes out from the daemon.
    common::eventually(Duration::from_secs(10), "acknowledgement", || outbox_files(&d).iter().any(|a| a.contains("[PD-1] Printer")).then_some(()));

    // kill -9 leaves the socket file behind: nobody answers there, deliver stores mail itself.
    signal(&child, "KILL");
    child.wait().unwrap();
    assert!(d.path("var/deliver.sock").exists());
    let m2 = clients::thunderbird_new("Bob", "bob@example.org", "support@example.test", "VPN", "Down.");
    let out = d.deliver(&m2.raw);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim(), "created PD-3");
    assert!(!daemon_log().contains("PD-3"), "{}", daemon_log());

    // A new daemon replaces the stale socket; stopping it removes the socket.
    let log = std::fs::OpenOptions::new().append(true).open(d.path("daemon.log")).unwrap();
    let mut child = Reap(d.cmd(&["run"]).stderr(log).stdout(Stdio::null()).spawn().unwrap());
    let m3 = clients::thunderbird_new("Carol", "carol@example.org", "support@example.test", "Mail", "Gone.");
    // (It binds the socket before it says it started.)
    common::eventually(Duration::from_secs(10), "the second daemon started", || (daemon_log().matches("postdesk started").count() == 2).then_some(()));
    let out = d.deliver(&m3.raw);
    assert_eq!(stderr(&out).trim(), "created PD-4");
    assert!(daemon_log().contains("handed over by deliver: created PD-4"), "{}", daemon_log());
    signal(&child, "TERM");
    let status = common::eventually(Duration::from_secs(15), "daemon exit", || child.try_wait().unwrap());
    assert!(status.success(), "exit status {status:?}");
    assert!(!d.path("var/deliver.sock").exists(), "the socket is removed on shutdown");
}

/// A daemon that a failing test must not leave running: killed on drop (a no-op once reaped).
struct Reap(std::process::Child);

impl std::ops::Deref for Reap {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reap {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
