//! Large base64 bodies left out of what mail-parser reads. mail-parser decodes every part it
//! meets, so a 25 MB attachment would be decoded into a second 25 MB only for its size. In a
//! message of 1 MB or more ([`Elision::LARGE`]), every run of whole base64 lines of at least
//! 64 KB is replaced by one 4-character line; mail-parser reads what is left (headers, text,
//! part structure) and the run's decoded size is counted from its characters (3 bytes per 4).
//!
//! The runs are found without reading MIME: a line of only base64 characters, its length a
//! multiple of 4 and without `=` padding, belongs to no header (no colon), boundary (`--`) or
//! blank line, so a run never spans two parts and decodes on its own. Whether a run may stay out
//! is decided on the parsed skeleton ([`Skeleton::extra_sizes`]): only when it sits in a base64
//! attachment nobody reads the content of. Otherwise the caller parses the whole message. The
//! stored message is never altered; this is a reading of it. No I/O.

use mail_parser::{Encoding, Message, MessagePart, PartType};

/// When runs are left out.
#[derive(Debug, Clone, Copy)]
pub(super) struct Elision {
    /// Messages smaller than this are read whole.
    pub from_size: usize,
    /// The shortest run of base64 lines left out.
    pub min_run: usize,
}

impl Elision {
    /// The saving only matters for large messages: from 1 MB, runs of 64 KB.
    pub const LARGE: Elision = Elision { from_size: 1 << 20, min_run: 64 * 1024 };
    /// Every message read whole.
    #[cfg(test)]
    pub const NEVER: Elision = Elision { from_size: usize::MAX, min_run: usize::MAX };
}

/// What stands in for a run: valid base64 of three zero bytes.
const PLACEHOLDER: &[u8] = b"AAAA";
const PLACEHOLDER_DECODED: u64 = 3;

/// The message with its large base64 runs replaced, and where each run was.
pub(super) struct Skeleton {
    pub bytes: Vec<u8>,
    /// (offset of the placeholder in `bytes`, decoded size of the run it stands for)
    runs: Vec<(usize, u64)>,
}

/// The skeleton of `raw` when it has runs worth leaving out; `None` reads `raw` as it is.
pub(super) fn elide(raw: &[u8], when: Elision) -> Option<Skeleton> {
    if raw.len() < when.from_size {
        return None;
    }
    let mut sk = Skeleton { bytes: Vec::new(), runs: Vec::new() };
    let mut copied = 0;
    // Current run: (start offset, base64 characters, the first line's line ending).
    let mut run: Option<(usize, usize, &[u8])> = None;
    let mut at = 0;
    loop {
        let end = memchr::memchr(b'\n', &raw[at..]).map_or(raw.len(), |i| at + i + 1);
        let line = &raw[at..end];
        let text_len = line.len() - line_ending(line).len();
        if at < raw.len() && is_base64_line(&line[..text_len]) {
            run.get_or_insert((at, 0, line_ending(line))).1 += text_len;
        } else if let Some((start, chars, eol)) = run.take()
            && at - start >= when.min_run
        {
            sk.bytes.extend_from_slice(&raw[copied..start]);
            sk.runs.push((sk.bytes.len(), (chars / 4 * 3) as u64));
            sk.bytes.extend_from_slice(PLACEHOLDER);
            sk.bytes.extend_from_slice(eol);
            copied = at;
        }
        if at == raw.len() {
            break;
        }
        at = end;
    }
    if sk.runs.is_empty() {
        return None;
    }
    sk.bytes.extend_from_slice(&raw[copied..]);
    Some(sk)
}

impl Skeleton {
    /// Per part index of `msg` (the parse of [`Skeleton::bytes`]), the decoded bytes its
    /// placeholders stand for beyond their own three. `None` when a run sits where its content
    /// is read (a body text, HTML, a nested message, a TNEF container) or outside a base64
    /// part: the whole message must be parsed then.
    pub fn extra_sizes(&self, msg: &Message<'_>) -> Option<Vec<(u32, u64)>> {
        let mut extra: Vec<(u32, u64)> = Vec::new();
        // Leaf parts in stream order, so each run is found by a binary search (linear in all).
        // Parts out of order only make a search miss, which reads the whole message.
        let leaves: Vec<(u32, &MessagePart<'_>)> =
            msg.parts.iter().enumerate().filter(|(_, p)| !matches!(p.body, PartType::Multipart(_))).map(|(i, p)| (i as u32, p)).collect();
        for &(at, decoded) in &self.runs {
            let after = leaves.partition_point(|(_, p)| p.offset_body as usize <= at);
            let &(i, part) = leaves.get(after.checked_sub(1)?)?;
            if !(part.offset_body as usize..part.offset_end as usize).contains(&at) {
                return None;
            }
            // Binary content is only ever measured (an inline image in a body list included);
            // a text part only when it is not a body text and its bytes decode (its size is
            // counted in bytes, see `decoded_size`). A part mail-parser could not read as what
            // it says (a base64 nested message whose skeleton does not parse) is read whole.
            let unread = match part.body {
                PartType::Binary(_) | PartType::InlineBinary(_) => true,
                PartType::Text(_) => !msg.text_body.contains(&i) && !msg.html_body.contains(&i) && super::transfer_decoded(msg, part).is_some(),
                _ => false,
            };
            if !unread || part.encoding != Encoding::Base64 || part.is_encoding_problem || super::is_tnef(msg, part) {
                return None;
            }
            match extra.iter_mut().find(|(p, _)| *p == i) {
                Some((_, e)) => *e += decoded.saturating_sub(PLACEHOLDER_DECODED),
                None => extra.push((i, decoded.saturating_sub(PLACEHOLDER_DECODED))),
            }
        }
        Some(extra)
    }
}

fn line_ending(line: &[u8]) -> &[u8] {
    match line {
        [.., b'\r', b'\n'] => &line[line.len() - 2..],
        [.., b'\n'] => &line[line.len() - 1..],
        _ => &[],
    }
}

/// A whole line of base64 that decodes on its own: alphabet only, no padding, 4n characters.
fn is_base64_line(text: &[u8]) -> bool {
    !text.is_empty() && text.len().is_multiple_of(4) && text.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use mail_parser::MessageParser;

    fn elide_large(raw: &[u8]) -> Option<Skeleton> {
        elide(raw, Elision::LARGE)
    }

    /// Deterministic bytes that do not compress into long equal runs.
    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn b64_lines(bytes: &[u8], eol: &str) -> String {
        let b = base64::engine::general_purpose::STANDARD.encode(bytes);
        b.as_bytes().chunks(76).map(|c| format!("{}{eol}", std::str::from_utf8(c).unwrap())).collect()
    }

    fn part(eol: &str, headers: &str, body: &str) -> String {
        format!("--b{eol}{}{eol}{eol}{body}{eol}", headers.replace('\n', eol))
    }

    fn mail(eol: &str, parts: &[String]) -> Vec<u8> {
        let head = "From: Alice <alice@example.test>\nTo: support@example.test\nSubject: big\nMessage-ID: <big@example.test>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n".replace('\n', eol);
        format!("{head}{}--b--{eol}", parts.concat()).into_bytes()
    }

    fn text(eol: &str, t: &str) -> String {
        part(eol, "Content-Type: text/plain; charset=utf-8", t)
    }

    fn attachment(eol: &str, name: &str, ctype: &str, bytes: &[u8]) -> String {
        part(eol, &format!("Content-Type: {ctype}; name=\"{name}\"\nContent-Disposition: attachment; filename=\"{name}\"\nContent-Transfer-Encoding: base64"), &b64_lines(bytes, eol))
    }

    /// Attachment sizes as mail-parser measures them decoding everything: the reference (for
    /// binary parts; a text part's length is that of its UTF-8 reading).
    fn decoded_sizes(raw: &[u8]) -> Vec<u64> {
        let msg = MessageParser::default().parse(raw).unwrap();
        msg.attachments.iter().map(|&i| msg.parts[i as usize].len() as u64).collect()
    }

    #[test]
    fn large_attachments_are_measured_without_being_decoded() {
        for eol in ["\r\n", "\n"] {
            // 2,000,000 bytes end in a padded line; 1,500,000 (a multiple of 3) do not.
            let (a, b) = (data(2_000_000, 1), data(1_500_000, 2));
            let raw = mail(eol, &[text(eol, "See the two files."), attachment(eol, "a.bin", "application/octet-stream", &a), attachment(eol, "b.log", "text/plain", &b)]);
            let sk = elide_large(&raw).expect("runs left out");
            assert_eq!(sk.runs.len(), 2);
            assert!(sk.bytes.len() < 4096, "skeleton of {} bytes", sk.bytes.len());
            let p = crate::message::parse(&raw).unwrap();
            assert_eq!(p.body_text.trim(), "See the two files.");
            let sizes: Vec<u64> = p.attachments.iter().map(|a| a.size).collect();
            assert_eq!(sizes, vec![2_000_000, 1_500_000], "decoded bytes, also for a text attachment that is not UTF-8");
            assert_eq!((p.attachments[0].name.as_str(), p.attachments[1].content_type.as_str()), ("a.bin", "text/plain"));
        }
    }

    #[test]
    fn a_large_inline_image_is_measured_without_being_decoded() {
        let eol = "\r\n";
        let html = part(eol, "Content-Type: text/html; charset=utf-8", "<p>Screenshot:</p><img src=\"cid:shot@x\">");
        let png = part(eol, "Content-Type: image/png\nContent-ID: <shot@x>\nContent-Disposition: inline\nContent-Transfer-Encoding: base64", &b64_lines(&data(1_300_000, 9), eol));
        let raw = String::from_utf8(mail(eol, &[html, png])).unwrap().replace("multipart/mixed", "multipart/related").into_bytes();
        let sk = elide_large(&raw).expect("run left out");
        let msg = MessageParser::default().parse(&sk.bytes).unwrap();
        assert!(sk.extra_sizes(&msg).is_some(), "an image's bytes are only measured");
        let p = crate::message::parse(&raw).unwrap();
        assert_eq!(p.body_text.trim(), "Screenshot:");
        assert_eq!((p.files[0].size, p.files[0].inline, p.files[0].content_id.as_deref()), (1_300_000, true, Some("shot@x")));
    }

    #[test]
    fn small_mail_and_short_runs_are_read_whole() {
        let eol = "\r\n";
        assert!(elide_large(&mail(eol, &[attachment(eol, "a.bin", "application/octet-stream", &data(600_000, 3))])).is_none(), "under 1 MB");
        // Over 1 MB in all, but made of attachments under the shortest run.
        let many: Vec<String> = (0..40).map(|i| attachment(eol, &format!("{i}.bin"), "image/png", &data(40_000, i))).collect();
        assert!(elide_large(&mail(eol, &many)).is_none());
        let p = crate::message::parse(&mail(eol, &many)).unwrap();
        assert_eq!(p.attachments.len(), 40);
        assert!(p.attachments.iter().all(|a| a.size == 40_000));
    }

    #[test]
    fn runs_whose_content_is_read_make_the_whole_message_parsed() {
        let eol = "\r\n";
        let body: String = (0..30_000).map(|i| format!("line {i} of a long base64-encoded body\n")).collect();
        let b64_body = part(eol, "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64", &b64_lines(body.as_bytes(), eol));
        // Base64-looking lines typed into a plain body (an armoured key, a pasted blob).
        let pasted = b64_lines(&data(1_200_000, 5), eol);
        let plain = text(eol, &format!("Here is the blob:{eol}{pasted}-- end"));
        let inner = String::from_utf8(mail(eol, &[text(eol, "inner"), attachment(eol, "x.bin", "application/octet-stream", &data(1_100_000, 6))])).unwrap();
        let nested = part(eol, "Content-Type: message/rfc822", &inner.replace("boundary=\"b\"", "boundary=\"c\"").replace("--b", "--c"));
        let winmail = attachment(eol, "winmail.dat", "application/ms-tnef", &data(1_100_000, 7));
        // Named with a path and typed as plain bytes: still Outlook's container.
        let winmail_path = attachment(eol, "Temp/winmail.dat", "application/octet-stream", &data(1_100_000, 8));
        // A forwarded mail in base64: mail-parser decodes it and reads it as a message.
        let lines: String = (0..40_000).map(|i| format!("Line {i} of the forwarded mail.\r\n")).collect();
        let forwarded = format!("From: Bob <bob@example.test>\r\nSubject: Printer on fire\r\n\r\n{lines}Bob\r\n");
        assert_ne!(forwarded.len() % 3, 0, "a padded last line");
        let nested_b64 = part(eol, "Content-Type: message/rfc822\nContent-Transfer-Encoding: base64", &b64_lines(forwarded.as_bytes(), eol));
        let cases = [
            ("base64 body", mail(eol, &[b64_body])),
            ("plain body", mail(eol, &[plain])),
            ("nested message", mail(eol, &[text(eol, "fwd"), nested])),
            ("base64 nested message", mail(eol, &[text(eol, ""), nested_b64])),
            ("winmail.dat", mail(eol, &[text(eol, "rtf"), winmail])),
            ("winmail.dat with a path", mail(eol, &[text(eol, "rtf"), winmail_path])),
        ];
        for (what, raw) in cases {
            let sk = elide_large(&raw).unwrap_or_else(|| panic!("{what}: has a run"));
            let msg = MessageParser::default().parse(&sk.bytes).unwrap();
            assert!(sk.extra_sizes(&msg).is_none(), "{what}: the run is read, so it may not stay out");
            let p = crate::message::parse(&raw).unwrap();
            let whole = crate::message::parse_with(&raw, Elision::NEVER).unwrap();
            assert_eq!(format!("{p:?}"), format!("{whole:?}"), "{what}");
            assert_eq!(p.attachments.iter().map(|a| a.size).collect::<Vec<_>>(), decoded_sizes(&raw), "{what}");
            match what {
                "base64 body" => assert_eq!(p.body_text.trim(), body.trim()),
                "plain body" => assert!(p.body_text.contains(pasted.lines().nth(5_000).unwrap()), "pasted lines kept in the text"),
                "nested message" => assert_eq!(p.attachments[0].name, "big.eml"),
                "base64 nested message" => assert!(p.body_text.starts_with("Line 0 of the forwarded mail."), "the forwarded mail is the request"),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod real_mail {
    use super::Elision;
    use crate::message::parse_with;
    use std::path::{Path, PathBuf};

    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                files(&p, out);
            } else if !p.extension().is_some_and(|x| ["md", "tsv", "txt", "json", "toml", "yaml", "rules"].contains(&x.to_str().unwrap_or(""))) {
                out.push(p);
            }
        }
    }

    /// Every run of four or more base64 lines left out, in every message of the copied corpora
    /// (and of `../shared/corpora` when it is there): the reading must be the one of the whole
    /// message, attachment sizes included, or the same whole reading after a fallback.
    #[test]
    fn leaving_runs_out_changes_nothing_on_real_mail() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut all = Vec::new();
        files(&root.join("tests/fixtures"), &mut all);
        files(&root.join("../shared/corpora"), &mut all);
        let eager = Elision { from_size: 0, min_run: 4 * 77 };
        let (mut compared, mut elided) = (0, 0);
        for path in &all {
            let Ok(raw) = std::fs::read(path) else { continue };
            let (Ok(whole), Ok(skipped)) = (parse_with(&raw, Elision::NEVER), parse_with(&raw, eager)) else { continue };
            compared += 1;
            elided += usize::from(super::elide(&raw, eager).is_some());
            assert_eq!(format!("{skipped:?}"), format!("{whole:?}"), "{}", path.display());
        }
        println!("compared {compared}, runs left out in {elided}");
        assert!(compared >= 60 && elided >= 5, "compared {compared} messages, {elided} with runs left out");
    }
}
