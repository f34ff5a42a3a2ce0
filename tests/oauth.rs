//! OAuth2 end to end (scenario 16, issue 13): a real Dovecot offering XOAUTH2/OAUTHBEARER checks
//! bearer tokens at a fake provider's RFC 7662 introspection endpoint (tests/common/
//! oauth_provider.rs), Postfix authenticates our SMTP through Dovecot's SASL. Access tokens live
//! 4 s, so refreshes and expiry mid-IDLE happen during the test; refresh tokens rotate. Then the
//! mailbox's grant is revoked: the password mailbox keeps working, exactly one alert reaches the
//! admin, and after `postdesk oauth login` (the device grant, real binary) the mailbox catches up.
//! Assertions are about order, causality and counts; timeouts only detect hangs.

mod common;
#[path = "common/oauth_provider.rs"]
mod oauth_provider;

use common::{MailServers, clients, header};
use oauth_provider::Provider;
use postdesk::clock::SystemClock;
use postdesk::daemon::Running;
use postdesk::desk::{Desk, KeyMode};
use postdesk::store::{Store, TicketFilter};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Hang detector only.
const WAIT: Duration = Duration::from_secs(90);
const LIFETIME: Duration = Duration::from_secs(4);
const CLIENT_SECRET: &str = "client-secret-not-for-logs";

fn oauth_keys(p: &Provider) -> String {
    format!(
        "auth = \"oauth2\"\noauth2_provider = \"custom\"\ntoken_url = \"{}\"\ndevice_url = \"{}\"\nscopes = [\"mail\"]\nclient_id = \"postdesk-test\"\nclient_secret = \"{CLIENT_SECRET}\"\n",
        p.url("/token"),
        p.url("/device/code")
    )
}

fn desk_toml(s: &MailServers, p: &Provider, data: &Path) -> String {
    format!(
        r#"
[desk]
name = "Example Support"
domain = "desk.example.test"
data_dir = "{data}"
templates_dir = "templates"
secret = "an-hmac-key-for-tests-only-0123456789"
admins = ["carol@example.test"]

[queues.support]
address = "support@example.test"

[queues.billing]
address = "billing@example.test"

[mailboxes.support]
host = "localhost"
port = {imap}
tls = "starttls"
ca_file = "{ca}"
username = "support@example.test"
{oauth}
[mailboxes.billing]
host = "localhost"
port = {imap}
tls = "starttls"
ca_file = "{ca}"
username = "billing@example.test"
password = "{pw}"

[outbound]
transport = "smtp"
host = "localhost"
port = {smtp}
tls = "starttls"
ca_file = "{ca}"
username = "support@example.test"
{oauth}retry_initial = "1s"
retry_max = "2s"
poll_interval = "500ms"
"#,
        data = data.display(),
        imap = s.port("IMAP_PORT"),
        smtp = s.port("SMTP_PORT"),
        ca = s.ca_file(),
        pw = s.password(),
        oauth = oauth_keys(p),
    )
}

struct Daemon {
    rt: tokio::runtime::Runtime,
    running: Option<Running>,
}

impl Daemon {
    fn start(config: &Path) -> Daemon {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let desk = Desk::load(config, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
        let running = rt.block_on(postdesk::daemon::start(desk, config, Arc::new(SystemClock))).unwrap();
        Daemon { rt, running: Some(running) }
    }

    fn store(&self) -> Arc<Store> {
        self.running.as_ref().unwrap().pipeline.store.clone()
    }

    fn tickets_with(&self, subject: &str) -> usize {
        self.store().list_tickets(&TicketFilter::default()).unwrap().iter().filter(|t| t.subject == subject).count()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.stop());
        }
    }
}

/// Run `postdesk oauth login ARGS` (the real binary) while the provider's "user" approves the
/// code; returns its stdout.
fn device_login(p: &Provider, config: &Path, args: &[&str], account: &str) -> String {
    let child = Command::new(env!("CARGO_BIN_EXE_postdesk"))
        .arg("--config")
        .arg(config)
        .args(["oauth", "login"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let code = p.approve_next(account, WAIT);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "oauth login failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(&code) && stdout.contains(&p.url("/device")), "the user is shown the code and the URL:\n{stdout}");
    for secret in ["rt-", "at-", CLIENT_SECRET] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "a secret ({secret}…) was printed:\n{stdout}\n{stderr}");
    }
    stdout
}

/// Everything the daemon logs during this test binary, at debug level (what an admin running
/// with `POSTDESK_LOG=debug` would see; async-imap's wire trace is filtered as `main.rs` does).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> Logs {
        static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let w = logs.clone();
            let _ = tracing_subscriber::fmt().with_env_filter("debug,async_imap=debug").with_ansi(false).with_writer(move || w.clone()).try_init();
            logs
        })
        .clone()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Prints the captured log when the test fails (the daemon runs in process).
struct DumpOnPanic(Logs);

impl Drop for DumpOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let path = std::env::temp_dir().join(format!("postdesk-oauth-test-{}.log", std::process::id()));
            let _ = std::fs::write(&path, self.0.text());
            eprintln!("daemon log: {}", path.display());
        }
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn is_alert(m: &str) -> bool {
    header(m, "subject").is_some_and(|s| s.starts_with("OAuth2 login of support@example.test stopped working"))
}

#[test]
fn oauth2_mailbox_and_smtp_refresh_alert_once_and_catch_up() {
    let logs = Logs::capture();
    let _dump = DumpOnPanic(logs.clone());
    let p = Provider::start(LIFETIME, true);
    let s = MailServers::start_with_oauth(&p.url("/introspect"));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("var");
    let config = common::write_config(dir.path(), &desk_toml(&s, &p, &data));
    // The first logins happened earlier (the mailbox's and SMTP's grants are separate).
    let (imap_rt, imap_grant) = p.grant("support@example.test");
    let (smtp_rt, _) = p.grant("support@example.test");
    let imap_file = data.join("oauth/support.refresh");
    postdesk::oauth::save_refresh_token(&imap_file, &postdesk::config::Secret::new(imap_rt.clone())).unwrap();
    postdesk::oauth::save_refresh_token(&data.join("oauth/outbound.smtp.refresh"), &postdesk::config::Secret::new(smtp_rt)).unwrap();
    let d = Daemon::start(&config);

    // 1. Customer mail over several access-token lifetimes: before each next mail, at least two
    //    more refreshes (the IMAP session re-logs in when its token expires; SMTP refreshes too).
    // Different subjects and texts: a customer repeating herself looks like a responder loop.
    const ISSUES: [(&str, &str); 4] = [
        ("VPN drops every hour", "It disconnects on the hour."),
        ("Printer on floor 3 is jammed", "It says PC LOAD LETTER."),
        ("Cannot open the shared calendar", "Outlook asks for a password again and again."),
        ("New laptop for Bob", "He starts on Monday and needs a docking station."),
    ];
    for (i, (subject, text)) in ISSUES.iter().enumerate() {
        let i = i + 1;
        let subject = subject.to_string();
        let before = p.count("refresh ok");
        let m = clients::thunderbird_new("Alice Example", "alice@example.test", "support@example.test", &subject, text);
        s.send("alice@example.test", &["support@example.test"], &m.raw);
        let ack = s.wait_for("alice", WAIT, |raw| raw.contains(&subject) && header(raw, "in-reply-to").is_some_and(|h| h.contains(&m.message_id)));
        assert!(header(&ack, "from").unwrap().contains("support@example.test"), "{ack}");
        assert_eq!(d.tickets_with(&subject), 1, "exactly one ticket for mail {i}");
        common::eventually(WAIT, "two more token refreshes", || (p.count("refresh ok") >= before + 2).then_some(()));
    }
    // Exactly one acknowledgement per mail, although the mailbox logged in again many times.
    for (i, (subject, _)) in ISSUES.iter().enumerate() {
        let subject = subject.to_string();
        assert_eq!(s.count("alice", |m| header(m, "subject").is_some_and(|h| h.ends_with(&subject))), 1, "one ack for mail {i}");
        assert_eq!(d.tickets_with(&subject), 1);
    }
    assert!(p.count("refresh ok support@example.test") >= 8, "refreshes: {:?}", p.log());
    assert!(p.count("introspect active support@example.test") >= 5, "Dovecot checked our tokens: {:?}", p.log());
    assert_eq!(p.count("refresh invalid_grant"), 0);
    // The refresh token rotated and the newest one was saved over the first.
    let saved = std::fs::read_to_string(&imap_file).unwrap();
    assert_ne!(saved.trim(), imap_rt);
    assert_eq!(mode(&imap_file), 0o600);
    // SMTP went through Postfix with XOAUTH2 (Postfix asks Dovecot's SASL).
    let postfix_log = std::fs::read_to_string(&s.env["POSTFIX_LOG"]).unwrap();
    assert!(postfix_log.contains("sasl_method=XOAUTH2, sasl_username=support@example.test"), "{postfix_log}");
    let states = d.store().oauth_states().unwrap();
    assert_eq!(states.iter().map(|s| (s.name.as_str(), s.ok)).collect::<Vec<_>>(), vec![("mailboxes.support", true), ("outbound", true)]);

    // 2. The user revokes the mailbox's consent. The mailbox cannot log in once its token
    //    expires; the password mailbox goes on; one alert reaches the admin.
    //    (The session open now goes on until its token expires: tokens are checked at login.)
    p.revoke(imap_grant);
    let alert = s.wait_for("carol", WAIT, is_alert);
    assert!(alert.contains("postdesk oauth login --mailbox support"), "{alert}");
    assert!(alert.contains("invalid_grant"), "{alert}");
    let billing = clients::thunderbird_new("Bob Example", "bob@example.test", "billing@example.test", "Invoice 42 is wrong", "Please fix.");
    s.send("bob@example.test", &["billing@example.test"], &billing.raw);
    s.wait_for("bob", WAIT, |raw| raw.contains("Invoice 42 is wrong") && header(raw, "in-reply-to").is_some_and(|h| h.contains(&billing.message_id)));
    // The alert came from a failed refresh, so the mailbox has no session now: this mail waits.
    let during = clients::thunderbird_new("Alice Example", "alice@example.test", "support@example.test", "Sent while the login was revoked", "Hello?");
    s.send("alice@example.test", &["support@example.test"], &during.raw);
    // Retries go on with backoff; still exactly one alert, and the mail waits on the server.
    let failed = p.count("refresh invalid_grant");
    common::eventually(WAIT, "two more failed refreshes", || (p.count("refresh invalid_grant") >= failed + 2).then_some(()));
    assert_eq!(d.tickets_with("Sent while the login was revoked"), 0, "no login, no intake");
    let state = d.store().oauth_states().unwrap().into_iter().find(|s| s.name == "mailboxes.support").unwrap();
    assert!(!state.ok && state.alerted_at.is_some(), "{state:?}");
    let error = state.last_error.clone().unwrap();
    assert!(error.contains("invalid_grant") && !error.contains("rt-") && !error.contains(CLIENT_SECRET), "{error}");
    assert_eq!(s.count("carol", is_alert), 1, "exactly one alert");
    // `postdesk status` names the failing login and what fixes it (exit 2: something is down).
    let status = Command::new(env!("CARGO_BIN_EXE_postdesk")).arg("--config").arg(&config).arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(2), "{text}");
    let line = text.lines().find(|l| l.starts_with("mailbox support")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("CRITICAL") && line.contains("invalid_grant") && line.contains("oauth login"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("mailbox billing") && l.contains("OK")), "{text}");

    // 3. The admin logs in again (device grant): the daemon notices, the waiting mail is handled.
    let out = device_login(&p, &config, &["--mailbox", "support"], "support@example.test");
    assert!(out.contains(&imap_file.display().to_string()), "{out}");
    assert_eq!(mode(&imap_file), 0o600);
    s.wait_for("alice", WAIT, |raw| raw.contains("Sent while the login was revoked") && header(raw, "in-reply-to").is_some_and(|h| h.contains(&during.message_id)));
    assert_eq!(d.tickets_with("Sent while the login was revoked"), 1);
    common::eventually(WAIT, "state ok again", || d.store().oauth_states().unwrap().iter().all(|s| s.ok && s.alerted_at.is_none()).then_some(()));
    // Mail after the fix is handled as before, and nobody got a second alert.
    let after = clients::thunderbird_new("Alice Example", "alice@example.test", "support@example.test", "Thanks, works again", "Cheers.");
    s.send("alice@example.test", &["support@example.test"], &after.raw);
    s.wait_for("alice", WAIT, |raw| header(raw, "in-reply-to").is_some_and(|h| h.contains(&after.message_id)));
    assert_eq!(s.count("carol", is_alert), 1, "exactly one alert");
    assert_eq!(d.tickets_with("Sent while the login was revoked"), 1);
    // Logged once each, and no token or client secret anywhere in the log.
    let text = logs.text();
    assert_eq!(text.matches("OAuth2 token refresh failed").count(), 1, "the failure is logged once");
    assert_eq!(text.matches("OAuth2 login works again").count(), 1);
    assert!(text.contains("access token expired: logging in again"), "re-login mid-IDLE");
    let secret = regex::Regex::new(r"\b(at|rt)-\d+|client-secret-not|dXNlcj1zdXBwb3J0").unwrap();
    assert!(!secret.is_match(&text), "a secret in the log: {:?}", secret.find(&text).map(|m| &text[m.start().saturating_sub(200)..(m.end() + 100).min(text.len())]));
    eprintln!(
        "oauth e2e: {} refreshes ok, {} refused, {} introspections, 1 alert",
        p.count("refresh ok"),
        p.count("refresh invalid_grant"),
        p.count("introspect")
    );
}

/// `postdesk oauth login --outbound` against the fake provider: polls while the user has not
/// approved yet, stores the refresh token 0600 in a 0700 folder, and the token works.
#[test]
fn device_login_stores_a_working_refresh_token_0600() {
    let p = Provider::start(LIFETIME, false);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("var");
    let text = format!(
        "[desk]\ndata_dir = \"{}\"\n[queues.support]\naddress = \"support@example.test\"\n[mailboxes.support]\nkind = \"pipe\"\n[outbound]\ntransport = \"smtp\"\nhost = \"127.0.0.1\"\nusername = \"support@example.test\"\n{}",
        data.display(),
        oauth_keys(&p)
    );
    let config = common::write_config(dir.path(), &text);
    device_login(&p, &config, &["--outbound"], "support@example.test");
    let file = data.join("oauth/outbound.smtp.refresh");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    assert!(p.count("device approved support@example.test") == 1, "{:?}", p.log());
    // The stored token is the one the provider issued: it refreshes.
    let cfg = postdesk::config::load(&config).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let token = rt.block_on(postdesk::oauth::fresh_access_token(cfg.outbound.oauth2.as_ref().unwrap())).unwrap();
    assert!(token.secret.expose().starts_with("at-"));
    assert_eq!(p.count("refresh ok support@example.test"), 1);
    // A revoked token is a typed error the lead's `status`/`check --connect` can act on.
    std::fs::write(&file, "rt-unknown\n").unwrap();
    let err = rt.block_on(postdesk::oauth::fresh_access_token(cfg.outbound.oauth2.as_ref().unwrap())).unwrap_err();
    assert!(matches!(err, postdesk::oauth::TokenError::Revoked(_)), "{err:?}");
    assert!(!err.to_string().contains("rt-unknown"), "{err}");
    std::fs::remove_file(&file).unwrap();
    let err = rt.block_on(postdesk::oauth::fresh_access_token(cfg.outbound.oauth2.as_ref().unwrap())).unwrap_err();
    assert!(matches!(&err, postdesk::oauth::TokenError::Config(m) if m.contains("postdesk oauth login --outbound")), "{err:?}");
    let _: PathBuf = file;
}

/// Both SASL responses against the real Dovecot: a valid token logs in with XOAUTH2 and with
/// OAUTHBEARER (RFC 7628), a bad one is refused (the error challenge is answered, nothing hangs).
#[test]
fn sasl_xoauth2_and_oauthbearer_against_dovecot() {
    use postdesk::oauth::{Authenticator, Mechanism};
    let p = Provider::start(Duration::from_secs(60), false);
    let s = MailServers::start_with_oauth(&p.url("/introspect"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let port = s.port("IMAP_PORT");
    let login = |mechanism: Mechanism, token: String| {
        rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let mut client = async_imap::Client::new(tcp);
            client.read_response().await.unwrap();
            let auth = Authenticator::new(mechanism, "support@example.test", &postdesk::config::Secret::new(token));
            let r = tokio::time::timeout(WAIT, client.authenticate(mechanism.name(), auth)).await.expect("no hang");
            match r {
                Ok(mut session) => {
                    let n = session.select("INBOX").await.map(|_| ()).is_ok();
                    let _ = session.logout().await;
                    Ok(n)
                }
                Err((e, _)) => Err(e.to_string()),
            }
        })
    };
    for m in [Mechanism::XOAuth2, Mechanism::OAuthBearer] {
        assert_eq!(login(m, p.access_token("support@example.test")), Ok(true), "{m:?} with a valid token");
        let refused = login(m, "at-forged".to_string());
        assert!(refused.is_err(), "{m:?} with a bad token: {refused:?}");
    }
    assert_eq!(p.count("introspect active support@example.test"), 2, "{:?}", p.log());
    assert_eq!(p.count("introspect inactive"), 2, "{:?}", p.log());
}

/// An SMTP server that offers only OAUTHBEARER (no XOAUTH2): the sender logs in with the RFC 7628
/// initial response; when the server refuses the token (334 with its JSON error), the sender
/// ends the exchange with `^A`, the send fails as the server's trouble, and no token is shown.
#[tokio::test]
async fn smtp_oauthbearer_where_the_server_offers_no_xoauth2() {
    use base64::Engine;
    use std::io::{BufRead, BufReader, Write};
    let accept = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (a, s2) = (accept.clone(), seen.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (accept, seen) = (a.clone(), s2.clone());
            std::thread::spawn(move || {
                let mut out = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                let _ = out.write_all(b"220 bearer.test ESMTP\r\n");
                let mut in_data = false;
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    let cmd = line.trim_end().to_string();
                    line.clear();
                    if in_data {
                        if cmd == "." {
                            in_data = false;
                            let _ = out.write_all(b"250 queued\r\n");
                        }
                        continue;
                    }
                    let reply: String = if cmd.starts_with("EHLO") {
                        "250-bearer.test\r\n250 AUTH OAUTHBEARER PLAIN\r\n".into()
                    } else if let Some(b64) = cmd.strip_prefix("AUTH OAUTHBEARER ") {
                        seen.lock().unwrap().push(String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap());
                        if accept.load(std::sync::atomic::Ordering::SeqCst) { "235 2.7.0 ok\r\n".into() } else { "334 eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=\r\n".into() }
                    } else if cmd == "AQ==" {
                        seen.lock().unwrap().push("^A".into());
                        "535 5.7.8 invalid token\r\n".into()
                    } else if cmd == "DATA" {
                        in_data = true;
                        "354 go on\r\n".into()
                    } else if cmd == "QUIT" {
                        let _ = out.write_all(b"221 bye\r\n");
                        return;
                    } else {
                        "250 ok\r\n".into()
                    };
                    if out.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let p = Provider::start(LIFETIME, false);
    let dir = tempfile::tempdir().unwrap();
    let (rt, _) = p.grant("support@example.test");
    let file = dir.path().join("outbound.refresh");
    postdesk::oauth::save_refresh_token(&file, &postdesk::config::Secret::new(rt)).unwrap();
    let cfg = postdesk::config::OAuth2 {
        name: "outbound".into(),
        provider: postdesk::config::OAuthProvider::Custom,
        token_url: p.url("/token"),
        device_url: None,
        scopes: vec!["mail".into()],
        client_id: "postdesk-test".into(),
        client_secret: None,
        refresh_token_file: file,
    };
    let tokens = Arc::new(postdesk::oauth::TokenSource::new(cfg, Arc::new(SystemClock), None).unwrap());
    let endpoint = postdesk::config::Endpoint {
        host: "127.0.0.1".into(),
        port,
        tls: postdesk::config::Tls::None,
        ca_file: None,
        username: Some("support@example.test".into()),
        password: None,
        connect_timeout: Duration::from_secs(30),
    };
    let mail = postdesk::store::QueuedMail {
        id: 1,
        ticket: None,
        message_id: "m".into(),
        envelope_from: "support@example.test".into(),
        recipients: vec!["alice@example.test".into()],
        raw: b"Subject: hi\r\n\r\nhello\r\n".to_vec(),
        attempts: 0,
    };
    let sender = postdesk::outbound::smtp::SmtpSender::new(&endpoint).unwrap().with_tokens(tokens.clone());
    sender.send(&mail, &mut || true).await.expect("logged in with OAUTHBEARER and sent");
    let first = seen.lock().unwrap()[0].clone();
    assert!(first.starts_with("n,a=support@example.test,\x01auth=Bearer at-") && first.ends_with("\x01\x01"), "{first:?}");

    accept.store(false, std::sync::atomic::Ordering::SeqCst);
    let refused = postdesk::outbound::smtp::SmtpSender::new(&endpoint).unwrap().with_tokens(tokens);
    let err = refused.send(&mail, &mut || true).await.unwrap_err();
    assert_eq!(err.scope, postdesk::outbound::Scope::Server, "{err}");
    assert!(err.message.contains("OAUTHBEARER refused") && err.message.contains("535"), "{err}");
    assert!(!err.message.contains("at-"), "{err}");
    assert_eq!(seen.lock().unwrap().last().map(String::as_str), Some("^A"), "the error challenge was answered");
}

/// `postdesk check --connect` logs OAuth2 mailboxes and SMTP in with tokens (XOAUTH2 at Dovecot
/// and through Postfix), and after a revocation says what failed and what fixes it.
#[test]
fn check_connect_logs_in_with_oauth2() {
    let p = Provider::start(LIFETIME, true);
    let s = MailServers::start_with_oauth(&p.url("/introspect"));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("var");
    let config = common::write_config(dir.path(), &desk_toml(&s, &p, &data));
    let (imap_rt, imap_grant) = p.grant("support@example.test");
    let (smtp_rt, _) = p.grant("support@example.test");
    postdesk::oauth::save_refresh_token(&data.join("oauth/support.refresh"), &postdesk::config::Secret::new(imap_rt)).unwrap();
    postdesk::oauth::save_refresh_token(&data.join("oauth/outbound.smtp.refresh"), &postdesk::config::Secret::new(smtp_rt)).unwrap();
    let check = || {
        let out = Command::new(env!("CARGO_BIN_EXE_postdesk")).arg("--config").arg(&config).args(["check", "--connect"]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (code, text) = check();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.lines().any(|l| l.starts_with("ok") && l.contains("mailbox support") && l.contains("logged in")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("ok") && l.contains("outbound") && l.contains("logged in")), "{text}");
    assert_eq!(p.count("introspect active support@example.test"), 2, "both logins used a token: {:?}", p.log());
    p.revoke(imap_grant);
    let (code, text) = check();
    assert_eq!(code, Some(1), "{text}");
    let line = text.lines().find(|l| l.contains("mailbox support")).unwrap();
    assert!(line.starts_with("FAILED") && line.contains("invalid_grant") && line.contains("postdesk oauth login"), "{text}");
    assert!(!text.contains("rt-") && !text.contains(CLIENT_SECRET), "{text}");
}
