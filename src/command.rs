//! Commands by mail: the lines at the top of an agent's reply that change a ticket
//! (`/status pending`, `/assign bob`, `/note`, …). Parsing only — pure, no desk lookups; the
//! pipeline validates the arguments against the desk and applies all or nothing.
//!
//! Grammar: after optional blank lines, every line that starts with `/` is a command, up to the
//! first line that does not. `/cmd` and `#cmd` are the same (some clients mangle a leading `/`).
//! The rest of the mail is the reply text.

use crate::ticket::{Priority, Status};
use serde::Serialize;

/// Most addresses one `/cc` adds (the ticket's participant cap applies on top).
pub const MAX_CC: usize = 10;

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    Status { status: Status },
    Assign { who: String },
    Take,
    Unassign,
    Priority { priority: Priority },
    Queue { queue: String },
    Tag { tags: Vec<String> },
    Untag { tags: Vec<String> },
    Escalate { to: Option<String> },
    Cc { addresses: Vec<String> },
    /// The text is an internal note, never sent to the customer.
    Note,
    /// Set the ticket type (incident, service_request, change, …).
    Type { ticket_type: String },
    /// Link a configuration item.
    Ci { name: String },
    /// Hand the ticket to an external group; the rest of the mail goes to them.
    Forward { group: String },
    /// An approver approves the change.
    Approve,
    /// An approver rejects the change, with a reason.
    Reject { reason: String },
    /// Search tickets and published articles; the results go to the agent only.
    Search { query: String },
    /// The text is the ticket's solution (recorded; a reply to the customer unless `/note`).
    Solution,
    /// Publish the ticket's solution as a knowledge article, under this title or the subject.
    Publish { title: Option<String> },
    /// Withdraw the ticket's published article.
    Withdraw,
}

impl Command {
    /// The command as an agent would write it (for confirmations).
    pub fn describe(&self) -> String {
        match self {
            Command::Status { status } => format!("/status {status}"),
            Command::Assign { who } => format!("/assign {who}"),
            Command::Take => "/take".into(),
            Command::Unassign => "/unassign".into(),
            Command::Priority { priority } => format!("/priority {priority}"),
            Command::Queue { queue } => format!("/queue {queue}"),
            Command::Tag { tags } => format!("/tag {}", tags.join(" ")),
            Command::Untag { tags } => format!("/untag {}", tags.join(" ")),
            Command::Escalate { to } => format!("/escalate{}", to.as_ref().map(|t| format!(" {t}")).unwrap_or_default()),
            Command::Cc { addresses } => format!("/cc {}", addresses.join(" ")),
            Command::Note => "/note".into(),
            Command::Type { ticket_type } => format!("/type {ticket_type}"),
            Command::Ci { name } => format!("/ci {name}"),
            Command::Forward { group } => format!("/forward {group}"),
            Command::Approve => "/approve".into(),
            Command::Reject { reason } => format!("/reject {reason}"),
            Command::Search { query } => format!("/search {query}"),
            Command::Solution => "/solution".into(),
            Command::Publish { title } => format!("/publish{}", title.as_ref().map(|t| format!(" {t}")).unwrap_or_default()),
            Command::Withdraw => "/withdraw".into(),
        }
    }
}

/// A command line that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadCommand {
    pub line: String,
    pub error: String,
}

/// The commands of a mail and the text that follows them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Parsed {
    pub commands: Vec<Command>,
    pub errors: Vec<BadCommand>,
    /// The mail's text without the command lines.
    pub text: String,
}

impl Parsed {
    pub fn is_note(&self) -> bool {
        self.commands.contains(&Command::Note)
    }

    pub fn is_solution(&self) -> bool {
        self.commands.contains(&Command::Solution)
    }

    /// The query of a `/search` command, if the mail has one.
    pub fn search(&self) -> Option<&str> {
        self.commands.iter().find_map(|c| match c {
            Command::Search { query } => Some(query.as_str()),
            _ => None,
        })
    }
}

/// Split `body` into leading commands and the remaining text.
pub fn parse(body: &str) -> Parsed {
    let mut out = Parsed::default();
    let mut lines = body.lines().peekable();
    while lines.peek().is_some_and(|l| l.trim().is_empty()) {
        lines.next();
    }
    while let Some(line) = lines.peek() {
        let t = line.trim();
        let Some(rest) = t.strip_prefix('/').or_else(|| t.strip_prefix('#').filter(|r| r.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))) else { break };
        match parse_one(rest) {
            Ok(c) => out.commands.push(c),
            Err(error) => out.errors.push(BadCommand { line: t.to_string(), error }),
        }
        lines.next();
    }
    out.text = lines.collect::<Vec<_>>().join("\n").trim().to_string();
    out
}

fn parse_one(s: &str) -> Result<Command, String> {
    let mut words = s.split_whitespace();
    let name = words.next().unwrap_or("").to_ascii_lowercase();
    let args: Vec<String> = words.map(str::to_string).collect();
    let one = |what: &str| -> Result<String, String> {
        match args.as_slice() {
            [a] => Ok(a.clone()),
            [] => Err(format!("/{name} needs {what}")),
            _ => Err(format!("/{name} takes one {what}")),
        }
    };
    let none = |c: Command| if args.is_empty() { Ok(c) } else { Err(format!("/{name} takes no argument")) };
    match name.as_str() {
        "status" => Ok(Command::Status { status: one("a status")?.parse()? }),
        "open" | "reopen" => none(Command::Status { status: Status::Open }),
        "pending" | "wait" => none(Command::Status { status: Status::Pending }),
        "resolve" | "resolved" | "solve" => none(Command::Status { status: Status::Resolved }),
        "close" | "closed" => none(Command::Status { status: Status::Closed }),
        "assign" | "owner" => Ok(Command::Assign { who: one("an agent")? }),
        "take" => none(Command::Take),
        "unassign" => none(Command::Unassign),
        "priority" | "prio" => Ok(Command::Priority { priority: one("a priority")?.parse()? }),
        "queue" | "move" => Ok(Command::Queue { queue: one("a queue")? }),
        // Tags lose control characters (ESC would reach `tickets show` on a terminal, issue 17.5).
        "tag" | "tags" | "label" if !args.is_empty() => Ok(Command::Tag { tags: args.iter().filter_map(|t| crate::rules::normalize_tag(t.trim_matches(','))).collect() }),
        "untag" | "unlabel" if !args.is_empty() => Ok(Command::Untag { tags: args.iter().filter_map(|t| crate::rules::normalize_tag(t.trim_matches(','))).collect() }),
        "tag" | "tags" | "label" | "untag" | "unlabel" => Err(format!("/{name} needs at least one tag")),
        "escalate" => match args.as_slice() {
            [] => Ok(Command::Escalate { to: None }),
            [a] => Ok(Command::Escalate { to: Some(a.clone()) }),
            _ => Err("/escalate takes at most one agent".into()),
        },
        "cc" if !args.is_empty() => {
            let addrs: Vec<String> = args.iter().flat_map(|a| a.split(',')).map(|a| a.trim().trim_matches(['<', '>']).to_ascii_lowercase()).filter(|a| !a.is_empty()).collect();
            // An RFC 5322 addr-spec we can write to; `@example.org` would break every reply.
            match addrs.iter().find(|a| !crate::ticket::is_usable_address(a)) {
                Some(bad) => Err(format!("`{}` is not an email address", crate::reference::one_line(bad))),
                None if addrs.len() > MAX_CC => Err(format!("/cc takes at most {MAX_CC} addresses")),
                None => Ok(Command::Cc { addresses: addrs }),
            }
        }
        "cc" => Err("/cc needs an address".into()),
        "note" | "internal" | "comment" => none(Command::Note),
        "type" => Ok(Command::Type { ticket_type: one("a type")?.to_ascii_lowercase() }),
        "ci" => Ok(Command::Ci { name: one("a configuration item")? }),
        "forward" | "handoff" => Ok(Command::Forward { group: one("a group")? }),
        "approve" | "approved" => Ok(Command::Approve),
        "reject" | "rejected" | "deny" => Ok(Command::Reject { reason: args.join(" ") }),
        // The query is checked (words, bounds) where it is run: crate::search::Query.
        "search" | "find" if !args.is_empty() => Ok(Command::Search { query: crate::reference::one_line(&args.join(" ")).chars().take(crate::search::MAX_QUERY_CHARS).collect() }),
        "search" | "find" => Err(format!("/{name} needs words to search for")),
        "solution" | "solved-by" => none(Command::Solution),
        "publish" => Ok(Command::Publish { title: (!args.is_empty()).then(|| crate::reference::sender_text(&args.join(" "))) }),
        "withdraw" | "unpublish" => none(Command::Withdraw),
        "" => Err("empty command".into()),
        other => Err(format!("unknown command /{other} (known: status, open, pending, resolve, close, reopen, assign, take, unassign, priority, queue, tag, untag, escalate, cc, note, type, ci, forward, approve, reject, search, solution, publish, withdraw)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_at_the_top_then_text() {
        let p = parse("\n/status pending\n/assign bob@example.com\n/tag vip, printer\n\nHello Alice,\n/not a command here\n");
        assert_eq!(
            p.commands,
            vec![
                Command::Status { status: Status::Pending },
                Command::Assign { who: "bob@example.com".into() },
                Command::Tag { tags: vec!["vip".into(), "printer".into()] }
            ]
        );
        assert!(p.errors.is_empty());
        assert_eq!(p.text, "Hello Alice,\n/not a command here");
    }

    #[test]
    fn errors_name_the_line() {
        let p = parse("/priority whenever\n/frobnicate\n/take now\nText");
        assert_eq!(p.errors.len(), 3);
        assert!(p.errors[0].error.contains("unknown priority"));
        assert!(p.errors[1].error.contains("unknown command /frobnicate"));
        assert!(p.errors[2].error.contains("takes no argument"));
        assert_eq!(p.text, "Text");
    }

    #[test]
    fn cc_takes_only_usable_addresses() {
        assert_eq!(parse("/cc Carl@Example.org, <dee@example.org>\nHi").commands, vec![Command::Cc { addresses: vec!["carl@example.org".into(), "dee@example.org".into()] }]);
        assert_eq!(parse("/cc @example.org\nHi").errors.len(), 1);
        // Issue 17.5: an empty domain label, a control character, more than MAX_CC addresses.
        for bad in ["evil@x..y", "evil@.x", "a\u{1b}b@x.y", "a@-x.y"] {
            assert_eq!(parse(&format!("/cc {bad}\nHi")).errors.len(), 1, "{bad}");
        }
        let many: Vec<String> = (0..=MAX_CC).map(|i| format!("p{i}@example.net")).collect();
        assert!(parse(&format!("/cc {}\nHi", many.join(" "))).errors[0].error.contains("at most"));
    }

    #[test]
    fn knowledge_commands() {
        let p = parse("/resolve\n/solution\n/publish Printer shows E42\nReplace the toner cartridge.");
        assert_eq!(p.commands, vec![Command::Status { status: Status::Resolved }, Command::Solution, Command::Publish { title: Some("Printer shows E42".into()) }]);
        assert!(p.is_solution());
        assert_eq!(p.text, "Replace the toner cartridge.");
        assert_eq!(parse("/search printer toner").search(), Some("printer toner"));
        assert_eq!(parse("/search").errors.len(), 1);
        assert_eq!(parse("/publish").commands, vec![Command::Publish { title: None }]);
        assert_eq!(parse(&format!("/search {}", "x ".repeat(100_000))).search().map(str::len), Some(crate::search::MAX_QUERY_CHARS));
    }

    #[test]
    fn shortcuts_and_notes() {
        let p = parse("#resolve\n/note\nInternal: printer vendor called.");
        assert_eq!(p.commands, vec![Command::Status { status: Status::Resolved }, Command::Note]);
        assert!(p.is_note());
        let p = parse("Just a reply.\n/close");
        assert!(p.commands.is_empty());
        assert_eq!(p.text, "Just a reply.\n/close");
    }
}
