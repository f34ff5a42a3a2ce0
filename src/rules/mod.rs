//! Rules: the admin's routing file (ordered `[[rule]]` tables: conditions → actions, optional
//! `stop`) loaded and validated into a [`RuleSet`], then evaluated against one message into an
//! [`Evaluation`]: what each rule did and the merged [`Actions`]. Pure: apart from [`load`] reading
//! the rule files it does no I/O and reads no clock (the time comes in [`Input::now`]); it never
//! touches the store and never applies the actions — the pipeline does. See docs/RULES.md.
//!
//! - `load.rs`: TOML → validated rules; every problem with file, line, rule and key.
//! - `cond.rs`: the condition tests and their wording.
//! - `eval.rs`: rule order, phases, `stop`, and how actions of several rules merge.

mod cond;
mod eval;
mod load;

use crate::config::Problem;
use crate::guard::Class;
use crate::message::Parsed;
use crate::ticket::{Priority, Status};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use cond::Captures;
pub use eval::normalize_tag;

/// Ticket types a rule may set when the config names none.
pub const DEFAULT_TICKET_TYPES: [&str; 4] = ["incident", "service_request", "change", "other"];

/// Names the rules may refer to, taken from the config; a rule naming anything else is an error.
/// An empty `services` or `sla_policies` list means "not configured" (and the error says so); an
/// empty `ticket_types` list means [`DEFAULT_TICKET_TYPES`].
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub queues: Vec<String>,
    /// Agent addresses (rule `owner`).
    pub agents: Vec<String>,
    pub templates: Vec<String>,
    pub mailboxes: Vec<String>,
    pub ticket_types: Vec<String>,
    pub services: Vec<String>,
    pub sla_policies: Vec<String>,
}

/// Where a message stands: it opens a ticket, or it continues one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    New,
    FollowUp,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::New => "new",
            Phase::FollowUp => "follow_up",
        }
    }
}

/// The ticket a follow-up belongs to, as it is before this message.
#[derive(Debug, Clone, Copy)]
pub struct TicketFacts<'a> {
    pub queue: &'a str,
    pub status: Status,
    pub priority: Priority,
    pub tags: &'a [String],
}

/// Everything a rule may look at for one message.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub message: &'a Parsed,
    /// The configured mailbox it arrived in.
    pub mailbox: &'a str,
    /// The guard's verdict.
    pub class: Class,
    pub phase: Phase,
    /// The existing ticket (follow-ups); `None` for a new ticket.
    pub ticket: Option<TicketFacts<'a>>,
    /// The sender is an authenticated agent.
    pub sender_is_agent: bool,
    /// Now, in any offset; each rule converts it to its own time zone.
    pub now: time::OffsetDateTime,
}

/// Which phases a rule runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RulePhase {
    New,
    FollowUp,
    Any,
}

impl RulePhase {
    fn includes(self, p: Phase) -> bool {
        matches!((self, p), (RulePhase::Any, _) | (RulePhase::New, Phase::New) | (RulePhase::FollowUp, Phase::FollowUp))
    }
}

/// A value that may contain `{capture}` placeholders (tags, configuration items).
#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Capture(String),
}

#[derive(Debug, Clone)]
struct Template(Vec<Piece>);

impl Template {
    /// Fill in the captures; `None` when a placeholder's group did not take part in the match.
    fn render(&self, caps: &Captures) -> Option<String> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Capture(name) => out.push_str(caps.get(name).filter(|v| !v.is_empty())?),
            }
        }
        Some(out)
    }
}

/// A rule's actions as written (validated).
#[derive(Debug, Clone, Default)]
struct RuleActions {
    queue: Option<String>,
    priority: Option<Priority>,
    owner: Option<String>,
    status: Option<Status>,
    add_tags: Vec<Template>,
    remove_tags: Vec<Template>,
    ack_template: Option<String>,
    acknowledge: Option<bool>,
    watchers: Vec<String>,
    drop: Option<bool>,
    quarantine: Option<bool>,
    spam: Option<bool>,
    internal_only: Option<bool>,
    service: Option<String>,
    sla_policy: Option<String>,
    ci: Vec<Template>,
    ticket_type: Option<String>,
    notify: Vec<String>,
}

/// One validated rule.
#[derive(Debug, Clone)]
struct Rule {
    name: Arc<str>,
    /// `file:line` of its `[[rule]]` header.
    location: Arc<str>,
    phase: RulePhase,
    stop: bool,
    enabled: bool,
    /// Index into [`RuleSet::zones`], when the rule has time conditions.
    zone: Option<usize>,
    /// Cheapest first.
    conds: Vec<cond::Cond>,
    then: RuleActions,
}

/// A loaded, validated, immutable rule set: evaluate as often as needed, from any thread.
#[derive(Debug, Clone)]
pub struct RuleSet {
    source: PathBuf,
    rules: Vec<Rule>,
    zones: Vec<jiff::tz::TimeZone>,
    /// Every `body` contains-needle of every rule, for one pass over the body per message.
    body_searcher: Option<aho_corasick::AhoCorasick>,
}

// Trace texts are shared, not copied: evaluating a message allocates nothing for a rule that does
// not match (see "Performance" in docs/RULES.md).

/// What became of one rule for one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// Every condition held; the captures of its regexes.
    Matched { captures: BTreeMap<String, String> },
    /// The first condition that failed, in words.
    NotMatched { failed: Arc<str> },
    /// Not evaluated: wrong phase, disabled, or an earlier rule stopped evaluation.
    Skipped { why: Arc<str> },
}

/// One rule's line in the trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleTrace {
    pub name: Arc<str>,
    /// `file:line` of the rule.
    pub location: Arc<str>,
    pub outcome: Outcome,
    /// This rule matched and has `stop = true`: no later rule ran.
    pub stopped: bool,
}

/// The merged actions of every matched rule. Later rules override earlier scalar actions; lists
/// accumulate (a later `remove_tags` cancels an earlier `add_tags` of the same tag and vice versa).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Actions {
    pub queue: Option<String>,
    pub priority: Option<Priority>,
    pub owner: Option<String>,
    pub status: Option<Status>,
    pub add_tags: Vec<String>,
    pub remove_tags: Vec<String>,
    pub ack_template: Option<String>,
    /// `Some(false)`: send no acknowledgement; `Some(true)`: send one even if the queue does not
    /// (the guard still has the last word: automatic mail is never answered).
    pub acknowledge: Option<bool>,
    pub watchers: Vec<String>,
    /// Do not make a ticket; the message is recorded as dropped.
    pub drop: bool,
    pub quarantine: bool,
    pub spam: bool,
    /// The ticket's mail never goes to the customer (internal notes only).
    pub internal_only: bool,
    pub service: Option<String>,
    pub sla_policy: Option<String>,
    /// Configuration items to link.
    pub ci: Vec<String>,
    pub ticket_type: Option<String>,
    /// Extra addresses told about the message.
    pub notify: Vec<String>,
    /// Which rule set each action: `queue` → rule, list items as `add_tags[vip]` → rule.
    pub applied_by: BTreeMap<String, String>,
}

/// The result of evaluating a rule set against one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evaluation {
    /// Every rule in order, with what became of it.
    pub trace: Vec<RuleTrace>,
    pub actions: Actions,
}

/// Load a rule file, or every `*.toml` file of a folder in name order, and validate it against
/// the names the config knows. Returns every problem at once, each with file, line, rule and key.
pub fn load(path: &Path, known: &Known) -> Result<RuleSet, Vec<Problem>> {
    load::load(path, known)
}

/// [`load`] from text already in memory (tests, benchmarks); `path` names it in problems.
pub fn load_str(path: &Path, text: &str, known: &Known) -> Result<RuleSet, Vec<Problem>> {
    load::load_str(path, text, known)
}

impl RuleSet {
    /// A rule set with no rules: every message passes unchanged.
    pub fn empty(source: &Path) -> RuleSet {
        RuleSet { source: source.to_path_buf(), rules: Vec::new(), zones: Vec::new(), body_searcher: None }
    }

    /// Evaluate every rule in order against one message.
    pub fn evaluate(&self, input: &Input<'_>) -> Evaluation {
        eval::evaluate(self, input)
    }

    /// Number of rules (enabled or not).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The file or folder the rules came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Rule names in evaluation order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| &*r.name)
    }
}

impl Actions {
    /// Whether no rule set anything.
    pub fn is_empty(&self) -> bool {
        self.applied_by.is_empty()
    }
}

impl Evaluation {
    /// Lines for the human dry run: each rule's outcome, its captures, then the final actions.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for t in &self.trace {
            let head = format!("rule {} ({})", t.name, t.location);
            match &t.outcome {
                Outcome::Matched { captures } => {
                    let mut line = format!("{head}: matched");
                    if !captures.is_empty() {
                        let caps: Vec<String> = captures.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                        line.push_str(&format!(", captures {}", caps.join(" ")));
                    }
                    if t.stopped {
                        line.push_str("; stop: later rules are skipped");
                    }
                    out.push(line);
                }
                Outcome::NotMatched { failed } => out.push(format!("{head}: not matched: {failed}")),
                Outcome::Skipped { why } => out.push(format!("{head}: skipped: {why}")),
            }
        }
        if self.trace.is_empty() {
            out.push("no rules".into());
        }
        out.extend(self.actions.describe());
        out
    }
}

impl Actions {
    /// One line per action with the rule that set it; "no actions" when none.
    pub fn describe(&self) -> Vec<String> {
        let by = |key: &str| self.applied_by.get(key).map(|r| format!(" (rule {r})")).unwrap_or_default();
        let mut out = Vec::new();
        let mut scalar = |key: &str, v: Option<String>| {
            if let Some(v) = v {
                out.push(format!("action {key} = {v}{}", by(key)));
            }
        };
        scalar("queue", self.queue.clone());
        scalar("priority", self.priority.map(|p| p.to_string()));
        scalar("owner", self.owner.clone());
        scalar("status", self.status.map(|s| s.to_string()));
        scalar("ack_template", self.ack_template.clone());
        scalar("acknowledge", self.acknowledge.map(|b| b.to_string()));
        for (key, on) in [("drop", self.drop), ("quarantine", self.quarantine), ("spam", self.spam), ("internal_only", self.internal_only)] {
            scalar(key, (on || self.applied_by.contains_key(key)).then(|| on.to_string()));
        }
        scalar("service", self.service.clone());
        scalar("sla_policy", self.sla_policy.clone());
        scalar("type", self.ticket_type.clone());
        for (key, list) in [
            ("add_tags", &self.add_tags),
            ("remove_tags", &self.remove_tags),
            ("watchers", &self.watchers),
            ("ci", &self.ci),
            ("notify", &self.notify),
        ] {
            for v in list {
                out.push(format!("action {key} += {v}{}", by(&format!("{key}[{v}]"))));
            }
        }
        if out.is_empty() {
            out.push("no actions".into());
        }
        out
    }
}

#[cfg(test)]
mod tests;
