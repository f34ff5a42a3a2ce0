//! Operating commands: `status` (for people and for Nagios/cron), `quarantine` (see why a
//! message was kept, release or delete it) and `backup`.

use super::{clock, open_for_reading};
use crate::config::Source;
use crate::desk::{Desk, KeyMode};
use crate::pipeline::Pipeline;
use crate::store::Store;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// `postdesk status` exit codes, Nagios style.
pub const OK: i32 = 0;
pub const WARNING: i32 = 1;
pub const CRITICAL: i32 = 2;

/// Queued mail older than this is worth a look.
const STALE_QUEUE: Duration = Duration::from_secs(15 * 60);

/// One line of `status`: a component, its verdict and what to say about it.
#[derive(Debug, serde::Serialize)]
struct Line {
    component: String,
    /// ok | warning | critical
    state: &'static str,
    detail: String,
}

fn line(component: impl Into<String>, code: i32, detail: String) -> Line {
    let state = match code {
        OK => "ok",
        WARNING => "warning",
        _ => "critical",
    };
    Line { component: component.into(), state, detail }
}

/// `postdesk status [--json]`: the daemon, each mailbox (last good poll, state, server backlog),
/// the outbox (queued, failed, oldest), the quarantine. Exit 0 when all is well, 1 when
/// something wants a look, 2 when something is down.
pub fn status(config: &Path, json: bool) -> anyhow::Result<i32> {
    let cfg = crate::config::load(config).map_err(crate::config::Problems::into_error)?;
    let store = Store::connect(&cfg.backend())?;
    let now = clock().now();
    let age = |at: &str| crate::clock::parse_rfc3339(at).map(|t| humanize(now - t)).unwrap_or_else(|| at.to_string());
    let mut lines = Vec::new();
    // PostgreSQL: every running node renews a `node:NAME` lease; mailboxes and timers have theirs.
    let leases: Vec<(String, String, f64)> = store.leases()?.into_iter().filter(|(_, _, left)| *left > 0.0).collect();
    let holder = |name: &str| leases.iter().find(|(n, _, _)| n == name).map(|(_, h, _)| h.clone());
    lines.push(if store.is_postgres() {
        let nodes: Vec<&str> = leases.iter().filter(|(n, _, _)| n.starts_with("node:")).map(|(_, h, _)| h.as_str()).collect();
        if nodes.is_empty() {
            line("daemon", CRITICAL, "no node running: nothing is fetched or sent".into())
        } else {
            line("daemon", OK, format!("{} node(s) running: {}", nodes.len(), nodes.join(", ")))
        }
    } else {
        match crate::daemon::DaemonLock::holder(&cfg.desk.database) {
            Some(pid) => line("daemon", OK, format!("running (pid {pid})")),
            None => line("daemon", CRITICAL, "not running: nothing is fetched or sent".into()),
        }
    });
    let health = store.health()?;
    for (name, m) in &cfg.mailboxes {
        if matches!(m.source, Source::Pipe) {
            continue;
        }
        let component = format!("mailbox {name}");
        let Some(h) = health.iter().find(|h| h.component == format!("mailbox:{name}")) else {
            lines.push(line(component, WARNING, "no report yet (has the daemon reached it?)".into()));
            continue;
        };
        let mut cursor = store.cursor(name)?.map(|c| format!(", cursor uid {}", c.last_uid)).unwrap_or_default();
        if let Some(h) = holder(&format!("mailbox:{name}")) {
            cursor.push_str(&format!(", read by {h}"));
        }
        let waiting = h.backlog.map(|b| format!(", {b} waiting on the server")).unwrap_or_default();
        let last = h.last_ok_at.as_deref().map(|t| format!("last good poll {} ago", age(t))).unwrap_or_else(|| "never reached".into());
        lines.push(if h.ok {
            line(component, OK, format!("{}; {last}{waiting}{cursor}", h.detail))
        } else {
            line(component, CRITICAL, format!("failing for {}: {}; {last}{cursor}", age(&h.since), h.detail))
        });
    }
    let c = store.outbox_counts()?;
    let oldest = store.oldest_queued()?;
    let stale = oldest.as_deref().and_then(crate::clock::parse_rfc3339).is_some_and(|t| now - t > time::Duration::try_from(STALE_QUEUE).unwrap_or(time::Duration::HOUR));
    let queue = format!("{} queued{}, {} sent, {} failed", c.queued, oldest.as_deref().map(|t| format!(" (oldest {} old)", age(t))).unwrap_or_default(), c.sent, c.failed);
    lines.push(match health.iter().find(|h| h.component == "outbound") {
        Some(h) if !h.ok => line("outbound", CRITICAL, format!("paused for {}: {}; {queue}", age(&h.since), h.detail)),
        _ if stale => line("outbound", WARNING, queue),
        _ => line("outbound", OK, queue),
    });
    let q = store.quarantine_counts()?;
    let total: u64 = q.iter().map(|(_, n)| n).sum();
    let by_reason = q.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ");
    lines.push(if total == 0 {
        line("quarantine", OK, "empty".into())
    } else {
        line("quarantine", WARNING, format!("{total} message(s) kept ({by_reason}): postdesk quarantine list"))
    });
    let code = lines.iter().map(|l| match l.state {
        "ok" => OK,
        "warning" => WARNING,
        _ => CRITICAL,
    });
    let code = code.max().unwrap_or(OK);
    if json {
        let state = ["ok", "warning", "critical"][code as usize];
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "state": state, "components": lines }))?);
    } else {
        for l in &lines {
            println!("{:<20} {:<9} {}", l.component, l.state.to_uppercase(), l.detail);
        }
    }
    Ok(code)
}

/// `3 s`, `12 min`, `5 h`, `2 d`.
fn humanize(d: time::Duration) -> String {
    let s = d.whole_seconds().max(0);
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// `postdesk quarantine list [--json]`.
pub fn quarantine_list(config: &Path, json: bool) -> anyhow::Result<i32> {
    let (_, store) = open_for_reading(config)?;
    let rows = store.quarantined()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!("{:<6} {:<20} {:<12} {:<18} {:>9}  DETAIL", "ID", "WHEN", "MAILBOX", "REASON", "BYTES");
    for q in &rows {
        let when = q.created_at.get(..19).unwrap_or(&q.created_at).replace('T', " ");
        println!("{:<6} {:<20} {:<12} {:<18} {:>9}  {}", q.id, when, q.mailbox, q.reason, q.size, crate::reference::sender_text(&q.detail));
    }
    Ok(0)
}

/// `postdesk quarantine show ID [--raw]`: why it was kept and its header, or its bytes as received.
pub fn quarantine_show(config: &Path, id: i64, raw: bool) -> anyhow::Result<i32> {
    let (_, store) = open_for_reading(config)?;
    let Some((q, bytes)) = store.quarantined_message(id)? else {
        eprintln!("postdesk: no quarantined message {id}");
        return Ok(1);
    };
    if raw {
        std::io::stdout().lock().write_all(&bytes)?;
        return Ok(0);
    }
    println!("id:       {}\nmailbox:  {}\nkept at:  {}\nreason:   {}\ndetail:   {}\nsize:     {} bytes\n", q.id, q.mailbox, q.created_at, q.reason, q.detail, q.size);
    let end = memchr::memmem::find(&bytes, b"\r\n\r\n").or_else(|| memchr::memmem::find(&bytes, b"\n\n")).unwrap_or(bytes.len()).min(64 * 1024);
    // The header as text, without the control characters a sender could use on a terminal.
    let header: String = String::from_utf8_lossy(&bytes[..end]).chars().filter(|c| !c.is_control() || matches!(c, '\n' | '\t')).collect();
    println!("{header}");
    Ok(0)
}

/// `postdesk quarantine release ID [--force]`: through the pipeline again, now.
pub fn quarantine_release(config: &Path, id: i64, force: bool) -> anyhow::Result<i32> {
    let desk = Desk::load(config, KeyMode::Persistent).map_err(crate::config::Problems::into_error)?;
    let store = Arc::new(Store::connect(&desk.config.backend())?);
    let Some((q, bytes)) = store.quarantined_message(id)? else {
        eprintln!("postdesk: no quarantined message {id}");
        return Ok(1);
    };
    let report = Pipeline::new(store, clock()).release(&desk, &q, &bytes, force)?;
    println!("released message {id}: {}", crate::intake::handoff::outcome(&report, &desk));
    Ok(0)
}

/// `postdesk quarantine delete ID`.
pub fn quarantine_delete(config: &Path, id: i64) -> anyhow::Result<i32> {
    let (_, store) = open_for_reading(config)?;
    if store.delete_quarantined(id)? {
        println!("deleted quarantined message {id}");
        Ok(0)
    } else {
        eprintln!("postdesk: no quarantined message {id}");
        Ok(1)
    }
}

/// `postdesk backup DIR`: the database, the sent log and the signing key, consistent and online.
/// `postdesk migrate --to postgres://…`: copy the SQLite desk into an empty PostgreSQL database,
/// verify every table (rows and SHA-256), and say what to change. Progress on a terminal only.
pub fn migrate(config: &Path, to: &str) -> anyhow::Result<i32> {
    use crate::store::{Backend, Progress};
    let cfg = crate::config::load(config).map_err(crate::config::Problems::into_error)?;
    if cfg.store.postgres_url.is_some() {
        anyhow::bail!("this desk already runs on PostgreSQL ([store] backend = \"postgres\"); migrate copies an SQLite desk");
    }
    if !to.starts_with("postgres://") && !to.starts_with("postgresql://") {
        anyhow::bail!("--to: expected a postgres:// URL");
    }
    if !cfg.desk.database.exists() {
        anyhow::bail!("{}: not found (nothing to migrate)", cfg.desk.database.display());
    }
    let from = Store::connect(&cfg.backend())?;
    let target = Backend::Postgres(to.to_string());
    let into = Store::connect(&target)?;
    let chatty = std::io::stderr().is_terminal();
    if chatty {
        eprintln!("copying {} into {} …", cfg.desk.database.display(), target.display());
    }
    let tables = from.copy_to(&into, &mut |p| {
        if !chatty {
            return;
        }
        match p {
            Progress::Copying { table, done, total } => eprint!("\r  {table}: {done}/{total} rows\x1b[K"),
            Progress::Verified(t) => eprintln!("\r  {}: {} rows, sha256 {} — verified\x1b[K", t.table, t.rows, &t.sha256[..16]),
        }
    })?;
    let rows: u64 = tables.iter().map(|t| t.rows).sum();
    println!("migrated {rows} rows in {} tables into {}; counts and checksums match", tables.len(), target.display());
    let key = cfg.desk.data_dir.join("secret");
    println!("next, on every node:");
    if cfg.desk.secret.is_none() {
        println!("  copy {} to each node (mode 0600) and set [desk] secret_file to it: every node signs with this key", key.display());
    }
    println!("  set [store] backend = \"postgres\" and url_file (a file holding the URL) in the config, then start the daemons");
    Ok(0)
}

pub fn backup(config: &Path, dir: &Path) -> anyhow::Result<i32> {
    let cfg = crate::config::load(config).map_err(crate::config::Problems::into_error)?;
    let store = Store::connect(&cfg.backend())?;
    let chatty = std::io::stderr().is_terminal();
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len() as f64 / 1048576.0).unwrap_or(0.0);
    if chatty {
        eprintln!("backing up {} into {} …", cfg.desk.database.display(), dir.display());
    }
    store.backup(dir, &mut |f| {
        if chatty {
            eprintln!("  {} ({:.1} MB)", f.display(), size(f));
        }
    })?;
    let key = cfg.desk.data_dir.join("secret");
    if cfg.desk.secret.is_none() && key.exists() {
        let to = dir.join("secret");
        crate::fsmode::create_new_private(&to, &std::fs::read(&key)?)?;
        if chatty {
            eprintln!("  {} (signing key)", to.display());
        }
    }
    // OAuth2 refresh tokens kept in the data dir (`oauth login`): without them a restored desk
    // would need every OAuth2 mailbox logged in again.
    let tokens = cfg.desk.data_dir.join("oauth");
    if tokens.is_dir() {
        for f in std::fs::read_dir(&tokens)?.flatten().filter(|f| f.path().is_file()) {
            let to = dir.join("oauth").join(f.file_name());
            crate::fsmode::create_new_private(&to, &std::fs::read(f.path())?)?;
            if chatty {
                eprintln!("  {} (OAuth2 refresh token)", to.display());
            }
        }
    }
    if chatty {
        eprintln!("done. Restore: stop the daemon, copy these files into {}, start it.", cfg.desk.data_dir.display());
    }
    Ok(0)
}
