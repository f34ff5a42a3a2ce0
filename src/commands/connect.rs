//! `postdesk check --connect`: log in to every mailbox and to the SMTP server the way the daemon
//! will, without fetching or sending anything, and say in one line per check what works and,
//! for the usual failures, what to change.

use crate::config::{Config, Endpoint, Source, Tls, Transport};

/// One check's outcome.
struct Outcome {
    what: String,
    result: Result<String, String>,
}

/// Run every check; exit 0 when all passed, 1 otherwise.
pub fn check_connect(cfg: &Config) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let outcomes = rt.block_on(checks(cfg));
    let mut failed = 0;
    for o in &outcomes {
        match &o.result {
            Ok(detail) => println!("ok      {}: {detail}", o.what),
            Err(why) => {
                failed += 1;
                println!("FAILED  {}: {why}", o.what);
            }
        }
    }
    println!("{} check(s), {failed} failed", outcomes.len());
    Ok(if failed == 0 { 0 } else { 1 })
}

async fn checks(cfg: &Config) -> Vec<Outcome> {
    let mut out = Vec::new();
    if cfg.store.postgres_url.is_some() {
        // Opening the store creates or upgrades the schema, as the first node would.
        let backend = cfg.backend();
        let what = format!("database ({})", backend.display());
        let result = tokio::task::spawn_blocking(move || crate::store::Store::connect(&backend).and_then(|s| s.leases().map(|l| l.iter().filter(|(n, _, left)| n.starts_with("node:") && *left > 0.0).count())))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map(|nodes| format!("connected, schema up to date, {nodes} node(s) running"));
        out.push(Outcome { what, result });
    }
    for (name, m) in &cfg.mailboxes {
        if let Source::Imap(src) = &m.source {
            let what = format!("mailbox {name} (imap {}:{})", src.endpoint.host, src.endpoint.port);
            let result = match tokens(src.oauth2.as_deref()) {
                Ok(t) => imap(&src.endpoint, &src.folder, t.as_deref()).await.map_err(|e| with_hint(&e, &src.endpoint, 993, 143)),
                Err(e) => Err(e),
            };
            out.push(Outcome { what, result });
        }
    }
    if let Transport::Smtp(e) = &cfg.outbound.transport {
        let what = format!("outbound (smtp {}:{})", e.host, e.port);
        let result = crate::outbound::smtp::SmtpSender::new(e).map_err(|x| x.to_string());
        let result = match (result, tokens(cfg.outbound.oauth2.as_ref())) {
            (Ok(sender), Ok(Some(t))) => Ok(sender.with_tokens(t)),
            (Ok(sender), Ok(None)) => Ok(sender),
            (Err(x), _) | (_, Err(x)) => Err(x),
        };
        let result = match result {
            Ok(sender) => sender.probe().await.map_err(|x| x.to_string()),
            Err(x) => Err(x),
        };
        out.push(Outcome { what, result: result.map_err(|x| with_hint(&x, e, 465, 587)) });
    }
    out
}

/// Access tokens for an `auth = "oauth2"` login (a refresh happens, as in the daemon; no events
/// are recorded).
fn tokens(cfg: Option<&crate::config::OAuth2>) -> Result<Option<std::sync::Arc<crate::oauth::TokenSource>>, String> {
    let Some(cfg) = cfg else { return Ok(None) };
    let t = crate::oauth::TokenSource::new(cfg.clone(), std::sync::Arc::new(crate::clock::SystemClock), None).map_err(|e| e.to_string())?;
    Ok(Some(std::sync::Arc::new(t)))
}

/// TLS, login, the folder, IDLE: what the intake needs.
async fn imap(e: &Endpoint, folder: &str, tokens: Option<&crate::oauth::TokenSource>) -> Result<String, String> {
    let check = async {
        let allowance = crate::intake::bounded::Allowance::unlimited();
        let (mut s, _) = crate::intake::imap::connect_with(e, tokens, allowance).await.map_err(|x| x.to_string())?;
        let caps = s.capabilities().await.map_err(|x| x.to_string())?;
        let idle = caps.has_str("IDLE");
        let mbox = s.select(folder).await.map_err(|x| format!("folder {folder}: {x}"))?;
        let _ = s.logout().await;
        Ok::<_, String>(format!(
            "{}, logged in, folder {folder} has {} message(s), {}",
            tls_word(e.tls),
            mbox.exists,
            if idle { "IDLE offered" } else { "no IDLE (polling)" }
        ))
    };
    tokio::time::timeout(e.connect_timeout * 3, check).await.unwrap_or_else(|_| Err(format!("no answer within {:?}", e.connect_timeout * 3)))
}

fn tls_word(t: Tls) -> &'static str {
    match t {
        Tls::Implicit => "TLS",
        Tls::StartTls => "STARTTLS",
        Tls::None => "no TLS",
    }
}

/// The error, plus what usually causes it.
fn with_hint(err: &str, e: &Endpoint, implicit_port: u16, starttls_port: u16) -> String {
    let l = err.to_ascii_lowercase();
    let hint = if l.contains("certificate") || l.contains("unknownissuer") || l.contains("notvalidforname") {
        format!("the server's certificate is not trusted for `{}`: use the host name on its certificate, or `ca_file` for a private CA", e.host)
    } else if l.contains("refused") {
        format!("nothing listens on {}:{}: check host and port", e.host, e.port)
    } else if l.contains("auth") || l.contains("login") || l.contains("535") || l.contains("credentials") {
        if l.contains("oauth2") || l.contains("xoauth2") || l.contains("oauthbearer") || l.contains("refresh token") {
            "the OAuth2 login failed: see the provider's answer; `postdesk oauth login` gets a new refresh token".into()
        } else {
            "the server refused the login: check username and password (Microsoft 365 and Gmail accept only OAuth2 or an app password)".into()
        }
    } else if matches!(e.tls, Tls::Implicit) && e.port == starttls_port {
        format!("port {starttls_port} speaks STARTTLS: set tls = \"starttls\" (or use port {implicit_port} for implicit TLS)")
    } else if matches!(e.tls, Tls::StartTls | Tls::None) && e.port == implicit_port {
        format!("port {implicit_port} expects TLS from the first byte: set tls = \"implicit\"")
    } else if l.contains("tls") || l.contains("corrupt") || l.contains("handshake") || l.contains("timed out") || l.contains("no answer") {
        format!("TLS mode and port may not match (implicit TLS is usually {implicit_port}, STARTTLS {starttls_port})")
    } else {
        return err.to_string();
    };
    format!("{err} — hint: {hint}")
}
