//! Search queries: untrusted text → a bounded list of words → an FTS5 expression in which every
//! word is a quoted string. Pure; never passes user text to FTS5 as query syntax (`OR`, `NEAR`,
//! `*`, `^`, `col:` and quotes are words or separators here, never operators). docs/KNOWLEDGE.md.

use std::fmt;

/// Characters of a query that are read at all; the rest is ignored (a 100 KB "query" costs no
/// more than this).
pub const MAX_QUERY_CHARS: usize = 500;
/// Words of a search; more are left out (and said so).
pub const MAX_TERMS: usize = 8;
/// A longer word is cut to this many characters (no real word is longer; FTS5 tokens are bounded).
pub const MAX_TERM_CHARS: usize = 40;
/// Words of a new ticket that its suggestions are looked up by.
pub const MAX_SUGGEST_TERMS: usize = 16;

/// `KB-7`: how a knowledge article is named in mail and on the command line.
pub fn kb_ref(id: i64) -> String {
    format!("KB-{id}")
}

/// `KB-7`, `kb-7` or `7` → 7.
pub fn parse_kb_ref(s: &str) -> Option<i64> {
    let s = s.trim();
    let n = s.get(..3).filter(|p| p.eq_ignore_ascii_case("kb-")).map_or(s, |_| &s[3..]);
    n.parse().ok().filter(|n| *n > 0)
}

/// A query with nothing to look for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmptyQuery;

impl fmt::Display for EmptyQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("nothing to search for: give one or more words (letters or digits)")
    }
}

impl std::error::Error for EmptyQuery {}

/// The words of a search, lower-case, each made only of letters and digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub terms: Vec<String>,
    /// Words beyond [`MAX_TERMS`] (or past [`MAX_QUERY_CHARS`]) that were left out.
    pub truncated: bool,
}

fn words(text: &str) -> (Vec<String>, bool) {
    let mut cut = text.chars().nth(MAX_QUERY_CHARS).is_some();
    let mut head: String = text.chars().take(MAX_QUERY_CHARS).collect();
    // A word cut in two at the limit is left out (unless it is the only one).
    if cut && let Some(i) = head.rfind(|c: char| !c.is_alphanumeric()) {
        head.truncate(i);
    }
    let mut out: Vec<String> = Vec::new();
    for w in head.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        let w: String = w.to_lowercase().chars().take(MAX_TERM_CHARS).collect();
        if out.contains(&w) {
            continue;
        }
        if out.len() == MAX_TERMS {
            cut = true;
            break;
        }
        out.push(w);
    }
    (out, cut)
}

impl Query {
    /// The words of `text`: split at anything that is not a letter or digit, lower-cased,
    /// duplicates dropped, at most [`MAX_TERMS`].
    pub fn parse(text: &str) -> Result<Query, EmptyQuery> {
        let (terms, truncated) = words(text);
        if terms.is_empty() {
            return Err(EmptyQuery);
        }
        Ok(Query { terms, truncated })
    }

    /// Every word must occur (FTS5 implicit AND of quoted strings).
    pub fn all(&self) -> String {
        self.terms.iter().map(|t| quote(t)).collect::<Vec<_>>().join(" ")
    }

    /// The query as the user sees it.
    pub fn text(&self) -> String {
        self.terms.join(" ")
    }
}

/// One word as an FTS5 string. Words hold only letters and digits, so there is nothing to
/// escape; doubling quotes anyway keeps this safe for any input.
pub fn quote(term: &str) -> String {
    format!("\"{}\"", term.replace('"', "\"\""))
}

/// Words of a new ticket to find suggestions by: the subject's first, then the text's, without
/// short and common words, at most [`MAX_SUGGEST_TERMS`].
pub fn suggestion_terms(subject: &str, text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let head: String = text.chars().take(4 * MAX_QUERY_CHARS).collect();
    for w in [subject, head.as_str()].into_iter().flat_map(|s| s.split(|c: char| !c.is_alphanumeric())) {
        let w: String = w.to_lowercase().chars().take(MAX_TERM_CHARS).collect();
        if w.chars().count() < 3 || crate::catalog::STOP_WORDS.contains(&w.as_str()) || w.chars().all(|c| c.is_ascii_digit()) || out.contains(&w) {
            continue;
        }
        out.push(w);
        if out.len() == MAX_SUGGEST_TERMS {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_and_syntax_are_only_words() {
        let q = Query::parse(r#""a" OR * NEAR(x y) subject:secret ^start -not"#).unwrap();
        assert_eq!(q.terms, ["a", "or", "near", "x", "y", "subject", "secret", "start"]);
        assert!(q.truncated, "`not` is the ninth word");
        assert_eq!(Query::parse("Printer  toner!").unwrap().all(), r#""printer" "toner""#);
        assert_eq!(quote(r#"a"b"#), r#""a""b""#);
    }

    #[test]
    fn empty_and_huge_queries() {
        assert_eq!(Query::parse("  *** \"\" () "), Err(EmptyQuery));
        assert_eq!(Query::parse(""), Err(EmptyQuery));
        let huge = "printer ".repeat(20_000);
        let q = Query::parse(&huge).unwrap();
        assert_eq!(q.terms, ["printer"]);
        assert!(q.truncated);
        let long = "x".repeat(10_000);
        assert_eq!(Query::parse(&long).unwrap().terms[0].len(), MAX_TERM_CHARS);
    }

    #[test]
    fn unicode_words_survive() {
        assert_eq!(Query::parse("Drucker-Störung, café").unwrap().terms, ["drucker", "störung", "café"]);
    }

    #[test]
    fn suggestion_terms_skip_common_words() {
        let t = suggestion_terms("Re: the printer is out of toner", "The printer on floor 3 shows E42. Printer!");
        assert_eq!(t, ["printer", "out", "toner", "floor", "shows", "e42"]);
    }
}
