//! Ticket references as people see them (`[PD-1042]` in subjects) and subject normalisation.
//! Pure string work.

use crate::ticket::TicketId;
use regex::Regex;

/// Formats and finds ticket references for one configured prefix.
#[derive(Debug, Clone)]
pub struct RefFormat {
    prefix: String,
    pattern: Regex,
}

impl RefFormat {
    pub fn new(prefix: &str) -> Self {
        // `[PD-1042]`, tolerant of case and inner spaces that some clients add. ASCII digits only
        // (what `u64::from_str` takes): a Unicode `\d` repeated 18 times costs a `deliver` 1 ms to compile.
        let pattern = Regex::new(&format!(r"(?i)\[\s*{}\s*([0-9]{{1,18}})\s*\]", regex::escape(prefix))).expect("escaped prefix is a valid regex");
        RefFormat { prefix: prefix.to_string(), pattern }
    }

    /// `PD-1042`: the `ref` field of the ticket JSON.
    pub fn format(&self, id: TicketId) -> String {
        format!("{}{}", self.prefix, id)
    }

    /// `[PD-1042]`: the tag carried in subjects.
    pub fn tag(&self, id: TicketId) -> String {
        format!("[{}]", self.format(id))
    }

    /// The ticket a subject refers to, if it carries our tag.
    pub fn find(&self, subject: &str) -> Option<TicketId> {
        self.pattern.captures(subject)?.get(1)?.as_str().parse().ok()
    }

    /// Parse `PD-1042`, `[PD-1042]`, `#1042` or `1042` as typed on the command line.
    pub fn parse_user_input(&self, s: &str) -> Option<TicketId> {
        let s = s.trim().trim_start_matches('[').trim_end_matches(']').trim();
        let digits = if s.len() >= self.prefix.len() && s[..self.prefix.len()].eq_ignore_ascii_case(&self.prefix) {
            &s[self.prefix.len()..]
        } else {
            s.trim_start_matches('#')
        };
        digits.parse().ok()
    }

    /// Subject for outgoing mail: the tag once, in front of the conversation's subject.
    pub fn tagged_subject(&self, id: TicketId, subject: &str) -> String {
        let clean = one_line(subject);
        if self.find(&clean) == Some(id) {
            clean
        } else {
            let tag = self.tag(id);
            if clean.is_empty() { tag } else { format!("{tag} {clean}") }
        }
    }
}

/// Collapse a header value to one line: CR/LF and other controls become spaces (header injection).
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last_space = false;
    for c in s.chars() {
        // Controls, Unicode line and paragraph separators (shown as line breaks) and bidi
        // marks and overrides (which reorder what follows on screen) all become a space.
        let c = if c.is_control() || matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') { ' ' } else { c };
        if c == ' ' {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
        } else {
            out.push(c);
            last_space = false;
        }
    }
    out.trim().to_string()
}

/// Longest sender-controlled text (a name, a subject) we put into a template, in characters.
pub const SENDER_TEXT_MAX: usize = 200;

/// Text a sender controls, as our templates may show it: one line, control characters removed,
/// at most [`SENDER_TEXT_MAX`] characters (ending in `...` when cut: ASCII, so an ASCII subject
/// stays free of encoded words). Backscatter through our
/// acknowledgements can then carry neither extra lines nor pages of text.
pub fn sender_text(s: &str) -> String {
    let line = one_line(s);
    if line.chars().nth(SENDER_TEXT_MAX).is_none() {
        return line;
    }
    let cut = line.char_indices().nth(SENDER_TEXT_MAX - 3).map_or(line.len(), |(i, _)| i);
    format!("{}...", line[..cut].trim_end())
}

/// The subject without reply/forward prefixes (Re, AW, SV, Fwd, WG, TR, Antw, …) or `[…]` tags,
/// for showing and comparing conversations.
pub fn normalize_subject(subject: &str) -> String {
    static PREFIX: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let re = PREFIX.get_or_init(|| {
        Regex::new(r"(?i)^\s*(?:(?:re|aw|sv|vs|fw|fwd|wg|tr|antw|antwort|ref|rif|r|enc|odp|res|rv|vá|回复|答复|转发)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]|\[[^\]]*\])\s*").expect("static regex")
    });
    let mut s = one_line(subject);
    loop {
        let next = re.replace(&s, "").into_owned();
        if next == s {
            return s;
        }
        s = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_found_and_formatted() {
        let f = RefFormat::new("PD-");
        assert_eq!(f.tag(42), "[PD-42]");
        assert_eq!(f.find("Re: [PD-42] printer"), Some(42));
        assert_eq!(f.find("AW: [ pd-42 ] printer"), Some(42));
        assert_eq!(f.find("[Vendor #42] printer"), None);
        assert_eq!(f.parse_user_input("PD-42"), Some(42));
        assert_eq!(f.parse_user_input("42"), Some(42));
        assert_eq!(f.tagged_subject(42, "Printer\r\nBcc: evil@example.org"), "[PD-42] Printer Bcc: evil@example.org");
        assert_eq!(f.tagged_subject(42, "Re: [PD-42] Printer"), "Re: [PD-42] Printer");
    }

    #[test]
    fn sender_text_is_one_capped_line() {
        assert_eq!(sender_text("Eve\r\nBcc: x@example.org\u{7}\tz"), "Eve Bcc: x@example.org z");
        assert_eq!(sender_text("Mal\u{2028}Bcc: v@x.example\u{2029}\u{202E}lin\u{2066}e"), "Mal Bcc: v@x.example lin e");
        let long = sender_text(&"ab ".repeat(500));
        assert_eq!(long.chars().count(), SENDER_TEXT_MAX);
        assert!(long.ends_with("..."), "{long}");
        assert_eq!(sender_text(&"ü".repeat(SENDER_TEXT_MAX)), "ü".repeat(SENDER_TEXT_MAX), "exactly at the cap: untouched");
    }

    #[test]
    fn subjects_normalise_across_languages() {
        assert_eq!(normalize_subject("Re: AW: Fwd: [PD-1] Printer jam"), "Printer jam");
        assert_eq!(normalize_subject("SV: Antw: WG: TR: Printer"), "Printer");
        assert_eq!(normalize_subject("RE[2]: Printer"), "Printer");
        assert_eq!(normalize_subject("Regarding printers"), "Regarding printers");
    }
}
