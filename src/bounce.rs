//! Bounce: recognise a non-delivery report and say who failed, how badly, and which message it
//! was. Reads RFC 3464 delivery status notifications (`multipart/report;
//! report-type=delivery-status`) and the text MTAs write instead (qmail, Exim, Postfix, Sendmail,
//! Exchange/Office 365, Gmail, Yahoo, Domino, GroupWise, …).
//!
//! Pure and total: no I/O, no clock, never panics; malformed input gives `None` or a partial
//! report, never an error. MIME structure comes from mail-parser; only the DSN fields and the
//! text heuristics are parsed here. A report attached to a message is read only when that
//! message is itself a mail system's (never a person forwarding a bounce), and this module does
//! not decide what the desk does with a bounce (that is `guard` and `pipeline`).

use mail_parser::{HeaderName, Message, MessageParser, MimeHeaders, PartType};
use regex::Regex;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

/// How much of a report's text, status part or returned headers is read. Real reports are a
/// few kilobytes; hostile ones must not cost more than this (everything below is linear in it).
const MAX_TEXT: usize = 256 * 1024;

/// How a delivery went for one recipient (or, on [`BounceReport`], for the worst one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BounceKind {
    /// Delivered or relayed: a success DSN (RFC 3464 §2.3.3 `delivered`, `relayed`, `expanded`).
    Success,
    /// Not delivered yet; the MTA keeps trying (RFC 3464 §2.3.3 `delayed`). Not a failure.
    Delay,
    /// Failed, but the address itself may be fine: a temporary (4.x.x) cause, a full mailbox,
    /// a policy, content or reputation rejection, or an MTA that gave up retrying.
    Soft,
    /// Failed because the address is bad (unknown user or domain, moved, null MX): stop
    /// mailing it.
    Hard,
}

impl BounceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BounceKind::Success => "success",
            BounceKind::Delay => "delay",
            BounceKind::Soft => "soft",
            BounceKind::Hard => "hard",
        }
    }
}

/// Where the facts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BounceFormat {
    /// A machine-readable RFC 3464 `message/delivery-status` part (or its fields in the text).
    Dsn,
    /// An MTA's own human-readable text, read with heuristics.
    Text,
}

/// One recipient the report is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedRecipient {
    /// Lower-cased address.
    pub address: String,
    pub kind: BounceKind,
    /// RFC 3463 enhanced status code, e.g. `5.1.1`.
    pub status: Option<String>,
    /// RFC 3464 action (`failed`, `delayed`, `delivered`, `relayed`, `expanded`), lower-case.
    pub action: Option<String>,
    /// The remote server's or MTA's explanation, on one line.
    pub diagnostic: Option<String>,
}

/// What a bounce says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BounceReport {
    /// The worst recipient outcome (hard > soft > delay > success).
    pub kind: BounceKind,
    pub format: BounceFormat,
    pub recipients: Vec<FailedRecipient>,
    /// Message-ID of the message that bounced, without angle brackets.
    pub original_message_id: Option<String>,
    /// The MTA that wrote the report (RFC 3464 §2.2.2 Reporting-MTA), when it says.
    pub reporting_mta: Option<String>,
}

impl BounceReport {
    /// True when some recipient did not get the message (hard or soft failure).
    pub fn is_failure(&self) -> bool {
        matches!(self.kind, BounceKind::Hard | BounceKind::Soft)
    }
}

/// Read a raw message. Bare-CR (classic Mac) line endings are accepted like LF and CRLF.
pub fn parse(raw: &[u8]) -> Option<BounceReport> {
    let raw = crate::message::normalize_line_endings(raw);
    let msg = MessageParser::default().parse(raw.as_ref())?;
    from_message(&msg)
}

/// Read a parsed message: `None` when it is not a delivery report.
pub fn from_message(msg: &Message<'_>) -> Option<BounceReport> {
    let report_type = report_type(msg);
    // RFC 6522 §3: the report-type names the machine-readable part; feedback (RFC 5965) and
    // disposition (RFC 8098) reports are not delivery reports. A multipart/report without a
    // report-type is common in MTA output and read like a DSN.
    if report_type.as_deref().is_some_and(|t| !t.is_empty() && t != "delivery-status") {
        return None;
    }
    let text = report_text(msg);
    let (report, quoted) = split_at_original(&text);
    let status_part = dsn_part(msg);
    let originals = original_headers(msg, quoted);
    let dsn = status_part.as_deref().map(parse_dsn).filter(|d| !d.recipients.is_empty()).or_else(|| embedded_dsn(report));

    let (format, recipients, reporting_mta) = match dsn {
        Some(d) => (BounceFormat::Dsn, with_report_text(d.recipients, report), d.reporting_mta),
        None if report_type.is_some() || is_text_bounce(msg, &text, report) => match read_text_report(msg, report, &originals) {
            Ok(recipients) => (BounceFormat::Text, recipients, text_reporting_mta(report)),
            // An MTA that attaches its own DSN and names nobody in its text.
            Err(inner) => return from_message(inner),
        },
        None => return None,
    };
    let kind = recipients.iter().map(|r| r.kind).max().unwrap_or_else(|| fallback_kind(msg, report));
    let original_message_id = original_message_id(&originals, quoted, status_part.as_deref());
    Some(BounceReport { kind, format, recipients, original_message_id, reporting_mta })
}

/// Message-ID of the returned message: from its headers, the text quoted below the report, an
/// Exchange-style Original-Message-ID field, or — when a lost MIME boundary let the status part
/// swallow the returned headers — a Message-ID line in the status part (DSN fields never
/// include one, RFC 3464 §2.2, §2.3).
fn original_message_id(originals: &[String], quoted: &str, status_part: Option<&str>) -> Option<String> {
    originals
        .iter()
        .find_map(|h| header_message_id(h))
        .or_else(|| header_message_id(quoted))
        .or_else(|| status_part.and_then(dsn_original_id))
        .or_else(|| status_part.and_then(header_message_id))
}

/// Cheap first look at an already parsed message: could it be a delivery report? False means
/// [`parse`] would surely say `None`, so callers can skip the second parse for ordinary mail.
pub fn might_be_bounce(msg: &crate::message::Parsed) -> bool {
    let from = msg.from.as_ref();
    let address = from.map(|m| m.address.as_str()).unwrap_or("");
    let local = address.split('@').next().unwrap_or("");
    let name = from.and_then(|m| m.name.as_deref()).unwrap_or("");
    let null_path = msg.header("return-path").is_some_and(|rp| rp.trim().trim_matches(['<', '>']).trim().is_empty());
    msg.content_type == "multipart/report"
        || msg.header("x-failed-recipients").is_some()
        || null_path
        || system_sender(local, name)
        || bounce_subject(&msg.subject)
        || bounce_body(&msg.body_text)
}

/// `MAILER_DAEMON` on the local part or the name, `SYSTEM_SENDER` on the local part,
/// `SYSTEM_SENDER_NAME` on the name — asked only of senders whose address or name has one of
/// their words, so a person's mail compiles none of them.
fn system_sender(local: &str, name: &str) -> bool {
    const WORDS: [&str; 5] = ["daemon", "postmaster", "post_master", "mail", "mdaemon"];
    let (l, n) = (local.to_lowercase(), name.to_lowercase());
    if !WORDS.iter().any(|w| l.contains(w) || n.contains(w)) {
        return false;
    }
    MAILER_DAEMON.is_match(local) || MAILER_DAEMON.is_match(name.trim()) || SYSTEM_SENDER.is_match(local) || SYSTEM_SENDER_NAME.is_match(name)
}

// Every phrase of `BOUNCE_BODY` and `BOUNCE_SUBJECT` contains one of these words (a test
// checks it). Ordinary mail has none of them, so the regexes are neither run nor — in a
// short-lived `postdesk deliver` — compiled for it.
const BOUNCE_BODY_WORDS: [&str; 12] = [
    "deliver", "qmail", "at host", "inform you", "following address", "reach the following", "permanent fatal", "following recipient",
    "a message that you sent", "failed recipients", "failed addresses", "returned mail",
];
const BOUNCE_SUBJECT_WORDS: [&str; 19] = [
    "deliver", "return", "failure", "mail fail", "failed mail", "delay", "could not send", "postmaster", "error", "non remis", "unzustellbar", "no se puede entregar",
    "non recapitabile", "onbestelbaar", "não entregue", "エラー", "不達", "未達", "退信",
];

static BOUNCE_BODY_PREFILTER: LazyLock<aho_corasick::AhoCorasick> =
    LazyLock::new(|| aho_corasick::AhoCorasick::builder().ascii_case_insensitive(true).build(BOUNCE_BODY_WORDS).expect("fixed words"));

fn bounce_body(text: &str) -> bool {
    BOUNCE_BODY_PREFILTER.is_match(text) && BOUNCE_BODY.is_match(text)
}

fn bounce_subject(subject: &str) -> bool {
    let lower = subject.to_lowercase();
    BOUNCE_SUBJECT_WORDS.iter().any(|w| lower.contains(w)) && BOUNCE_SUBJECT.is_match(subject)
}

// ---------------------------------------------------------------------------------------------
// MIME structure

/// A returned message that is itself an RFC 3464 report.
fn wrapped_report<'a>(msg: &'a Message<'a>) -> Option<&'a Message<'a>> {
    msg.parts.iter().filter_map(|p| p.message()).find(|m| report_type(m).as_deref() == Some("delivery-status"))
}

/// `report-type` of a top-level `multipart/report` (RFC 6522 §3), lower-case.
fn report_type(msg: &Message<'_>) -> Option<String> {
    let ct = msg.root_part().content_type()?;
    let is_report = ct.ctype().eq_ignore_ascii_case("multipart") && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("report"));
    if !is_report {
        return None;
    }
    Some(ct.attribute("report-type").unwrap_or("").trim().to_ascii_lowercase())
}

/// `type/subtype` of a part, lower-case; text/plain when absent (RFC 2045 §5.2).
fn mime_type(part: &mail_parser::MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")).to_ascii_lowercase(),
        None => "text/plain".into(),
    }
}

/// Body of a part as text, whatever mail-parser decided it was (the DSN part is "binary").
fn part_text(part: &mail_parser::MessagePart<'_>) -> Option<String> {
    let text = match &part.body {
        PartType::Text(t) => Some(t.to_string()),
        PartType::Html(h) => Some(mail_parser::decoders::html::html_to_text(h)),
        PartType::Binary(b) | PartType::InlineBinary(b) => Some(String::from_utf8_lossy(b).into_owned()),
        PartType::Message(m) => Some(String::from_utf8_lossy(m.raw_message()).into_owned()),
        PartType::Multipart(_) => None,
    };
    text.map(capped)
}

/// At most [`MAX_TEXT`] bytes, cut at a character boundary.
fn capped(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The machine-readable status part (RFC 3464 §2.1; RFC 6533 §6.2 for the UTF-8 variant).
fn dsn_part(msg: &Message<'_>) -> Option<String> {
    msg.parts
        .iter()
        .find(|p| matches!(mime_type(p).as_str(), "message/delivery-status" | "message/global-delivery-status"))
        .and_then(part_text)
}

/// The human-readable text of the report: its text/plain parts, or the HTML ones converted when
/// there is no plain text. Never the returned message or header parts.
fn report_text(msg: &Message<'_>) -> String {
    capped(readable_text(msg)).replace("\r\n", "\n")
}

fn readable_text(msg: &Message<'_>) -> String {
    let readable = |want_html: bool| -> Vec<String> {
        msg.parts
            .iter()
            .filter(|p| match (&p.body, mime_type(p)) {
                (PartType::Html(_), _) => want_html,
                // A multipart whose boundary is missing comes back as one text part.
                (PartType::Text(_), t) => !want_html && (t == "text/plain" || t.starts_with("multipart/")),
                _ => false,
            })
            .filter_map(part_text)
            .collect()
    };
    let plain = readable(false);
    let parts = if plain.iter().any(|t| !t.trim().is_empty()) { plain } else { readable(true) };
    if parts.iter().any(|t| !t.trim().is_empty()) {
        return parts.join("\n");
    }
    // A multipart whose boundary mail-parser could not find comes back as one opaque part;
    // its raw text is still the best report there is.
    msg.parts
        .iter()
        .filter(|p| matches!(p.body, PartType::Binary(_) | PartType::InlineBinary(_)) && mime_type(p).starts_with("multipart/"))
        .filter_map(part_text)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Header blocks of the returned message, best first: a `message/rfc822` part, a
/// `text/rfc822-headers` part (RFC 3462 §2; RFC 6533 `message/global[-headers]`), then the text
/// quoted below the report.
fn original_headers(msg: &Message<'_>, quoted: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in msg.parts.iter().skip(1) {
        // A returned message pasted as a MIME part without part headers: its header fields
        // became the part's.
        if part.headers.iter().any(|h| matches!(h.name, HeaderName::MessageId)) {
            let raw = msg.raw_message();
            let (start, end) = (part.raw_header_offset() as usize, part.raw_body_offset() as usize);
            out.extend(raw.get(start..end).map(|h| capped(String::from_utf8_lossy(h).into_owned())));
        }
        match (&part.body, mime_type(part).as_str()) {
            (PartType::Message(m), _) => out.push(capped(String::from_utf8_lossy(header_section(m.raw_message())).into_owned())),
            (_, "text/rfc822-headers" | "message/global-headers" | "message/rfc822-headers" | "message/rfc822" | "message/global" | "message/partial") => {
                out.extend(part_text(part).and_then(|t| first_header_block(&t)));
            }
            _ => {}
        }
    }
    out.extend(first_header_block(quoted));
    out
}

/// The first blank-line-separated block of header fields that names the message (Message-ID,
/// From, To, Subject, Date, Received), skipping report lines and MIME part headers before it.
fn first_header_block(text: &str) -> Option<String> {
    let normalized = text.replace("\r\n", "\n");
    normalized
        .split("\n\n")
        .map(|block| block.lines().skip_while(|l| !HEADER_LINE.is_match(l)).collect::<Vec<_>>().join("\n"))
        .find(|block| NAMING_HEADER.is_match(block))
}

/// Bytes up to the first empty line (LF or CRLF).
fn header_section(raw: &[u8]) -> &[u8] {
    let raw = raw.get(..MAX_TEXT).unwrap_or(raw);
    let lf = raw.windows(2).position(|w| w == b"\n\n");
    let crlf = raw.windows(4).position(|w| w == b"\r\n\r\n");
    let end = lf.into_iter().chain(crlf).min().unwrap_or(raw.len());
    raw.get(..end).unwrap_or(raw)
}

// ---------------------------------------------------------------------------------------------
// RFC 3464 fields

struct Dsn {
    reporting_mta: Option<String>,
    recipients: Vec<FailedRecipient>,
}

/// Parse a `message/delivery-status` body: per-message fields, then one group of per-recipient
/// fields each, groups separated by blank lines (RFC 3464 §2.1). Tolerates missing blank lines
/// and fields out of order.
fn parse_dsn(text: &str) -> Dsn {
    let mut reporting_mta = None;
    let mut groups: Vec<Vec<(String, String)>> = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    // Which recipient fields the current group has: (Original-Recipient, Final-Recipient).
    let mut named = (false, false);
    for (name, value) in dsn_fields(text) {
        let is_original = name == "original-recipient";
        let is_final = name == "final-recipient";
        match name.as_str() {
            "" => {
                if named.0 || named.1 {
                    groups.push(std::mem::take(&mut current));
                } else {
                    // The per-message group (RFC 3464 §2.2) ends here.
                    current.clear();
                }
                named = (false, false);
            }
            // RFC 3464 §2.2.2
            "reporting-mta" => reporting_mta = Some(strip_type(&value)),
            // Without the blank line, a second Original-Recipient (§2.3.1) or Final-Recipient
            // (§2.3.2) starts the next recipient.
            _ if (is_original && named.0) || (is_final && named.1) => {
                groups.push(std::mem::take(&mut current));
                current.push((name, value));
                named = (is_original, is_final);
            }
            _ => {
                named = (named.0 || is_original, named.1 || is_final);
                current.push((name, value));
            }
        }
    }
    if named.0 || named.1 {
        groups.push(current);
    }
    let mut seen = HashSet::new();
    let recipients = groups.iter().filter_map(|g| dsn_recipient(g)).filter(|r| seen.insert(r.address.clone())).collect();
    Dsn { reporting_mta: reporting_mta.filter(|m| !m.is_empty()), recipients }
}

/// `(lower-case name, unfolded value)` per field; `("", "")` for each blank line.
fn dsn_fields(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            out.push((String::new(), String::new()));
        } else if line.starts_with([' ', '\t']) {
            // RFC 3464 §2.1 / RFC 5322 §2.2.3: folded continuation of the previous field.
            if let Some((_, v)) = out.last_mut().filter(|(n, _)| !n.is_empty()) {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if !name.is_empty() && !name.contains(' ') {
                out.push((name.to_ascii_lowercase(), value.trim().to_string()));
            }
        }
    }
    out
}

fn dsn_recipient(group: &[(String, String)]) -> Option<FailedRecipient> {
    let get = |name: &str| group.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    // RFC 3464 §2.3.1: Original-Recipient is the address as we gave it, so it matches our
    // records; Final-Recipient (§2.3.2) may be an alias or forwarding target.
    let address = get("original-recipient").and_then(typed_address).or_else(|| get("final-recipient").and_then(typed_address))?;
    let action = get("action").map(|a| a.split([' ', '(', ';']).next().unwrap_or("").to_ascii_lowercase()).filter(|a| !a.is_empty());
    // RFC 3464 §2.3.4: the Status field holds an RFC 3463 code, maybe followed by a comment.
    let status = get("status").and_then(find_status_code);
    // RFC 3464 §2.3.6: Diagnostic-Code is `diagnostic-type ; text`.
    let diagnostic = get("diagnostic-code").map(|d| one_line(&strip_type(d))).filter(|d| !d.is_empty());
    let status = specific_status(status, diagnostic.as_deref());
    let kind = dsn_kind(action.as_deref(), status.as_deref(), diagnostic.as_deref().unwrap_or(""));
    Some(FailedRecipient { address, kind, status, action, diagnostic })
}

/// The Status field, unless it is missing or only says the class (X.0.0) while the remote
/// server's reply in Diagnostic-Code names a specific code of the same class.
fn specific_status(status: Option<String>, diagnostic: Option<&str>) -> Option<String> {
    let from_reply = diagnostic.and_then(find_status_code);
    match (status, from_reply) {
        (Some(s), Some(r)) if s.ends_with(".0.0") && r.get(..1) == s.get(..1) && !r.ends_with(".0.0") => Some(r),
        (None, r) => r,
        (s, _) => s,
    }
}

/// Outcome of one DSN recipient.
fn dsn_kind(action: Option<&str>, status: Option<&str>, diagnostic: &str) -> BounceKind {
    match action {
        // RFC 3464 §2.3.3: delayed = not yet delivered, will retry.
        Some("delayed") => BounceKind::Delay,
        Some("delivered" | "relayed" | "expanded") => BounceKind::Success,
        _ => failure_kind(status, diagnostic),
    }
}

/// `type; value` → `value` (RFC 3464 §2.1.2 address-type, §2.2.2 mta-name-type, §2.3.6
/// diagnostic-type).
fn strip_type(v: &str) -> String {
    match v.split_once(';') {
        Some((ty, rest)) if !ty.trim().contains(' ') && !ty.contains('@') => rest.trim().to_string(),
        _ => v.trim().to_string(),
    }
}

/// The address in `rfc822; user@example.org` (also with brackets, quotes or a comment).
fn typed_address(v: &str) -> Option<String> {
    let v = strip_type(v);
    // The field holds one address; take it whole so quoted local parts survive (RFC 5321 §4.1.2).
    let v = match v.rfind(" (") {
        Some(i) if v.ends_with(')') => v.get(..i).unwrap_or(&v),
        _ => &v,
    };
    let v = v.trim().trim_start_matches('<').trim_end_matches('>').trim();
    let (local, domain) = v.rsplit_once('@')?;
    let ok = !local.is_empty() && !domain.is_empty() && !domain.contains(char::is_whitespace) && !v.contains(['<', '>']);
    ok.then(|| normalize(v))
}

/// DSN fields pasted into the text of a report that has no `message/delivery-status` part.
fn embedded_dsn(report: &str) -> Option<Dsn> {
    let start = DSN_FIELD_START.find(report)?.start();
    let dsn = parse_dsn(report.get(start..)?);
    (!dsn.recipients.is_empty()).then_some(dsn)
}

/// Exchange and a few others name the original Message-ID in a DSN field instead of
/// returning the message.
fn dsn_original_id(status_part: &str) -> Option<String> {
    dsn_fields(status_part)
        .into_iter()
        .find(|(n, _)| matches!(n.as_str(), "original-message-id" | "x-original-message-id"))
        .map(|(_, v)| clean_id(&v))
        .filter(|id| is_message_id(id))
}

// ---------------------------------------------------------------------------------------------
// Text reports

/// Is this an MTA's own-format bounce? Exim's X-Failed-Recipients; a mailer-daemon; another
/// mail-system sender whose subject or text reports a failure; or anyone whose text opens
/// with a delivery-report phrase under a bounce subject — but never a person forwarding one.
fn is_text_bounce(msg: &Message<'_>, text: &str, report: &str) -> bool {
    let subject = msg.subject().unwrap_or("");
    let sender = sender_role(msg);
    if msg.header_raw("X-Failed-Recipients").is_some() || sender == Sender::MailerDaemon {
        return true;
    }
    if sender == Sender::System {
        return BOUNCE_SUBJECT.is_match(subject) || BOUNCE_BODY.is_match(report) || FAILURE_DETAIL.is_match(report);
    }
    let top = opening_lines(text, 12);
    let vouched = BOUNCE_SUBJECT.is_match(subject) || MTA_SIGNATURE.is_match(&top) || null_reverse_path(msg);
    !FORWARD_SUBJECT.is_match(subject) && BOUNCE_BODY.is_match(&top) && vouched
}

/// RFC 5321 §4.5.5: reports are sent with a null reverse path (`Return-Path: <>`). So are
/// auto-replies (RFC 3834 §3.3), so this alone proves nothing.
fn null_reverse_path(msg: &Message<'_>) -> bool {
    msg.header_raw("Return-Path").is_some_and(|rp| rp.trim().trim_matches(['<', '>']).trim().is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    /// `MAILER-DAEMON`: by convention only ever sends delivery reports.
    MailerDaemon,
    /// Postmaster and other mail-system names: often but not only reports.
    System,
    Other,
}

fn sender_role(msg: &Message<'_>) -> Sender {
    let from = msg.from().and_then(|a| a.first());
    let address = from.and_then(|a| a.address()).unwrap_or("");
    let name = from.and_then(|a| a.name()).unwrap_or("");
    let local = address.split('@').next().unwrap_or("");
    // `From: <>`: a From field with the null address, as some filters write it.
    let null_from = msg.header_raw("From").is_some() && address.is_empty() && name.is_empty();
    if MAILER_DAEMON.is_match(local) || (address.is_empty() && MAILER_DAEMON.is_match(name.trim())) {
        Sender::MailerDaemon
    } else if null_from || SYSTEM_SENDER.is_match(local) || SYSTEM_SENDER_NAME.is_match(name) {
        Sender::System
    } else {
        Sender::Other
    }
}

/// The first `n` non-blank lines a person did not quote or forward.
fn opening_lines(text: &str, n: usize) -> String {
    text.lines()
        .take_while(|l| !FORWARD_MARKER.is_match(l))
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('>'))
        .take(n)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Split the report text where the returned message starts: (report, quoted original).
fn split_at_original(text: &str) -> (&str, &str) {
    match ORIGINAL_MARKER.find(text) {
        Some(m) => (text.get(..m.start()).unwrap_or(text), text.get(m.start()..).unwrap_or("")),
        None => (text, ""),
    }
}

/// Addresses a report is not about. A line that starts with an address names a recipient
/// unless it is the report's own sender; an address inside a sentence may also be one of the
/// bounce's participants (the original sender) or the returned message's sender.
struct Skip {
    reporter: HashSet<String>,
    addresses: HashSet<String>,
}

impl Skip {
    fn new(msg: &Message<'_>, originals: &[String]) -> Skip {
        let reporter: HashSet<String> = msg.from().into_iter().flat_map(|l| l.iter()).filter_map(|a| a.address()).map(normalize).collect();
        let mut addresses = reporter.clone();
        let lists = [msg.to(), msg.cc(), msg.reply_to(), msg.sender()];
        for list in lists.into_iter().flatten() {
            addresses.extend(list.iter().filter_map(|a| a.address()).map(normalize));
        }
        if let Some(v) = msg.header_raw("Return-Path") {
            addresses.extend(ADDRESS.find_iter(v).map(|m| normalize(m.as_str())));
        }
        for block in originals {
            addresses.extend(header_addresses(block, &["from", "sender", "return-path", "reply-to"]));
        }
        Skip { reporter, addresses }
    }

    fn none() -> Skip {
        Skip { reporter: HashSet::new(), addresses: HashSet::new() }
    }

    fn skips_leading(&self, address: &str) -> bool {
        self.reporter.contains(address)
    }

    fn skips_mention(&self, address: &str) -> bool {
        let local = address.split('@').next().unwrap_or("");
        SYSTEM_LOCAL.is_match(local) || self.addresses.contains(address)
    }
}

/// The recipients of a text report: those it names, else the returned message's only recipient.
/// `Err` with the attached report when it names nobody and carries the MTA's own DSN.
fn read_text_report<'a>(msg: &'a Message<'a>, report: &str, originals: &[String]) -> Result<Vec<FailedRecipient>, &'a Message<'a>> {
    let lines: Vec<&str> = report.lines().collect();
    let named = named_recipients(msg, &lines, &Skip::new(msg, originals));
    if named.is_empty()
        && let Some(inner) = wrapped_report(msg)
    {
        return Err(inner);
    }
    let found = if named.is_empty() { sole_original_recipient(originals, lines.len()) } else { named };
    let delay = says_delay(msg.subject().unwrap_or(""), report);
    Ok(text_recipients(report, &lines, found, delay))
}

/// Recipients a text report names, with the line where each is named. Exim's
/// X-Failed-Recipients header is authoritative; otherwise lines that start with an address
/// (or a recipient label and an address); otherwise addresses in sentences about a failure.
fn named_recipients(msg: &Message<'_>, lines: &[&str], skip: &Skip) -> Vec<(String, usize)> {
    let mut found = leading_recipients(lines, skip);
    if found.is_empty() {
        found = mentioned_recipients(lines, skip);
    }
    let listed: Vec<String> = msg.header_raw("X-Failed-Recipients").map(|h| ADDRESS.find_iter(h).map(|m| normalize(m.as_str())).collect()).unwrap_or_default();
    if listed.is_empty() {
        return found;
    }
    let at: HashMap<String, usize> = found.into_iter().collect();
    listed
        .into_iter()
        .map(|a| {
            let line = at.get(&a).copied().unwrap_or(lines.len());
            (a, line)
        })
        .collect()
}

/// Each named recipient with what the report says about it.
fn text_recipients(report: &str, lines: &[&str], found: Vec<(String, usize)>, delay: bool) -> Vec<FailedRecipient> {
    let only = found.len() == 1;
    blocks(lines, found).into_iter().map(|(address, block)| text_recipient(&address, &block, report, only, delay)).collect()
}

/// Each recipient with the report lines about it: from its line up to the next recipient's.
fn blocks(lines: &[&str], found: Vec<(String, usize)>) -> Vec<(String, String)> {
    let mut starts: Vec<usize> = found.iter().map(|(_, i)| *i).collect();
    starts.sort_unstable();
    starts.dedup();
    found
        .into_iter()
        .map(|(address, start)| {
            let next = starts.partition_point(|s| *s <= start);
            let end = starts.get(next).copied().unwrap_or(lines.len());
            let block = lines.get(start..end).map(|l| l.join("\n")).unwrap_or_default();
            (address, block)
        })
        .collect()
}

/// A DSN's Diagnostic-Code is often terse or missing while its human-readable part says what
/// happened to the same address: judge failures on both, and borrow the explanation.
fn with_report_text(mut recipients: Vec<FailedRecipient>, report: &str) -> Vec<FailedRecipient> {
    let lines: Vec<&str> = report.lines().collect();
    let explained: HashMap<String, String> = blocks(&lines, leading_recipients(&lines, &Skip::none())).into_iter().collect();
    for r in recipients.iter_mut().filter(|r| matches!(r.kind, BounceKind::Hard | BounceKind::Soft)) {
        let Some(block) = explained.get(&r.address) else { continue };
        let context = format!("{}\n{block}", r.diagnostic.as_deref().unwrap_or(""));
        r.kind = failure_kind(r.status.as_deref(), &context);
        if r.diagnostic.is_none() {
            r.diagnostic = explanation(block);
        }
    }
    recipients
}

/// Recipients named at the start of a line: `<user@example.org>:` (qmail, Postfix),
/// `  user@example.org` (Exim, Gmail), `Unknown user: …`, `Name<mailto:…>` (Exchange).
fn leading_recipients(lines: &[&str], skip: &Skip) -> Vec<(String, usize)> {
    let mut found: Vec<(String, usize)> = Vec::new();
    let mut seen = HashSet::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(address) = line_recipient(line)
            && !skip.skips_leading(&address)
            && seen.insert(address.clone())
        {
            found.push((address, i));
        }
    }
    found
}

/// Recipients only mentioned inside a sentence that reports a failure ("Local mailbox
/// user@example.org is unavailable: user not found").
fn mentioned_recipients(lines: &[&str], skip: &Skip) -> Vec<(String, usize)> {
    let mut found: Vec<(String, usize)> = Vec::new();
    let mut seen = HashSet::new();
    let mut above = "";
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        // The line itself reports the failure, or the line above introduces it ("did not reach
        // the following recipient(s):").
        let reported = FAILURE_CONTEXT.is_match(line) || FAILURE_CONTEXT.is_match(above);
        above = line;
        if !reported {
            continue;
        }
        for m in ADDRESS.find_iter(line) {
            let before = line.get(m.start().saturating_sub(24)..m.start()).or_else(|| line.get(..m.start())).unwrap_or("");
            // Part of a URL or parameter, or the sender ("not accepting mail from x@y").
            let glued = before.ends_with('=') || before.ends_with('/');
            let sender = SENDER_BEFORE.is_match(before);
            // X.400 addresses (Exchange, GroupWise) carry the Internet one as `SMTP=user@host`.
            let raw = m.as_str();
            let raw = raw.get(..5).filter(|p| p.eq_ignore_ascii_case("smtp=")).map(|_| raw.get(5..).unwrap_or(raw)).unwrap_or(raw);
            let address = normalize(raw);
            if !glued && !sender && !skip.skips_mention(&address) && seen.insert(address.clone()) {
                found.push((address, i));
            }
        }
    }
    found
}

/// A report that names nobody is about the returned message's recipient when it had only one.
fn sole_original_recipient(originals: &[String], at: usize) -> Vec<(String, usize)> {
    let Some(block) = originals.first() else { return Vec::new() };
    let mut all = header_addresses(block, &["to", "cc"]);
    all.dedup();
    match all.as_slice() {
        [only] => vec![(only.clone(), at)],
        _ => Vec::new(),
    }
}

/// One recipient of a text report, from the lines that explain it.
fn text_recipient(address: &str, block: &str, report: &str, only: bool, delay: bool) -> FailedRecipient {
    // Sendmail and Postfix name the alias we wrote to: "(expanded from: <orig@example.org>)".
    let address = EXPANDED_FROM.captures(block).and_then(|c| c.name("addr")).map(|m| normalize(m.as_str())).unwrap_or_else(|| address.to_string());
    // A text report is about failures: 2.x.x codes and 2xx replies in it are transcript noise.
    let status = failure_status(block).or_else(|| if only { failure_status(report) } else { None });
    let smtp = find_reply_code(block).or_else(|| if only { find_reply_code(report) } else { None });
    // A lone address line: the whole report explains it, when it is about one recipient only.
    let context = if only && block.lines().nth(1).is_none() { report } else { block };
    let kind = if delay {
        BounceKind::Delay
    } else {
        // Without an enhanced code, the SMTP reply code's first digit gives the class (RFC 5321 §4.2.1).
        let status = status.clone().or_else(|| smtp.map(|c| format!("{c}.0.0")));
        failure_kind(status.as_deref(), context)
    };
    FailedRecipient {
        address,
        kind,
        status,
        action: Some(if delay { "delayed" } else { "failed" }.into()),
        diagnostic: explanation(block),
    }
}

/// What the lines about a recipient say, on one line, without the address that opens them.
fn explanation(block: &str) -> Option<String> {
    let rest = match RECIPIENT_LINE.find(block) {
        Some(m) => block.get(m.end()..).unwrap_or(block),
        None => block,
    };
    // Exchange repeats the address as a link: `user@example.org<mailto:user@example.org>`.
    let rest = rest.trim_start().strip_prefix("mailto:").and_then(|r| r.split_once('>')).map(|(_, r)| r).unwrap_or(rest);
    Some(one_line(rest).trim_matches([' ', ':', '<', '>', '.', '(', ')']).to_string()).filter(|d| !d.is_empty())
}

/// The address a report line names as a recipient: the line starts with it (after bullets,
/// quote marks, a recipient label or a display name with `<mailto:…>`).
fn line_recipient(line: &str) -> Option<String> {
    let caps = RECIPIENT_LINE.captures(line)?;
    Some(normalize(caps.name("addr")?.as_str()))
}

/// Text reports that only warn (RFC 3464 `delayed` in words): the MTA says it keeps trying, or
/// the subject says delay/warning, and the text does not say it gave up.
fn says_delay(subject: &str, report: &str) -> bool {
    let subject_says = DELAY_SUBJECT.is_match(subject) && !FAILURE_SUBJECT.is_match(subject);
    (subject_says || DELAY_BODY.is_match(report)) && !GAVE_UP.is_match(report)
}

/// Kind when no recipient could be named.
fn fallback_kind(msg: &Message<'_>, report: &str) -> BounceKind {
    if says_delay(msg.subject().unwrap_or(""), report) {
        return BounceKind::Delay;
    }
    failure_kind(failure_status(report).as_deref(), report)
}

fn text_reporting_mta(report: &str) -> Option<String> {
    REPORTING_HOST.captures(report).and_then(|c| c.name("host")).map(|h| h.as_str().trim_end_matches('.').to_ascii_lowercase())
}

// ---------------------------------------------------------------------------------------------
// Hard or soft

/// Hard when the address is bad, soft otherwise. Class 4 is transient and never hard (RFC 3463
/// §3.1). A full mailbox, a block or a policy refusal is soft whatever the code says. A specific
/// code decides; a generic one (X.0.0, X.1.0, X.3.0, X.4.x, X.5.x) or none leaves it to the
/// remote server's words — and "user unknown" in answer to DATA is a content filter speaking
/// (mobile carriers answer so for blocked senders), not a missing mailbox.
fn failure_kind(status: Option<&str>, text: &str) -> BounceKind {
    let mut parts = status.unwrap_or("").split('.');
    let (class, subject, detail) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match class {
        // RFC 3463 §3.1: 2 = success, 4 = persistent transient failure.
        "2" => return BounceKind::Success,
        "4" => return BounceKind::Soft,
        _ => {}
    }
    if MAILBOX_FULL.is_match(text) || OTHER_CAUSE.is_match(text) {
        return BounceKind::Soft;
    }
    match (subject, detail) {
        // RFC 3463 §3.2: X.1.1 bad mailbox, X.1.2 bad system, X.1.3 bad syntax, X.1.6 moved;
        // RFC 7505 §4.2: X.1.10 recipient has null MX.
        ("1", "1" | "2" | "3" | "6" | "10") => BounceKind::Hard,
        // §3.2: X.1.4 ambiguous, X.1.5 valid, X.1.7–X.1.9 about the sender.
        ("1", "4" | "5" | "7" | "8" | "9") => BounceKind::Soft,
        // §3.4: specific mail-system conditions.
        ("3", d) if d != "0" => BounceKind::Soft,
        // §3.3 X.2.1 "mailbox disabled" is also what many servers answer for unknown users, so
        // the words decide; other X.2.X say the mailbox exists. §3.7, §3.8: content, policy.
        ("2", "1") if says_bad_address(text) => BounceKind::Hard,
        ("2" | "6" | "7", _) => BounceKind::Soft,
        _ if says_bad_address(text) => BounceKind::Hard,
        _ => BounceKind::Soft,
    }
}

/// The words say the address is bad, and not in answer to DATA.
fn says_bad_address(text: &str) -> bool {
    BAD_ADDRESS.is_match(text) && last_command(text) != Some("data")
}

/// The SMTP command the remote server was answering when it refused, as the report tells it
/// (Postfix "in reply to RCPT TO command", Exim "after RCPT TO", Sendmail ">>> DATA", qmail
/// "most progress was RCPT TO"), lower-case: "rcpt", "data" or "mail".
fn last_command(text: &str) -> Option<&'static str> {
    // With pipelining (RFC 2920) the RCPT refusal is printed after ">>> DATA", which then
    // fails with "503 Need RCPT": the recipient was refused at RCPT.
    if NEED_RCPT.is_match(text) {
        return Some("rcpt");
    }
    SMTP_COMMAND.captures_iter(text).last().and_then(|c| c.name("cmd")).map(|m| {
        let m = m.as_str().to_ascii_lowercase();
        if m.contains("rcpt") {
            "rcpt"
        } else if m.contains("mail") {
            "mail"
        } else {
            "data"
        }
    })
}

/// First RFC 3463 code (`class.subject.detail`, class 2/4/5) in the text that is not part of
/// a longer dotted number such as an IP address or version.
fn find_status_code(text: &str) -> Option<String> {
    STATUS_CODE.captures_iter(text).find_map(|c| {
        let m = c.get(1)?;
        let before = text.get(..m.start())?.chars().next_back();
        let after = text.get(m.end()..)?;
        let mut rest = after.chars();
        let next = rest.next();
        let dotted_more = next == Some('.') && rest.next().is_some_and(|c| c.is_ascii_digit());
        let glued = before.is_some_and(|c| c.is_ascii_digit() || c == '.') || next.is_some_and(|c| c.is_ascii_digit()) || dotted_more;
        (!glued).then(|| m.as_str().to_string())
    })
}

/// First RFC 3463 code of class 4 or 5 (a failure).
fn failure_status(text: &str) -> Option<String> {
    let mut rest = text;
    while let Some(code) = find_status_code(rest) {
        if !code.starts_with('2') {
            return Some(code);
        }
        let at = rest.find(&code).map(|i| i + code.len()).unwrap_or(rest.len());
        rest = rest.get(at..).unwrap_or("");
    }
    None
}

/// First SMTP reply code (RFC 5321 §4.2) standing on its own, e.g. `550` in `said: 550 …`.
fn find_reply_code(text: &str) -> Option<char> {
    REPLY_CODE.captures(text).and_then(|c| c.get(1)).and_then(|m| m.as_str().chars().next())
}

// ---------------------------------------------------------------------------------------------
// Message-IDs

/// Message-ID of the first header block that has one (mail-parser for structure, a line scan
/// when the block is quoted text with junk around it).
fn header_message_id(block: &str) -> Option<String> {
    MESSAGE_ID_LINE
        .captures_iter(block)
        .filter_map(|c| c.name("id").map(|m| clean_id(m.as_str())))
        .find(|id| is_message_id(id))
}

/// Addresses in the named header fields of a header block.
fn header_addresses(block: &str, names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for caps in HEADER_LINE.captures_iter(block) {
        let (Some(name), Some(value)) = (caps.name("name"), caps.name("value")) else { continue };
        if names.iter().any(|n| n.eq_ignore_ascii_case(name.as_str())) {
            out.extend(ADDRESS.find_iter(value.as_str()).map(|m| normalize(m.as_str())));
        }
    }
    out
}

fn clean_id(v: &str) -> String {
    let v = v.trim();
    let inner = match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => v.get(a + 1..b).unwrap_or(v),
        _ => v.split_whitespace().next().unwrap_or(""),
    };
    inner.trim().trim_matches(['<', '>']).to_string()
}

/// RFC 5322 §3.6.4 msg-id: `id-left "@" id-right`, no spaces. Some MTAs drop the right side;
/// accept any non-empty token without spaces, but not an empty or bracket-only value.
fn is_message_id(id: &str) -> bool {
    !id.is_empty() && !id.contains(char::is_whitespace) && id.len() <= 998
}

// ---------------------------------------------------------------------------------------------
// Small helpers

fn normalize(address: &str) -> String {
    crate::ticket::normalize_address(address.trim_start_matches("mailto:").trim_matches(['\'', '"']))
}

/// Collapse all whitespace (and line endings of any kind) to single spaces; cap the length.
fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match joined.char_indices().nth(500) {
        Some((i, _)) => joined.get(..i).map(str::to_string).unwrap_or(joined),
        None => joined,
    }
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

/// addr-spec as it appears in reports (RFC 5322 §3.4.1, dot-atom local part, dotted domain).
const ADDR: &str = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+";

static ADDRESS: LazyLock<Regex> = LazyLock::new(|| re(ADDR));

/// A line that starts with a recipient: bullets or quote marks, an optional label ("Unknown
/// user:", "Intended recipient:", "RCPT TO:", "Could not be delivered to:"), an optional display
/// name before `<mailto:`, then the address and a separator.
static RECIPIENT_LINE: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r#"(?i)^[\s>*\-•|(]*(?:[45]\d\d[ -]+)?(?:(?:(?:[a-z_-]+\s+){{0,3}}(?:recipients?|address(?:es)?|users?|mailbox(?:es)?|addressee)(?:\(s\)|\(es\))?|rcpt to|(?:could not be |not )?delivered to|sent to|addressed to)(?:\s*:\s*|\s+))?(?:[^<>@:\r\n]{{1,60}}<mailto:)?["'<]*(?:mailto:)?(?P<addr>{ADDR})["'>]*(?:$|[\s:;,()\[<]|\.(?:\s|$|\.))"#
    ))
});

static EXPANDED_FROM: LazyLock<Regex> = LazyLock::new(|| re(&format!(r"(?i)\(expanded from:?\s*<?(?P<addr>{ADDR})>?\)")));

/// Words before an address that make it the sender, not a recipient.
static SENDER_BEFORE: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)(?:\bfrom|\bsender|mail from:?)\s*<?$"));

static DSN_FIELD_START: LazyLock<Regex> = LazyLock::new(|| re(r"(?im)^(?:original|final)-recipient\s*:"));

static STATUS_CODE: LazyLock<Regex> = LazyLock::new(|| re(r"([245]\.\d{1,3}\.\d{1,3})"));

static REPLY_CODE: LazyLock<Regex> = LazyLock::new(|| re(r"(?:^|[^\d.#-])([45][0-5]\d)(?:[ -]|$)"));

static MESSAGE_ID_LINE: LazyLock<Regex> = LazyLock::new(|| re(r"(?im)^[ \t>]*message-id[ \t]*:\s*(?P<id><[^>\r\n]*>|\S+)"));

static NAMING_HEADER: LazyLock<Regex> = LazyLock::new(|| re(r"(?im)^[ \t>]*(?:message-id|from|to|subject|date|received)[ \t]*:"));

static HEADER_LINE: LazyLock<Regex> = LazyLock::new(|| re(r"(?m)^[ \t>]*(?P<name>[A-Za-z][A-Za-z0-9-]*)[ \t]*:(?P<value>[^\r\n]*)"));

/// A line where the returned message (or its headers) begins.
static ORIGINAL_MARKER: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?im)^[ \t>|]*(?:your original message|[-=_*#]{2,}.*(?:original|returned|undelivered|copy of (?:the|your) message|headers? of|the header|message (?:text|headers)|source mail|rejected message).*$|.{0,40}(?:below this line is a copy of the message|original message follows|original message headers|unsent message below|message headers follow|the header of the original message|a copy of the message header|copy of the original message|undelivered message (?:you sent )?follows|your message reads)|original message:[ \t]*$|(?:received|return-path)[ \t]*:|content-type:[ \t]*(?:message/rfc822|text/rfc822-headers))")
});

/// Phrases delivery reports use.
static BOUNCE_BODY: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)this is the qmail-send program|created automatically by mail delivery software|this is the (?:mail system|postfix program) at host|i'm sorry to have to inform you that (?:your|the) message|following addresses had (?:permanent|transient)|delivery to the following recipients? (?:failed|was aborted|has been delayed)|delivery has failed to these recipients|did not reach the following recipient|could not be delivered to|unable to deliver (?:your )?message to|was not delivered to|undeliverable to the following|your (?:message|mail) (?:was|could|has) not (?:be |been )?delivered|message could not be delivered|permanent fatal (?:delivery )?errors|automatically generated delivery status notification|following address\(es\) failed|following recipients? (?:did not|could not|failed|returned)|has not yet been delivered|your mail cannot be delivered|mail could not be delivered|could not deliver (?:your )?(?:mail|message)|delivery failed for the following|not delivered to the following|a message that you sent|-+\s*failed recipients\s*-+|we had trouble delivering your message|cannot be delivered to the following|message you sent .{0,40}(?:could not|was not|wasn't) (?:be )?delivered|failed addresses follow|returned mail follows")
});

/// Phrases only particular MTAs' reports contain.
static MTA_SIGNATURE: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)this is the qmail-send program|created automatically by mail delivery software|this is the (?:mail system|postfix program) at host|automatically generated delivery status notification|the original message was received at|a message that you sent (?:could not|has not yet|contained|was rejected)")
});

/// Words a failure report's subject uses (also the French, German, Spanish, Italian, Dutch,
/// Japanese and Chinese words Exchange and others put there).
static BOUNCE_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)undeliver|undelivered|returned mail|delivery (?:status|failure|notification|problem|report|error)|failure notice|mail delivery|non-?delivery|could not be delivered|not delivered|delivery has failed|mail error|mail failure|mail failed|mail system error|returned to sender|returning to sender|delivery failure|permanent delivery failure|delayed mail|delivery delayed|message delayed|warning: could not send|delivery failed|error mail report|postmaster notify|failed mail|processing error|error sending your mail|non remis|unzustellbar|no se puede entregar|non recapitabile|onbestelbaar|não entregue|メールエラー|配信エラー|不達|未達|退信")
});

static FORWARD_SUBJECT: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)^\s*(?:fwd?|wg|tr|enc|rv)\s*:"));

/// Where a person's forward of another message starts.
static FORWARD_MARKER: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)forwarded message|begin forwarded|original message -|^\s*-+\s*original message\s*-+"));

/// A mailer-daemon (RFC 5321 §4.5.5 names no sender for reports; this is the convention).
static MAILER_DAEMON: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)^(?:mailer[- ]?daemon|mail-?daemon)$"));

/// Local parts of mail-system senders.
static SYSTEM_SENDER: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)^(?:mailer-?daemon|mail-?daemon|post_?master|mail-?delivery(?:[._-]?system)?|mdaemon)(?:[+=]|$)"));

static SYSTEM_SENDER_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)mailer[- ]?daemon|mail delivery|postmaster|mail administrator|mail system|mail deliver system"));

static SYSTEM_LOCAL: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)^(?:mailer-?daemon|mail-?daemon|postmaster|hostmaster|abuse)$"));

/// A remote server's failure reply in a report: reply and status code together, or the words.
static FAILURE_DETAIL: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)\b[45]\d\d[ -]+#?[45]\.\d{1,3}\.\d{1,3}|\(#[45]\.\d{1,3}\.\d{1,3}\)|user unknown|unknown user|no such (?:user|mailbox|recipient)|mailbox (?:is )?full|over ?quota|could not be delivered|undeliverable|delivery (?:has )?failed|permanent error|host unknown|relay(?:ing)? denied")
});

/// A line that reports a failure (for recipients named only inside a sentence).
static FAILURE_CONTEXT: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)fail|error|unknown|invalid|not found|unavailable|reject|refused|denied|could ?not|couldn't|cannot|can't|unable|did not|does not|doesn't|not exist|undeliver|no such|permanent|bounce|returned|disabled|inactive|not delivered|expired|timed out|blocked|quota|full|exceed|recipient|rcpt to|addressed")
});

static DELAY_SUBJECT: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)delay|warning|not yet been delivered|still being retried"));

/// A "Warning:" subject that names a failure is a bounce, not a delay warning.
static FAILURE_SUBJECT: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)fail|unknown|undeliver|not delivered|returned|rejected|invalid"));

static DELAY_BODY: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)has not yet been delivered|will (?:continue|keep) (?:trying|to try)|will be retried|still being retried|attempts will continue|delivery has been delayed|is a warning|warning message only|no action is required on your part|not been able to deliver .{0,40} yet")
});

static GAVE_UP: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)permanent (?:fatal )?error|i've given up|given up|will not (?:be )?(?:retried|delivered)|has been removed from the (?:mail )?queue|failed permanently|permanently failed"));

static MAILBOX_FULL: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)mailbox (?:is )?full|over ?quota|quota exceeded|exceeded (?:the )?(?:storage|quota)|insufficient (?:disk|storage)|mailbox size limit|not enough (?:disk )?space|mail ?box space not enough"));

/// A failure that is not about the address: policy, reputation, spam, relaying, the sender.
static OTHER_CAUSE: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)\bspam|blocked|black ?list|block ?list|dnsbl|\brbl\b|\bpolicy|relay(?:ing)? (?:denied|not permitted|access denied)|not permitted to relay|unable to relay|content (?:rejected|filter)|message (?:content )?rejected|too many|rate limit|dmarc|\bspf\b|reputation|authentication (?:required|failed)|sender (?:address )?(?:rejected|denied|verify failed|blocked)|sender.{1,80}rejected|message size|too (?:large|big)")
});

static SMTP_COMMAND: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)(?:in reply to (?:the )?|after (?:the )?|>>> |smtp command:?\s*|most progress was |did not like our (?:final )?|RCPT_TO\]|during )(?P<cmd>rcpt to|end of data|data|mail from|rcpt)")
});

static NEED_RCPT: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)\b503[ -].{0,20}need (?:rcpt|recipient)|no valid recipients"));

static BAD_ADDRESS: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)user unknown|unknown user|no such (?:user|mailbox|recipient|address|account|person|domain)|unknown (?:recipient|mailbox|(?:e-?mail )?address|local part)|recipient unknown|addressee unknown|recipient(?:'s)? (?:address |name )?(?:is )?not (?:found|recogni[sz]ed|exist)|recip(?:ient)?notfound|mailbox (?:not found|does not exist|unavailable|not available)|(?:does|did) not exist|doesn't exist|not a valid (?:mailbox|recipient|user)|invalid (?:recipient|mailbox|address)|user not found|not listed in|address (?:not found|unknown|does not exist)|wasn't found at|was not found in|host unknown|unknown host|host not found|domain not found|host or domain name not found|unrouteable address|name service error|no mx (?:record|host)|has moved|not our customer|no mailbox here|is not a known user|account (?:does not exist|not found)|unknown or illegal alias|doesn't have an? \S+ account|invalid domain|\baddress rejected|invalid final delivery userid|couldn't find a mail exchanger|no smtp service|does not accept mail|not accepting network messages|domain is not reachable|no longer (?:valid|in use|active)|is wrong or no longer valid|did not exactly match")
});

static REPORTING_HOST: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)(?:qmail-send program at|mail system at host|postfix program at host|generating server:|reporting-mta:\s*dns;)\s*(?P<host>[A-Za-z0-9.-]+)")
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bounce_phrase_contains_a_prefilter_word() {
        for (re, words) in [(&*BOUNCE_BODY, &BOUNCE_BODY_WORDS[..]), (&*BOUNCE_SUBJECT, &BOUNCE_SUBJECT_WORDS[..])] {
            let pattern = re.as_str().trim_start_matches("(?i)");
            let mut depth = 0;
            let mut phrases = vec![String::new()];
            for c in pattern.chars() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    '|' if depth == 0 => {
                        phrases.push(String::new());
                        continue;
                    }
                    _ => {}
                }
                phrases.last_mut().unwrap().push(c);
            }
            assert!(phrases.len() > 20);
            for ph in phrases {
                // What every match of the phrase contains: groups and optional characters left out.
                let (mut skeleton, mut depth, mut chars) = (String::new(), 0, ph.chars().peekable());
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(e) = chars.next().filter(|_| depth == 0 && chars.peek() != Some(&'?')) {
                                skeleton.push(e);
                            }
                        }
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ if depth == 0 && chars.peek() != Some(&'?') && c != '?' => skeleton.push(c),
                        _ => {}
                    }
                }
                assert!(words.iter().any(|w| skeleton.to_lowercase().contains(w)), "{ph:?} ({skeleton:?}) has no prefilter word");
            }
        }
        assert!(bounce_subject("Undelivered Mail Returned to Sender") && bounce_subject("UNZUSTELLBAR: x") && !bounce_subject("printer broken"));
        assert!(bounce_body("This is the mail system at host mx.example.org.") && !bounce_body("my printer is broken"));
    }

    const DSN: &str = "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\nTo: alice@example.com\nSubject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain\n\nThis is the mail system at host mx.example.org.\n\n--b1\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\nArrival-Date: Mon, 1 Jan 2024 00:00:00 +0000\n\nFinal-Recipient: rfc822; bob@example.net\nOriginal-Recipient: rfc822;Bob@Example.NET\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 <bob@example.net>:\n    Recipient address rejected: User unknown\n\nFinal-Recipient: rfc822; carol@example.net\nAction: failed\nStatus: 5.2.2\nDiagnostic-Code: smtp; 552 5.2.2 Mailbox full\n\nFinal-Recipient: rfc822; dave@example.net\nAction: delayed\nStatus: 4.4.1\n\n--b1\nContent-Type: message/rfc822\n\nFrom: alice@example.com\nTo: bob@example.net\nSubject: hi\nMessage-ID: <orig-1@example.com>\n\nhello\n\n--b1--\n";

    fn crlf(s: &str) -> String {
        s.replace('\n', "\r\n")
    }

    fn cr(s: &str) -> String {
        s.replace('\n', "\r")
    }

    #[test]
    fn rfc3464_report_with_several_recipients() {
        let r = parse(DSN.as_bytes()).expect("a bounce");
        assert_eq!(r.format, BounceFormat::Dsn);
        assert_eq!(r.kind, BounceKind::Hard);
        assert_eq!(r.original_message_id.as_deref(), Some("orig-1@example.com"));
        assert_eq!(r.reporting_mta.as_deref(), Some("mx.example.org"));
        let got: Vec<(&str, BounceKind, Option<&str>)> = r.recipients.iter().map(|f| (f.address.as_str(), f.kind, f.status.as_deref())).collect();
        assert_eq!(
            got,
            vec![
                ("bob@example.net", BounceKind::Hard, Some("5.1.1")),
                ("carol@example.net", BounceKind::Soft, Some("5.2.2")),
                ("dave@example.net", BounceKind::Delay, Some("4.4.1")),
            ]
        );
        assert_eq!(r.recipients[0].diagnostic.as_deref(), Some("550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown"));
        assert_eq!(r.recipients[2].action.as_deref(), Some("delayed"));
    }

    #[test]
    fn line_endings_do_not_change_the_result() {
        let lf = parse(DSN.as_bytes()).unwrap();
        assert_eq!(parse(crlf(DSN).as_bytes()).unwrap(), lf);
        assert_eq!(parse(cr(DSN).as_bytes()).unwrap(), lf);
        let qmail = "From: MAILER-DAEMON@mx.example.org\nReturn-Path: <>\nSubject: failure notice\n\nHi. This is the qmail-send program at mx.example.org.\nI'm afraid I wasn't able to deliver your message to the following addresses.\nThis is a permanent error; I've given up. Sorry it didn't work out.\n\n<bob@example.net>:\n192.0.2.1 does not like recipient.\nRemote host said: 550 5.1.1 User unknown\n\n--- Below this line is a copy of the message.\n\nFrom: alice@example.com\nMessage-ID: <q1@example.com>\n\nhi\n";
        let lf = parse(qmail.as_bytes()).unwrap();
        assert_eq!(lf.format, BounceFormat::Text);
        assert_eq!(lf.recipients.len(), 1);
        assert_eq!(lf.recipients[0].address, "bob@example.net");
        assert_eq!(lf.recipients[0].kind, BounceKind::Hard);
        assert_eq!(lf.original_message_id.as_deref(), Some("q1@example.com"));
        assert_eq!(parse(crlf(qmail).as_bytes()).unwrap(), lf);
        assert_eq!(parse(cr(qmail).as_bytes()).unwrap(), lf);
    }

    #[test]
    fn delay_warning_is_never_hard() {
        let raw = DSN.replace("Action: failed", "Action: delayed");
        let r = parse(raw.as_bytes()).unwrap();
        assert_eq!(r.kind, BounceKind::Delay);
        assert!(r.recipients.iter().all(|f| f.kind == BounceKind::Delay));
        let exim = "From: Mail Delivery System <Mailer-Daemon@mx.example.org>\nSubject: Warning: message 1abc-000 delayed 24 hours\n\nThis message was created automatically by mail delivery software.\nA message that you sent has not yet been delivered to one or more of its\nrecipients after more than 24 hours on the queue on mx.example.org.\n\n  bob@example.net\n    host mx.example.net [192.0.2.1]: 451 4.3.0 try later\n\nNo action is required on your part.\n";
        let r = parse(exim.as_bytes()).unwrap();
        assert_eq!(r.kind, BounceKind::Delay);
        assert_eq!(r.recipients[0].address, "bob@example.net");
    }

    #[test]
    fn missing_parts_still_give_a_report() {
        // A report without the returned message: no Message-ID, recipients still read.
        let no_original = DSN.split("--b1\nContent-Type: message/rfc822").next().unwrap().to_string() + "--b1--\n";
        let r = parse(no_original.as_bytes()).unwrap();
        assert_eq!(r.original_message_id, None);
        assert_eq!(r.recipients.len(), 3);
        // A multipart/report without its status part falls back to the text.
        let skeleton = "From: MAILER-DAEMON@mx.example.org\nSubject: Undelivered Mail\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\n<bob@example.net>: host mx said: 550 5.1.1 unknown user\n--b--\n";
        let r = parse(skeleton.as_bytes()).unwrap();
        assert_eq!(r.format, BounceFormat::Text);
        assert_eq!(r.recipients[0].status.as_deref(), Some("5.1.1"));
        // Only headers of the original (RFC 3462 text/rfc822-headers).
        let headers_only = DSN.replace("Content-Type: message/rfc822", "Content-Type: text/rfc822-headers");
        assert_eq!(parse(headers_only.as_bytes()).unwrap().original_message_id.as_deref(), Some("orig-1@example.com"));
    }

    #[test]
    fn other_reports_and_people_are_not_bounces() {
        let arf = "From: fbl@example.org\nSubject: report\nContent-Type: multipart/report; report-type=feedback-report; boundary=\"b\"\n\n--b\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n--b--\n";
        assert_eq!(parse(arf.as_bytes()), None);
        let human = "From: alice@example.com\nSubject: Fwd: Undelivered Mail Returned to Sender\n\nCan you check this? This is the mail system at host mx.example.org.\n<bob@example.net>: User unknown\n";
        assert_eq!(parse(human.as_bytes()), None);
        let plain = "From: alice@example.com\nSubject: printer\n\nThe printer on floor 2 is broken.\n";
        assert_eq!(parse(plain.as_bytes()), None);
    }

    #[test]
    fn hard_and_soft_follow_the_code_then_the_words() {
        let cases: &[(Option<&str>, &str, BounceKind)] = &[
            (Some("5.1.1"), "", BounceKind::Hard),
            (Some("5.1.10"), "null MX", BounceKind::Hard),
            (Some("5.2.2"), "mailbox full", BounceKind::Soft),
            (Some("4.1.1"), "user unknown", BounceKind::Soft),
            (Some("2.0.0"), "ok", BounceKind::Success),
            (Some("5.7.1"), "550 5.7.1 user unknown", BounceKind::Soft),
            (Some("5.1.8"), "Sender address rejected: Domain not found", BounceKind::Soft),
            (Some("5.1.1"), "550 5.1.1 blocked using zen.spamhaus.org", BounceKind::Soft),
            (Some("5.0.0"), "550 User unknown (in reply to RCPT TO command)", BounceKind::Hard),
            (Some("5.0.0"), "550 User unknown (in reply to end of DATA command)", BounceKind::Soft),
            (Some("5.0.0"), ">>> DATA\n<<< 550 User unknown\n<<< 503 5.0.0 Need RCPT (recipient)", BounceKind::Hard),
            (Some("5.2.1"), "550 5.2.1 <a@b.c>... User Unknown", BounceKind::Hard),
            (Some("5.2.1"), "550 5.2.1 This account is disabled", BounceKind::Soft),
            (None, "Host or domain name not found", BounceKind::Hard),
            (None, "connection timed out", BounceKind::Soft),
        ];
        for (status, text, want) in cases {
            assert_eq!(failure_kind(*status, text), *want, "{status:?} {text:?}");
        }
    }

    #[test]
    fn text_reports_name_their_recipients() {
        let exim = "From: Mail Delivery System <Mailer-Daemon@mx.example.org>\nX-Failed-Recipients: carol@example.net\nSubject: Mail delivery failed\n\nThis message was created automatically by mail delivery software.\n\n  carol@example.net\n    SMTP error from remote mail server after RCPT TO:<carol@example.net>:\n    550 5.1.1 No such user\n\n  bob@example.net\n    retry timeout exceeded\n";
        let r = parse(exim.as_bytes()).unwrap();
        assert_eq!(r.recipients.iter().map(|f| f.address.as_str()).collect::<Vec<_>>(), ["carol@example.net"], "X-Failed-Recipients decides");
        assert_eq!(r.recipients[0].kind, BounceKind::Hard);
        let postfix = "From: MAILER-DAEMON@mx.example.org\nSubject: Undelivered Mail Returned to Sender\n\nThis is the mail system at host mx.example.org.\n\n<list-member@example.net> (expanded from <list@example.com>): host mx.example.net said:\n    550 5.2.2 mailbox full\n";
        let r = parse(postfix.as_bytes()).unwrap();
        assert_eq!(r.recipients[0].address, "list@example.com", "the address we wrote to");
        assert_eq!((r.recipients[0].kind, r.recipients[0].status.as_deref()), (BounceKind::Soft, Some("5.2.2")));
        let exchange = "From: postmaster@example.net\nSubject: Undeliverable: hi\n\nDelivery has failed to these recipients or groups:\n\nBob Smith<mailto:bob@example.net>\nThe email address you entered couldn't be found.\n";
        let r = parse(exchange.as_bytes()).unwrap();
        assert_eq!(r.recipients[0].address, "bob@example.net");
        assert_eq!(r.recipients[0].diagnostic.as_deref(), Some("The email address you entered couldn't be found"));
        let sentence = "From: postmaster@example.net\nSubject: failure notice\n\nYour mail to the following recipients could not be delivered because they are not accepting mail from alice@example.com:\n\nLocal mailbox bob@example.net is unavailable: user not found\n";
        let r = parse(sentence.as_bytes()).unwrap();
        assert_eq!(r.recipients.iter().map(|f| f.address.as_str()).collect::<Vec<_>>(), ["bob@example.net"], "the sender is not a recipient");
    }

    #[test]
    fn a_report_that_names_nobody_falls_back_to_the_returned_message() {
        let raw = "From: MAILER-DAEMON@mx.example.org\nSubject: Returned mail\nContent-Type: multipart/mixed; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\nDelivery report unavailable.\n--b\nContent-Type: message/rfc822\n\nFrom: alice@example.com\nTo: Bob <bob@example.net>\nMessage-ID: <m1@example.com>\n\nhi\n--b--\n";
        let r = parse(raw.as_bytes()).unwrap();
        assert_eq!(r.recipients.iter().map(|f| f.address.as_str()).collect::<Vec<_>>(), ["bob@example.net"]);
        assert_eq!(r.original_message_id.as_deref(), Some("m1@example.com"));
        // The mail system attached its own DSN and wrote only a disclaimer.
        let wrapped = format!("From: postmaster@example.org\nSubject: Delivery Status Notification (Failure)\nContent-Type: multipart/mixed; boundary=\"o\"\n\n--o\nContent-Type: text/plain\n\nThis e-mail is confidential.\n--o\nContent-Type: message/rfc822\n\n{DSN}\n--o--\n");
        let r = parse(wrapped.as_bytes()).unwrap();
        assert_eq!(r.format, BounceFormat::Dsn);
        assert_eq!(r.recipients.len(), 3);
    }

    #[test]
    fn success_reports_are_not_failures() {
        let raw = DSN.replace("Action: failed\nStatus: 5.1.1", "Action: delivered\nStatus: 2.0.0").replace("Action: failed\nStatus: 5.2.2", "Action: relayed\nStatus: 2.0.0").replace("Action: delayed\nStatus: 4.4.1", "Action: expanded\nStatus: 2.0.0");
        let r = parse(raw.as_bytes()).unwrap();
        assert_eq!(r.kind, BounceKind::Success);
        assert!(!r.is_failure());
    }

    #[test]
    fn status_codes_are_not_read_from_ip_addresses_or_versions() {
        assert_eq!(find_status_code("host 10.5.4.3 said 550"), None);
        assert_eq!(find_status_code("Exim 4.72 said: 550 5.7.1 denied"), Some("5.7.1".into()));
        assert_eq!(find_status_code("(#5.5.0)"), Some("5.5.0".into()));
        assert_eq!(find_status_code("id 8.2.234.1; 5.1.1."), Some("5.1.1".into()));
    }

    #[test]
    fn hostile_reports_are_read_in_linear_time() {
        let head = "From: MAILER-DAEMON@mx.example.org\nSubject: Undelivered Mail\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\n";
        let many_lines: String = (0..200_000).map(|i| format!("<u{i}@example.org>:\n")).collect();
        let one_line: String = (0..50_000).map(|i| format!("failed u{i}@example.org ")).collect();
        let blank = "\n".repeat(2_000_000);
        let fields: String = (0..100_000).map(|i| format!("Final-Recipient: rfc822; u{i}@example.org\n")).collect();
        let started = std::time::Instant::now();
        for body in [many_lines.as_str(), one_line.as_str(), blank.as_str()] {
            let raw = format!("{head}{body}\n--b\nContent-Type: message/delivery-status\n\n{fields}\n--b--\n");
            let r = parse(raw.as_bytes()).expect("still a report");
            assert!(r.recipients.len() <= MAX_TEXT, "bounded by the text cap");
        }
        // Quadratic work on these inputs takes hours; linear work takes well under a second.
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "took {:?}", started.elapsed());
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_f491_u64;
        let alphabet: &[u8] = b"\r\n\n :;<>@.-\t5.1.1Final-Recipient: rfc822;a@b.cAction: delayed\xff\xfe--b\"";
        let mut inputs: Vec<Vec<u8>> = vec![Vec::new(), b"\r".to_vec(), b"\n\n\n".to_vec(), DSN.as_bytes()[..DSN.len() / 2].to_vec()];
        for _ in 0..300 {
            let len = (seed % 400) as usize;
            let mut v = b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\nContent-Type: message/delivery-status\n\n".to_vec();
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                v.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            inputs.push(v);
        }
        for input in inputs {
            let _ = parse(&input);
        }
    }
}
