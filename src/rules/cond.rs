//! Conditions: one compiled test each (address, text, header, attachment, class, ticket facts,
//! time window), checked against one message. Patterns are compiled at load time; checking
//! allocates only for captures and never panics. No I/O, no clock: the time comes in the input.

use super::Input;
use crate::guard::Class;
use crate::ticket::{Priority, Status};
use memchr::memmem::Finder;
use regex::Regex;
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Captured values of named regex groups, by group name.
pub type Captures = BTreeMap<String, String>;

/// A compiled `/regex/` with what it needs to run cheaply.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub re: Regex,
    /// The regex has named groups (captures are extracted on a match).
    pub named: bool,
    /// As written, `/…/flags`.
    pub src: String,
    /// Lower-case ASCII literals one of which every match starts with (empty: unknown). On an
    /// ASCII haystack a regex whose literals are all absent cannot match, so the regex itself —
    /// and its memory, which dominates with hundreds of rules — is not touched.
    pub needles: Vec<Finder<'static>>,
}

impl Pattern {
    /// `lower` is the lower-cased haystack; `ascii` whether the haystack is ASCII.
    fn test(&self, haystack: &str, lower: &str, ascii: bool, caps: &mut Captures) -> bool {
        if ascii && !self.needles.is_empty() && !self.needles.iter().any(|n| n.find(lower.as_bytes()).is_some()) {
            return false;
        }
        // Most tests fail: decide with the cheap search, and pay for captures only on a match.
        if !self.re.is_match(haystack) {
            return false;
        }
        if !self.named {
            return true;
        }
        match self.re.captures(haystack) {
            Some(c) => {
                for name in self.re.capture_names().flatten() {
                    if let Some(m) = c.name(name) {
                        // One line, no control characters: captures end up in tags, fields, addresses.
                        caps.insert(name.to_string(), crate::reference::one_line(m.as_str()));
                    }
                }
                true
            }
            None => false,
        }
    }
}

/// How a text is matched: a case-insensitive substring, or a regex written `/…/`.
#[derive(Debug, Clone)]
pub enum TextPat {
    /// Lower-cased needle, searched in the lower-cased haystack. Body needles also have an id in
    /// the rule set's one-pass body searcher.
    Contains { needle: String, finder: Box<Finder<'static>>, body_id: Option<usize> },
    Regex(Box<Pattern>),
}

impl TextPat {
    fn test(&self, haystack: &str, lower: &Lower, caps: &mut Captures) -> bool {
        match self {
            TextPat::Contains { finder, .. } => finder.find(lower.text.as_bytes()).is_some(),
            TextPat::Regex(p) => p.test(haystack, &lower.text, lower.ascii, caps),
        }
    }

    /// As the admin wrote it: `"text"` or `/regex/`.
    pub fn show(&self) -> String {
        match self {
            TextPat::Contains { needle, .. } => format!("{needle:?}"),
            TextPat::Regex(p) => p.src.clone(),
        }
    }

    /// Whether the pattern is a regex (for "matches" vs "contains" wording).
    fn is_regex(&self) -> bool {
        matches!(self, TextPat::Regex(_))
    }
}

/// A lower-cased text and whether the original is ASCII, computed once per message.
pub struct Lower {
    text: String,
    ascii: bool,
}

impl Lower {
    fn of(s: &str) -> Lower {
        Lower { text: s.to_lowercase(), ascii: s.is_ascii() }
    }
}

/// How an address is matched: exact, by domain (and its subdomains), or by regex.
#[derive(Debug, Clone)]
pub enum AddrPat {
    Exact(String),
    /// Domain without `@`, lower-case.
    Domain(String),
    Regex(Box<Pattern>),
}

impl AddrPat {
    /// `addr` is already lower-case (see `ticket::normalize_address`).
    fn test(&self, addr: &str, caps: &mut Captures) -> bool {
        if addr.is_empty() {
            return false;
        }
        match self {
            AddrPat::Exact(a) => a == addr,
            AddrPat::Domain(d) => match addr.rsplit_once('@') {
                Some((_, dom)) => dom == d || (dom.len() > d.len() && dom.ends_with(d.as_str()) && dom.as_bytes()[dom.len() - d.len() - 1] == b'.'),
                None => false,
            },
            AddrPat::Regex(p) => p.test(addr, addr, addr.is_ascii(), caps),
        }
    }

    pub fn show(&self) -> String {
        match self {
            AddrPat::Exact(a) => a.clone(),
            AddrPat::Domain(d) => format!("@{d}"),
            AddrPat::Regex(p) => p.src.clone(),
        }
    }
}

/// Which address header a condition reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrField {
    From,
    To,
    Cc,
    ReplyTo,
    /// To and Cc together.
    Recipients,
}

/// What a header condition asks.
#[derive(Debug, Clone)]
pub enum HeaderTest {
    /// `true`: the header is present; `false`: absent.
    Present(bool),
    /// Any value of the header matches any pattern.
    Text(Vec<TextPat>),
}

/// One test, before negation.
#[derive(Debug, Clone)]
pub enum Test {
    Address(AddrField, Vec<AddrPat>),
    Mailbox(Vec<String>),
    Subject(Vec<TextPat>),
    Body(Vec<TextPat>),
    /// Lower-case header name.
    Header(String, HeaderTest),
    HasAttachment(bool),
    AttachmentName(Vec<TextPat>),
    AttachmentType(Vec<TextPat>),
    Class(Vec<Class>),
    SenderIsAgent(bool),
    TicketQueue(Vec<String>),
    TicketStatus(Vec<Status>),
    TicketPriority(Vec<Priority>),
    /// Lower-case tags; holds when the ticket has any of them.
    TicketTags(Vec<String>),
    /// Index 0 = Monday.
    Weekday([bool; 7]),
    /// Local time windows; any may hold.
    Time(Vec<Window>),
}

impl Test {
    /// Rough cost rank: conditions run cheapest first, so a rule fails before it reads a body.
    pub fn cost(&self) -> u8 {
        match self {
            Test::Mailbox(_) | Test::Class(_) | Test::SenderIsAgent(_) | Test::HasAttachment(_) => 0,
            Test::TicketQueue(_) | Test::TicketStatus(_) | Test::TicketPriority(_) | Test::TicketTags(_) => 0,
            Test::Weekday(_) | Test::Time(_) => 1,
            Test::Address(..) => 2,
            Test::Header(..) | Test::Subject(_) | Test::AttachmentName(_) | Test::AttachmentType(_) => 3,
            Test::Body(_) => 4,
        }
    }

    /// Whether the test reads the ticket (follow-ups only).
    pub fn needs_ticket(&self) -> bool {
        matches!(self, Test::TicketQueue(_) | Test::TicketStatus(_) | Test::TicketPriority(_) | Test::TicketTags(_))
    }

    /// Whether it reads the local time.
    pub fn needs_time(&self) -> bool {
        matches!(self, Test::Weekday(_) | Test::Time(_))
    }

    /// The sentence that is true when the test holds (`positive`) or when it does not, e.g.
    /// `subject contains "invoice"` / `subject does not contain "invoice"`.
    pub fn describe(&self, positive: bool) -> String {
        fn list<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
            items.iter().map(show).collect::<Vec<_>>().join(", ")
        }
        // "X is a" / "X is not a" / "X is one of a, b" / "X is none of a, b"
        fn is(what: &str, items: Vec<String>, positive: bool) -> String {
            match (items.len(), positive) {
                (1, true) => format!("{what} is {}", items[0]),
                (1, false) => format!("{what} is not {}", items[0]),
                (_, true) => format!("{what} is one of {}", items.join(", ")),
                (_, false) => format!("{what} is none of {}", items.join(", ")),
            }
        }
        fn text(what: &str, pats: &[TextPat], positive: bool) -> String {
            let contains = pats.iter().all(|p| !p.is_regex());
            let (one_pos, one_neg, many_pos, many_neg) = if contains {
                ("contains", "does not contain", "contains one of", "contains none of")
            } else {
                ("matches", "does not match", "matches one of", "matches none of")
            };
            let verb = match (pats.len(), positive) {
                (1, true) => one_pos,
                (1, false) => one_neg,
                (_, true) => many_pos,
                (_, false) => many_neg,
            };
            format!("{what} {verb} {}", list(pats, TextPat::show))
        }
        match self {
            Test::Address(f, pats) => {
                let who = match f {
                    AddrField::From => "From",
                    AddrField::To => "To",
                    AddrField::Cc => "Cc",
                    AddrField::ReplyTo => "Reply-To",
                    AddrField::Recipients => "To/Cc",
                };
                let verb = match (pats.len(), positive) {
                    (1, true) => "matches",
                    (1, false) => "does not match",
                    (_, true) => "matches one of",
                    (_, false) => "matches none of",
                };
                format!("{who} {verb} {}", list(pats, AddrPat::show))
            }
            Test::Mailbox(m) => is("mailbox", m.clone(), positive),
            Test::Subject(p) => text("subject", p, positive),
            Test::Body(p) => text("body", p, positive),
            Test::Header(name, HeaderTest::Present(want)) => {
                if *want == positive { format!("header {name} is present") } else { format!("header {name} is absent") }
            }
            Test::Header(name, HeaderTest::Text(p)) => text(&format!("header {name}"), p, positive),
            Test::HasAttachment(want) => {
                if *want == positive { "message has an attachment".into() } else { "message has no attachment".into() }
            }
            Test::AttachmentName(p) => text(if positive { "an attachment name" } else { "no attachment name" }, p, true),
            Test::AttachmentType(p) => text(if positive { "an attachment type" } else { "no attachment type" }, p, true),
            Test::Class(c) => is("guard class", c.iter().map(|c| c.as_str().to_string()).collect(), positive),
            Test::SenderIsAgent(want) => {
                if *want == positive { "sender is an agent".into() } else { "sender is not an agent".into() }
            }
            Test::TicketQueue(q) => is("ticket queue", q.clone(), positive),
            Test::TicketStatus(s) => is("ticket status", s.iter().map(|s| s.as_str().to_string()).collect(), positive),
            Test::TicketPriority(p) => is("ticket priority", p.iter().map(|p| p.as_str().to_string()).collect(), positive),
            Test::TicketTags(t) => {
                if positive { format!("ticket has tag {}", t.join(" or ")) } else { format!("ticket has no tag {}", t.join(", ")) }
            }
            Test::Weekday(days) => {
                let names: Vec<String> = WEEKDAYS.iter().zip(days).filter(|(_, on)| **on).map(|(n, _)| n.to_string()).collect();
                is("weekday", names, positive)
            }
            Test::Time(ranges) => {
                let r = list(ranges, |w| w.label.clone());
                if positive { format!("local time is within {r}") } else { format!("local time is outside {r}") }
            }
        }
    }
}

/// A window of local time on some weekdays: minutes since midnight, `[start, end)`. When
/// `start > end` the window runs past midnight into the next day (`fri 22:00-06:00` ends on
/// Saturday morning): the days name the day a window starts.
#[derive(Debug, Clone)]
pub struct Window {
    /// Index 0 = Monday.
    pub days: [bool; 7],
    pub start: u16,
    pub end: u16,
    /// As written, normalised (`mon-fri 08:00-18:00`).
    pub label: String,
}

impl Window {
    fn contains(&self, weekday: u8, minute: u16) -> bool {
        let today = self.days[weekday as usize % 7];
        let yesterday = self.days[(weekday as usize + 6) % 7];
        if self.start < self.end {
            today && self.start <= minute && minute < self.end
        } else {
            (today && minute >= self.start) || (yesterday && minute < self.end)
        }
    }
}

/// Weekday names in rule files, Monday first.
pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

pub fn hhmm(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// A test with its place in the file and its negation.
#[derive(Debug, Clone)]
pub struct Cond {
    pub test: Test,
    pub negated: bool,
    /// Where it was written: `when.subject` or `when.not.subject`.
    pub key: String,
    /// Shown when the condition fails, precomputed: `when.subject: subject does not contain …`.
    failure: Arc<str>,
}

impl Cond {
    pub fn new(key: String, test: Test, negated: bool) -> Cond {
        // A negated condition fails when its test holds, and the other way round.
        let failure = Arc::from(format!("{key}: {}", test.describe(negated)));
        Cond { test, negated, key, failure }
    }

    /// Why the condition failed for this message, for the trace.
    pub fn failure(&self, f: &Facts<'_, '_>, zone: Option<&Zone<'_>>) -> Arc<str> {
        if self.test.needs_ticket() && f.input.ticket.is_none() {
            return Arc::from(format!("{}: no ticket yet (a new message)", self.key));
        }
        if self.test.needs_time()
            && let Some(z) = zone
        {
            let name = z.tz.iana_name().unwrap_or("the rule's time zone");
            return Arc::from(match f.local(z.index, z.tz) {
                Some((wd, m)) => format!("{} (now {} {} in {name})", self.failure, WEEKDAYS[wd as usize % 7], hhmm(m)),
                None => format!("{}: the current time is out of range", self.key),
            });
        }
        self.failure.clone()
    }
}

/// Per-message facts computed at most once per evaluation (lower-cased texts, local times).
pub struct Facts<'i, 'a> {
    pub input: &'i Input<'a>,
    subject_lower: OnceCell<Lower>,
    body_lower: OnceCell<Lower>,
    /// Lower-cased header values, in the order of `Parsed::headers`.
    headers_lower: OnceCell<Vec<Lower>>,
    /// Every body needle of the rule set, searched in one pass over the body.
    body_searcher: Option<&'i aho_corasick::AhoCorasick>,
    /// Which body needles occur, by id.
    body_hits: OnceCell<Vec<bool>>,
    /// Per time zone of the rule set: (weekday index from Monday, minute of day), or `None` when
    /// the instant cannot be represented.
    local: Vec<OnceCell<Option<(u8, u16)>>>,
}

impl<'i, 'a> Facts<'i, 'a> {
    pub fn new(input: &'i Input<'a>, zones: usize, body_searcher: Option<&'i aho_corasick::AhoCorasick>) -> Self {
        Facts {
            input,
            subject_lower: OnceCell::new(),
            body_lower: OnceCell::new(),
            headers_lower: OnceCell::new(),
            body_searcher,
            body_hits: OnceCell::new(),
            local: (0..zones).map(|_| OnceCell::new()).collect(),
        }
    }

    /// One pass of the body searcher over the lower-cased body (at most once per message):
    /// instead of one scan per `body` rule.
    fn body_hits(&self, lower: &Lower) -> Option<&[bool]> {
        let ac = self.body_searcher?;
        let hits = self.body_hits.get_or_init(|| {
            let n = ac.patterns_len();
            let mut hits = vec![false; n];
            let mut found = 0;
            for m in ac.find_overlapping_iter(lower.text.as_str()) {
                let id = m.pattern().as_usize();
                if !hits[id] {
                    hits[id] = true;
                    found += 1;
                    if found == n {
                        break;
                    }
                }
            }
            hits
        });
        Some(hits)
    }

    fn local(&self, zone: usize, tz: &jiff::tz::TimeZone) -> Option<(u8, u16)> {
        let cell = self.local.get(zone)?;
        *cell.get_or_init(|| {
            let ts = jiff::Timestamp::from_second(self.input.now.unix_timestamp()).ok()?;
            let dt = tz.to_datetime(ts);
            let wd = dt.weekday().to_monday_zero_offset();
            let minute = dt.hour() as i32 * 60 + dt.minute() as i32;
            Some((u8::try_from(wd).ok()?, u16::try_from(minute).ok()?))
        })
    }
}

/// The time zone a rule's time tests use: index into the rule set's zones.
pub struct Zone<'z> {
    pub index: usize,
    pub tz: &'z jiff::tz::TimeZone,
}

impl Cond {
    /// Whether the condition holds (negation applied). Captures of a negated test are discarded.
    pub fn holds(&self, f: &Facts<'_, '_>, zone: Option<&Zone<'_>>, caps: &mut Captures) -> bool {
        if self.negated {
            let mut scratch = Captures::new();
            !self.test.run(f, zone, &mut scratch)
        } else {
            self.test.run(f, zone, caps)
        }
    }
}

impl Test {
    fn run(&self, f: &Facts<'_, '_>, zone: Option<&Zone<'_>>, caps: &mut Captures) -> bool {
        let input = f.input;
        let msg = input.message;
        match self {
            Test::Address(field, pats) => {
                let any = |list: &[crate::message::Mailbox], caps: &mut Captures| list.iter().any(|m| pats.iter().any(|p| p.test(&m.address, caps)));
                match field {
                    AddrField::From => pats.iter().any(|p| p.test(msg.from_address(), caps)),
                    AddrField::To => any(&msg.to, caps),
                    AddrField::Cc => any(&msg.cc, caps),
                    AddrField::ReplyTo => any(&msg.reply_to, caps),
                    AddrField::Recipients => any(&msg.to, caps) || any(&msg.cc, caps),
                }
            }
            Test::Mailbox(names) => names.iter().any(|n| n == input.mailbox),
            Test::Subject(pats) => {
                let lower = f.subject_lower.get_or_init(|| Lower::of(&msg.subject));
                pats.iter().any(|p| p.test(&msg.subject, lower, caps))
            }
            Test::Body(pats) => {
                let lower = f.body_lower.get_or_init(|| Lower::of(&msg.body_text));
                pats.iter().any(|p| match (p, f.body_hits(lower)) {
                    (TextPat::Contains { body_id: Some(id), .. }, Some(hits)) => hits.get(*id).copied().unwrap_or(false),
                    _ => p.test(&msg.body_text, lower, caps),
                })
            }
            Test::Header(name, HeaderTest::Present(want)) => msg.header(name).is_some() == *want,
            Test::Header(name, HeaderTest::Text(pats)) => {
                let lower = f.headers_lower.get_or_init(|| msg.headers.iter().map(|(_, v)| Lower::of(v)).collect());
                msg.headers.iter().zip(lower).filter(|((n, _), _)| n == name).any(|((_, v), l)| pats.iter().any(|p| p.test(v, l, caps)))
            }
            Test::HasAttachment(want) => msg.attachments.is_empty() != *want,
            Test::AttachmentName(pats) => msg.attachments.iter().any(|a| {
                let lower = Lower::of(&a.name);
                pats.iter().any(|p| p.test(&a.name, &lower, caps))
            }),
            Test::AttachmentType(pats) => msg.attachments.iter().any(|a| {
                let lower = Lower::of(&a.content_type);
                pats.iter().any(|p| p.test(&a.content_type, &lower, caps))
            }),
            Test::Class(classes) => classes.contains(&input.class),
            Test::SenderIsAgent(want) => input.sender_is_agent == *want,
            Test::TicketQueue(q) => input.ticket.as_ref().is_some_and(|t| q.iter().any(|q| q == t.queue)),
            Test::TicketStatus(s) => input.ticket.as_ref().is_some_and(|t| s.contains(&t.status)),
            Test::TicketPriority(p) => input.ticket.as_ref().is_some_and(|t| p.contains(&t.priority)),
            Test::TicketTags(tags) => input.ticket.as_ref().is_some_and(|t| t.tags.iter().any(|have| tags.iter().any(|want| have.eq_ignore_ascii_case(want)))),
            Test::Weekday(days) => match zone.and_then(|z| f.local(z.index, z.tz)) {
                Some((wd, _)) => days.get(wd as usize).copied().unwrap_or(false),
                None => false,
            },
            Test::Time(ranges) => match zone.and_then(|z| f.local(z.index, z.tz)) {
                Some((wd, m)) => ranges.iter().any(|w| w.contains(wd, m)),
                None => false,
            },
        }
    }
}

