//! Configuration: the TOML file (plus `POSTDESK__SECTION__KEY` environment overrides and `*_file`
//! secrets) is read with the `config` crate into raw serde structs, then validated into typed
//! values in one pass that collects every problem with file, line and key. Nothing else reads
//! the config file or the environment.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One thing wrong with a config, rules or template file, located as precisely as we can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a file set; `Display` prints one per line.
#[derive(Debug, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

/// The message of the one problem a missing config file makes.
const NOT_FOUND: &str = "config file not found (give one with --config PATH; see the README's Configuration)";

impl Problems {
    /// The config file does not exist: nothing in it is invalid, so callers say "not found".
    pub fn is_not_found(&self) -> bool {
        matches!(self.0.as_slice(), [p] if p.message == NOT_FOUND)
    }

    /// One error for a command that cannot go on without a valid config.
    pub fn into_error(self) -> anyhow::Error {
        if self.is_not_found() {
            anyhow::anyhow!("{self}")
        } else {
            anyhow::anyhow!("invalid configuration:\n{self}")
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A secret value (password, HMAC key) that never shows up in logs or Debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How a TCP connection to a mail server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    Implicit,
    /// Plain greeting, then STARTTLS before authenticating (IMAP 143, submission 587).
    StartTls,
    /// No TLS at all; only allowed when the config says so (loopback test servers).
    None,
}

/// Where and how to reach a server, shared by IMAP intake and SMTP outbound.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    /// Extra PEM CA file to trust besides the system roots (private CAs, tests).
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub connect_timeout: Duration,
}

/// Well-known OAuth2 providers whose endpoints and scopes we fill in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthProvider {
    Google,
    Microsoft,
    /// Endpoints and scopes come from the config (`token_url`, `device_url`, `scopes`).
    Custom,
}

/// OAuth2 login (`auth = "oauth2"`) of one IMAP mailbox or of outbound SMTP: where tokens come
/// from. The username of the endpoint is the account the token is for.
#[derive(Debug, Clone)]
pub struct OAuth2 {
    /// Whose token this is, as a config path: `mailboxes.NAME` or `outbound`. Names the state row.
    pub name: String,
    pub provider: OAuthProvider,
    pub token_url: String,
    /// RFC 8628 device authorization endpoint (`postdesk oauth login`).
    pub device_url: Option<String>,
    pub scopes: Vec<String>,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    /// Where the refresh token lives (0600); `postdesk oauth login` writes it, rotation replaces it.
    pub refresh_token_file: PathBuf,
}

/// Google's documented endpoints and scope for IMAP/SMTP (developers.google.com/identity).
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
pub const GOOGLE_DEVICE_URL: &str = "https://oauth2.googleapis.com/device/code";
pub const GOOGLE_SCOPES: &[&str] = &["https://mail.google.com/"];
/// Microsoft identity platform v2.0 endpoints (`{tenant}` is replaced) and the scopes for IMAP and SMTP AUTH.
pub const MICROSOFT_TOKEN_URL: &str = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token";
pub const MICROSOFT_DEVICE_URL: &str = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode";
pub const MICROSOFT_SCOPES: &[&str] = &["https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office.com/SMTP.Send", "offline_access"];

/// What intake does with a server message once it is committed to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterCommit {
    /// Set `\Seen` (the default; the message stays where it is).
    Seen,
    /// Move it to this folder (created if missing).
    Move(String),
}

/// IMAP intake settings of one mailbox.
#[derive(Debug, Clone)]
pub struct ImapSource {
    pub endpoint: Endpoint,
    pub folder: String,
    pub after: AfterCommit,
    pub idle: bool,
    pub poll_interval: Duration,
    /// How many messages one FETCH asks for; bounds memory on a large backlog.
    pub batch_size: u32,
    /// `Some` with `auth = "oauth2"`: log in with SASL XOAUTH2/OAUTHBEARER instead of a password.
    pub oauth2: Option<Box<OAuth2>>,
}

/// Where a mailbox's mail comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Imap(ImapSource),
    /// A Maildir folder the daemon watches (`new/` → processed → `cur/`).
    Maildir { path: PathBuf, poll_interval: Duration },
    /// Only `postdesk deliver --mailbox NAME` feeds it (MTA pipe).
    Pipe,
}

/// An inbound address the desk answers for, mapped to a queue.
#[derive(Debug, Clone)]
pub struct Mailbox {
    pub name: String,
    pub queue: String,
    pub source: Source,
}

/// A queue: where tickets live and which address speaks for them.
#[derive(Debug, Clone)]
pub struct Queue {
    pub name: String,
    pub address: String,
    /// Friendly display name on outgoing mail ("Example Support").
    pub from_name: String,
    /// Send an acknowledgement for new tickets.
    pub acknowledge: bool,
    /// Template used for the acknowledgement.
    pub ack_template: String,
    /// What a customer's mail to a closed ticket does.
    pub on_closed: OnClosed,
    /// With `on_closed = "reopen"`: tickets closed longer ago than this get a new linked ticket.
    pub reopen_within: Option<Duration>,
    /// Put a signed token in our Reply-To (`support+TOKEN@…`) so replies thread even when a
    /// client drops every threading header. Needs plus-addressing on the mail server.
    pub plus_addressing: bool,
    /// `/escalate` moves tickets of this queue here (tier 2); `None` keeps the queue.
    pub escalate_to: Option<String>,
    /// Service-level policy for the queue's tickets (rules may choose another).
    pub sla: Option<String>,
    /// Language of the queue's mail when the customer's is unknown (`templates/lang/XX/`).
    pub language: Option<String>,
    /// Approvers of changes in this queue (else the desk-wide `[approvals]` list).
    pub approvers: Vec<String>,
    /// Whether addresses a participant copies (To/Cc) on their own mail join the ticket.
    pub cc_policy: CcPolicy,
}

/// Per-queue policy for the addresses a participant copies on their mail (docs/SECURITY.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CcPolicy {
    /// They join as participants (RT's Cc watchers): they get agents' replies and may answer.
    Join,
    /// Only the requester (and holders of a token we sent them) take part.
    Ignore,
}

/// Per-queue policy for mail that arrives on a closed ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnClosed {
    /// Reopen the ticket (within `reopen_within`, if set).
    Reopen,
    /// Open a new ticket linked to the closed one.
    NewTicket,
    /// Leave the ticket closed and tell the sender to write a new mail.
    Reject,
}

/// A rate: at most `count` events per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub window: Duration,
}

/// What to do with a new ticket from a sender (or domain) above its rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodAction {
    /// Add the mail to the sender's latest open ticket instead.
    Append,
    /// Keep it in quarantine.
    Quarantine,
}

/// Loop and flood protection.
#[derive(Debug, Clone)]
pub struct Guard {
    /// Caps on ALL automatic mail (acknowledgements, notices, SLA mail) per recipient; a send
    /// over any cap is suppressed and recorded on the ticket.
    pub auto_mail_caps: Vec<Rate>,
    /// Cap on all automatic mail to outside addresses together, whoever it goes to (forged
    /// senders spread over many victims); `None` when "off".
    pub auto_mail_total: Option<Rate>,
    /// Requests per sender address: new tickets plus desk answers (status lists, catalog).
    pub sender_rate: Option<Rate>,
    /// New tickets per sender domain.
    pub domain_rate: Option<Rate>,
    pub flood_action: FloodAction,
    /// How long a hard bounce keeps an address from being mailed (unless it writes first).
    pub undeliverable_for: Duration,
    /// A new mail this soon after our automatic mail to its sender, shaped like the sender's
    /// previous mail, is a responder answering us: kept in quarantine, never answered.
    pub loop_reply_window: Duration,
}

impl Guard {
    /// How far back the automatic-mail log is read: the longest window of the caps, the
    /// desk-wide cap, the sender rate (desk answers) and the loop window. Older rows are pruned.
    pub fn auto_mail_horizon(&self) -> Duration {
        let rates = self.auto_mail_caps.iter().chain(self.auto_mail_total.iter()).chain(self.sender_rate.iter());
        rates.map(|r| r.window).chain([self.loop_reply_window]).max().unwrap_or_default()
    }
}

/// An agent: works tickets from their own mail client.
#[derive(Debug, Clone)]
pub struct Agent {
    pub key: String,
    pub name: String,
    /// Lower-case address their mail comes from and notifications go to.
    pub email: String,
    /// Queues they work; empty = every queue.
    pub queues: Vec<String>,
    /// 1 = first line, 2 = escalation tier.
    pub tier: u8,
    /// Mail them about every new ticket in their queues.
    pub notify_new: bool,
}

impl Agent {
    pub fn works(&self, queue: &str) -> bool {
        self.queues.is_empty() || self.queues.iter().any(|q| q == queue)
    }
}

/// How agents' mail is authenticated beyond the signed reply token.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Also require `Authentication-Results: dkim=pass` or `dmarc=pass` for the From domain,
    /// from one of `trusted_authserv_ids` (RFC 8601 §5: only trust results our own MTA added).
    pub require_dkim: bool,
    pub trusted_authserv_ids: Vec<String>,
    /// Commands (and approvals) are taken only from answers to mail sent at most this long ago.
    pub command_token_max_age: Option<Duration>,
}

/// Targets of one service-level policy, in business seconds of its calendar.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlaTargets {
    pub first_response: Option<u64>,
    pub next_response: Option<u64>,
    pub resolution: Option<u64>,
}

/// When to warn before a target is breached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarnAt {
    /// At this share of the target (80 = 80%).
    Percent(u8),
    /// This many business seconds before the due time.
    Before(u64),
}

/// A named service-level policy.
#[derive(Debug, Clone)]
pub struct SlaPolicy {
    pub name: String,
    /// Calendar name; `None` = 24×7.
    pub calendar: Option<String>,
    pub targets: SlaTargets,
    /// Per-priority overrides of the targets.
    pub by_priority: BTreeMap<crate::ticket::Priority, SlaTargets>,
    pub warn: WarnAt,
    /// On a breach, escalate to tier 2 (as `/escalate` does).
    pub escalate_on_breach: bool,
    /// On a breach, raise the priority to this (never lowers it).
    pub priority_on_breach: Option<crate::ticket::Priority>,
}

impl SlaPolicy {
    /// The targets that apply at `priority`.
    pub fn targets_for(&self, priority: crate::ticket::Priority) -> SlaTargets {
        let o = self.by_priority.get(&priority);
        SlaTargets {
            first_response: o.and_then(|t| t.first_response).or(self.targets.first_response),
            next_response: o.and_then(|t| t.next_response).or(self.targets.next_response),
            resolution: o.and_then(|t| t.resolution).or(self.targets.resolution),
        }
    }
}

/// Service levels: calendars and policies.
#[derive(Debug, Clone, Default)]
pub struct Sla {
    pub calendars: BTreeMap<String, crate::sla::calendar::Calendar>,
    pub policies: BTreeMap<String, SlaPolicy>,
}

impl Sla {
    pub fn calendar(&self, p: &SlaPolicy) -> crate::sla::calendar::Calendar {
        p.calendar.as_ref().and_then(|c| self.calendars.get(c)).cloned().unwrap_or(crate::sla::calendar::Calendar::Always)
    }
}

/// An external group (a vendor's support, another team's desk) we hand tickets to.
#[derive(Debug, Clone)]
pub struct Group {
    pub key: String,
    pub name: String,
    /// Lower-case address we write to and their replies come from.
    pub address: String,
    /// Their ticket number in subjects, as a regex with one capture group.
    pub ticket_pattern: regex::Regex,
}

/// Timers on the ticket lifecycle.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    /// Close resolved tickets after this long (the customer is told with `status_closed`).
    pub close_resolved_after: Option<Duration>,
    /// Remind the customer of a pending ticket after this long (`pending_reminder`).
    pub remind_pending_after: Option<Duration>,
    /// Resolve a pending ticket with no answer after this long (`status_resolved`).
    pub resolve_pending_after: Option<Duration>,
}

/// Customer satisfaction by mail: the resolved notice asks for a rating on this scale.
#[derive(Debug, Clone)]
pub struct Csat {
    pub scale: crate::csat::Scale,
}

/// What customers can do by mail themselves.
#[derive(Debug, Clone)]
pub struct SelfService {
    /// Subjects (compared case-insensitively, trimmed) of a mail asking for "my open tickets".
    pub status_subjects: Vec<String>,
    /// Customers may close their own ticket with `/close` at the top of a reply.
    pub allow_close: bool,
}

/// Search, solutions and suggestions (`[knowledge]`, docs/KNOWLEDGE.md). Agents can search and
/// publish without the section; it tunes the numbers and lets customers search.
#[derive(Debug, Clone)]
pub struct Knowledge {
    /// Most published articles an acknowledgement suggests (0 = none).
    pub suggestions: usize,
    /// An article is suggested only when it shares at least this many words with the new
    /// ticket's subject and first lines (the confidence threshold).
    pub suggest_min_words: usize,
    /// Most results a search by mail answers with.
    pub search_results: usize,
    /// Customers may search published articles by mail (default: on with the section).
    pub customer_search: bool,
}

impl Default for Knowledge {
    fn default() -> Self {
        Knowledge { suggestions: 3, suggest_min_words: 2, search_results: 10, customer_search: false }
    }
}

/// Outbound mail transport.
#[derive(Debug, Clone)]
pub enum Transport {
    Smtp(Endpoint),
    /// Write each mail as a file into this folder (embedded default, no server needed).
    Folder(PathBuf),
}

/// Retry schedule for transient delivery failures: exponential from `initial`, capped at `max`.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

/// Outbound settings.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub transport: Transport,
    pub retry: RetryPolicy,
    /// How often the worker looks for mail queued by other processes (`postdesk deliver`).
    pub poll_interval: Duration,
    /// `Some` with SMTP and `auth = "oauth2"`: AUTH XOAUTH2 instead of a password.
    pub oauth2: Option<OAuth2>,
}

/// Desk-wide identity and storage.
#[derive(Debug, Clone)]
pub struct Desk {
    pub name: String,
    /// Domain of every Message-ID we generate; also names our loop header value.
    pub domain: String,
    pub data_dir: PathBuf,
    pub database: PathBuf,
    pub templates_dir: PathBuf,
    /// Templates here (same names and sub-folders) replace those in `templates_dir`.
    pub templates_override_dir: Option<PathBuf>,
    /// Prefix of ticket references: `PD-` gives `[PD-1042]` in subjects.
    pub ref_prefix: String,
    /// HMAC key for reply tokens; `None` means "generate and keep one in data_dir/secret".
    pub secret: Option<Secret>,
    /// After a key rotation: the previous key, which still verifies (never signs) until the
    /// given moment (unix seconds).
    pub previous_secret: Option<(Secret, i64)>,
    /// Who hears about trouble an admin must fix (an OAuth2 login that stopped working).
    pub admins: Vec<String>,
}

/// Limits that protect the desk from hostile or broken input.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_size: u64,
    /// Most participants (requester included) one ticket takes; more are refused and recorded.
    pub max_participants: u32,
    /// Most outside addresses one mail we send goes to (To plus Cc): one inbound mail never
    /// makes us write to more (issue 17.3).
    pub max_recipients: u32,
}

/// Where a secret (`password`, `secret`, …) was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSource {
    /// Its key path, `mailboxes.support.password`.
    pub key: String,
    /// The `*_file` it was read from; `None` when written inline in the config file.
    pub file: Option<PathBuf>,
}

/// The validated configuration; every field is ready to use.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    /// Where each configured secret came from (for `postdesk check`'s file-mode warnings).
    pub secret_sources: Vec<SecretSource>,
    pub desk: Desk,
    pub queues: BTreeMap<String, Queue>,
    pub mailboxes: BTreeMap<String, Mailbox>,
    pub outbound: Outbound,
    pub limits: Limits,
    pub guard: Guard,
    /// Agents by key; see [`Agent`].
    pub agents: BTreeMap<String, Agent>,
    pub security: Security,
    /// Service levels; empty when the `[sla]` section is absent.
    pub sla: Sla,
    /// The routing rules file or folder (`[rules] path`), if any.
    pub rules: Option<PathBuf>,
    /// Self-service by mail; `None` unless the `[self_service]` section is present.
    pub self_service: Option<SelfService>,
    /// Who approves changes (`[approvals] approvers`; a queue's own list wins).
    pub approvers: Vec<String>,
    /// External specialist groups tickets can be handed to (`[groups.NAME]`).
    pub groups: BTreeMap<String, Group>,
    /// The configuration-item inventory CSV (`[cis] file`), if any.
    pub cis_file: Option<PathBuf>,
    /// Automatic ticket lifecycle (`[lifecycle]`); `None` when absent.
    pub lifecycle: Option<Lifecycle>,
    /// The service catalog file (`[catalog] file`), if any.
    pub catalog_file: Option<PathBuf>,
    /// Who gets the weekly report by mail (`[reports] weekly_to`).
    pub weekly_report_to: Vec<String>,
    /// Customer satisfaction by mail (`[csat]`); `None` when the section is absent.
    pub csat: Option<Csat>,
    /// The knowledge-base folder (`[kb] folder`) and how many articles an acknowledgement suggests.
    pub kb: Option<(PathBuf, usize)>,
    /// Search, solutions, suggestions (`[knowledge]`); defaults without the section.
    pub knowledge: Knowledge,
    pub log_level: String,
    /// `[log] format`: `text` (the default; colours only on a terminal without NO_COLOR) or `json`
    /// (one object per line, for log shippers).
    pub log_json: bool,
    /// `[metrics] listen`: where `/metrics` (Prometheus) and `/health` are served, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Graceful shutdown deadline (finish the message in hand, then abort).
    pub shutdown_timeout: Duration,
    /// `[store]`: where the state lives and, on PostgreSQL, this node's name and lease time.
    pub store: StoreConfig,
}

/// `[store]` (docs/POSTGRES.md).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `None`: SQLite at `[desk] database`. `Some`: the PostgreSQL URL (`url` or `url_file`).
    pub postgres_url: Option<Secret>,
    /// This node's name in leases and `postdesk status` (default: the host name).
    pub node: String,
    /// How long a node's hold on a mailbox or the timers lasts without renewal: after a crash,
    /// another node takes over within this time.
    pub lease_ttl: Duration,
}

impl Config {
    /// The database this desk uses.
    pub fn backend(&self) -> crate::store::Backend {
        match &self.store.postgres_url {
            Some(url) => crate::store::Backend::Postgres(url.expose().to_string()),
            None => crate::store::Backend::Sqlite(self.desk.database.clone()),
        }
    }
}

impl Config {
    /// Every server we connect to, named by its config section.
    pub fn endpoints(&self) -> Vec<(String, &Endpoint)> {
        let boxes = self.mailboxes.iter().filter_map(|(n, m)| match &m.source {
            Source::Imap(i) => Some((format!("mailboxes.{n}"), &i.endpoint)),
            _ => None,
        });
        let out = match &self.outbound.transport {
            Transport::Smtp(e) => Some(("outbound".to_string(), e)),
            Transport::Folder(_) => None,
        };
        boxes.chain(out).collect()
    }

    /// The queue that owns a mailbox. Validation guarantees it exists.
    pub fn queue_of(&self, mailbox: &str) -> Option<&Queue> {
        self.mailboxes.get(mailbox).and_then(|m| self.queues.get(&m.queue))
    }

    /// The agent with this address, if any.
    pub fn agent_by_email(&self, email: &str) -> Option<&Agent> {
        self.agents.values().find(|a| a.email == email)
    }

    /// An agent named by key, name or address (as typed in `/assign`).
    pub fn find_agent(&self, who: &str) -> Option<&Agent> {
        let w = who.trim().to_ascii_lowercase();
        self.agents.values().find(|a| a.email == w || a.key.to_ascii_lowercase() == w || a.name.to_ascii_lowercase() == w)
    }

    /// Every address the desk sends from or receives at (loop protection).
    pub fn own_addresses(&self) -> Vec<String> {
        let mut v: Vec<String> = self.queues.values().map(|q| q.address.to_ascii_lowercase()).collect();
        for m in self.mailboxes.values() {
            if let Source::Imap(i) = &m.source
                && let Some(u) = &i.endpoint.username
                && u.contains('@')
            {
                v.push(u.to_ascii_lowercase());
            }
        }
        v.sort();
        v.dedup();
        v
    }
}

/// The config file used when `--config` is not given: `config/postdesk.toml` if it exists here,
/// else `/etc/postdesk/postdesk.toml`.
pub fn default_path() -> PathBuf {
    let local = PathBuf::from("config/postdesk.toml");
    if local.exists() { local } else { PathBuf::from("/etc/postdesk/postdesk.toml") }
}

// ---------------------------------------------------------------------------------------------
// Raw, as written in the file.

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawConfig {
    desk: RawDesk,
    queues: BTreeMap<String, RawQueue>,
    mailboxes: BTreeMap<String, RawMailbox>,
    outbound: RawOutbound,
    limits: RawLimits,
    guard: RawGuard,
    agents: BTreeMap<String, RawAgent>,
    security: RawSecurity,
    sla: RawSla,
    rules: RawRules,
    self_service: Option<RawSelfService>,
    approvals: RawApprovals,
    cis: RawCis,
    lifecycle: Option<RawLifecycle>,
    catalog: RawCatalog,
    reports: RawReports,
    csat: Option<RawCsat>,
    kb: RawKb,
    knowledge: Option<RawKnowledge>,
    groups: BTreeMap<String, RawGroup>,
    log: RawLog,
    metrics: RawMetrics,
    daemon: RawDaemon,
    store: RawStore,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawStore {
    backend: Option<String>,
    url: Option<String>,
    url_file: Option<String>,
    node: Option<String>,
    lease_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawDesk {
    name: Option<String>,
    domain: Option<String>,
    data_dir: Option<String>,
    database: Option<String>,
    templates_dir: Option<String>,
    templates_override_dir: Option<String>,
    ref_prefix: Option<String>,
    secret: Option<String>,
    secret_file: Option<String>,
    previous_secret: Option<String>,
    previous_secret_file: Option<String>,
    previous_secret_until: Option<String>,
    admins: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawQueue {
    address: Option<String>,
    from_name: Option<String>,
    acknowledge: Option<bool>,
    ack_template: Option<String>,
    on_closed: Option<String>,
    reopen_within: Option<String>,
    plus_addressing: Option<bool>,
    escalate_to: Option<String>,
    sla: Option<String>,
    language: Option<String>,
    approvers: Option<Vec<String>>,
    cc_policy: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawAgent {
    name: Option<String>,
    email: Option<String>,
    queues: Option<Vec<String>>,
    tier: Option<u8>,
    notify_new: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawReports {
    weekly_to: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawCsat {
    scale: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawCatalog {
    file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawKb {
    folder: Option<String>,
    suggestions: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawKnowledge {
    suggestions: Option<usize>,
    suggest_min_words: Option<usize>,
    search_results: Option<usize>,
    customer_search: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawLifecycle {
    close_resolved_after: Option<String>,
    remind_pending_after: Option<String>,
    resolve_pending_after: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawCis {
    file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawApprovals {
    approvers: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawGroup {
    name: Option<String>,
    address: Option<String>,
    ticket_pattern: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawSelfService {
    status_subjects: Option<Vec<String>>,
    allow_close: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRules {
    path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawSla {
    calendars: BTreeMap<String, RawCalendar>,
    policies: BTreeMap<String, RawPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawCalendar {
    timezone: Option<String>,
    mon: Option<String>,
    tue: Option<String>,
    wed: Option<String>,
    thu: Option<String>,
    fri: Option<String>,
    sat: Option<String>,
    sun: Option<String>,
    holidays: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawTargets {
    first_response: Option<String>,
    next_response: Option<String>,
    resolution: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawPolicy {
    calendar: Option<String>,
    first_response: Option<String>,
    next_response: Option<String>,
    resolution: Option<String>,
    warn_at: Option<String>,
    escalate_on_breach: Option<bool>,
    priority_on_breach: Option<String>,
    priority: BTreeMap<String, RawTargets>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawSecurity {
    require_dkim: Option<bool>,
    trusted_authserv_ids: Option<Vec<String>>,
    command_token_max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawGuard {
    auto_mail_caps: Option<Vec<String>>,
    auto_mail_total: Option<String>,
    new_tickets_per_sender: Option<String>,
    new_tickets_per_domain: Option<String>,
    flood_action: Option<String>,
    undeliverable_for: Option<String>,
    loop_reply_window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawServer {
    host: Option<String>,
    port: Option<u16>,
    tls: Option<String>,
    ca_file: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
    connect_timeout: Option<String>,
    auth: Option<String>,
    oauth2_provider: Option<String>,
    tenant: Option<String>,
    token_url: Option<String>,
    device_url: Option<String>,
    scopes: Option<Vec<String>>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<String>,
    refresh_token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawMailbox {
    queue: Option<String>,
    kind: Option<String>,
    // maildir
    path: Option<String>,
    // imap
    #[serde(flatten)]
    server: RawServer,
    folder: Option<String>,
    after: Option<String>,
    move_to: Option<String>,
    idle: Option<bool>,
    poll_interval: Option<String>,
    batch_size: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawOutbound {
    transport: Option<String>,
    folder: Option<String>,
    #[serde(flatten)]
    server: RawServer,
    max_attempts: Option<u32>,
    retry_initial: Option<String>,
    retry_max: Option<String>,
    poll_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawLimits {
    max_message_size: Option<String>,
    max_participants: Option<u32>,
    max_recipients: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawLog {
    level: Option<String>,
    format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawDaemon {
    shutdown_timeout: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// Read, override from the environment, and validate. Returns every problem at once.
pub fn load(path: &Path) -> Result<Config, Problems> {
    let env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("POSTDESK__")).collect();
    load_with_env(path, &env)
}

/// [`load`] with the environment given explicitly (tests).
pub fn load_with_env(path: &Path, env: &[(String, String)]) -> Result<Config, Problems> {
    let problem = |key: &str, message: String| Problem { file: path.to_path_buf(), line: None, key: key.to_string(), message };
    let text = std::fs::read_to_string(path).map_err(|e| {
        let message = match e.kind() {
            std::io::ErrorKind::NotFound => NOT_FOUND.to_string(),
            _ => format!("cannot read config file: {e}"),
        };
        Problems(vec![problem("", message)])
    })?;
    let locator = Locator::new(&text);

    // Secrets are taken as they are: never parsed as numbers (a digits-only password keeps its
    // leading zeros and is no type error) and scrubbed from any message (issue 17.11).
    let (secret_env, plain_env): (Vec<_>, Vec<_>) = env.iter().cloned().partition(|(k, _)| is_secret_env(k));
    let secrets: Vec<String> = secret_env.iter().map(|(_, v)| v.clone()).filter(|v| !v.is_empty()).collect();
    let scrub = |msg: String| secrets.iter().fold(msg, |m, s| m.replace(s.as_str(), "***"));
    let environment = |vars: Vec<(String, String)>, parse: bool| {
        config::Environment::with_prefix("POSTDESK").prefix_separator("__").separator("__").try_parsing(parse).source(Some(vars.into_iter().collect()))
    };
    let built = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .add_source(environment(plain_env, true))
        .add_source(environment(secret_env, false))
        .build()
        .map_err(|e| Problems(vec![Problem { line: locator.line_of_error(&e.to_string()), ..problem("", scrub(e.to_string())) }]))?;
    let value: config::Value = built
        .try_deserialize()
        .map_err(|e| Problems(vec![problem("", scrub(e.to_string()))]))?;

    let mut unknown = Vec::new();
    let raw: RawConfig = serde_ignored::deserialize(value, |p| unknown.push(p.to_string()))
        .map_err(|e| Problems(vec![problem("", scrub(e.to_string()))]))?;

    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut v = Validator { file: path.to_path_buf(), locator, problems: Vec::new(), base, secrets: Vec::new() };
    for key in unknown {
        v.add(&key, "unknown key".to_string());
    }
    let cfg = v.config(raw);
    v.problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    if v.problems.is_empty() { Ok(cfg) } else { Err(Problems(v.problems)) }
}

/// 127.0.0.0/8, ::1 or `localhost`: a connection that never leaves this machine. Names are not
/// resolved (no I/O here).
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Endpoint {
    /// Plain TCP to a host that is not loopback (`tls = "none_insecure"` or an unauthenticated
    /// relay): `check` says so.
    pub fn insecure(&self) -> bool {
        self.tls == Tls::None && !is_loopback(&self.host)
    }
}

/// `POSTDESK__…__PASSWORD` and `POSTDESK__DESK__SECRET`: environment values that are secrets.
fn is_secret_env(key: &str) -> bool {
    let last = key.rsplit("__").next().unwrap_or_default();
    last.eq_ignore_ascii_case("password") || last.eq_ignore_ascii_case("secret") || last.eq_ignore_ascii_case("client_secret")
}

/// Finds the line of a dotted key in the TOML text, so messages can say `file:line`.
struct Locator {
    text: String,
    doc: Option<toml_edit::ImDocument<String>>,
}

impl Locator {
    fn new(text: &str) -> Self {
        Locator { text: text.to_string(), doc: toml_edit::ImDocument::parse(text.to_string()).ok() }
    }

    fn line_of(&self, key: &str) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut item: &toml_edit::Item = doc.as_item();
        let mut span = None;
        for part in key.split('.') {
            let table = item.as_table_like()?;
            let (k, it) = table.get_key_value(part).or_else(|| {
                // environment keys are lower-cased; config keys may not be
                table.iter().find(|(k, _)| k.eq_ignore_ascii_case(part)).and_then(|(k, _)| table.get_key_value(k))
            })?;
            span = k.span().or_else(|| it.span()).or(span);
            item = it;
        }
        span.map(|s| self.text[..s.start.min(self.text.len())].matches('\n').count() + 1)
    }

    /// TOML syntax errors from the `config` crate carry "line N" in their text.
    fn line_of_error(&self, msg: &str) -> Option<usize> {
        let re = regex::Regex::new(r"line (\d+)").ok()?;
        re.captures(msg)?.get(1)?.as_str().parse().ok()
    }
}

struct Validator {
    file: PathBuf,
    locator: Locator,
    problems: Vec<Problem>,
    base: PathBuf,
    secrets: Vec<SecretSource>,
}

impl Validator {
    fn add(&mut self, key: &str, message: String) {
        let line = self.locator.line_of(key).or_else(|| {
            // a missing key: point at its table
            key.rsplit_once('.').and_then(|(parent, _)| self.locator.line_of(parent))
        });
        self.problems.push(Problem { file: self.file.clone(), line, key: key.to_string(), message });
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() { p.to_path_buf() } else { self.base.join(p) }
    }

    fn duration(&mut self, key: &str, raw: &Option<String>, default: Duration) -> Duration {
        match raw {
            None => default,
            Some(s) => match parse_duration(s) {
                Ok(d) => d,
                Err(e) => {
                    self.add(key, e);
                    default
                }
            },
        }
    }

    /// `[desk] previous_secret(_file)` with `previous_secret_until` (RFC 3339 or YYYY-MM-DD, UTC).
    fn previous_secret(&mut self, d: &RawDesk) -> Option<(Secret, i64)> {
        let secret = self.secret("desk.previous_secret", &d.previous_secret, &d.previous_secret_file);
        let until = d.previous_secret_until.as_deref().map(|u| {
            let full = if u.len() == 10 { format!("{u}T00:00:00Z") } else { u.to_string() };
            time::OffsetDateTime::parse(&full, &time::format_description::well_known::Rfc3339).map(|t| t.unix_timestamp())
        });
        match (secret, until) {
            (Some(s), Some(Ok(t))) => Some((s, t)),
            (_, Some(Err(_))) => {
                self.add("desk.previous_secret_until", "expected a date (2027-01-31) or an RFC 3339 time".into());
                None
            }
            (Some(_), None) => {
                self.add("desk.previous_secret_until", "a previous key needs the date its grace period ends".into());
                None
            }
            (None, Some(_)) => {
                self.add("desk.previous_secret", "previous_secret_until without previous_secret or previous_secret_file".into());
                None
            }
            (None, None) => None,
        }
    }

    fn secret(&mut self, key: &str, value: &Option<String>, file: &Option<String>) -> Option<Secret> {
        match (value, file) {
            (Some(_), Some(_)) => {
                self.add(key, format!("give either `{}` or `{}_file`, not both", leaf(key), leaf(key)));
                None
            }
            (Some(v), None) => {
                // Inline in the file (not from an environment override): check warns if others can read it.
                if self.locator.line_of(key).is_some() {
                    self.secrets.push(SecretSource { key: key.to_string(), file: None });
                }
                Some(Secret::new(v.clone()))
            }
            (None, Some(f)) => {
                let p = self.path(f);
                self.secrets.push(SecretSource { key: format!("{key}_file"), file: Some(p.clone()) });
                match std::fs::read_to_string(&p) {
                    Ok(s) => Some(Secret::new(s.trim_end_matches(['\r', '\n']).to_string())),
                    Err(e) => {
                        self.add(&format!("{key}_file"), format!("cannot read {}: {e}", p.display()));
                        None
                    }
                }
            }
            (None, None) => None,
        }
    }

    fn endpoint(&mut self, section: &str, raw: &RawServer, default_ports: (u16, u16, u16)) -> Option<Endpoint> {
        let host = match &raw.host {
            Some(h) if !h.trim().is_empty() => h.trim().to_string(),
            _ => {
                self.add(&format!("{section}.host"), "is required".into());
                return None;
            }
        };
        let tls = match raw.tls.as_deref().unwrap_or("implicit") {
            "implicit" | "tls" | "ssl" => Tls::Implicit,
            "starttls" => Tls::StartTls,
            // Credentials in clear only to this machine, unless the admin says so loudly (17.7).
            "none" | "plain" if !is_loopback(&host) && (raw.username.is_some() || raw.password.is_some() || raw.password_file.is_some()) => {
                self.add(&format!("{section}.tls"), format!("`none` would send the password in clear to {host}, which is not loopback: use implicit or starttls (or `none_insecure` to accept that)"));
                Tls::None
            }
            "none" | "plain" | "none_insecure" => Tls::None,
            other => {
                self.add(&format!("{section}.tls"), format!("unknown value `{other}` (expected implicit, starttls, none or none_insecure)"));
                Tls::Implicit
            }
        };
        let port = raw.port.unwrap_or(match tls {
            Tls::Implicit => default_ports.0,
            Tls::StartTls => default_ports.1,
            Tls::None => default_ports.2,
        });
        let password = self.secret(&format!("{section}.password"), &raw.password, &raw.password_file);
        let oauth = raw.auth.as_deref() == Some("oauth2");
        if oauth && password.is_some() {
            self.add(&format!("{section}.password"), "not used with auth = \"oauth2\" (the login uses a token)".into());
        } else if oauth && raw.username.is_none() {
            self.add(&format!("{section}.username"), "auth = \"oauth2\" needs the account's address as username".into());
        } else if !oauth && raw.username.is_some() != password.is_some() && self.problems.iter().all(|p| !p.key.starts_with(&format!("{section}.password"))) {
            self.add(&format!("{section}.username"), "username and password (or password_file) go together".into());
        }
        let ca_file = raw.ca_file.as_deref().map(|f| self.path(f));
        if let Some(ca) = &ca_file
            && !ca.exists()
        {
            self.add(&format!("{section}.ca_file"), format!("{} does not exist", ca.display()));
        }
        let connect_timeout = self.duration(&format!("{section}.connect_timeout"), &raw.connect_timeout, Duration::from_secs(30));
        Some(Endpoint { host, port, tls, ca_file, username: raw.username.clone(), password, connect_timeout })
    }

    /// `auth`, `oauth2_provider` and the other OAuth2 keys of an IMAP mailbox or of `[outbound]`.
    /// `None` with password login (the OAuth2 keys are then errors).
    fn oauth2(&mut self, section: &str, default_file: &str, raw: &RawServer, data_dir: &Path) -> Option<OAuth2> {
        let k = |leaf: &str| format!("{section}.{leaf}");
        let oauth_keys = [
            ("oauth2_provider", raw.oauth2_provider.is_some()),
            ("tenant", raw.tenant.is_some()),
            ("token_url", raw.token_url.is_some()),
            ("device_url", raw.device_url.is_some()),
            ("scopes", raw.scopes.is_some()),
            ("client_id", raw.client_id.is_some()),
            ("client_secret", raw.client_secret.is_some()),
            ("client_secret_file", raw.client_secret_file.is_some()),
            ("refresh_token_file", raw.refresh_token_file.is_some()),
        ];
        match raw.auth.as_deref().unwrap_or("password") {
            "password" => {
                for (leaf, set) in oauth_keys {
                    if set {
                        self.add(&k(leaf), "only used with auth = \"oauth2\"".into());
                    }
                }
                return None;
            }
            "oauth2" => {}
            other => {
                self.add(&k("auth"), format!("unknown value `{other}` (expected password or oauth2)"));
                return None;
            }
        }
        let provider = match raw.oauth2_provider.as_deref() {
            Some("google") => OAuthProvider::Google,
            Some("microsoft") => OAuthProvider::Microsoft,
            Some("custom") => OAuthProvider::Custom,
            Some(other) => {
                self.add(&k("oauth2_provider"), format!("unknown value `{other}` (expected google, microsoft or custom)"));
                return None;
            }
            None => {
                self.add(&k("oauth2_provider"), "is required with auth = \"oauth2\" (google, microsoft or custom)".into());
                return None;
            }
        };
        if provider != OAuthProvider::Microsoft && raw.tenant.is_some() {
            self.add(&k("tenant"), "only used with oauth2_provider = \"microsoft\"".into());
        }
        let tenant = raw.tenant.clone().unwrap_or_else(|| "common".into());
        if !tenant.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') || tenant.is_empty() {
            self.add(&k("tenant"), format!("`{tenant}` is not a tenant id or domain"));
        }
        let (token_url, device_url, scopes) = match provider {
            OAuthProvider::Custom => {
                let Some(t) = raw.token_url.clone() else {
                    self.add(&k("token_url"), "is required with oauth2_provider = \"custom\"".into());
                    return None;
                };
                (t, raw.device_url.clone(), raw.scopes.clone().unwrap_or_default())
            }
            preset => {
                for (leaf, set) in [("token_url", raw.token_url.is_some()), ("device_url", raw.device_url.is_some())] {
                    if set {
                        self.add(&k(leaf), "only used with oauth2_provider = \"custom\" (the preset knows its endpoints)".into());
                    }
                }
                let (t, d, sc) = if preset == OAuthProvider::Google {
                    (GOOGLE_TOKEN_URL, GOOGLE_DEVICE_URL, GOOGLE_SCOPES)
                } else {
                    (MICROSOFT_TOKEN_URL, MICROSOFT_DEVICE_URL, MICROSOFT_SCOPES)
                };
                let scopes = raw.scopes.clone().unwrap_or_else(|| sc.iter().map(|s| s.to_string()).collect());
                (t.replace("{tenant}", &tenant), Some(d.replace("{tenant}", &tenant)), scopes)
            }
        };
        for (leaf, url) in [("token_url", Some(&token_url)), ("device_url", device_url.as_ref())] {
            if let Some(u) = url
                && let Err(e) = check_token_url(u)
            {
                self.add(&k(leaf), e);
            }
        }
        let client_id = match raw.client_id.as_deref().map(str::trim) {
            Some(c) if !c.is_empty() => c.to_string(),
            _ => {
                self.add(&k("client_id"), "is required with auth = \"oauth2\" (the id of the app you registered)".into());
                String::new()
            }
        };
        let client_secret = self.secret(&k("client_secret"), &raw.client_secret, &raw.client_secret_file);
        let refresh_token_file = match &raw.refresh_token_file {
            Some(f) => self.path(f),
            None => data_dir.join("oauth").join(default_file),
        };
        Some(OAuth2 { name: section.to_string(), provider, token_url, device_url, scopes, client_id, client_secret, refresh_token_file })
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        // [desk]
        let d = &raw.desk;
        let domain = d.domain.clone().unwrap_or_else(|| "localhost".into()).trim().to_ascii_lowercase();
        if domain.is_empty() || !domain.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
            self.add("desk.domain", format!("`{domain}` is not a domain name"));
        }
        let ref_prefix = d.ref_prefix.clone().unwrap_or_else(|| "PD-".into());
        if ref_prefix.is_empty() || !ref_prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '#') {
            self.add("desk.ref_prefix", "must be letters, digits, `-` or `#` (e.g. `PD-`)".into());
        }
        let data_dir = self.path(d.data_dir.as_deref().unwrap_or("var"));
        let database = match &d.database {
            Some(p) => {
                let p = Path::new(p);
                if p.is_absolute() { p.to_path_buf() } else { data_dir.join(p) }
            }
            None => data_dir.join("postdesk.db"),
        };
        let templates_dir = self.path(d.templates_dir.as_deref().unwrap_or("templates"));
        if !templates_dir.is_dir() {
            self.add("desk.templates_dir", format!("{} is not a folder", templates_dir.display()));
        }
        let secret = self.secret("desk.secret", &d.secret, &d.secret_file);
        if let Some(s) = &secret
            && s.expose().len() < 16
        {
            self.add("desk.secret", "must be at least 16 characters".into());
        }
        let desk = Desk {
            name: d.name.clone().unwrap_or_else(|| "Postdesk".into()),
            domain,
            data_dir,
            database,
            templates_dir,
            templates_override_dir: d.templates_override_dir.as_deref().map(|p| self.path(p)),
            ref_prefix,
            secret,
            previous_secret: self.previous_secret(d),
            admins: d.admins.clone().unwrap_or_default().into_iter().map(|a| a.trim().to_ascii_lowercase()).collect(),
        };
        for a in &desk.admins {
            if !looks_like_address(a) {
                self.add("desk.admins", format!("`{a}` is not an email address"));
            }
        }

        // [queues.*]
        let mut queues = BTreeMap::new();
        if raw.queues.is_empty() {
            self.add("queues", "at least one queue is required, e.g. [queues.support] address = \"support@example.com\"".into());
        }
        for (name, q) in &raw.queues {
            let key = format!("queues.{name}");
            if !valid_name(name) {
                self.add(&key, "queue names are letters, digits, `-` and `_`".into());
            }
            let address = match &q.address {
                Some(a) if looks_like_address(a) => a.trim().to_ascii_lowercase(),
                Some(a) => {
                    self.add(&format!("{key}.address"), format!("`{a}` is not an email address"));
                    String::new()
                }
                None => {
                    self.add(&format!("{key}.address"), "is required".into());
                    String::new()
                }
            };
            if let Some(n) = &q.from_name
                && n.contains(['\r', '\n'])
            {
                self.add(&format!("{key}.from_name"), "must be one line".into());
            }
            let on_closed = match q.on_closed.as_deref().unwrap_or("reopen") {
                "reopen" => OnClosed::Reopen,
                "new_ticket" => OnClosed::NewTicket,
                "reject" => OnClosed::Reject,
                other => {
                    self.add(&format!("{key}.on_closed"), format!("unknown value `{other}` (expected reopen, new_ticket or reject)"));
                    OnClosed::Reopen
                }
            };
            let reopen_within = q.reopen_within.as_ref().map(|_| self.duration(&format!("{key}.reopen_within"), &q.reopen_within, Duration::ZERO));
            let cc_policy = match q.cc_policy.as_deref().unwrap_or("join") {
                "join" => CcPolicy::Join,
                "ignore" => CcPolicy::Ignore,
                other => {
                    self.add(&format!("{key}.cc_policy"), format!("unknown value `{other}` (expected join or ignore)"));
                    CcPolicy::Join
                }
            };
            queues.insert(
                name.clone(),
                Queue {
                    name: name.clone(),
                    address,
                    from_name: q.from_name.clone().unwrap_or_else(|| desk.name.clone()),
                    acknowledge: q.acknowledge.unwrap_or(true),
                    ack_template: q.ack_template.clone().unwrap_or_else(|| "acknowledgement".into()),
                    on_closed,
                    reopen_within,
                    plus_addressing: q.plus_addressing.unwrap_or(false),
                    escalate_to: q.escalate_to.clone(),
                    sla: q.sla.clone(),
                    language: q.language.clone(),
                    approvers: q.approvers.clone().unwrap_or_default().into_iter().map(|a| a.trim().to_ascii_lowercase()).collect(),
                    cc_policy,
                },
            );
        }

        for q in queues.values() {
            if let Some(e) = &q.escalate_to
                && !queues.contains_key(e)
            {
                self.add(&format!("queues.{}.escalate_to", q.name), format!("no queue named `{e}`"));
            }
        }

        // [mailboxes.*]
        let mut mailboxes = BTreeMap::new();
        if raw.mailboxes.is_empty() {
            self.add("mailboxes", "at least one mailbox is required, e.g. [mailboxes.support] kind = \"maildir\"".into());
        }
        for (name, m) in &raw.mailboxes {
            let key = format!("mailboxes.{name}");
            if !valid_name(name) {
                self.add(&key, "mailbox names are letters, digits, `-` and `_`".into());
            }
            let queue = match &m.queue {
                Some(q) if queues.contains_key(q) => q.clone(),
                Some(q) => {
                    self.add(&format!("{key}.queue"), format!("no queue named `{q}` (known: {})", queues.keys().cloned().collect::<Vec<_>>().join(", ")));
                    q.clone()
                }
                None if queues.contains_key(name) => name.clone(),
                None => {
                    self.add(&format!("{key}.queue"), "is required (no queue has this mailbox's name)".into());
                    String::new()
                }
            };
            let kind = m.kind.as_deref().unwrap_or("imap");
            let poll = |v: &mut Self, default| v.duration(&format!("{key}.poll_interval"), &m.poll_interval, default);
            let imap_only = [
                ("host", m.server.host.is_some()),
                ("folder", m.folder.is_some()),
                ("after", m.after.is_some()),
                ("idle", m.idle.is_some()),
                ("username", m.server.username.is_some()),
                ("auth", m.server.auth.is_some()),
            ];
            let source = match kind {
                "imap" => {
                    if m.path.is_some() {
                        self.add(&format!("{key}.path"), "only maildir mailboxes have a path".into());
                    }
                    let endpoint = self.endpoint(&key, &m.server, (993, 143, 143));
                    let after = match (m.after.as_deref().unwrap_or("seen"), &m.move_to) {
                        ("seen", None) => AfterCommit::Seen,
                        ("move", Some(f)) if !f.trim().is_empty() => AfterCommit::Move(f.trim().to_string()),
                        ("move", _) => {
                            self.add(&format!("{key}.move_to"), "is required when after = \"move\"".into());
                            AfterCommit::Seen
                        }
                        ("seen", Some(_)) => {
                            self.add(&format!("{key}.move_to"), "only used with after = \"move\"".into());
                            AfterCommit::Seen
                        }
                        (other, _) => {
                            self.add(&format!("{key}.after"), format!("unknown value `{other}` (expected seen or move)"));
                            AfterCommit::Seen
                        }
                    };
                    let oauth2 = self.oauth2(&key, &format!("{name}.refresh"), &m.server, &desk.data_dir.clone());
                    if let Some(e) = &endpoint
                        && oauth2.is_none()
                        && (e.username.is_none() || e.password.is_none())
                        && self.problems.iter().all(|p| !p.key.starts_with(&key))
                    {
                        self.add(&format!("{key}.username"), "IMAP needs username and password (or password_file)".into());
                    }
                    let batch_size = m.batch_size.unwrap_or(50);
                    if batch_size == 0 {
                        self.add(&format!("{key}.batch_size"), "must be at least 1".into());
                    }
                    let poll_interval = poll(self, Duration::from_secs(60));
                    endpoint.map(|endpoint| {
                        Source::Imap(ImapSource {
                            endpoint,
                            folder: m.folder.clone().unwrap_or_else(|| "INBOX".into()),
                            after,
                            idle: m.idle.unwrap_or(true),
                            poll_interval,
                            batch_size: batch_size.max(1),
                            oauth2: oauth2.map(Box::new),
                        })
                    })
                }
                "maildir" | "pipe" => {
                    for (k, set) in imap_only {
                        if set {
                            self.add(&format!("{key}.{k}"), format!("only imap mailboxes have `{k}`"));
                        }
                    }
                    if kind == "maildir" {
                        let path = self.path(m.path.as_deref().unwrap_or(&format!("var/maildir/{name}")));
                        Some(Source::Maildir { path, poll_interval: poll(self, Duration::from_millis(500)) })
                    } else {
                        Some(Source::Pipe)
                    }
                }
                other => {
                    self.add(&format!("{key}.kind"), format!("unknown kind `{other}` (expected imap, maildir or pipe)"));
                    None
                }
            };
            if let Some(source) = source {
                mailboxes.insert(name.clone(), Mailbox { name: name.clone(), queue, source });
            }
        }

        // [outbound]
        let o = &raw.outbound;
        let mut outbound_oauth2 = None;
        let transport = match o.transport.as_deref().unwrap_or("folder") {
            "folder" => {
                if o.server.host.is_some() {
                    self.add("outbound.host", "only used with transport = \"smtp\"".into());
                }
                if o.server.auth.is_some() {
                    self.add("outbound.auth", "only used with transport = \"smtp\"".into());
                }
                Transport::Folder(self.path(o.folder.as_deref().unwrap_or("var/outbox")))
            }
            "smtp" => {
                if o.folder.is_some() {
                    self.add("outbound.folder", "only used with transport = \"folder\"".into());
                }
                outbound_oauth2 = self.oauth2("outbound", "outbound.smtp.refresh", &o.server, &desk.data_dir.clone());
                match self.endpoint("outbound", &o.server, (465, 587, 25)) {
                    Some(e) => Transport::Smtp(e),
                    None => Transport::Folder(PathBuf::new()),
                }
            }
            other => {
                self.add("outbound.transport", format!("unknown transport `{other}` (expected smtp or folder)"));
                Transport::Folder(PathBuf::new())
            }
        };
        let retry = RetryPolicy {
            max_attempts: o.max_attempts.unwrap_or(12).max(1),
            initial: self.duration("outbound.retry_initial", &o.retry_initial, Duration::from_secs(30)),
            max: self.duration("outbound.retry_max", &o.retry_max, Duration::from_secs(3600)),
        };
        let outbound = Outbound {
            transport,
            retry,
            poll_interval: self.duration("outbound.poll_interval", &o.poll_interval, Duration::from_secs(2)),
            oauth2: outbound_oauth2,
        };

        // Two logins refreshing one file would race when the provider rotates refresh tokens.
        let mut files: BTreeMap<PathBuf, String> = BTreeMap::new();
        let logins = mailboxes.values().filter_map(|m| match &m.source {
            Source::Imap(i) => i.oauth2.as_deref(),
            _ => None,
        });
        for o in logins.chain(outbound.oauth2.as_ref()) {
            if let Some(other) = files.insert(o.refresh_token_file.clone(), o.name.clone()) {
                self.add(&format!("{}.refresh_token_file", o.name), format!("{} is also {other}'s; each OAuth2 login needs its own file", o.refresh_token_file.display()));
            }
        }

        let max_message_size = match &raw.limits.max_message_size {
            None => 50 * 1024 * 1024,
            Some(s) => parse_size(s).unwrap_or_else(|e| {
                self.add("limits.max_message_size", e);
                50 * 1024 * 1024
            }),
        };
        let mut count = |key: &str, raw: Option<u32>, default: u32| match raw {
            Some(0) => {
                self.add(key, "must be at least 1".into());
                default
            }
            v => v.unwrap_or(default),
        };
        let max_participants = count("limits.max_participants", raw.limits.max_participants, 20);
        let max_recipients = count("limits.max_recipients", raw.limits.max_recipients, 10);
        let g = &raw.guard;
        // Defaults after Zammad (10 in 10 min) and Znuny (40 per day per address).
        let caps_raw = g.auto_mail_caps.clone().unwrap_or_else(|| vec!["10/10m".into(), "40/1d".into()]);
        let mut auto_mail_caps = Vec::new();
        for c in &caps_raw {
            match parse_rate(c) {
                Ok(r) => auto_mail_caps.push(r),
                Err(e) => self.add("guard.auto_mail_caps", e),
            }
        }
        let mut rate = |key: &str, raw: &Option<String>, default: &str| -> Option<Rate> {
            match raw.as_deref().unwrap_or(default) {
                "off" | "none" => None,
                s => match parse_rate(s) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        self.add(key, e);
                        None
                    }
                },
            }
        };
        let auto_mail_total = rate("guard.auto_mail_total", &g.auto_mail_total, "1000/1h");
        let sender_rate = rate("guard.new_tickets_per_sender", &g.new_tickets_per_sender, "20/1h");
        let domain_rate = rate("guard.new_tickets_per_domain", &g.new_tickets_per_domain, "200/1h");
        let flood_action = match g.flood_action.as_deref().unwrap_or("append") {
            "append" => FloodAction::Append,
            "quarantine" => FloodAction::Quarantine,
            other => {
                self.add("guard.flood_action", format!("unknown value `{other}` (expected append or quarantine)"));
                FloodAction::Append
            }
        };
        let undeliverable_for = self.duration("guard.undeliverable_for", &g.undeliverable_for, Duration::from_secs(30 * 86400));
        let loop_reply_window = self.duration("guard.loop_reply_window", &g.loop_reply_window, Duration::from_secs(120));
        let guard = Guard { auto_mail_caps, auto_mail_total, sender_rate, domain_rate, flood_action, undeliverable_for, loop_reply_window };

        // [agents.*]
        let mut agents = BTreeMap::new();
        let mut seen_emails = std::collections::HashSet::new();
        for (key, a) in &raw.agents {
            let k = format!("agents.{key}");
            let email = match &a.email {
                Some(e) if looks_like_address(e) => e.trim().to_ascii_lowercase(),
                Some(e) => {
                    self.add(&format!("{k}.email"), format!("`{e}` is not an email address"));
                    continue;
                }
                None => {
                    self.add(&format!("{k}.email"), "is required".into());
                    continue;
                }
            };
            if !seen_emails.insert(email.clone()) {
                self.add(&format!("{k}.email"), format!("{email} belongs to another agent too"));
            }
            if queues.values().any(|q| q.address == email) {
                self.add(&format!("{k}.email"), format!("{email} is a queue address; agents need their own address"));
            }
            let aq = a.queues.clone().unwrap_or_default();
            for q in &aq {
                if !queues.contains_key(q) {
                    self.add(&format!("{k}.queues"), format!("no queue named `{q}`"));
                }
            }
            let tier = a.tier.unwrap_or(1);
            if !(1..=2).contains(&tier) {
                self.add(&format!("{k}.tier"), "must be 1 or 2".into());
            }
            agents.insert(
                key.clone(),
                Agent { key: key.clone(), name: a.name.clone().unwrap_or_else(|| key.clone()), email, queues: aq, tier, notify_new: a.notify_new.unwrap_or(true) },
            );
        }
        let sla = self.sla(&raw.sla);
        for q in queues.values() {
            if let Some(p) = &q.sla
                && !sla.policies.contains_key(p)
            {
                self.add(&format!("queues.{}.sla", q.name), format!("no SLA policy named `{p}` (define [sla.policies.{p}])"));
            }
        }
        let rules = raw.rules.path.as_deref().map(|p| self.path(p));
        if let Some(r) = &rules
            && !r.exists()
        {
            self.add("rules.path", format!("{} does not exist", r.display()));
        }
        let approvers: Vec<String> = raw.approvals.approvers.clone().unwrap_or_default().into_iter().map(|a| a.trim().to_ascii_lowercase()).collect();
        for a in approvers.iter().chain(queues.values().flat_map(|q| q.approvers.iter())) {
            if !looks_like_address(a) {
                self.add("approvals.approvers", format!("`{a}` is not an email address"));
            }
        }
        let mut groups = BTreeMap::new();
        for (key, g) in &raw.groups {
            let k = format!("groups.{key}");
            let address = match &g.address {
                Some(a) if looks_like_address(a) => a.trim().to_ascii_lowercase(),
                _ => {
                    self.add(&format!("{k}.address"), "an email address is required".into());
                    continue;
                }
            };
            let pattern = g.ticket_pattern.clone().unwrap_or_else(|| r"#\s*(\d+)".into());
            let ticket_pattern = match regex::Regex::new(&format!("(?i){pattern}")) {
                Ok(r) if r.captures_len() >= 2 => r,
                Ok(_) => {
                    self.add(&format!("{k}.ticket_pattern"), "needs one capture group for their ticket number, e.g. \\[Vendor #(\\d+)\\]".into());
                    continue;
                }
                Err(e) => {
                    self.add(&format!("{k}.ticket_pattern"), format!("invalid regex: {e}"));
                    continue;
                }
            };
            groups.insert(key.clone(), Group { key: key.clone(), name: g.name.clone().unwrap_or_else(|| key.clone()), address, ticket_pattern });
        }
        let cis_file = raw.cis.file.as_deref().map(|p| self.path(p));
        let security = Security {
            require_dkim: raw.security.require_dkim.unwrap_or(false),
            trusted_authserv_ids: raw.security.trusted_authserv_ids.clone().unwrap_or_default().into_iter().map(|s| s.to_ascii_lowercase()).collect(),
            command_token_max_age: match raw.security.command_token_max_age.as_deref() {
                Some("off") => None,
                other => Some(self.duration("security.command_token_max_age", &other.map(str::to_string), Duration::from_secs(30 * 86400))),
            },
        };
        if security.require_dkim && security.trusted_authserv_ids.is_empty() {
            self.add("security.trusted_authserv_ids", "require_dkim needs the authserv-id(s) of your own MTA".into());
        }

        let log_level = raw.log.level.clone().unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            self.add("log.level", format!("`{log_level}` is not a log level or filter"));
        }
        let log_json = match raw.log.format.as_deref().unwrap_or("text") {
            "text" => false,
            "json" => true,
            other => {
                self.add("log.format", format!("`{other}`: expected text or json"));
                false
            }
        };
        let metrics_listen = raw.metrics.listen.as_deref().and_then(|l| match l.parse::<std::net::SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.add("metrics.listen", format!("`{l}`: expected an address and port, like 127.0.0.1:9464"));
                None
            }
        });
        let shutdown_timeout = self.duration("daemon.shutdown_timeout", &raw.daemon.shutdown_timeout, Duration::from_secs(20));
        let csat = raw.csat.as_ref().and_then(|c| match crate::csat::Scale::parse(c.scale.as_deref().unwrap_or("1-5")) {
            Ok(scale) => Some(Csat { scale }),
            Err(e) => {
                self.add("csat.scale", e);
                None
            }
        });

        let store = self.store(&raw.store);
        if store.postgres_url.is_some() && desk.secret.is_none() {
            // Each node would make its own key in its data_dir and refuse the others' tokens.
            self.add("desk.secret_file", "is required with [store] backend = \"postgres\": every node signs and checks reply tokens with the same key (copy the SQLite desk's var/secret; docs/POSTGRES.md)".into());
        }
        Config {
            file: self.file.clone(),
            secret_sources: std::mem::take(&mut self.secrets),
            desk,
            queues,
            mailboxes,
            outbound,
            limits: Limits { max_message_size, max_participants, max_recipients },
            guard,
            agents,
            security,
            sla,
            rules,
            approvers,
            groups,
            cis_file,
            catalog_file: raw.catalog.file.as_deref().map(|p| self.path(p)),
            weekly_report_to: raw.reports.weekly_to.clone().unwrap_or_default().into_iter().map(|a| a.trim().to_ascii_lowercase()).collect(),
            csat,
            kb: raw.kb.folder.as_deref().map(|p| (self.path(p), raw.kb.suggestions.unwrap_or(3))),
            knowledge: match &raw.knowledge {
                None => Knowledge::default(),
                Some(k) => {
                    let d = Knowledge::default();
                    if k.search_results == Some(0) {
                        self.add("knowledge.search_results", "must be at least 1".to_string());
                    }
                    if k.suggest_min_words == Some(0) {
                        self.add("knowledge.suggest_min_words", "must be at least 1 (one shared word)".to_string());
                    }
                    Knowledge {
                        suggestions: k.suggestions.unwrap_or(d.suggestions).min(10),
                        suggest_min_words: k.suggest_min_words.unwrap_or(d.suggest_min_words).max(1),
                        search_results: k.search_results.unwrap_or(d.search_results).clamp(1, 50),
                        customer_search: k.customer_search.unwrap_or(true),
                    }
                }
            },
            lifecycle: raw.lifecycle.as_ref().map(|l| {
                let mut d = |k: &str, v: &Option<String>| v.as_ref().map(|_| self.duration(&format!("lifecycle.{k}"), v, Duration::ZERO));
                Lifecycle {
                    close_resolved_after: d("close_resolved_after", &l.close_resolved_after),
                    remind_pending_after: d("remind_pending_after", &l.remind_pending_after),
                    resolve_pending_after: d("resolve_pending_after", &l.resolve_pending_after),
                }
            }),
            self_service: raw.self_service.as_ref().map(|s| SelfService {
                status_subjects: s
                    .status_subjects
                    .clone()
                    .unwrap_or_else(|| vec!["status".into(), "my tickets".into(), "ticket status".into()])
                    .into_iter()
                    .map(|x| x.trim().to_lowercase())
                    .collect(),
                allow_close: s.allow_close.unwrap_or(true),
            }),
            log_level,
            log_json,
            metrics_listen,
            shutdown_timeout,
            store,
        }
    }

    fn store(&mut self, raw: &RawStore) -> StoreConfig {
        let url = self.secret("store.url", &raw.url, &raw.url_file);
        let postgres_url = match raw.backend.as_deref().unwrap_or("sqlite") {
            "sqlite" => {
                if url.is_some() {
                    self.add("store.url", "is for backend = \"postgres\"; SQLite uses [desk] database".into());
                }
                None
            }
            "postgres" => match url {
                Some(u) if u.expose().starts_with("postgres://") || u.expose().starts_with("postgresql://") => Some(u),
                Some(_) => {
                    self.add("store.url", "must be a postgres:// URL, like postgres://postdesk@db.example.org/postdesk".into());
                    None
                }
                None => {
                    self.add("store.url", "is required with backend = \"postgres\" (or url_file)".into());
                    None
                }
            },
            other => {
                self.add("store.backend", format!("`{other}`: expected \"sqlite\" or \"postgres\""));
                None
            }
        };
        let node = raw.node.clone().unwrap_or_else(crate::store::host_name);
        if node.trim().is_empty() || node.len() > 64 || node.chars().any(|c| c.is_control()) {
            self.add("store.node", "must be a short name (1-64 printable characters)".into());
        }
        let lease_ttl = self.duration("store.lease_ttl", &raw.lease_ttl, Duration::from_secs(15));
        if lease_ttl < Duration::from_secs(3) {
            self.add("store.lease_ttl", "must be at least 3 seconds (renewed every third of it)".into());
        }
        StoreConfig { postgres_url, node, lease_ttl }
    }
}

impl Validator {
    fn sla(&mut self, raw: &RawSla) -> Sla {
        let mut calendars = BTreeMap::new();
        for (name, c) in &raw.calendars {
            let key = format!("sla.calendars.{name}");
            let tz = c.timezone.as_deref().unwrap_or("UTC");
            let tz = match jiff::tz::TimeZone::get(tz) {
                Ok(t) => t,
                Err(_) => {
                    self.add(&format!("{key}.timezone"), format!("unknown time zone `{tz}` (use an IANA name like Europe/Berlin)"));
                    continue;
                }
            };
            let mut week: [Vec<crate::sla::calendar::Window>; 7] = Default::default();
            let days = [("mon", &c.mon), ("tue", &c.tue), ("wed", &c.wed), ("thu", &c.thu), ("fri", &c.fri), ("sat", &c.sat), ("sun", &c.sun)];
            for (i, (day, v)) in days.iter().enumerate() {
                let default = if i < 5 { "09:00-17:00" } else { "" };
                match crate::sla::calendar::Calendar::parse_windows(v.as_deref().unwrap_or(default)) {
                    Ok(w) => week[i] = w,
                    Err(e) => self.add(&format!("{key}.{day}"), e),
                }
            }
            if week.iter().all(Vec::is_empty) {
                self.add(&key, "a calendar needs working hours on at least one day".into());
            }
            let mut holidays = std::collections::BTreeSet::new();
            for h in c.holidays.clone().unwrap_or_default() {
                match h.parse::<jiff::civil::Date>() {
                    Ok(d) => {
                        holidays.insert(d);
                    }
                    Err(_) => self.add(&format!("{key}.holidays"), format!("`{h}` is not a date like 2026-12-24")),
                }
            }
            calendars.insert(name.clone(), crate::sla::calendar::Calendar::Hours { tz, week, holidays });
        }
        let mut policies = BTreeMap::new();
        for (name, p) in &raw.policies {
            let key = format!("sla.policies.{name}");
            let mut secs = |k: &str, v: &Option<String>| -> Option<u64> { v.as_ref().map(|_| self.duration(&format!("{key}.{k}"), v, Duration::ZERO).as_secs()) };
            let targets = SlaTargets { first_response: secs("first_response", &p.first_response), next_response: secs("next_response", &p.next_response), resolution: secs("resolution", &p.resolution) };
            let mut by_priority = BTreeMap::new();
            for (prio, t) in &p.priority {
                let Ok(pr) = prio.parse::<crate::ticket::Priority>() else {
                    self.add(&format!("{key}.priority.{prio}"), format!("unknown priority `{prio}`"));
                    continue;
                };
                let pk = format!("{key}.priority.{prio}");
                let mut secs = |k: &str, v: &Option<String>| -> Option<u64> { v.as_ref().map(|_| self.duration(&format!("{pk}.{k}"), v, Duration::ZERO).as_secs()) };
                by_priority.insert(pr, SlaTargets { first_response: secs("first_response", &t.first_response), next_response: secs("next_response", &t.next_response), resolution: secs("resolution", &t.resolution) });
            }
            if targets == SlaTargets::default() && by_priority.is_empty() {
                self.add(&key, "a policy needs at least one of first_response, next_response, resolution".into());
            }
            if let Some(c) = &p.calendar
                && !raw.calendars.contains_key(c)
            {
                self.add(&format!("{key}.calendar"), format!("no calendar named `{c}` (define [sla.calendars.{c}])"));
            }
            let warn = match p.warn_at.as_deref().unwrap_or("80%") {
                s if s.ends_with('%') => match s.trim_end_matches('%').trim().parse::<u8>() {
                    Ok(n) if (1..100).contains(&n) => WarnAt::Percent(n),
                    _ => {
                        self.add(&format!("{key}.warn_at"), format!("`{s}` is not a percentage between 1% and 99%"));
                        WarnAt::Percent(80)
                    }
                },
                s => match parse_duration(s) {
                    Ok(d) => WarnAt::Before(d.as_secs()),
                    Err(e) => {
                        self.add(&format!("{key}.warn_at"), format!("{e}; or a percentage like 80%"));
                        WarnAt::Percent(80)
                    }
                },
            };
            let priority_on_breach = p.priority_on_breach.as_ref().and_then(|s| match s.parse() {
                Ok(pr) => Some(pr),
                Err(e) => {
                    self.add(&format!("{key}.priority_on_breach"), e);
                    None
                }
            });
            policies.insert(
                name.clone(),
                SlaPolicy { name: name.clone(), calendar: p.calendar.clone(), targets, by_priority, warn, escalate_on_breach: p.escalate_on_breach.unwrap_or(false), priority_on_breach },
            );
        }
        Sla { calendars, policies }
    }
}

/// Token endpoints are `https://`; plain `http://` only to this machine (a local test provider),
/// since the request carries the refresh token and client secret.
fn check_token_url(u: &str) -> Result<(), String> {
    let rest = if let Some(r) = u.strip_prefix("https://") {
        r
    } else if let Some(r) = u.strip_prefix("http://") {
        let host = r.split(['/', '?']).next().unwrap_or_default();
        let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
        if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
            return Err(format!("`{u}` must use https:// (plain http only to 127.0.0.1 or localhost)"));
        }
        r
    } else {
        return Err(format!("`{u}` is not an https:// URL"));
    };
    if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
        return Err(format!("`{u}` is not a URL"));
    }
    Ok(())
}

fn leaf(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub(crate) fn looks_like_address(s: &str) -> bool {
    let s = s.trim();
    match s.split_once('@') {
        Some((l, d)) => !l.is_empty() && !d.is_empty() && !s.contains(char::is_whitespace) && !s.contains(['<', '>', ',']),
        None => false,
    }
}

/// Parse `500ms`, `45s`, `2m`, `4h`, `3d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration (use e.g. 45s, 2m, 4h, 3d)"))?;
    let secs = match unit.trim() {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("`{s}` is not a duration (use e.g. 45s, 2m, 4h, 3d)")),
    };
    Ok(Duration::from_secs(secs))
}

/// Parse a rate `N/DURATION`, e.g. `40/1d`.
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let err = || format!("`{s}` is not a rate (use COUNT/DURATION, e.g. 40/1d)");
    let (n, d) = s.split_once('/').ok_or_else(err)?;
    let count: u32 = n.trim().parse().map_err(|_| err())?;
    let window = parse_duration(d).map_err(|_| err())?;
    if window.is_zero() {
        return Err(err());
    }
    Ok(Rate { count, window })
}

/// Parse `25MB`, `512KB`, `1GB` (binary multiples) or a bare byte count.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_uppercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size (use e.g. 25MB)"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1024,
        "M" | "MB" | "MIB" => 1024 * 1024,
        "G" | "GB" | "GIB" => 1024 * 1024 * 1024,
        _ => return Err(format!("`{s}` is not a size (use e.g. 25MB)")),
    };
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        let p = dir.join("postdesk.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    const MINIMAL: &str = r#"
[desk]
domain = "help.example.com"

[queues.support]
address = "support@example.com"

[mailboxes.support]
kind = "maildir"
"#;

    #[test]
    fn minimal_config_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = load_with_env(&write(dir.path(), MINIMAL), &[]).unwrap();
        assert_eq!(cfg.mailboxes["support"].queue, "support");
        assert!(matches!(cfg.outbound.transport, Transport::Folder(_)));
        assert_eq!(cfg.desk.ref_prefix, "PD-");
        assert_eq!(cfg.own_addresses(), vec!["support@example.com".to_string()]);
    }

    #[test]
    fn every_problem_is_reported_with_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"
[desk]
domain = "help.example.com"
colour = "blue"

[queues.support]
address = "not-an-address"

[mailboxes.support]
kind = "imap"
tls = "sometimes"
poll_interval = "soon"
"#;
        let err = load_with_env(&write(dir.path(), text), &[]).unwrap_err();
        let s = err.to_string();
        assert!(s.contains("postdesk.toml:4: desk.colour: unknown key"), "{s}");
        assert!(s.contains("postdesk.toml:7: queues.support.address: `not-an-address` is not an email address"), "{s}");
        assert!(s.contains("mailboxes.support.host: is required"), "{s}");
        assert!(s.contains("postdesk.toml:12: mailboxes.support.poll_interval"), "{s}");
        assert!(err.0.len() >= 4, "{s}");
    }

    #[test]
    fn key_rotation_and_token_age() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old.key"), "the previous key, long enough\n").unwrap();
        let base = "[queues.support]\naddress = \"support@example.com\"\n[mailboxes.support]\nkind = \"pipe\"\n";
        let cfg = load(&write(dir.path(), &format!("[desk]\nprevious_secret_file = \"old.key\"\nprevious_secret_until = \"2027-01-31\"\n{base}"))).unwrap();
        let (prev, until) = cfg.desk.previous_secret.as_ref().unwrap();
        assert_eq!((prev.expose(), *until), ("the previous key, long enough", 1_801_353_600));
        assert_eq!(cfg.security.command_token_max_age, Some(Duration::from_secs(30 * 86400)), "default");
        let text = format!("[desk]\nprevious_secret_file = \"old.key\"\n[security]\ncommand_token_max_age = \"soon\"\n{base}");
        let p = load(&write(dir.path(), &text)).unwrap_err().to_string();
        assert!(p.contains("desk.previous_secret_until") && p.contains("security.command_token_max_age"), "{p}");
        let off = load(&write(dir.path(), &format!("[security]\ncommand_token_max_age = \"off\"\n{base}"))).unwrap();
        assert_eq!(off.security.command_token_max_age, None);
    }

    #[test]
    fn environment_overrides_and_secret_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let text = r#"
[queues.support]
address = "support@example.com"

[mailboxes.support]
kind = "imap"
host = "imap.example.com"
username = "support@example.com"
password_file = "pw"
"#;
        let env = vec![("POSTDESK__MAILBOXES__SUPPORT__PORT".to_string(), "1993".to_string())];
        let cfg = load_with_env(&write(dir.path(), text), &env).unwrap();
        let Source::Imap(imap) = &cfg.mailboxes["support"].source else { panic!() };
        assert_eq!(imap.endpoint.port, 1993);
        assert_eq!(imap.endpoint.password.as_ref().unwrap().expose(), "s3cret");
        assert_eq!(format!("{:?}", imap.endpoint.password), "Some(Secret(***))");
    }

    /// Plain IMAP/SMTP with credentials only to loopback, or with the loud opt-in (17.7).
    #[test]
    fn plaintext_credentials_only_to_loopback_unless_insecure_is_said() {
        let dir = tempfile::tempdir().unwrap();
        let text = |host: &str, tls: &str| format!("[queues.support]\naddress = \"support@example.com\"\n\n[mailboxes.support]\nkind = \"imap\"\nhost = \"{host}\"\ntls = \"{tls}\"\nusername = \"support@example.com\"\npassword = \"pw\"\n");
        let e = load_with_env(&write(dir.path(), &text("imap.example.com", "none")), &[]).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!((e.0[0].key.as_str(), e.0[0].line), ("mailboxes.support.tls", Some(7)), "{e}");
        assert!(e.0[0].message.contains("in clear"), "{e}");
        for (host, tls) in [("127.0.0.1", "none"), ("localhost", "plain"), ("::1", "none"), ("imap.example.com", "none_insecure")] {
            let cfg = load_with_env(&write(dir.path(), &text(host, tls)), &[]).unwrap_or_else(|e| panic!("{host} {tls}: {e}"));
            let Source::Imap(imap) = &cfg.mailboxes["support"].source else { panic!() };
            assert_eq!(imap.endpoint.insecure(), host == "imap.example.com");
        }
    }

    /// A digits-only password from the environment is a password, not a number, and no error
    /// ever echoes it (issue 17.11).
    #[test]
    fn digits_only_secrets_from_the_environment_stay_strings_and_unseen() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[queues.support]\naddress = \"support@example.com\"\n\n[mailboxes.support]\nkind = \"imap\"\nhost = \"imap.example.com\"\nusername = \"support@example.com\"\n";
        let path = write(dir.path(), text);
        let env = vec![("POSTDESK__MAILBOXES__SUPPORT__PASSWORD".to_string(), "0987654321".to_string())];
        let cfg = load_with_env(&path, &env).unwrap_or_else(|e| panic!("{e}"));
        let Source::Imap(imap) = &cfg.mailboxes["support"].source else { panic!() };
        assert_eq!(imap.endpoint.password.as_ref().unwrap().expose(), "0987654321");
        // With another problem in the file, the report still never shows the secret.
        std::fs::write(&path, format!("{text}port = \"many\"\n")).unwrap();
        let e = load_with_env(&path, &env).unwrap_err().to_string();
        assert!(!e.contains("0987654321") && !e.contains("987654321"), "{e}");
    }

    #[test]
    fn oauth2_presets_defaults_and_admins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("client.secret"), "sh-h\n").unwrap();
        let text = r#"
[desk]
data_dir = "data"
admins = ["IT@example.com", "ops@example.com"]

[queues.support]
address = "support@example.com"

[mailboxes.support]
host = "outlook.office365.com"
username = "support@example.com"
auth = "oauth2"
oauth2_provider = "microsoft"
tenant = "contoso.onmicrosoft.com"
client_id = "app-id"

[mailboxes.gmail]
queue = "support"
host = "imap.gmail.com"
username = "help@example.com"
auth = "oauth2"
oauth2_provider = "google"
client_id = "gid"
client_secret_file = "client.secret"
refresh_token_file = "g.refresh"

[outbound]
transport = "smtp"
host = "127.0.0.1"
tls = "none"
username = "support@example.com"
auth = "oauth2"
oauth2_provider = "custom"
token_url = "http://127.0.0.1:8080/token"
scopes = ["mail"]
client_id = "c"
"#;
        let cfg = load_with_env(&write(dir.path(), text), &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.desk.admins, vec!["it@example.com", "ops@example.com"]);
        let Source::Imap(ms) = &cfg.mailboxes["support"].source else { panic!() };
        let o = ms.oauth2.as_ref().unwrap();
        assert_eq!(o.name, "mailboxes.support");
        assert_eq!(o.token_url, "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");
        assert_eq!(o.device_url.as_deref(), Some("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode"));
        assert_eq!(o.scopes, MICROSOFT_SCOPES);
        assert_eq!(o.refresh_token_file, dir.path().join("data/oauth/support.refresh"));
        assert!(ms.endpoint.password.is_none());
        let Source::Imap(g) = &cfg.mailboxes["gmail"].source else { panic!() };
        let g = g.oauth2.as_ref().unwrap();
        assert_eq!((g.token_url.as_str(), g.device_url.as_deref()), (GOOGLE_TOKEN_URL, Some(GOOGLE_DEVICE_URL)));
        assert_eq!(g.scopes, vec!["https://mail.google.com/"]);
        assert_eq!(g.client_secret.as_ref().unwrap().expose(), "sh-h");
        assert_eq!(g.refresh_token_file, dir.path().join("g.refresh"));
        let out = cfg.outbound.oauth2.as_ref().unwrap();
        assert_eq!((out.name.as_str(), out.provider, out.device_url.as_ref()), ("outbound", OAuthProvider::Custom, None));
        assert_eq!(out.refresh_token_file, dir.path().join("data/oauth/outbound.smtp.refresh"));
        // A client secret from the environment is a secret: never echoed.
        let env = vec![("POSTDESK__OUTBOUND__CLIENT_SECRET".to_string(), "12345678".to_string())];
        let cfg = load_with_env(&write(dir.path(), text), &env).unwrap();
        assert_eq!(cfg.outbound.oauth2.unwrap().client_secret.unwrap().expose(), "12345678");
    }

    #[test]
    fn oauth2_mistakes_are_reported_with_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"
[desk]
admins = ["not an address"]

[queues.support]
address = "support@example.com"

[mailboxes.support]
host = "imap.example.com"
username = "support@example.com"
password = "pw"
auth = "oauth2"
oauth2_provider = "google"
token_url = "https://example.com/token"

[mailboxes.other]
queue = "support"
host = "imap.example.com"
auth = "oauth2"
oauth2_provider = "custom"
token_url = "http://auth.example.com/token"
client_id = "x"

[mailboxes.third]
queue = "support"
host = "imap.example.com"
username = "a@example.com"
password = "pw"
client_id = "x"
auth = "kerberos"

[outbound]
transport = "smtp"
host = "smtp.example.com"
username = "support@example.com"
auth = "oauth2"
oauth2_provider = "yahoo"
"#;
        let err = load_with_env(&write(dir.path(), text), &[]).unwrap_err();
        let s = err.to_string();
        for want in [
            "postdesk.toml:3: desk.admins: `not an address` is not an email address",
            "postdesk.toml:11: mailboxes.support.password: not used with auth = \"oauth2\"",
            "postdesk.toml:14: mailboxes.support.token_url: only used with oauth2_provider = \"custom\"",
            "mailboxes.support.client_id: is required",
            "mailboxes.other.username: auth = \"oauth2\" needs the account's address",
            "postdesk.toml:21: mailboxes.other.token_url: `http://auth.example.com/token` must use https://",
            "postdesk.toml:30: mailboxes.third.auth: unknown value `kerberos`",
            "postdesk.toml:37: outbound.oauth2_provider: unknown value `yahoo`",
        ] {
            assert!(s.contains(want), "missing {want:?} in:\n{s}");
        }
        // One refresh-token file for two logins would race on rotation.
        let text = "[queues.support]\naddress = \"support@example.com\"\n[mailboxes.support]\nhost = \"h\"\nusername = \"u\"\nauth = \"oauth2\"\noauth2_provider = \"google\"\nclient_id = \"x\"\nrefresh_token_file = \"t\"\n[outbound]\ntransport = \"smtp\"\nhost = \"h\"\nusername = \"u\"\nauth = \"oauth2\"\noauth2_provider = \"google\"\nclient_id = \"x\"\nrefresh_token_file = \"t\"\n";
        let s = load_with_env(&write(dir.path(), text), &[]).unwrap_err().to_string();
        assert!(s.contains("postdesk.toml:17: outbound.refresh_token_file:") && s.contains("is also mailboxes.support's"), "{s}");
        // OAuth2 keys on a password mailbox are mistakes, not silently ignored.
        let text = "[queues.support]\naddress = \"support@example.com\"\n[mailboxes.support]\nhost = \"h\"\nusername = \"u\"\npassword = \"p\"\nclient_id = \"x\"\n";
        let s = load_with_env(&write(dir.path(), text), &[]).unwrap_err().to_string();
        assert!(s.contains("postdesk.toml:7: mailboxes.support.client_id: only used with auth = \"oauth2\""), "{s}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_with_env(&write(dir.path(), "[desk]\ndomain = \n"), &[]).unwrap_err();
        assert!(err.0[0].line.is_some(), "{err}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("45s").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3d").unwrap(), Duration::from_secs(3 * 86400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_size("25MB").unwrap(), 25 * 1024 * 1024);
        assert!(parse_size("big").is_err());
        assert_eq!(parse_rate("40/1d").unwrap(), Rate { count: 40, window: Duration::from_secs(86400) });
        assert!(parse_rate("40").is_err());
    }
}
