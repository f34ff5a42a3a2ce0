//! Customer satisfaction by mail: the rating scale (`[csat] scale`) and reading an answer to the
//! resolved notice's question out of the visible (quote-stripped) reply text. Pure: no I/O.
//!
//! An answer is the rating alone on the first non-empty line (trailing `.`/`!` allowed); the
//! lines below it, if any, are the customer's comment. Anything else is not an answer.

/// Most words on a word scale, and most steps on a digit scale.
pub const MAX_STEPS: usize = 11;
/// Longest word of a word scale, in characters.
const MAX_WORD: usize = 24;
/// Longest comment kept for the note, in characters (the whole mail stays on the ticket).
pub const MAX_COMMENT: usize = 4000;
/// A first line longer than this is never a rating (no scan of a huge first line).
const MAX_FIRST_LINE: usize = 64;

/// The answers a customer may give, worst first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scale {
    /// Whole numbers `lo..=hi` (e.g. 1-5, 0-10).
    Digits { lo: u8, hi: u8 },
    /// Words, worst first; the first is rated 1.
    Words(Vec<String>),
}

/// A recognised answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The rating as a number on the scale (a word's position, from 1).
    pub rating: i64,
    /// The answer as the scale spells it ("5", "good").
    pub label: String,
    /// What the customer wrote below the rating (trimmed, capped), possibly empty.
    pub comment: String,
}

impl Scale {
    /// Parse `"1-5"` (digits, `lo` 0 or 1, at most 11 steps) or `"bad, okay, good"` (2 to 11
    /// single words, worst first). `Err` says what is wrong.
    pub fn parse(s: &str) -> Result<Scale, String> {
        let s = s.trim();
        if let Some((a, b)) = s.split_once('-')
            && let (Ok(lo), Ok(hi)) = (a.trim().parse::<u8>(), b.trim().parse::<u8>())
        {
            if lo > 1 || hi <= lo || usize::from(hi - lo) + 1 > MAX_STEPS {
                return Err(format!("`{s}`: a digit scale starts at 0 or 1 and has 2 to {MAX_STEPS} steps (1-5, 0-10)"));
            }
            return Ok(Scale::Digits { lo, hi });
        }
        let words: Vec<String> = s.split(',').map(|w| w.trim().to_lowercase()).collect();
        if words.len() < 2 || words.len() > MAX_STEPS {
            return Err(format!("`{s}`: expected a digit range like 1-5 or 2 to {MAX_STEPS} words, worst first, like \"bad, okay, good\""));
        }
        for (i, w) in words.iter().enumerate() {
            if w.is_empty() || w.chars().count() > MAX_WORD || w.chars().any(|c| c.is_whitespace() || c.is_control() || c.is_ascii_digit()) {
                return Err(format!("`{w}`: each answer is one word without digits, at most {MAX_WORD} characters"));
            }
            if words[..i].contains(w) {
                return Err(format!("`{w}` appears twice"));
            }
        }
        Ok(Scale::Words(words))
    }

    /// Lowest and highest rating.
    pub fn bounds(&self) -> (i64, i64) {
        match self {
            Scale::Digits { lo, hi } => (i64::from(*lo), i64::from(*hi)),
            Scale::Words(w) => (1, w.len() as i64),
        }
    }

    /// The answers as the question shows them: "1, 2, 3, 4, 5" or "bad, okay, good".
    pub fn choices(&self) -> Vec<String> {
        match self {
            Scale::Digits { lo, hi } => (*lo..=*hi).map(|d| d.to_string()).collect(),
            Scale::Words(w) => w.clone(),
        }
    }

    /// How the scale is written in the config (stored with each rating).
    pub fn spec(&self) -> String {
        match self {
            Scale::Digits { lo, hi } => format!("{lo}-{hi}"),
            Scale::Words(w) => w.join(","),
        }
    }

    /// The rating `token` stands for, if it is one of the answers.
    fn rate(&self, token: &str) -> Option<(i64, String)> {
        match self {
            Scale::Digits { lo, hi } => {
                let n: u8 = token.parse().ok().filter(|_| token.len() <= 2 && token.bytes().all(|b| b.is_ascii_digit()))?;
                (*lo..=*hi).contains(&n).then(|| (i64::from(n), n.to_string()))
            }
            Scale::Words(w) => {
                let t = token.to_lowercase();
                w.iter().position(|x| *x == t).map(|i| (i as i64 + 1, w[i].clone()))
            }
        }
    }

    /// Read an answer out of the visible reply text; `None` when the text is not one.
    pub fn answer(&self, visible: &str) -> Option<Answer> {
        let text = visible.trim_start();
        let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
        let first = first.trim();
        if first.is_empty() || first.len() > MAX_FIRST_LINE {
            return None;
        }
        let token = first.trim_end_matches(['.', '!']).trim_end();
        let (rating, label) = self.rate(token)?;
        let rest = rest.trim();
        let comment = match rest.char_indices().nth(MAX_COMMENT) {
            Some((cut, _)) => format!("{}…", &rest[..cut]),
            None => rest.to_string(),
        };
        Some(Answer { rating, label, comment })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_parse_and_refuse() {
        assert_eq!(Scale::parse("1-5"), Ok(Scale::Digits { lo: 1, hi: 5 }));
        assert_eq!(Scale::parse(" 0 - 10 "), Ok(Scale::Digits { lo: 0, hi: 10 }));
        assert_eq!(Scale::parse("Bad, okay, GOOD"), Ok(Scale::Words(vec!["bad".into(), "okay".into(), "good".into()])));
        for bad in ["", "5", "2-5", "1-1", "0-11", "1-99", "good", "good, good", "very good, bad", "a,", "x1, y2", "1-5-7"] {
            assert!(Scale::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(Scale::parse("bad,okay,good").unwrap().spec(), "bad,okay,good");
    }

    #[test]
    fn answers_are_the_rating_alone_on_the_first_line() {
        let s = Scale::parse("1-5").unwrap();
        let a = |t: &str| s.answer(t).map(|a| (a.rating, a.comment));
        assert_eq!(a("5"), Some((5, String::new())));
        assert_eq!(a("\n  4.\n"), Some((4, String::new())));
        assert_eq!(a("1!\nThe printer still squeaks.\nBut thanks."), Some((1, "The printer still squeaks.\nBut thanks.".into())));
        for not in ["", "6", "0", "05x", "5 stars", "Thanks, it works", "It broke again\n5", "55", "-1", "٥", "+5"] {
            assert_eq!(a(not), None, "{not:?}");
        }
        let w = Scale::parse("bad, okay, good").unwrap();
        assert_eq!(w.answer("Good!").map(|a| (a.rating, a.label)), Some((3, "good".into())));
        assert_eq!(w.answer("good morning, the problem is back"), None);
        assert_eq!(w.answer("BAD\nslow"), Some(Answer { rating: 1, label: "bad".into(), comment: "slow".into() }));
    }

    #[test]
    fn hostile_text_is_bounded() {
        let s = Scale::parse("1-5").unwrap();
        assert_eq!(s.answer(&"5".repeat(1_000_000)), None, "a huge first line is no rating");
        let a = s.answer(&format!("3\n{}", "é".repeat(100_000))).unwrap();
        assert_eq!(a.comment.chars().count(), MAX_COMMENT + 1, "comment capped with an ellipsis");
        assert_eq!(s.answer("\u{0}5"), None);
    }
}
