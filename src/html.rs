//! HTML mail → readable plain text, for the stored text body and what agents are shown.
//! Uses html2text (html5ever, with the document's CSS so `display:none` preheaders stay
//! hidden); links keep their text, images their alt text, `<blockquote>` becomes `> ` lines so
//! the quote stripper sees the quoting. Pure, no I/O, never panics: input html2text would
//! handle badly (deep nesting is quadratic there, huge documents) goes through mail-parser's
//! linear converter instead.

use html2text::render::TextDecorator;
use regex::Regex;
use std::sync::LazyLock;

static HR: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)<hr\b").expect("valid regex"));

/// Above this size the linear fallback converter is used.
const MAX_HTML_BYTES: usize = 2 << 20;
/// Above this estimated element nesting depth the linear fallback converter is used.
const MAX_DEPTH: usize = 200;
/// Wide enough that html2text never wraps a paragraph; mail clients wrap for display.
const WIDTH: usize = 4000;

/// Render HTML as plain text: paragraphs separated by blank lines, lists as `* ` items,
/// quotes as `> ` lines, no markup, no trailing spaces, at most one blank line in a row.
pub fn to_text(html: &str) -> String {
    // html2text draws nothing for <hr>, but in mail it is the rule Outlook and others put above
    // the quoted original: render it as Outlook's plain-text rule so the quote stripper sees it.
    let html = HR.replace_all(html, "<div>________________________________</div>$0");
    let html = html.as_ref();
    let rendered = if html.len() <= MAX_HTML_BYTES && nesting_depth(html) <= MAX_DEPTH {
        html2text::config::with_decorator(MailDecorator)
            .use_doc_css()
            .link_footnotes(false)
            .no_table_borders()
            .no_link_wrapping()
            .allow_width_overflow()
            .string_from_read(html.as_bytes(), WIDTH)
            .ok()
    } else {
        None
    };
    tidy(&rendered.unwrap_or_else(|| mail_parser::decoders::html::html_to_text(html)))
}

/// Trim line ends, turn no-break spaces into spaces, squeeze blank lines.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.replace('\u{a0}', " ");
        let line = line.trim_end();
        if line.is_empty() || line == ">" {
            blank += 1;
            if blank > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim_end().to_string()
}

/// Rough maximum element nesting depth, counted from tags alone (void and optional-end
/// elements ignored). Only used to keep pathological input away from html2text.
fn nesting_depth(html: &str) -> usize {
    const NO_END: &[&str] = &[
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr",
        "p", "li", "dt", "dd", "tr", "td", "th", "option", "tbody", "thead", "tfoot", "colgroup", "o:p",
    ];
    let b = html.as_bytes();
    let (mut depth, mut max) = (0usize, 0usize);
    let mut i = 0;
    while let Some(off) = b[i..].iter().position(|&c| c == b'<') {
        i += off + 1;
        let closing = b.get(i) == Some(&b'/');
        let start = if closing { i + 1 } else { i };
        let len = b[start..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b':').count();
        if len == 0 {
            continue;
        }
        let name = html[start..start + len].to_ascii_lowercase();
        if NO_END.contains(&name.as_str()) {
            continue;
        }
        let self_closing = b[start + len..].iter().position(|&c| c == b'>').is_some_and(|e| e > 0 && b[start + len + e - 1] == b'/');
        if closing {
            depth = depth.saturating_sub(1);
        } else if !self_closing {
            depth += 1;
            max = max.max(depth);
        }
    }
    max
}

/// Plain text for mail: link text without brackets or footnotes, `[alt]` for images, `> ` for
/// quotes, `* ` and `1. ` for lists, no emphasis markers.
#[derive(Clone, Debug)]
struct MailDecorator;

impl TextDecorator for MailDecorator {
    type Annotation = ();

    fn decorate_link_start(&mut self, _url: &str) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_link_end(&mut self) -> String {
        String::new()
    }
    fn decorate_em_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_em_end(&self) -> String {
        String::new()
    }
    fn decorate_strong_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_strong_end(&self) -> String {
        String::new()
    }
    fn decorate_strikeout_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_strikeout_end(&self) -> String {
        String::new()
    }
    fn decorate_code_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_code_end(&self) -> String {
        String::new()
    }
    fn decorate_preformat_first(&self) {}
    fn decorate_preformat_cont(&self) {}
    fn decorate_image(&mut self, _src: &str, title: &str) -> (String, ()) {
        let title = title.trim();
        (if title.is_empty() { String::new() } else { format!("[{title}]") }, ())
    }
    fn header_prefix(&self, _level: usize) -> String {
        String::new()
    }
    fn quote_prefix(&self) -> String {
        "> ".into()
    }
    fn unordered_item_prefix(&self) -> String {
        "* ".into()
    }
    fn ordered_item_prefix(&self, i: i64) -> String {
        format!("{i}. ")
    }
    fn make_subblock_decorator(&self) -> Self {
        MailDecorator
    }
    fn decorate_superscript_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_superscript_end(&self) -> String {
        String::new()
    }
    fn finalise(&mut self, _urls: Vec<String>) -> Vec<html2text::render::TaggedLine<()>> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_mail_html_readably() {
        let html = r#"<html><head><style>.pre{display:none}</style></head><body>
<div class="pre">preheader nobody should see</div>
<p>Hello <b>Anna</b>,&nbsp;see <a href="https://x.example/a">the manual</a>.</p>
<p><img src="cid:logo" alt="Logo"></p>
<blockquote>older text</blockquote><ul><li>one</li><li>two</li></ul></body></html>"#;
        let t = to_text(html);
        assert!(!t.contains("preheader"), "{t}");
        assert!(t.contains("Hello Anna, see the manual."), "{t}");
        assert!(t.contains("[Logo]"), "{t}");
        assert!(t.contains("> older text"), "{t}");
        assert!(t.contains("* one\n* two"), "{t}");
        assert!(!t.contains("  \n") && !t.contains("\n\n\n"), "{t:?}");
    }

    #[test]
    fn pathological_nesting_takes_the_linear_path() {
        let deep = "<div>".repeat(50_000) + "deep text" + &"</div>".repeat(50_000);
        assert!(nesting_depth(&deep) > MAX_DEPTH);
        let t0 = std::time::Instant::now();
        assert_eq!(to_text(&deep).trim(), "deep text");
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
        // Ordinary unclosed paragraphs and line breaks do not count as nesting.
        assert!(nesting_depth(&"<p>x<br>".repeat(10_000)) < 2);
    }
}
