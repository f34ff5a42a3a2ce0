//! The help desk's domain nouns: tickets, articles, statuses, priorities.
//! Plain data shared by every stage; no I/O here.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Primary key of a ticket; its human reference is derived from it (see [`crate::reference`]).
pub type TicketId = i64;

/// Lifecycle of a ticket. `New` until an agent acts; `Closed` is final until a reopen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    New,
    Open,
    Pending,
    Resolved,
    Closed,
}

impl Status {
    pub const ALL: [Status; 5] = [Status::New, Status::Open, Status::Pending, Status::Resolved, Status::Closed];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Open => "open",
            Status::Pending => "pending",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
        }
    }

    /// Whether the ticket still needs work (shown in "my open tickets", counted in backlog).
    pub fn is_active(self) -> bool {
        matches!(self, Status::New | Status::Open | Status::Pending)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown status `{s}` (expected one of new, open, pending, resolved, closed)"))
    }
}

/// Urgency of a ticket, ordered from low to urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Priority::Low, Priority::Normal, Priority::High, Priority::Urgent];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown priority `{s}` (expected one of low, normal, high, urgent)"))
    }
}

/// Which way a message travelled relative to the help desk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "inbound" => Ok(Direction::Inbound),
            "outbound" => Ok(Direction::Outbound),
            _ => Err(format!("unknown direction `{s}`")),
        }
    }
}

/// What an article is, as the product contract's JSON names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArticleKind {
    Customer,
    AgentReply,
    Note,
    AutoReply,
    Notification,
    System,
}

impl ArticleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArticleKind::Customer => "customer",
            ArticleKind::AgentReply => "agent_reply",
            ArticleKind::Note => "note",
            ArticleKind::AutoReply => "auto_reply",
            ArticleKind::Notification => "notification",
            ArticleKind::System => "system",
        }
    }
}

impl FromStr for ArticleKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            ArticleKind::Customer,
            ArticleKind::AgentReply,
            ArticleKind::Note,
            ArticleKind::AutoReply,
            ArticleKind::Notification,
            ArticleKind::System,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| format!("unknown article kind `{s}`"))
    }
}

/// A ticket as listed and shown (`tickets list|show --json`); field names are the public contract.
#[derive(Debug, Clone, Serialize)]
pub struct Ticket {
    pub id: TicketId,
    #[serde(rename = "ref")]
    pub reference: String,
    pub subject: String,
    pub status: Status,
    pub priority: Priority,
    pub queue: String,
    pub owner: Option<String>,
    pub requester: String,
    pub participants: Vec<String>,
    pub tags: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Escalation tier (1 first line, 2 after `/escalate`).
    pub tier: u8,
    /// When an agent first answered the customer (RFC 3339), if yet.
    pub first_response_at: Option<String>,
    /// incident, service_request, change, … (rules, catalog or `/type`).
    #[serde(rename = "type")]
    pub ticket_type: Option<String>,
    pub service: Option<String>,
    pub sla_policy: Option<String>,
    /// Change approval: requested, approved or rejected.
    pub approval: Option<String>,
    /// Linked configuration items.
    pub cis: Vec<String>,
    /// External groups the ticket was handed to, with their ticket numbers.
    pub groups: Vec<GroupRef>,
}

/// A hand-off to an external group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupRef {
    pub group: String,
    pub external_ref: Option<String>,
}

/// One attachment's metadata as shown on an article.
#[derive(Debug, Clone, Serialize)]
pub struct AttachmentInfo {
    pub name: String,
    pub content_type: String,
    pub size: u64,
}

/// One message on a ticket, inbound or outbound.
#[derive(Debug, Clone, Serialize)]
pub struct Article {
    pub id: i64,
    pub direction: Direction,
    pub kind: ArticleKind,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub message_id: String,
    pub body_text: String,
    pub created_at: String,
    pub attachments: Vec<AttachmentInfo>,
}

/// A ticket with its articles (`tickets show`).
#[derive(Debug, Clone, Serialize)]
pub struct TicketDetail {
    #[serde(flatten)]
    pub ticket: Ticket,
    pub articles: Vec<Article>,
    /// Audit trail of what the desk did and decided (guard verdicts, suppressed sends, failures).
    pub events: Vec<Event>,
}

/// An audit-trail entry on a ticket.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub kind: String,
    pub detail: String,
    pub created_at: String,
}

/// Lower-case an address for comparison and storage (local parts are case-insensitive in practice).
pub fn normalize_address(addr: &str) -> String {
    addr.trim().trim_matches(|c| c == '<' || c == '>').to_ascii_lowercase()
}

/// An address we can store as a participant and write to: an RFC 5322 §3.4.1 addr-spec
/// (dot-atom or quoted-string local part, domain or literal) as lettre, our composer, accepts it.
pub fn is_usable_address(addr: &str) -> bool {
    addr.parse::<lettre::Address>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_and_rejects_unknown() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
        }
        assert!("Resolved".parse::<Status>().is_ok());
        assert!("done".parse::<Status>().unwrap_err().contains("unknown status"));
    }

    #[test]
    fn priority_orders_low_to_urgent() {
        assert!(Priority::Low < Priority::Urgent);
        assert_eq!("HIGH".parse::<Priority>().unwrap(), Priority::High);
    }
}
