//! Parse: raw RFC 5322 bytes → [`Parsed`], the owned, decoded view every later stage reads.
//! Built on mail-parser; never panics and never fails on malformed MIME — only input with no
//! header at all is refused ([`NotMail`]). No I/O here.

use crate::ticket::{AttachmentInfo, normalize_address};
use mail_parser::{HeaderValue, MessageParser, MimeHeaders};
use sha2::{Digest, Sha256};

/// An address with its display name, as found in a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    /// Lower-cased address; empty when the header had a name but no address (`MAILER-DAEMON`).
    pub address: String,
}

/// The input has no header section: it is not an e-mail message at all.
#[derive(Debug, thiserror::Error)]
#[error("input is not an e-mail message (no header section found)")]
pub struct NotMail;

/// Everything the pipeline needs from one message, decoded once.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// Message-ID without angle brackets; synthesised from the content hash when absent.
    pub message_id: String,
    /// True when `message_id` was synthesised.
    pub message_id_missing: bool,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    pub from: Option<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub reply_to: Vec<Mailbox>,
    /// Decoded subject (RFC 2047), empty when missing.
    pub subject: String,
    /// Every top-level header as (lower-case name, unfolded raw value), in order.
    pub headers: Vec<(String, String)>,
    /// `type/subtype` of the top-level part, lower-case.
    pub content_type: String,
    /// The readable text of the message (HTML converted when there is no text part).
    pub body_text: String,
    pub attachments: Vec<AttachmentInfo>,
    pub size: usize,
    /// Hex SHA-256 of the raw bytes: duplicate-delivery detection and quarantine names.
    pub sha256: String,
}

impl Parsed {
    /// First value of a header (case-insensitive name), unfolded and trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every value of a header (Received, Authentication-Results, …).
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The sender's address, lower-case; empty when there is none.
    pub fn from_address(&self) -> &str {
        self.from.as_ref().map(|m| m.address.as_str()).unwrap_or("")
    }

    /// Every Message-ID this message points back to: In-Reply-To first, then References newest first.
    pub fn ancestors(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for id in self.in_reply_to.iter().chain(self.references.iter().rev()) {
            if !out.contains(&id.as_str()) {
                out.push(id);
            }
        }
        out
    }
}

/// Parse raw bytes. Never panics; `Err(NotMail)` only when there is no header section.
pub fn parse(raw: &[u8]) -> Result<Parsed, NotMail> {
    let sha256 = hex::encode(Sha256::digest(raw));
    let normalized = normalize_line_endings(raw);
    if !starts_with_header(&normalized) {
        return Err(NotMail);
    }
    let msg = MessageParser::default().parse(normalized.as_ref()).ok_or(NotMail)?;
    if msg.headers().is_empty() {
        return Err(NotMail);
    }

    let headers: Vec<(String, String)> = msg
        .headers_raw()
        .map(|(n, v)| (n.to_ascii_lowercase(), unfold(v)))
        .collect();

    let (message_id, message_id_missing) = match msg.message_id().map(clean_id).filter(|s| !s.is_empty()) {
        Some(id) => (id, false),
        None => (format!("missing-{}@postdesk.invalid", &sha256[..24]), true),
    };

    let subject = msg.subject().unwrap_or("").replace(['\r', '\n'], " ").trim().to_string();
    let content_type = msg
        .root_part()
        .content_type()
        .map(|ct| match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub),
            None => ct.ctype().to_string(),
        })
        .unwrap_or_else(|| "text/plain".into())
        .to_ascii_lowercase();

    let body_text = msg.body_text(0).map(|s| s.into_owned()).unwrap_or_default();

    let mut attachments = Vec::new();
    for (i, part) in msg.attachments().enumerate() {
        let content_type = part
            .content_type()
            .map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub),
                None => ct.ctype().to_string(),
            })
            .unwrap_or_else(|| "application/octet-stream".into())
            .to_ascii_lowercase();
        let name = part
            .attachment_name()
            .map(str::to_string)
            .or_else(|| part.message().and_then(|m| m.subject()).map(|s| format!("{s}.eml")))
            .unwrap_or_else(|| format!("attachment-{}", i + 1));
        attachments.push(AttachmentInfo { name, content_type, size: part.contents().len() as u64 });
    }

    Ok(Parsed {
        message_id,
        message_id_missing,
        in_reply_to: id_list(msg.in_reply_to()),
        references: id_list(msg.references()),
        from: msg.from().and_then(|a| a.first()).map(mailbox),
        to: msg.to().map(|a| a.iter().map(mailbox).collect()).unwrap_or_default(),
        cc: msg.cc().map(|a| a.iter().map(mailbox).collect()).unwrap_or_default(),
        reply_to: msg.reply_to().map(|a| a.iter().map(mailbox).collect()).unwrap_or_default(),
        subject,
        headers,
        content_type,
        body_text,
        attachments,
        size: raw.len(),
        sha256,
    })
}

/// Mail whose lines end mostly in a bare CR (classic Mac OS) with its bare CRs as LF, so
/// mail-parser sees its lines; LF and CRLF mail is returned unchanged (borrowed).
pub fn normalize_line_endings(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let bare_cr = |i: usize| raw[i] == b'\r' && raw.get(i + 1) != Some(&b'\n');
    let lf = raw.iter().filter(|&&b| b == b'\n').count();
    let cr = (0..raw.len()).filter(|&i| bare_cr(i)).count();
    if cr <= lf {
        return std::borrow::Cow::Borrowed(raw);
    }
    std::borrow::Cow::Owned((0..raw.len()).map(|i| if bare_cr(i) { b'\n' } else { raw[i] }).collect())
}

/// RFC 5322 §2.2: a header section starts with `field-name ":"`, field-name being printable
/// ASCII without colon. An mbox `From ` separator line before it is tolerated.
fn starts_with_header(raw: &[u8]) -> bool {
    let mut rest = raw;
    while let Some(r) = rest.strip_prefix(b"\n").or_else(|| rest.strip_prefix(b"\r\n")) {
        rest = r;
    }
    if rest.starts_with(b"From ") {
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => rest = &rest[i + 1..],
            None => return false,
        }
    }
    let name_len = rest.iter().take_while(|&&b| (33..=126).contains(&b) && b != b':').count();
    let spaces = rest[name_len..].iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    name_len > 0 && rest.get(name_len + spaces) == Some(&b':')
}

fn mailbox(a: &mail_parser::Addr<'_>) -> Mailbox {
    Mailbox {
        name: a.name.as_ref().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()),
        address: a.address.as_deref().map(normalize_address).unwrap_or_default(),
    }
}

fn id_list(v: &HeaderValue<'_>) -> Vec<String> {
    // `as_text_list`, not `as_text`: the latter returns only the last id of a list.
    match v {
        HeaderValue::Text(t) => vec![clean_id(t)],
        HeaderValue::TextList(l) => l.iter().map(|t| clean_id(t)).collect(),
        _ => Vec::new(),
    }
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect()
}

/// Message-IDs compare without brackets and surrounding space.
pub fn clean_id(s: &str) -> String {
    s.trim().trim_start_matches('<').trim_end_matches('>').trim().to_string()
}

fn unfold(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, line) in v.split('\n').enumerate() {
        let line = line.trim_end_matches('\r');
        if i > 0 {
            out.push(' ');
        }
        out.push_str(line.trim());
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headerless_input_is_not_mail() {
        assert!(parse(b"").is_err());
        assert!(parse(b"\x00\x01\x02 binary junk").is_err());
    }

    #[test]
    fn reply_headers_are_split_and_cleaned() {
        let raw = b"From: \"Alice A.\" <Alice@Example.COM>\r\nTo: support@example.com\r\nSubject: Re: [PD-7] Printer\r\n\
Message-ID: <abc@x>\r\nIn-Reply-To: <p1@y>\r\nReferences: <p0@y>\r\n <p1@y>\r\n\r\nhello\r\n";
        let p = parse(raw).unwrap();
        assert_eq!(p.from_address(), "alice@example.com");
        assert_eq!(p.from.as_ref().unwrap().name.as_deref(), Some("Alice A."));
        assert_eq!(p.message_id, "abc@x");
        assert_eq!(p.ancestors(), vec!["p1@y", "p0@y"]);
        assert_eq!(p.subject, "Re: [PD-7] Printer");
        assert_eq!(p.header("references"), Some("<p0@y> <p1@y>"));
        assert_eq!(p.body_text.trim(), "hello");
    }

    #[test]
    fn bare_cr_line_endings_parse_like_lf() {
        let lf = parse(b"From: a@b.c\nSubject: x\n\nbody\n").unwrap();
        let cr = parse(b"From: a@b.c\rSubject: x\r\rbody\r").unwrap();
        assert!(parse(b"From MAILER-DAEMON Sun Sep  7 21:40:07 2008\rFrom: a@b.c\r\rbody\r").is_ok(), "mbox separator line");
        assert_eq!((cr.from_address(), cr.subject.as_str(), cr.body_text.as_str()), (lf.from_address(), lf.subject.as_str(), lf.body_text.as_str()));
    }

    #[test]
    fn missing_message_id_is_synthesised_from_content() {
        let raw = b"From: a@b.c\r\nSubject: x\r\n\r\nbody\r\n";
        let a = parse(raw).unwrap();
        assert!(a.message_id_missing);
        assert_eq!(a.message_id, parse(raw).unwrap().message_id);
    }
}
