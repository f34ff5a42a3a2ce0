//! What mail-parser is given: the raw bytes made readable (bare-CR line endings) and bounded
//! before it builds anything, since its own cost is not bounded by our limits: it builds every
//! part and every nested message it meets, reserving memory per part (a million tiny base64
//! parts in a 48 MB message took a gigabyte) and freeing nested messages recursively (250k
//! levels overflow the stack). Each cut here keeps what the limits of `message` read anyway.
//! The stored message is never altered. No I/O.

use super::{MAX_JUNK_LINES, MAX_NESTED_MESSAGES, MAX_PARTS};
use aho_corasick::{AhoCorasick, Anchored, Input, StartKind};
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::LazyLock;

/// Boundary delimiter lines read: an opening and a closing line for each of the [`MAX_PARTS`]
/// parts `message` reads, and some. Past it the message is not parsed further.
pub const MAX_DELIMITERS: usize = 2 * MAX_PARTS + 64;

/// Mail as mail-parser should read it (both `parse` and the bounce reader): lines ending
/// mostly in a bare CR (classic Mac OS) get LF, nesting types past the
/// [`MAX_NESTED_MESSAGES`]th are made opaque ([`bound_nesting`]), and the message ends at its
/// [`MAX_DELIMITERS`]th boundary line ([`bound_parts`]). Ordinary mail is returned unchanged
/// (borrowed).
pub fn normalize_line_endings(raw: &[u8]) -> Cow<'_, [u8]> {
    bound_parts(bound_nesting(line_endings(raw)).0).0
}

/// Bare CRs as LF when they end most lines, so mail-parser sees the lines.
pub(super) fn line_endings(raw: &[u8]) -> Cow<'_, [u8]> {
    let bare_cr = |i: usize| raw[i] == b'\r' && raw.get(i + 1) != Some(&b'\n');
    let lf = raw.iter().filter(|&&b| b == b'\n').count();
    let cr = (0..raw.len()).filter(|&i| bare_cr(i)).count();
    if cr <= lf {
        return Cow::Borrowed(raw);
    }
    Cow::Owned((0..raw.len()).map(|i| if bare_cr(i) { b'\n' } else { raw[i] }).collect())
}

/// Types that make mail-parser open a nested message (RFC 2046 §5.2.1, RFC 6532 §3.5; a
/// digest's parts are messages by default, RFC 2046 §5.1.5).
static NESTING: LazyLock<AhoCorasick> =
    LazyLock::new(|| AhoCorasick::builder().ascii_case_insensitive(true).build(["message/rfc822", "message/global", "multipart/digest"]).expect("fixed patterns"));

/// mail-parser nests one value per nested message and frees them recursively: 250k levels (a
/// 20 MB message) overflow the stack and abort the daemon, which no catch_unwind stops. Past the
/// first [`MAX_NESTED_MESSAGES`] mentions of a nesting type in a Content-Type field, each is
/// rewritten to a type that nests nothing (an opaque attachment, or a plain multipart); the same
/// words in a text are left alone. Returns how many were rewritten.
pub(super) fn bound_nesting(raw: Cow<'_, [u8]>) -> (Cow<'_, [u8]>, usize) {
    let b = raw.as_ref();
    let mut lines = LineOf::default();
    let over = NESTING.find_iter(b).filter(|m| lines.in_content_type(b, m.start())).skip(MAX_NESTED_MESSAGES);
    let mut out: Option<Vec<u8>> = None;
    let (mut copied, mut n) = (0, 0);
    for m in over {
        let buf = out.get_or_insert_with(|| Vec::with_capacity(b.len() + 1024));
        buf.extend_from_slice(&b[copied..m.start()]);
        buf.extend_from_slice(if m.pattern().as_usize() == 2 { b"multipart/mixed" } else { b"application/octet-stream" });
        copied = m.end();
        n += 1;
    }
    match out {
        None => (raw, 0),
        Some(mut buf) => {
            buf.extend_from_slice(&b[copied..]);
            (Cow::Owned(buf), n)
        }
    }
}

/// Which line an offset is on, for offsets met in increasing order: linear over the message.
#[derive(Default)]
struct LineOf {
    scanned: usize,
    start: usize,
    /// The answer for the line at `start`, once asked.
    known: Option<(usize, bool)>,
}

impl LineOf {
    /// Whether offset `at` lies in a Content-Type field: its line starts one, or continues
    /// (folded) a field that does, within 8 lines; a longer fold counts as one (the safe side).
    fn in_content_type(&mut self, b: &[u8], at: usize) -> bool {
        if let Some(nl) = memchr::memrchr(b'\n', &b[self.scanned..at]) {
            self.start = self.scanned + nl + 1;
        }
        self.scanned = at;
        if let Some((start, answer)) = self.known
            && start == self.start
        {
            return answer;
        }
        let mut line = self.start;
        let mut answer = true;
        for _ in 0..8 {
            if !matches!(b.get(line), Some(b' ' | b'\t')) {
                answer = b[line..].get(..13).is_some_and(|f| f.eq_ignore_ascii_case(b"content-type:"));
                break;
            }
            if line == 0 {
                break;
            }
            line = memchr::memrchr(b'\n', &b[..line - 1]).map_or(0, |nl| nl + 1);
        }
        self.known = Some((self.start, answer));
        answer
    }
}

static BOUNDARY_PARAM: LazyLock<AhoCorasick> = LazyLock::new(|| AhoCorasick::builder().ascii_case_insensitive(true).build(["boundary="]).expect("fixed pattern"));

/// The message up to its [`MAX_DELIMITERS`]th boundary delimiter line (`--` and a boundary the
/// message declares), and whether it was cut there. Ordinary mail costs one scan for lines
/// starting with `--`. A boundary declared in RFC 2231 form, or more distinct boundaries than
/// delimiters read, makes every `--` line without white space count.
pub(super) fn bound_parts(raw: Cow<'_, [u8]>) -> (Cow<'_, [u8]>, bool) {
    let Some(cut) = delimiter_cut(raw.as_ref()) else { return (raw, false) };
    match raw {
        Cow::Borrowed(b) => (Cow::Borrowed(&b[..cut]), true),
        Cow::Owned(mut v) => {
            v.truncate(cut);
            (Cow::Owned(v), true)
        }
    }
}

fn delimiter_cut(b: &[u8]) -> Option<usize> {
    if memchr::memmem::find_iter(b, b"\n--").count() <= MAX_DELIMITERS {
        return None;
    }
    let mut declared: HashSet<&[u8]> = HashSet::new();
    for m in BOUNDARY_PARAM.find_iter(b) {
        let v = param_value(&b[m.end()..]);
        if !v.is_empty() && declared.insert(v) && declared.len() > MAX_DELIMITERS {
            break;
        }
    }
    let crude = declared.len() > MAX_DELIMITERS || memchr::memmem::find(b, b"boundary*").is_some();
    let known = AhoCorasick::builder().start_kind(StartKind::Anchored).build(&declared).ok()?;
    let is_delimiter = |rest: &[u8]| {
        if crude {
            let line = rest.split(|&c| c == b'\n').next().unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            !line.is_empty() && !line.iter().any(u8::is_ascii_whitespace)
        } else {
            known.find(Input::new(rest).anchored(Anchored::Yes)).is_some()
        }
    };
    let mut count = 0;
    let mut at = 0;
    while at < b.len() {
        if let Some(rest) = b[at..].strip_prefix(b"--")
            && is_delimiter(rest)
        {
            count += 1;
            if count > MAX_DELIMITERS {
                return Some(at);
            }
        }
        at += memchr::memchr(b'\n', &b[at..]).map_or(b.len() - at, |i| i + 1);
    }
    None
}

/// A Content-Type parameter's value: a quoted string, or a token up to `;`, white space or a
/// line end (at most 200 bytes; RFC 2046 boundaries have at most 70).
fn param_value(after: &[u8]) -> &[u8] {
    let after = &after[..after.len().min(200)];
    if let Some(quoted) = after.strip_prefix(b"\"") {
        return quoted.split(|&c| c == b'"' || c == b'\n').next().unwrap_or_default();
    }
    after.split(|&c| c == b';' || c.is_ascii_whitespace() || c == b'"').next().unwrap_or_default()
}

/// Where the header section starts. RFC 5322 §2.2: a field starts with `field-name ":"`,
/// field-name being printable ASCII without colon. Like MTAs and other help desks, up to
/// [`MAX_JUNK_LINES`] lines before it that are not fields are skipped (an mbox `From ` line,
/// a forwarding client's separator, a line of spaces, blank lines). `None`: not mail.
pub(super) fn header_start(raw: &[u8]) -> Option<usize> {
    let mut at = 0;
    for _ in 0..=MAX_JUNK_LINES {
        let line = &raw[at..];
        let name_len = line.iter().take_while(|&&b| (33..=126).contains(&b) && b != b':').count();
        let spaces = line[name_len..].iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        if name_len > 0 && line.get(name_len + spaces) == Some(&b':') {
            return Some(at);
        }
        at += memchr::memchr(b'\n', line)? + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::parse;

    fn multipart(boundary_param: &str, boundary: &str, parts: &[String]) -> String {
        let mut m = format!("From: a@example.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; {boundary_param}\r\n\r\n");
        for p in parts {
            m.push_str(&format!("--{boundary}\r\n{p}\r\n"));
        }
        m.push_str(&format!("--{boundary}--\r\n"));
        m
    }

    #[test]
    fn nesting_types_named_in_a_text_are_not_rewritten() {
        let body: String = (0..300).map(|i| format!("Line {i}: our filter rejects message/rfc822 and multipart/digest parts\r\n")).collect();
        let raw = format!("From: a@example.test\r\nSubject: filters\r\nContent-Type: text/plain\r\n\r\n{body}");
        let p = parse(raw.as_bytes()).unwrap();
        assert_eq!(p.body_text.matches("message/rfc822").count(), 300, "the text as written");
        assert!(p.truncated.is_empty(), "{:?}", p.truncated);
    }

    #[test]
    fn a_million_parts_are_read_up_to_the_limit() {
        let tiny = "Content-Transfer-Encoding: base64\r\n\r\neA==".to_string();
        let raw = multipart("boundary=\"b\"", "b", &vec![tiny; 100_000]);
        let (cut, was_cut) = bound_parts(Cow::Borrowed(raw.as_bytes()));
        assert!(was_cut && cut.len() < raw.len() / 20, "cut at {} of {}", cut.len(), raw.len());
        let p = parse(raw.as_bytes()).unwrap();
        assert!(p.files.len() <= MAX_PARTS, "{} files", p.files.len());
        assert!(p.truncated.iter().any(|t| t.contains("boundary line")), "{:?}", p.truncated);
        // The same shape with the boundary in RFC 2231 form: every `--` line counts then.
        let raw = multipart("boundary*0=\"b\"", "b", &vec!["Content-Type: text/plain\r\n\r\nx".to_string(); 3_000]);
        assert!(bound_parts(Cow::Borrowed(raw.as_bytes())).1);
    }

    #[test]
    fn deep_multipart_nesting_is_cut() {
        let mut raw = String::from("From: a@example.test\r\nSubject: deep\r\n");
        for i in 0..50_000 {
            raw.push_str(&format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"));
        }
        raw.push_str("Content-Type: text/plain\r\n\r\nbottom\r\n");
        assert!(bound_parts(Cow::Borrowed(raw.as_bytes())).1);
        assert!(parse(raw.as_bytes()).is_ok());
    }

    #[test]
    fn dash_lines_in_texts_are_not_boundaries() {
        // An SQL dump and a log with separators: thousands of lines that start with `--`.
        let sql: String = (0..5_000).map(|i| format!("-- step {i}\r\nSELECT {i};\r\n----------\r\n")).collect();
        let text = format!("Content-Type: text/plain\r\n\r\n{sql}last line");
        let file = "Content-Type: application/pdf; name=\"r.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK".to_string();
        let raw = multipart("boundary=\"=_sep_1\"", "=_sep_1", &[text, file]);
        assert!(!bound_parts(Cow::Borrowed(raw.as_bytes())).1);
        let p = parse(raw.as_bytes()).unwrap();
        assert!(p.body_text.trim_end().ends_with("last line"));
        assert_eq!(p.files.len(), 1);
        assert!(p.truncated.is_empty(), "{:?}", p.truncated);
    }
}
