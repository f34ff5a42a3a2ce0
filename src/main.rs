//! `postdesk` binary: parses the command line and hands over to the library.

use clap::{Parser, Subcommand};
use postdesk::commands;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "postdesk", version, about = "Email-first help desk daemon")]
struct Cli {
    /// Config file (default: config/postdesk.toml if it exists, else /etc/postdesk/postdesk.toml).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (logs to stderr; systemd Type=notify).
    Run,
    /// Validate config and templates; print every problem with file, line and key.
    Check {
        /// Then log in to every mailbox and to the SMTP server (nothing fetched or sent).
        #[arg(long)]
        connect: bool,
    },
    /// Ingest one message from stdin (MTA pipe). Exit 0 stored, 75 retry later, 65 not mail.
    Deliver {
        #[arg(long)]
        mailbox: String,
    },
    /// OAuth2 logins of mailboxes and outbound SMTP (`auth = "oauth2"`).
    Oauth {
        #[command(subcommand)]
        command: OauthCommand,
    },
    /// The daemon, each mailbox, the outbox and the quarantine. Exit 0 ok, 1 warning, 2 critical.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Messages kept out of the ticket flow, and what to do with them.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// A consistent copy of the database, the sent log and the signing key into a new folder,
    /// while the daemon runs.
    Backup { dir: PathBuf },
    /// Copy this SQLite desk into an empty PostgreSQL database and verify the copy
    /// (docs/POSTGRES.md). The URL may also come from POSTDESK_MIGRATE_URL (keeps a password
    /// out of the process list).
    Migrate {
        /// postgres://user[:password]@host[:port]/database
        #[arg(long, env = "POSTDESK_MIGRATE_URL")]
        to: String,
    },
    /// Tickets in the database.
    Tickets {
        #[command(subcommand)]
        command: TicketsCommand,
    },
    /// Knowledge articles learnt from solved tickets.
    Kb {
        #[command(subcommand)]
        command: KbCommand,
    },
    /// Rules: dry-run a saved message through the whole pipeline.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Addresses we stopped mailing because they bounced permanently (marks expire after
    /// guard.undeliverable_for, or when the address writes to us).
    Undeliverable {
        #[command(subcommand)]
        command: UndeliverableCommand,
    },
    /// Configuration items from the inventory, with how many tickets each is linked to.
    Cis {
        #[arg(long)]
        json: bool,
    },
    /// What the desk did: tickets per queue and type, SLA compliance, response times, backlog.
    Report {
        /// Start of the period: a duration back from now (7d, 24h) or a date (2026-11-01).
        #[arg(long, default_value = "7d")]
        since: String,
        /// text, json or html (with SVG charts).
        #[arg(long, default_value = "text")]
        format: String,
    },
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// Quarantined messages with the reason each was kept.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Why one message was kept and its header (or, with --raw, its bytes as received).
    Show {
        id: i64,
        #[arg(long)]
        raw: bool,
    },
    /// Run the message through the pipeline again (e.g. after fixing a rule) and take it out.
    Release {
        id: i64,
        /// Also release our own mail that came back (a mail loop).
        #[arg(long)]
        force: bool,
    },
    /// Drop the message for good.
    Delete { id: i64 },
}

#[derive(Subcommand)]
enum TicketsCommand {
    /// List tickets, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        queue: Option<String>,
        /// Only tickets linked to this configuration item.
        #[arg(long)]
        ci: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one ticket with its articles (by id, or by reference like PD-42).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Full-text search: tickets whose messages contain every word, and published articles.
    Search {
        /// Words to look for (any punctuation separates words; no query syntax).
        #[arg(required = true, num_args = 1..)]
        query: Vec<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KbCommand {
    /// Published knowledge articles, newest first.
    List {
        /// Also unpublished solutions and withdrawn articles.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// One article with its text (by id or reference like KB-7).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Publish a solution as a knowledge article (or publish again a withdrawn one).
    Publish {
        id: String,
        #[arg(long)]
        title: Option<String>,
    },
    /// Withdraw a published article: no longer found by customers or suggested.
    Withdraw { id: String },
}

#[derive(Subcommand)]
enum OauthCommand {
    /// Get and store a refresh token with the device authorization grant (RFC 8628): prints a
    /// URL and a code to enter there, waits for the approval, stores the token (mode 0600).
    Login {
        /// The IMAP mailbox to log in.
        #[arg(long, conflicts_with = "outbound", required_unless_present = "outbound")]
        mailbox: Option<String>,
        /// Log in outbound SMTP (`[outbound]`).
        #[arg(long)]
        outbound: bool,
    },
}

#[derive(Subcommand)]
enum UndeliverableCommand {
    /// List the active marks.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Mail ADDRESS again. Exit 1 when it was not marked.
    Clear { address: String },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Show what the desk would do with FILE.eml, without doing it.
    Test {
        file: PathBuf,
        #[arg(long)]
        mailbox: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run | Command::Deliver { .. }) {
        // Reports end quietly when their reader goes away (`postdesk tickets list | head`), the
        // way Unix tools do, instead of panicking on a closed pipe. The daemon and `deliver`
        // keep SIGPIPE ignored: a vanished peer is an error they handle, never a reason to die.
        // SAFETY: called before any thread starts; restores the default disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let config = cli.config.clone().unwrap_or_else(postdesk::config::default_path);
    init_logging(&cli, &config);
    let result: anyhow::Result<i32> = match cli.command {
        Command::Run => run(&config),
        Command::Check { connect } => match commands::check(&config) {
            0 if connect => postdesk::config::load(&config).map_err(postdesk::config::Problems::into_error).and_then(|c| commands::check_connect(&c)),
            code => Ok(code),
        },
        Command::Deliver { mailbox } => Ok(commands::deliver(&config, &mailbox)),
        Command::Tickets { command: TicketsCommand::List { status, queue, ci, json } } => {
            commands::tickets_list(&config, status.as_deref(), queue.as_deref(), ci.as_deref(), json)
        }
        Command::Cis { json } => commands::cis_list(&config, json),
        Command::Oauth { command: OauthCommand::Login { mailbox, outbound: _ } } => commands::oauth_login(&config, mailbox.as_deref()),
        Command::Undeliverable { command: UndeliverableCommand::List { json } } => commands::undeliverable_list(&config, json),
        Command::Undeliverable { command: UndeliverableCommand::Clear { address } } => commands::undeliverable_clear(&config, &address),
        Command::Tickets { command: TicketsCommand::Show { id, json } } => commands::tickets_show(&config, &id, json),
        Command::Tickets { command: TicketsCommand::Search { query, limit, json } } => commands::tickets_search(&config, &query.join(" "), limit, json),
        Command::Kb { command: KbCommand::List { all, json } } => commands::kb_list(&config, all, json),
        Command::Kb { command: KbCommand::Show { id, json } } => commands::kb_show(&config, &id, json),
        Command::Kb { command: KbCommand::Publish { id, title } } => commands::kb_set(&config, &id, true, title.as_deref()),
        Command::Kb { command: KbCommand::Withdraw { id } } => commands::kb_set(&config, &id, false, None),
        Command::Rules { command: RulesCommand::Test { file, mailbox, json } } => commands::rules_test(&config, &file, mailbox.as_deref(), json),
        Command::Report { since, format } => commands::report(&config, &since, &format),
        Command::Status { json } => commands::status(&config, json),
        Command::Quarantine { command: QuarantineCommand::List { json } } => commands::quarantine_list(&config, json),
        Command::Quarantine { command: QuarantineCommand::Show { id, raw } } => commands::quarantine_show(&config, id, raw),
        Command::Quarantine { command: QuarantineCommand::Release { id, force } } => commands::quarantine_release(&config, id, force),
        Command::Quarantine { command: QuarantineCommand::Delete { id } } => commands::quarantine_delete(&config, id),
        Command::Backup { dir } => commands::backup(&config, &dir),
        Command::Migrate { to } => commands::migrate(&config, &to),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("postdesk: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(config: &std::path::Path) -> anyhow::Result<i32> {
    // Two malloc arenas, not one per thread (glibc's default allows 8 per core): the parse
    // threads and the blocking pool otherwise each keep an arena of freed batch memory, which
    // made most of the daemon's resident memory in a backlog (docs/BENCHMARKS.md, issue 14).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: before any thread starts; mallopt only sets glibc's allocator parameters.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(postdesk::daemon::run(config, std::sync::Arc::new(postdesk::clock::SystemClock)))?;
    Ok(0)
}

/// Logs go to stderr: `run` at the config's `log.level` (other commands only warn), overridden by
/// `POSTDESK_LOG`; plain text without colour codes unless stderr is a terminal and NO_COLOR is
/// unset (journald and log files get clean lines); JSON lines with `[log] format = "json"` or
/// `POSTDESK_LOG_FORMAT=json`.
fn init_logging(cli: &Cli, config: &std::path::Path) {
    use std::io::IsTerminal;
    let loaded = matches!(cli.command, Command::Run).then(|| postdesk::config::load(config).ok()).flatten();
    let level = match (&cli.command, &loaded) {
        (Command::Run, Some(c)) => c.log_level.clone(),
        (Command::Run, None) => "info".into(),
        _ => "warn".into(),
    };
    let json = match std::env::var("POSTDESK_LOG_FORMAT") {
        Ok(f) => f == "json",
        Err(_) => loaded.as_ref().is_some_and(|c| c.log_json),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("POSTDESK_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // async-imap traces every command it writes (LOGIN with the password) and every response
    // buffer it parses (whole mails, again on each read): never shown, at any POSTDESK_LOG.
    let no_wire = tracing_subscriber::filter::filter_fn(|m| !(m.target().starts_with("async_imap") && *m.level() == tracing::Level::TRACE));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().finish().with(no_wire).init();
    } else {
        builder.with_ansi(ansi).finish().with(no_wire).init();
    }
}
