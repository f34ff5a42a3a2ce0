//! Parse: raw RFC 5322 bytes → [`Parsed`], the owned, decoded view every later stage reads.
//! Built on mail-parser; never panics and never fails on malformed MIME — only input with no
//! header at all is refused ([`NotMail`]). No I/O here.
//!
//! Content decisions made here (the stored raw message is never altered):
//! - **Text**: every inline text part in order; `text/plain` preferred over its HTML
//!   alternative, HTML-only mail rendered by [`crate::html`], Outlook's TNEF body used when
//!   MIME has none. Charsets: mail-parser decodes the declared label; when that yields U+FFFD
//!   or the label is a single-byte charset but the bytes are UTF-8, the part is re-decoded
//!   (UTF-8, the HTML `<meta>` charset, else chardetng's guess).
//! - **Attachments**: every non-body part with RFC 2047/2231 names, path-free; nested
//!   `message/rfc822` named from its subject; inline parts flagged; `winmail.dat` replaced by
//!   the files unpacked from it (kept as is when nothing could be unpacked).
//! - **Visible text**: [`crate::quote::visible_text`] of the text body, for notifications.

use crate::ticket::{AttachmentInfo, is_usable_address, normalize_address};
use crate::{html, quote, tnef};

mod elide;
mod input;

pub use input::normalize_line_endings;
use mail_parser::{HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType};
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// Bounds on the work one message may cause, whatever its size: hostile mail costs time linear
/// in its length and never more than these. What they cut is listed in [`Parsed::truncated`].
/// Message-IDs kept per In-Reply-To / References list (References keeps its root and the newest).
pub const MAX_IDS: usize = 500;
/// Top-level header fields kept in [`Parsed::headers`].
pub const MAX_HEADERS: usize = 1000;
/// MIME parts read for text and attachments.
pub const MAX_PARTS: usize = 1000;
/// Nested-message types (`message/rfc822`, `message/global`, `multipart/digest`) opened per
/// message; later ones are read as opaque parts. Bounds the nesting mail-parser builds.
pub const MAX_NESTED_MESSAGES: usize = 256;
/// Addresses kept per address header (To, Cc, From, Sender, Reply-To).
pub const MAX_ADDRESSES: usize = 1000;
/// Multipart / nested-message depth read; deeper parts are ignored.
pub const MAX_DEPTH: usize = 32;
/// Lines before the header section skipped as junk (an mbox `From ` line, a forwarding client's
/// "---- Original email message ----", a line of spaces).
const MAX_JUNK_LINES: usize = 5;

/// An address with its display name, as found in a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    /// Lower-cased address; empty when the header had a name but no address (`MAILER-DAEMON`).
    pub address: String,
}

/// One attachment as found in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Decoded (RFC 2047/2231) file name without any path; for a nested message its subject
    /// plus `.eml`; `attachment-N` when the part has no name at all.
    pub name: String,
    /// `type/subtype`, lower-case.
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: u64,
    /// Shown inside the body (inline image, `Content-Disposition: inline`), not a separate file.
    pub inline: bool,
    /// `Content-ID` without brackets, for `cid:` references from the HTML.
    pub content_id: Option<String>,
    /// The container this file was unpacked from (`winmail.dat`), `None` for MIME parts.
    pub unpacked_from: Option<String>,
}

impl Attachment {
    fn info(&self) -> AttachmentInfo {
        AttachmentInfo { name: self.name.clone(), content_type: self.content_type.clone(), size: self.size }
    }
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
    /// The header `from` was taken from when From itself had no usable address ("Sender",
    /// "Reply-To", "From" for a later From mailbox); `None` when it is From's first mailbox.
    /// Such an author is never taken for an agent (only From is identity).
    pub from_fallback: Option<&'static str>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub reply_to: Vec<Mailbox>,
    /// Decoded subject (RFC 2047), empty when missing.
    pub subject: String,
    /// Every top-level header as (lower-case name, unfolded raw value), in order.
    pub headers: Vec<(String, String)>,
    /// `type/subtype` of the top-level part, lower-case.
    pub content_type: String,
    /// The readable text of the message: the inline text parts in order (`text/plain` preferred,
    /// HTML rendered to text when there is no usable plain part), charset-repaired.
    pub body_text: String,
    /// The HTML body as decoded text, when the message has one.
    pub body_html: Option<String>,
    /// `body_text` without quoted history and signature: what notifications show. A view only.
    pub visible_text: String,
    /// True when a text part's declared charset was wrong and the text was re-decoded.
    pub charset_repaired: bool,
    /// Name, type and size of every attachment, in message order (same order as `files`).
    pub attachments: Vec<AttachmentInfo>,
    /// The same attachments with inline/origin details.
    pub files: Vec<Attachment>,
    pub size: usize,
    /// What parsing left out to bound its work (see [`MAX_IDS`] and the other limits), one
    /// line each; empty for ordinary mail. The pipeline records it on the ticket.
    pub truncated: Vec<String>,
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

    /// Every Message-ID this message points back to: In-Reply-To first, then References newest
    /// first, each once. Linear: the lists are bounded by [`MAX_IDS`] and seen once through a set.
    pub fn ancestors(&self) -> Vec<&str> {
        let mut seen: HashSet<&str> = HashSet::with_capacity(self.in_reply_to.len() + self.references.len());
        self.in_reply_to.iter().chain(self.references.iter().rev()).map(String::as_str).filter(|id| seen.insert(id)).collect()
    }
}

/// Parse raw bytes. Never panics; `Err(NotMail)` only when there is no header section.
pub fn parse(raw: &[u8]) -> Result<Parsed, NotMail> {
    parse_with(raw, elide::Elision::LARGE)
}

fn parse_with(raw: &[u8], elision: elide::Elision) -> Result<Parsed, NotMail> {
    let (normalized, opaque) = input::bound_nesting(input::line_endings(raw));
    let (normalized, parts_cut) = input::bound_parts(normalized);
    // Junk before the header section is skipped for parsing only: `raw` is stored as received.
    let start = input::header_start(&normalized).ok_or(NotMail)?;
    let input = &normalized[start..];
    // Large base64 attachments are not decoded only to be measured (elide.rs).
    let skeleton = elide::elide(input, elision);
    let read = skeleton.as_ref().and_then(|sk| {
        let msg = MessageParser::default().parse(&sk.bytes)?;
        let extra = sk.extra_sizes(&msg)?;
        Some((msg, extra))
    });
    let (msg, extra) = match read {
        Some(read) => read,
        None => (MessageParser::default().parse(input).ok_or(NotMail)?, Vec::new()),
    };
    if msg.headers().is_empty() {
        return Err(NotMail);
    }
    let mut truncated = Vec::new();
    if parts_cut {
        truncated.push(format!("MIME parts: read up to the {}th boundary line, the rest of the message was not parsed", input::MAX_DELIMITERS));
    }
    if opaque > 0 {
        truncated.push(format!("nested messages: opened the first {MAX_NESTED_MESSAGES}, {opaque} more kept as opaque parts"));
    }

    let header_count = msg.headers_raw().count();
    let headers: Vec<(String, String)> = msg
        .headers_raw()
        .take(MAX_HEADERS)
        .map(|(n, v)| (n.to_ascii_lowercase(), unfold(v)))
        .collect();
    if header_count > MAX_HEADERS {
        truncated.push(format!("header fields: kept the first {MAX_HEADERS} of {header_count}"));
    }

    let (message_id, message_id_missing) = match msg.message_id().map(clean_id).filter(|s| !s.is_empty()) {
        Some(id) => (id, false),
        // Hashed only here: for most mail the hash would be a quarter of the parse.
        None => (format!("missing-{}@postdesk.invalid", &hex::encode(Sha256::digest(raw))[..24]), true),
    };

    let subject = subject(&msg);
    let content_type = mime_type(msg.root_part(), "text/plain");

    let readable = readable_parts(&msg, &mut truncated);
    let files_and_tnef = attachments(&msg, &readable, &extra);
    let Content { mut text, html, repaired } = content(&msg, &readable, 0);
    if text.trim().is_empty() {
        // Outlook's rich-text mail: the only body may be inside winmail.dat.
        if let Some(t) = files_and_tnef.1.filter(|t| !t.trim().is_empty()) {
            text = t;
        }
    }
    let files = files_and_tnef.0;
    let visible_text = quote::visible_text(&text);
    let (from, from_fallback) = author(&msg, &mut truncated).unzip();
    let from_fallback = from_fallback.flatten();
    Ok(Parsed {
        message_id,
        message_id_missing,
        in_reply_to: id_list(msg.in_reply_to(), "In-Reply-To", false, &mut truncated),
        references: id_list(msg.references(), "References", true, &mut truncated),
        from,
        from_fallback,
        to: mailboxes(&msg, "To", &mut truncated),
        cc: mailboxes(&msg, "Cc", &mut truncated),
        reply_to: mailboxes(&msg, "Reply-To", &mut truncated),
        subject,
        headers,
        content_type,
        body_text: text,
        body_html: html,
        visible_text,
        charset_repaired: repaired,
        attachments: files.iter().map(Attachment::info).collect(),
        files,
        size: raw.len(),
        truncated,
    })
}

/// Which of the message's parts are read: the first [`MAX_PARTS`], no deeper than [`MAX_DEPTH`]
/// multiparts. One pass over the part tree (mail-parser keeps it flat, children by index).
fn readable_parts(msg: &Message<'_>, truncated: &mut Vec<String>) -> Vec<bool> {
    let n = msg.parts.len();
    let mut readable = vec![false; n];
    let mut stack = vec![(0usize, 0usize)];
    let (mut too_deep, mut kept) = (false, 0usize);
    while let Some((i, depth)) = stack.pop() {
        if i >= n || readable[i] {
            continue; // a malformed tree never makes us loop
        }
        if depth > MAX_DEPTH {
            too_deep = true;
            continue;
        }
        if kept == MAX_PARTS {
            break;
        }
        readable[i] = true;
        kept += 1;
        if let PartType::Multipart(children) = &msg.parts[i].body {
            stack.extend(children.iter().rev().map(|&c| (c as usize, depth + 1)));
        }
    }
    if n > MAX_PARTS {
        truncated.push(format!("MIME parts: read {kept} of {n}"));
    }
    if too_deep {
        truncated.push(format!("MIME nesting deeper than {MAX_DEPTH} levels: the deeper parts were not read"));
    }
    readable
}

/// `type/subtype` of a part, lower-case, or `default` when it has no Content-Type.
fn mime_type(part: &MessagePart<'_>, default: &str) -> String {
    part.content_type()
        .map(|ct| match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub),
            None => ct.ctype().to_string(),
        })
        .unwrap_or_else(|| default.into())
        .to_ascii_lowercase()
}

/// Decoded subject on one line; a raw 8-bit subject that is not UTF-8 is re-decoded.
fn subject(msg: &Message<'_>) -> String {
    let mut s = msg.subject().unwrap_or("").to_string();
    if s.contains('\u{FFFD}') {
        let raw = msg
            .root_part()
            .headers
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case("subject"))
            .and_then(|h| msg.raw_message.get(h.offset_start as usize..h.offset_end as usize));
        if let Some(raw) = raw.filter(|r| std::str::from_utf8(r).is_err()) {
            s = guess_decode(raw, false);
        }
    }
    s.replace(['\r', '\n', '\t'], " ").split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

struct Content {
    text: String,
    html: Option<String>,
    repaired: bool,
}

/// Body text and HTML from the parts mail-parser chose as body (RFC 2046 §5.1.4: the last
/// alternative is the richest, but agents read text, so the plain alternative is preferred).
fn content(msg: &Message<'_>, readable: &[bool], depth: usize) -> Content {
    let mut repaired = false;
    let mut texts: Vec<String> = Vec::new();
    let readable = |i: &&u32| readable.get(**i as usize).copied().unwrap_or(false);
    for part in msg.text_body.iter().filter(readable).filter_map(|&i| msg.parts.get(i as usize)) {
        match &part.body {
            PartType::Text(_) => texts.push(decoded_text(msg, part, &mut repaired)),
            PartType::Html(_) => texts.push(html::to_text(&decoded_text(msg, part, &mut repaired))),
            _ => {} // inline images sit in the body list too
        }
    }
    let htmls: Vec<String> = msg
        .html_body
        .iter()
        .filter(readable)
        .filter_map(|&i| msg.parts.get(i as usize))
        .filter(|p| matches!(p.body, PartType::Html(_)))
        .map(|p| decoded_text(msg, p, &mut repaired))
        .collect();
    let html = (!htmls.is_empty()).then(|| htmls.join("\n"));
    let mut text = texts.iter().map(|t| t.trim_end()).filter(|t| !t.is_empty()).collect::<Vec<_>>().join("\n\n");
    // A blank plain alternative next to real HTML: show the HTML.
    if text.trim().is_empty()
        && let Some(h) = &html
    {
        text = html::to_text(h);
    }
    // Forwarded as attachment with nothing written above it: the attached message is the request.
    // Not for reports (RFC 6522): a bounce's returned message is not what the bounce says.
    let report = msg.root_part().content_type().is_some_and(|ct| ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("report")));
    // Each nested message is read to a bounded depth (RFC 2046 §5.2.1 allows any nesting).
    if text.trim().is_empty()
        && !report
        && depth < MAX_DEPTH
        && let Some(nested) = msg.attachments.iter().filter(readable).filter_map(|&i| msg.parts.get(i as usize)).find_map(|p| p.message())
    {
        let mut ignored = Vec::new();
        let inner = content(nested, &readable_parts(nested, &mut ignored), depth + 1);
        repaired |= inner.repaired;
        text = inner.text;
    }
    Content { text, html, repaired }
}

/// A text part's content, re-decoded from its bytes when the declared charset was wrong.
fn decoded_text(msg: &Message<'_>, part: &MessagePart<'_>, repaired: &mut bool) -> String {
    let text = part.text_contents().unwrap_or_default();
    let label = part.content_type().and_then(|ct| ct.attribute("charset")).map(|c| c.trim().to_ascii_lowercase());
    let lossy = text.contains('\u{FFFD}');
    let single_byte = label.as_deref().is_some_and(|l| {
        l.contains("ascii") || encoding_rs::Encoding::for_label(l.as_bytes()).is_some_and(|e| e.is_single_byte())
    });
    // Cheap exit for the common case: nothing suspicious in the decoded text.
    if !lossy && (!single_byte || text.is_ascii()) {
        return text.to_string();
    }
    let Some(bytes) = transfer_decoded(msg, part) else { return text.to_string() };
    let utf8 = std::str::from_utf8(&bytes).ok();
    let fixed = if lossy {
        if let Some(u) = utf8 {
            // Valid UTF-8 already: either genuine U+FFFD in the text, or a wrong label.
            (u != text).then(|| u.to_string())
        } else if mostly_utf8(&bytes) {
            None // UTF-8 with some damaged bytes: mail-parser's lossy decoding is the best reading
        } else {
            let meta = matches!(part.body, PartType::Html(_)).then(|| meta_charset(&bytes)).flatten();
            match meta.and_then(|e| e.decode_without_bom_handling_and_without_replacement(&bytes)) {
                Some(t) => Some(t.into_owned()),
                None => Some(guess_decode(&bytes, true)),
            }
        }
    } else {
        // Declared single-byte, but the bytes are UTF-8 (with at least one multi-byte char).
        utf8.filter(|u| !u.is_ascii()).map(str::to_string)
    };
    match fixed {
        Some(f) if !f.contains('\u{FFFD}') || !lossy || f.matches('\u{FFFD}').count() < text.matches('\u{FFFD}').count() => {
            *repaired = true;
            f
        }
        _ => text.to_string(),
    }
}

/// UTF-8 with a few damaged bytes, rather than a legacy charset: far more well-formed multi-byte
/// characters than invalid bytes (legacy double-byte text forms valid UTF-8 pairs only by chance).
fn mostly_utf8(bytes: &[u8]) -> bool {
    let (mut good, mut bad) = (0usize, 0usize);
    for chunk in bytes.utf8_chunks() {
        good += chunk.valid().chars().filter(|c| !c.is_ascii()).count();
        bad += chunk.invalid().len();
    }
    good >= 4 * bad.max(1)
}

/// A part's body bytes with the transfer encoding (base64, quoted-printable) undone.
fn transfer_decoded(msg: &Message<'_>, part: &MessagePart<'_>) -> Option<Vec<u8>> {
    let raw = msg.raw_message.get(part.offset_body as usize..part.offset_end as usize)?;
    match part.encoding {
        mail_parser::Encoding::Base64 => mail_parser::decoders::base64::base64_decode(raw),
        mail_parser::Encoding::QuotedPrintable => mail_parser::decoders::quoted_printable::quoted_printable_decode(raw),
        mail_parser::Encoding::None => Some(raw.to_vec()),
    }
}

/// The charset an HTML document declares in `<meta charset>` / `http-equiv` (first 4 KiB).
fn meta_charset(html: &[u8]) -> Option<&'static encoding_rs::Encoding> {
    let head = &html[..html.len().min(4096)];
    let lower = String::from_utf8_lossy(head).to_ascii_lowercase();
    let at = lower.find("charset=")? + "charset=".len();
    let label: String = lower[at..].trim_start_matches(['"', '\'']).chars().take_while(|c| c.is_ascii_alphanumeric() || "-_:.".contains(*c)).collect();
    encoding_rs::Encoding::for_label(label.as_bytes())
}

/// Decode bytes of unknown charset with chardetng's guess (the detector Firefox uses).
fn guess_decode(bytes: &[u8], allow_utf8: bool) -> String {
    use chardetng::{EncodingDetector, Iso2022JpDetection, Utf8Detection};
    // Mail runs no scripts, so ISO-2022-JP may be guessed (chardetng's advice for e-mail).
    let mut det = EncodingDetector::new(Iso2022JpDetection::Allow);
    det.feed(bytes, true);
    let utf8 = if allow_utf8 { Utf8Detection::Allow } else { Utf8Detection::Deny };
    det.guess(None, utf8).decode_without_bom_handling(bytes).0.into_owned()
}

/// Every attachment of the message, TNEF unpacked; plus the text body found inside TNEF.
/// `extra`: decoded bytes per part index that the parse did not see ([`elide`]).
fn attachments(msg: &Message<'_>, readable: &[bool], extra: &[(u32, u64)]) -> (Vec<Attachment>, Option<String>) {
    let mut out = Vec::new();
    let mut tnef_text = None;
    let readable = msg.attachments.iter().filter(|&&i| readable.get(i as usize).copied().unwrap_or(false));
    let parts = readable.filter_map(|&i| Some((i, msg.parts.get(i as usize)?)));
    for (i, (index, part)) in parts.enumerate() {
        let content_type = mime_type(part, "application/octet-stream");
        // mail-parser lists a multipart whose boundary never appears as a part of its own; that
        // is a broken container, not a file. An empty part without a name carries nothing.
        if content_type.starts_with("multipart/") || (part.is_empty() && part.attachment_name().is_none()) {
            continue;
        }
        let name = file_name(msg, part)
            .or_else(|| {
                part.message().map(|m| {
                    let s = subject(m);
                    let s = clean_file_name(&s);
                    if s.is_empty() { "message.eml".to_string() } else { format!("{s}.eml") }
                })
            })
            .unwrap_or_else(|| format!("attachment-{}", i + 1));
        if is_tnef(msg, part) && let Ok(t) = tnef::parse(part.contents()) {
            let body = t
                .body
                .clone()
                .filter(|b| !b.trim().is_empty())
                .or_else(|| t.html_body.as_deref().map(html::to_text))
                .or_else(|| t.preview.clone())
                .filter(|b| !b.trim().is_empty());
            if !t.attachments.is_empty() || body.is_some() {
                tnef_text = tnef_text.or(body);
                for a in t.attachments {
                    let content_type = a
                        .content_type
                        .clone()
                        .or_else(|| a.embedded_message.then(|| "application/ms-tnef".to_string()))
                        .or_else(|| mime_guess::from_path(&a.name).first_raw().map(str::to_string))
                        .unwrap_or_else(|| "application/octet-stream".into());
                    out.push(Attachment {
                        name: clean_file_name(&a.name),
                        content_type,
                        size: a.data.len() as u64,
                        inline: false,
                        content_id: a.content_id.as_deref().map(clean_id),
                        unpacked_from: Some(name.clone()),
                    });
                }
                continue;
            }
        }
        let disposition_inline = part.content_disposition().map(|d| d.ctype().eq_ignore_ascii_case("inline"));
        let content_id = part.content_id().map(clean_id).filter(|c| !c.is_empty());
        let inline = matches!(part.body, PartType::InlineBinary(_))
            || disposition_inline == Some(true)
            || (disposition_inline.is_none() && content_id.is_some());
        out.push(Attachment { name, content_type, size: decoded_size(msg, part, index, extra), inline, content_id, unpacked_from: None });
    }
    (out, tnef_text)
}

/// A part's file name: RFC 2231 / 2047 decoded, without any path; `None` when it has none.
fn file_name(msg: &Message<'_>, part: &MessagePart<'_>) -> Option<String> {
    rfc2231_name(msg, part).or_else(|| part.attachment_name().map(str::to_string)).as_deref().map(clean_file_name).filter(|n| !n.is_empty())
}

/// Outlook's `winmail.dat`: a TNEF type, or that file name.
fn is_tnef(msg: &Message<'_>, part: &MessagePart<'_>) -> bool {
    let tnef_type = part.content_type().is_some_and(|ct| ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("ms-tnef") || s.eq_ignore_ascii_case("vnd.ms-tnef")));
    tnef_type || file_name(msg, part).is_some_and(|n| n.eq_ignore_ascii_case("winmail.dat"))
}

/// An attachment's size in bytes once its transfer encoding is undone. A text part is measured
/// in bytes, not by its UTF-8 reading (a log in Latin-1 or binary data labelled text would count
/// its replacement characters); `extra` adds what the parse did not see ([`elide`]).
fn decoded_size(msg: &Message<'_>, part: &MessagePart<'_>, index: u32, extra: &[(u32, u64)]) -> u64 {
    let unseen: u64 = extra.iter().filter(|(p, _)| *p == index).map(|(_, e)| e).sum();
    let seen = match part.body {
        PartType::Text(_) | PartType::Html(_) => transfer_decoded(msg, part).map_or(part.len(), |b| b.len()),
        _ => part.len(),
    };
    seen as u64 + unseen
}

/// RFC 2231 §3-4 file name split into continuations (`filename*0*=UTF-8''…; filename*1*=…`),
/// reassembled from the raw header. mail-parser 0.11 decodes each piece on its own, which breaks
/// a multi-byte character or an ISO-2022-JP escape sequence that spans two pieces.
fn rfc2231_name(msg: &Message<'_>, part: &MessagePart<'_>) -> Option<String> {
    for header in ["content-disposition", "content-type"] {
        let Some(h) = part.headers.iter().find(|h| h.name.as_str().eq_ignore_ascii_case(header)) else { continue };
        let Some(raw) = msg.raw_message.get(h.offset_start as usize..h.offset_end as usize) else { continue };
        let raw = String::from_utf8_lossy(raw);
        let param = if header == "content-disposition" { "filename" } else { "name" };
        if let Some(name) = rfc2231_param(&raw, param) {
            return Some(name);
        }
    }
    None
}

/// Value of a parameter given as numbered continuations with an extended first piece.
fn rfc2231_param(header: &str, param: &str) -> Option<String> {
    let mut pieces: Vec<(u32, bool, String)> = Vec::new();
    for item in header.split(';').skip(1) {
        let Some((key, value)) = item.split_once('=') else { continue };
        let key = key.trim().to_ascii_lowercase();
        let Some(rest) = key.strip_prefix(param).and_then(|r| r.strip_prefix('*')) else { continue };
        let (num, extended) = match rest.strip_suffix('*') {
            Some(n) => (n, true),
            None => (rest, false),
        };
        let Ok(num) = num.parse::<u32>() else { continue };
        pieces.push((num, extended, value.trim().trim_matches('"').to_string()));
    }
    pieces.sort_by_key(|p| p.0);
    let first = pieces.first().filter(|p| p.0 == 0 && p.1 && pieces.len() > 1)?;
    let mut fields = first.2.splitn(3, '\'');
    let (charset, _lang, value0) = (fields.next()?, fields.next()?, fields.next()?);
    let encoding = encoding_rs::Encoding::for_label(charset.trim().as_bytes())?;
    let mut bytes = Vec::new();
    for (i, (_, extended, value)) in pieces.iter().enumerate() {
        let value = if i == 0 { value0 } else { value.as_str() };
        if *extended { percent_decode(value, &mut bytes) } else { bytes.extend_from_slice(value.as_bytes()) }
    }
    let (text, _, bad) = encoding.decode(&bytes);
    (!bad).then(|| text.into_owned())
}

fn percent_decode(s: &str, out: &mut Vec<u8>) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
}

/// A file name safe to show and store: last path component, no control characters, trimmed.
fn clean_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    cleaned.trim().to_string()
}


/// The author (RFC 5322 §3.6.2): the first From mailbox with a usable address; else the Sender,
/// then Reply-To, then a later From address (with the header it came from). With none usable,
/// the first From as it is (a `MAILER-DAEMON` name without address).
fn author(msg: &Message<'_>, truncated: &mut Vec<String>) -> Option<(Mailbox, Option<&'static str>)> {
    let mut ignored = Vec::new(); // Reply-To's cut is reported once, with the reply_to field
    let (from, sender, reply_to) = (mailboxes(msg, "From", truncated), mailboxes(msg, "Sender", truncated), mailboxes(msg, "Reply-To", &mut ignored));
    let first = from.first().map(|m| (m, None));
    let mut candidates = first
        .into_iter()
        .chain(sender.iter().map(|m| (m, Some("Sender"))))
        .chain(reply_to.iter().map(|m| (m, Some("Reply-To"))))
        .chain(from.iter().skip(1).map(|m| (m, Some("From"))));
    candidates.find(|(m, _)| !m.address.is_empty()).or(first).map(|(m, h)| (m.clone(), h))
}

/// The mailboxes of an address header (groups flattened, comments dropped: mail-parser reads
/// RFC 5322 §3.4 address lists), each through [`mailbox`], at most [`MAX_ADDRESSES`].
fn mailboxes(msg: &Message<'_>, header: &'static str, truncated: &mut Vec<String>) -> Vec<Mailbox> {
    let Some(list) = msg.root_part().headers.iter().find(|h| h.name.as_str().eq_ignore_ascii_case(header)).and_then(|h| h.value.as_address()) else {
        return Vec::new();
    };
    let quoted = quoted_addresses(msg.header_raw(header).unwrap_or(""));
    let total = list.iter().count();
    if total > MAX_ADDRESSES {
        truncated.push(format!("{header}: kept the first {MAX_ADDRESSES} of {total} addresses"));
    }
    list.iter().take(MAX_ADDRESSES).map(|a| mailbox(a, &quoted)).collect()
}

/// One mailbox; its address is empty unless usable ([`is_usable_address`]): an invalid address is
/// never stored as a participant nor written to.
fn mailbox(a: &mail_parser::Addr<'_>, quoted: &HashSet<String>) -> Mailbox {
    let name = a.name.as_ref().map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
    let address = a.address.as_deref().map(normalize_address).unwrap_or_default();
    if let Some(q) = quoted_local_part(name.as_deref(), &address, quoted) {
        return Mailbox { name: None, address: q };
    }
    Mailbox { name, address: Some(address).filter(|a| is_usable_address(a)).unwrap_or_default() }
}

/// RFC 5322 §3.4.1: `local-part = dot-atom / quoted-string`, so `"john doe"@example.org` is one
/// address. mail-parser 0.11 reads it as the name `john doe` and the address `@example.org`;
/// rebuild it when the raw header holds exactly that quoted local part before the domain.
fn quoted_local_part(name: Option<&str>, address: &str, quoted: &HashSet<String>) -> Option<String> {
    let domain = address.strip_prefix('@').filter(|d| !d.is_empty())?;
    // RFC 5322 §3.2.4: inside a quoted-string, `"` and `\` are escaped with a backslash.
    let local = name?.replace('\\', "\\\\").replace('"', "\\\"");
    // Lower-cased like every address we keep (`normalize_address`).
    let candidate = format!("\"{local}\"@{domain}").to_ascii_lowercase();
    (quoted.contains(&candidate) && is_usable_address(&candidate)).then_some(candidate)
}

/// Every `"quoted string"@domain` in a raw address header, lower-cased, in one pass (a header
/// with thousands of addresses stays linear).
fn quoted_addresses(raw: &str) -> HashSet<String> {
    let b = raw.as_bytes();
    let mut out = HashSet::new();
    let mut i = 0;
    while let Some(open) = memchr::memchr(b'"', &b[i..]).map(|o| i + o) {
        let mut j = open + 1;
        while j < b.len() && b[j] != b'"' {
            j += if b[j] == b'\\' { 2 } else { 1 };
        }
        if j >= b.len() {
            break;
        }
        let end = j + 1;
        if b.get(end) == Some(&b'@') {
            let domain_len = b[end + 1..].iter().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'[' | b']' | b':')).count();
            out.insert(raw[open..end + 1 + domain_len].to_ascii_lowercase());
        }
        i = end;
    }
    out
}

/// The Message-IDs of a list header, at most [`MAX_IDS`]. For References (`keep_root`) the
/// first (the thread's root) and the newest are kept: RFC 5322 §3.6.4 appends each parent's
/// id, so the end of the list is what threading needs.
fn id_list(v: &HeaderValue<'_>, header: &str, keep_root: bool, truncated: &mut Vec<String>) -> Vec<String> {
    // `as_text_list`, not `as_text`: the latter returns only the last id of a list.
    let all: Vec<&str> = match v {
        HeaderValue::Text(t) => vec![t.as_ref()],
        HeaderValue::TextList(l) => l.iter().map(|t| t.as_ref()).collect(),
        _ => Vec::new(),
    };
    let picked: Vec<&str> = if all.len() <= MAX_IDS {
        all.clone()
    } else if keep_root {
        truncated.push(format!("{header}: kept the first and the newest {} of {} Message-IDs", MAX_IDS - 1, all.len()));
        all[..1].iter().chain(&all[all.len() - (MAX_IDS - 1)..]).copied().collect()
    } else {
        truncated.push(format!("{header}: kept the first {MAX_IDS} of {} Message-IDs", all.len()));
        all[..MAX_IDS].to_vec()
    };
    picked.into_iter().map(clean_id).filter(|s| !s.is_empty()).collect()
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

    #[test]
    fn addresses_quoted_grouped_and_commented() {
        let raw = b"From: \"John Doe\"@Example.ORG\r\nTo: Team: eve@example.org, (x) frank@example.org;, Bob <@example.org>\r\nCc: <not an address>, \"a\\\"b\"@example.org\r\n\r\nbody\r\n";
        let p = parse(raw).unwrap();
        assert_eq!(p.from_address(), "\"john doe\"@example.org");
        let to: Vec<&str> = p.to.iter().map(|m| m.address.as_str()).collect();
        assert_eq!(to, ["eve@example.org", "frank@example.org", ""], "a name with `<@domain>` is no address");
        let cc: Vec<&str> = p.cc.iter().map(|m| m.address.as_str()).collect();
        assert_eq!(cc, ["", "\"a\\\"b\"@example.org"]);
    }

    #[test]
    fn junk_before_the_headers_is_skipped_within_limits() {
        let p = parse(b"---- Original email message ----\r\n  \r\nFrom: a@b.c\r\nSubject: x\r\n\r\nbody\r\n").unwrap();
        assert_eq!((p.from_address(), p.subject.as_str()), ("a@b.c", "x"));
        assert!(parse(b"1\n2\n3\n4\n5\n6\nFrom: a@b.c\n\nbody\n").is_err(), "more junk than MAX_JUNK_LINES is not mail");
        assert!(parse(b"just some text\nwithout any header\n").is_err());
    }

    #[test]
    fn ancestors_are_unique_and_lists_bounded() {
        let mut raw = String::from("From: a@b.c\r\nIn-Reply-To: <p9@y>\r\nReferences:");
        for i in 0..5000 {
            raw.push_str(&format!(" <p{}@y>\r\n", i % 10));
        }
        raw.push_str("\r\nbody\r\n");
        let p = parse(raw.as_bytes()).unwrap();
        assert_eq!(p.references.len(), MAX_IDS);
        assert_eq!(p.references[0], "p0@y", "the thread's root is kept");
        assert_eq!(p.references.last().map(String::as_str), Some("p9@y"), "the newest is kept");
        assert_eq!(p.ancestors().len(), 10);
        assert_eq!(p.ancestors()[..2], ["p9@y", "p8@y"]);
        assert!(p.truncated.iter().any(|t| t.contains("References") && t.contains("5000")), "{:?}", p.truncated);
    }

    #[test]
    fn nested_messages_are_bounded_before_mail_parser_builds_them() {
        // 100k levels: unbounded, freeing mail-parser's tree overflows the stack (an abort).
        let mut raw = String::from("From: a@b.c\r\nSubject: top\r\n");
        for i in 0..100_000 {
            raw.push_str(&format!("Content-Type: Message/RFC822\r\n\r\nFrom: n{i}@b.c\r\nSubject: level {i}\r\n"));
        }
        let p = std::thread::Builder::new().stack_size(256 * 1024).spawn(move || parse(raw.as_bytes()).map(|p| p.truncated)).unwrap().join().unwrap().unwrap();
        assert!(p.iter().any(|t| t.contains("nested messages") && t.contains(&format!("{}", 100_000 - MAX_NESTED_MESSAGES))), "{p:?}");
    }

    #[test]
    fn parts_depth_and_headers_are_bounded() {
        // 40 nested multiparts with a text part at the bottom: the deep text is not read.
        let mut raw = String::from("From: a@b.c\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n");
        for i in 0..40 {
            raw.push_str(&format!("--b{i}\r\nContent-Type: multipart/mixed; boundary=\"b{}\"\r\n\r\n", i + 1));
        }
        raw.push_str("--b40\r\nContent-Type: text/plain\r\n\r\ndeep text\r\n");
        let p = parse(raw.as_bytes()).unwrap();
        assert!(p.truncated.iter().any(|t| t.contains("nesting")), "{:?}", p.truncated);
        assert!(!p.body_text.contains("deep text"));

        let mut raw = String::from("From: a@b.c\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n");
        for i in 0..(MAX_HEADERS + 10) {
            raw.push_str(&format!("X-H{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        for i in 0..(MAX_PARTS + 10) {
            raw.push_str(&format!("--b\r\nContent-Type: application/octet-stream; name=\"f{i}.bin\"\r\n\r\nx\r\n"));
        }
        raw.push_str("--b--\r\n");
        let p = parse(raw.as_bytes()).unwrap();
        assert_eq!(p.headers.len(), MAX_HEADERS);
        assert!(p.attachments.len() < MAX_PARTS, "{}", p.attachments.len());
        assert!(p.truncated.iter().any(|t| t.contains("header fields")) && p.truncated.iter().any(|t| t.contains("MIME parts")), "{:?}", p.truncated);
    }
}
