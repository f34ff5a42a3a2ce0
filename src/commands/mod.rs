//! The CLI's commands other than `run`: each takes parsed arguments and returns an exit code,
//! printing results to stdout and problems to stderr. `main.rs` only parses and dispatches.

use crate::clock::{Clock, SharedClock, SystemClock};
use crate::config::Problems;
use crate::desk::{Desk, KeyMode};
use crate::pipeline::{Delivery, Pipeline};
use crate::store::{Store, TicketFilter};
use crate::ticket::{Status, TicketDetail};
use std::io::Read;

mod connect;
mod knowledge;
mod ops;
pub use connect::check_connect;
pub use knowledge::{kb_list, kb_set, kb_show, tickets_search};
pub use ops::{backup, migrate, quarantine_delete, quarantine_list, quarantine_release, quarantine_show, status};
use std::path::Path;
use std::sync::Arc;

pub use crate::intake::handoff::{EX_DATAERR, EX_TEMPFAIL};
use crate::intake::handoff;

fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

fn print_problems(p: &Problems) {
    for problem in &p.0 {
        eprintln!("{problem}");
    }
}

/// `postdesk check`: validate config and templates; exit 0 only when everything is valid.
pub fn check(config: &Path) -> i32 {
    match Desk::load(config, KeyMode::ReadOnly) {
        Ok(desk) => {
            let c = &desk.config;
            println!(
                "{}: ok ({} queue(s), {} mailbox(es), outbound: {}, templates: {})",
                config.display(),
                c.queues.len(),
                c.mailboxes.len(),
                match &c.outbound.transport {
                    crate::config::Transport::Smtp(e) => format!("smtp {}:{}", e.host, e.port),
                    crate::config::Transport::Folder(p) => format!("folder {}", p.display()),
                },
                c.desk.templates_dir.display()
            );
            for w in secret_warnings(c) {
                eprintln!("warning: {w}");
            }
            for (what, e) in c.endpoints() {
                if e.insecure() {
                    eprintln!("warning: {what}: plain TCP to {}:{} (not loopback): mail{} cross the network in clear", e.host, e.port, if e.username.is_some() { " and the password" } else { "" });
                }
            }
            0
        }
        Err(p) => {
            print_problems(&p);
            if !p.is_not_found() {
                eprintln!("{} problem(s) found", p.0.len());
            }
            1
        }
    }
}

/// Secrets others can read: `*_file`s and data-dir files with group/world bits, and inline
/// secrets in a world-readable config file (docs/SECURITY.md).
fn secret_warnings(c: &crate::config::Config) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).ok().map(|m| m.permissions().mode() & 0o777);
    let mut out = Vec::new();
    for s in &c.secret_sources {
        match &s.file {
            Some(f) => {
                if let Some(m) = mode(f).filter(|m| m & 0o077 != 0) {
                    out.push(format!("{} ({}) is readable by group or others (mode {m:04o}); chmod 600 it", f.display(), s.key));
                }
            }
            None => {
                if let Some(m) = mode(&c.file).filter(|m| m & 0o004 != 0) {
                    out.push(format!("{} is world-readable (mode {m:04o}) and holds `{}` inline; use `{}_file` or chmod 640 the config", c.file.display(), s.key, s.key));
                }
            }
        }
    }
    for f in [c.desk.data_dir.join("secret"), c.desk.database.clone()] {
        if let Some(m) = mode(&f).filter(|m| m & 0o077 != 0) {
            out.push(format!("{} is readable by group or others (mode {m:04o}); chmod 600 it", f.display()));
        }
    }
    out
}

/// `postdesk deliver --mailbox NAME`: one message from stdin. 0 stored or deliberately dropped,
/// 75 could not be stored (the MTA retries), 65 not mail at all. Handed to the running daemon
/// when one serves this desk's data folder (`intake::handoff`), stored here otherwise.
pub fn deliver(config: &Path, mailbox: &str) -> i32 {
    let mut raw = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut raw) {
        eprintln!("postdesk deliver: cannot read stdin: {e}");
        return EX_TEMPFAIL;
    }
    let cfg = match crate::config::load(config) {
        Ok(c) => c,
        Err(p) => {
            print_problems(&p);
            let what = if p.is_not_found() { "configuration not found" } else { "configuration invalid" };
            eprintln!("postdesk deliver: {what}; message not stored (the MTA will retry)");
            return EX_TEMPFAIL;
        }
    };
    let (code, line) = match handoff::hand_over(&handoff::socket_path(&cfg.desk.data_dir), mailbox, &raw) {
        Some(answer) => answer,
        None => deliver_here(cfg, config, mailbox, &raw),
    };
    eprintln!("{line}");
    code
}

/// Store one message in this process (no daemon took it).
fn deliver_here(cfg: crate::config::Config, config: &Path, mailbox: &str, raw: &[u8]) -> (i32, String) {
    let desk = match Desk::for_one_message(cfg) {
        Ok(d) => d,
        Err(p) => {
            print_problems(&p);
            return (EX_TEMPFAIL, "postdesk deliver: configuration invalid; message not stored (the MTA will retry)".into());
        }
    };
    if !desk.config.mailboxes.contains_key(mailbox) {
        let known = desk.config.mailboxes.keys().cloned().collect::<Vec<_>>().join(", ");
        return (EX_TEMPFAIL, format!("postdesk deliver: no mailbox named `{mailbox}` in {} (known: {known}); message not stored", config.display()));
    }
    let store = match Store::connect(&desk.config.backend()) {
        Ok(s) => Arc::new(s),
        Err(e) => return (EX_TEMPFAIL, format!("postdesk deliver: {e}")),
    };
    let pipeline = Pipeline::new(store, clock());
    handoff::answer(pipeline.ingest_strict(&desk, Delivery { mailbox, raw, cursor: None, truncated_from: None }), &desk)
}

/// Reading tickets needs only the config: a broken template or rules file (which `check` reports)
/// must not hide the tickets.
fn open_for_reading(config: &Path) -> anyhow::Result<(crate::reference::RefFormat, Store)> {
    let cfg = crate::config::load(config).map_err(crate::config::Problems::into_error)?;
    Ok((crate::reference::RefFormat::new(&cfg.desk.ref_prefix), Store::connect(&cfg.backend())?))
}

/// `postdesk undeliverable list`: the marks that still stop mail (younger than
/// `guard.undeliverable_for`).
pub fn undeliverable_list(config: &Path, json: bool) -> anyhow::Result<i32> {
    let cfg = crate::config::load(config).map_err(crate::config::Problems::into_error)?;
    let store = Store::connect(&cfg.backend())?;
    let now = crate::pipeline::Now::at(clock().now());
    let marks = store.undeliverable_marks(&now.minus(cfg.guard.undeliverable_for))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&marks)?);
    } else {
        println!("{:<40} {:<26} REASON", "ADDRESS", "SINCE");
        for m in &marks {
            println!("{:<40} {:<26} {}", m.address, m.since, m.reason);
        }
    }
    Ok(0)
}

/// `postdesk undeliverable clear ADDRESS`: mail the address again; 1 when it was not marked.
pub fn undeliverable_clear(config: &Path, address: &str) -> anyhow::Result<i32> {
    let (_, store) = open_for_reading(config)?;
    let address = address.trim().to_ascii_lowercase();
    let mut tx = store.begin()?;
    let cleared = tx.clear_undeliverable(&address)?;
    tx.commit()?;
    if cleared {
        println!("{address}: cleared; it will be mailed again");
        Ok(0)
    } else {
        eprintln!("postdesk: {address} is not marked undeliverable");
        Ok(1)
    }
}

/// `postdesk tickets list`.
pub fn tickets_list(config: &Path, status: Option<&str>, queue: Option<&str>, ci: Option<&str>, json: bool) -> anyhow::Result<i32> {
    let status = status.map(|s| s.parse::<Status>()).transpose().map_err(|e| anyhow::anyhow!(e))?;
    let (refs, store) = open_for_reading(config)?;
    let mut tickets = store.list_tickets(&TicketFilter { status, queue: queue.map(str::to_string), ci: ci.map(str::to_string), ..Default::default() })?;
    for t in &mut tickets {
        t.reference = refs.format(t.id);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&tickets)?);
    } else {
        println!("{:<10} {:<9} {:<7} {:<12} {:<28} {:<20} SUBJECT", "REF", "STATUS", "PRIO", "QUEUE", "REQUESTER", "UPDATED");
        for t in &tickets {
            println!(
                "{:<10} {:<9} {:<7} {:<12} {:<28} {:<20} {}",
                t.reference,
                t.status.as_str(),
                t.priority.as_str(),
                t.queue,
                t.requester,
                t.updated_at,
                t.subject
            );
        }
    }
    Ok(0)
}

/// `postdesk tickets show ID|REF`.
pub fn tickets_show(config: &Path, id: &str, json: bool) -> anyhow::Result<i32> {
    let (refs, store) = open_for_reading(config)?;
    let Some(ticket) = refs.parse_user_input(id) else {
        anyhow::bail!("`{id}` is not a ticket id or reference (e.g. 42 or {})", refs.format(42));
    };
    let Some(mut d) = store.ticket_detail(ticket)? else {
        anyhow::bail!("no ticket {}", refs.format(ticket));
    };
    d.ticket.reference = refs.format(d.ticket.id);
    let rating = store.csat_rating(ticket)?;
    if json {
        let mut v = serde_json::to_value(&d)?;
        v["satisfaction"] = serde_json::to_value(&rating)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_detail(&d);
        if let Some(r) = rating {
            println!("\n  satisfaction {} ({}) by {} at {}{}", r.label, r.scale, r.rated_by, r.rated_at, if r.comment.is_empty() { "" } else { ", with a comment (see the note)" });
        }
    }
    Ok(0)
}

fn print_detail(d: &TicketDetail) {
    let t = &d.ticket;
    println!("{} {}", t.reference, t.subject);
    println!("  status {}  priority {}  queue {}  owner {}", t.status, t.priority, t.queue, t.owner.as_deref().unwrap_or("-"));
    println!("  requester {}  participants {}", t.requester, t.participants.join(", "));
    if !t.tags.is_empty() {
        println!("  tags {}", t.tags.join(", "));
    }
    println!("  created {}  updated {}", t.created_at, t.updated_at);
    for a in &d.articles {
        println!();
        println!("--- #{} {} {} {} → {}  {}", a.id, a.direction.as_str(), a.kind.as_str(), a.from, a.to.join(", "), a.created_at);
        println!("    Subject: {}", a.subject);
        for att in &a.attachments {
            println!("    Attachment: {} ({}, {} bytes)", att.name, att.content_type, att.size);
        }
        for line in a.body_text.lines().take(40) {
            println!("    {line}");
        }
    }
    if !d.events.is_empty() {
        println!();
        for e in &d.events {
            println!("  [{}] {}: {}", e.created_at, e.kind, e.detail);
        }
    }
}

/// `postdesk rules test FILE.eml`: the whole pipeline against the real database, rolled back.
pub fn rules_test(config: &Path, eml: &Path, mailbox: Option<&str>, json: bool) -> anyhow::Result<i32> {
    let desk = Desk::load(config, KeyMode::ReadOnly).map_err(crate::config::Problems::into_error)?;
    let raw = std::fs::read(eml).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", eml.display()))?;
    let mailbox = match mailbox {
        Some(m) if desk.config.mailboxes.contains_key(m) => m.to_string(),
        Some(m) => anyhow::bail!("no mailbox named `{m}` (known: {})", desk.config.mailboxes.keys().cloned().collect::<Vec<_>>().join(", ")),
        None => desk.config.mailboxes.keys().next().cloned().unwrap_or_default(),
    };
    // Read the real history when the database exists; never create one for a dry run.
    let store = if desk.config.store.postgres_url.is_some() || desk.config.desk.database.exists() { Store::connect(&desk.config.backend())? } else { Store::open_in_memory()? };
    let pipeline = Pipeline::new(Arc::new(store), clock());
    let report = pipeline.dry_run(&desk, Delivery { mailbox: &mailbox, raw: &raw, cursor: None, truncated_from: None })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    println!("message:   <{}> from {}", report.message_id, if report.from.is_empty() { "(none)" } else { &report.from });
    println!("subject:   {}", report.subject);
    println!("mailbox:   {mailbox}");
    match &report.verdict {
        Some(v) => println!("guard:     {} (auto-reply {}) — {}", v.class.as_str(), if v.auto_reply_allowed { "allowed" } else { "suppressed" }, v.reasons.join("; ")),
        None => println!("guard:     (not reached)"),
    }
    println!("threading: {}", report.threading.as_deref().unwrap_or("(not reached)"));
    match &report.rules {
        Some(eval) if !desk.rules.is_empty() => {
            println!("rules:     {} rule(s) from {}", desk.rules.len(), desk.rules.source().display());
            for line in eval.describe() {
                println!("  {line}");
            }
        }
        Some(_) => println!("rules:     (no rules file configured)"),
        None => println!("rules:     (not reached)"),
    }
    println!("outcome:   {}", handoff::outcome(&report, &desk));
    for a in &report.actions {
        println!("action:    {a}");
    }
    for m in &report.mails {
        println!("would send {} to {}: {}", m.kind, m.to, m.subject);
    }
    if report.mails.is_empty() {
        println!("would send nothing");
    }
    Ok(0)
}

/// `postdesk report`.
pub fn report(config: &Path, since: &str, format: &str) -> anyhow::Result<i32> {
    let (_, store) = open_for_reading(config)?;
    let now = SystemClock.now();
    let from = match crate::config::parse_duration(since) {
        Ok(d) => now - time::Duration::try_from(d).map_err(|e| anyhow::anyhow!("{e}"))?,
        Err(_) => {
            let date: time::Date = time::Date::parse(since, time::macros::format_description!("[year]-[month]-[day]"))
                .map_err(|_| anyhow::anyhow!("--since `{since}` is neither a duration (7d) nor a date (2026-11-01)"))?;
            date.midnight().assume_utc()
        }
    };
    let rows = store.report_rows(&crate::clock::rfc3339(from))?;
    let mut r = crate::report::build(&rows, from, now);
    let (suggested, deflected) = store.knowledge_figures(&crate::clock::rfc3339(from))?;
    r.knowledge = crate::report::Deflection { suggested, deflected };
    crate::report::add_csat(&mut r, &store.csat_ratings(&crate::clock::rfc3339(from))?);
    match format {
        "text" => print!("{}", crate::report::text(&r)),
        "json" => println!("{}", serde_json::to_string_pretty(&r)?),
        "html" => print!("{}", crate::report::html(&r)),
        other => anyhow::bail!("--format `{other}`: use text, json or html"),
    }
    Ok(0)
}

/// `postdesk cis`: the inventory with ticket counts.
pub fn cis_list(config: &Path, json: bool) -> anyhow::Result<i32> {
    let cfg = crate::config::load(config).map_err(crate::config::Problems::into_error)?;
    let Some(file) = &cfg.cis_file else { anyhow::bail!("no [cis] file configured") };
    let inv = crate::cis::Inventory::load(file).map_err(|p| anyhow::anyhow!("{}", Problems(p)))?;
    let counts = Store::connect(&cfg.backend())?.ci_ticket_counts()?;
    if json {
        let rows: Vec<serde_json::Value> = inv
            .items
            .iter()
            .map(|c| serde_json::json!({ "name": c.name, "type": c.ci_type, "owner": c.owner, "attributes": c.attributes, "tickets": counts.get(&c.name.to_lowercase()).copied().unwrap_or(0) }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{:<20} {:<12} {:<28} TICKETS", "NAME", "TYPE", "OWNER");
        for c in &inv.items {
            println!("{:<20} {:<12} {:<28} {}", c.name, c.ci_type, c.owner, counts.get(&c.name.to_lowercase()).copied().unwrap_or(0));
        }
    }
    Ok(0)
}

/// `postdesk oauth login --mailbox NAME` (or `--outbound` when `mailbox` is `None`): the device
/// authorization grant; the refresh token lands where the config says (0600). A running daemon
/// notices the new token and logs in again.
pub fn oauth_login(config: &Path, mailbox: Option<&str>) -> anyhow::Result<i32> {
    let cfg = match crate::config::load(config) {
        Ok(c) => c,
        Err(p) => {
            print_problems(&p);
            return Ok(1);
        }
    };
    let (oauth, account) = match mailbox {
        Some(name) => match cfg.mailboxes.get(name).map(|m| &m.source) {
            Some(crate::config::Source::Imap(i)) if i.oauth2.is_some() => (i.oauth2.as_deref().cloned(), i.endpoint.username.clone()),
            Some(_) => anyhow::bail!("mailbox `{name}` does not use auth = \"oauth2\""),
            None => anyhow::bail!("no mailbox named `{name}` in {} (known: {})", config.display(), cfg.mailboxes.keys().cloned().collect::<Vec<_>>().join(", ")),
        },
        None => match (&cfg.outbound.transport, &cfg.outbound.oauth2) {
            (crate::config::Transport::Smtp(e), Some(o)) => (Some(o.clone()), e.username.clone()),
            _ => anyhow::bail!("[outbound] does not use SMTP with auth = \"oauth2\""),
        },
    };
    let oauth = oauth.expect("checked above");
    let account = account.unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = rt.block_on(crate::oauth::device_login(&oauth, |p| {
        println!("To let Postdesk use {account}, open");
        println!();
        println!("    {}", p.verification_uri);
        println!();
        println!("and enter the code {} (valid {} minutes). Waiting for the approval…", p.user_code, p.expires_in.as_secs().div_ceil(60));
        if let Some(full) = &p.verification_uri_complete {
            println!("(or open {full} directly)");
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }));
    match result {
        Ok(()) => {
            println!("Logged in. Refresh token stored in {} (mode 0600).", oauth.refresh_token_file.display());
            Ok(0)
        }
        Err(e) => {
            eprintln!("postdesk oauth login: {e}");
            Ok(1)
        }
    }
}
