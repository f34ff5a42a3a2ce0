//! Quoted-history and signature stripping: the part of a reply its author actually wrote, for
//! notifications and previews. A view only — the stored message is never altered. Pure text in,
//! text out; no I/O; never panics; linear-time regexes and a bounded look-ahead per line.
//!
//! [`reply_text`] removes quoted history (what talon's `extract_from_plain` does):
//! - reply headers — "On … wrote:" in many languages, also split over up to three lines, and
//!   date/address lines ending in `<addr>:` (Gmail in other locales);
//! - Outlook separators — `-----Original Message-----` (localised), `____` followed by a header
//!   block, a `From:/Sent:/To:` header block (localised);
//! - everything after a mobile signature line ("Sent from my iPhone"), which mobile clients put
//!   right above the quoted original;
//! - a trailing block of `>` quotes; quotes interleaved with answers (inline and bottom
//!   posting) are kept, they are part of the reply.
//!
//! Forwarded mail ("---------- Forwarded message ----------") is kept whole: for a help desk the
//! forwarded content is the request.
//!
//! [`visible_text`] also removes the signature: the `-- ` block (RFC 3676 §4.3), an underscore
//! rule with a short footer under it, and a trailing mobile signature line.

use regex::Regex;
use std::sync::LazyLock;

/// Reply text without quoted history and without signature.
pub fn visible_text(body: &str) -> String {
    let lines = split_lines(body);
    let kept = reply_lines(&lines);
    let end = strip_signature(&kept);
    let out = join(&kept[..end]);
    if out.trim().is_empty() { body.trim().to_string() } else { out }
}

/// [`visible_text`] of an HTML body (rendered to text first; `<blockquote>` becomes `>` quotes).
pub fn visible_text_html(html: &str) -> String {
    visible_text(&crate::html::to_text(html))
}

/// Reply text without quoted history; signatures are kept.
pub fn reply_text(body: &str) -> String {
    let lines = split_lines(body);
    let kept = reply_lines(&lines);
    let out = join(&kept);
    if out.trim().is_empty() { body.trim().to_string() } else { out }
}

fn split_lines(body: &str) -> Vec<&str> {
    body.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect()
}

/// Lines joined back; leading blank lines and trailing whitespace dropped.
fn join(lines: &[&str]) -> String {
    let start = lines.iter().position(|l| !l.trim().is_empty()).unwrap_or(lines.len());
    lines[start..].join("\n").trim_end().to_string()
}

fn is_quote(line: &str) -> bool {
    line.trim_start().starts_with('>')
}

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

/// The lines of the reply: quoted history removed, everything else in order.
fn reply_lines<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    let n = lines.len();
    let mut keep = vec![true; n];
    let mut end = n;
    let mut i = 0;
    while i < n {
        let line = lines[i];
        if is_blank(line) || is_quote(line) {
            i += 1;
            continue;
        }
        if is_forward_marker(line) {
            break; // the rest is forwarded content: keep it
        }
        if is_original_message_rule(line) {
            end = i;
            break;
        }
        if is_underscore_rule(line) && header_block_at(lines, next_nonblank(lines, i + 1)).is_some() {
            end = i;
            break;
        }
        if header_block_at(lines, i).is_some() {
            end = back_over_decoration(lines, i);
            break;
        }
        if is_mobile_signature(line) {
            end = i + 1;
            break;
        }
        if let Some(last) = reply_header_at(lines, i) {
            match after_header(lines, last + 1) {
                After::TopPost => {
                    end = i;
                    break;
                }
                After::BottomPost(quote_end) => {
                    // Header and the one quote block go; the answer under them stays.
                    keep[i..quote_end].iter_mut().for_each(|k| *k = false);
                    i = quote_end;
                }
                After::Inline => {
                    // Answers between quotes: the quotes are context, only the header goes.
                    keep[i..=last].iter_mut().for_each(|k| *k = false);
                    i = last + 1;
                }
            }
            continue;
        }
        i += 1;
    }
    let kept: Vec<&str> = (0..end).filter(|&k| keep[k]).map(|k| lines[k]).collect();
    let e = strip_trailing_quotes(&kept, kept.len());
    kept[..e].to_vec()
}

/// What follows a reply header.
enum After {
    /// Only quoted history (marked or not) or a signature: cut at the header.
    TopPost,
    /// One quote block, then the author's text: drop header and block up to this line.
    BottomPost(usize),
    /// The author's text alternates with quotes.
    Inline,
}

fn after_header(lines: &[&str], from: usize) -> After {
    let n = lines.len();
    let j = next_nonblank(lines, from);
    if j == n || !is_quote(lines[j]) {
        return After::TopPost; // nothing, or unmarked quoted text right under the header
    }
    // The quote block: quote lines, blank lines, and wrapped lines squeezed between quotes.
    let mut k = j;
    let mut block_end = j;
    while k < n {
        if is_quote(lines[k]) {
            k += 1;
            block_end = k;
        } else if is_blank(lines[k]) {
            k += 1;
        } else {
            let run_end = (k..n).find(|&m| is_blank(lines[m]) || is_quote(lines[m])).unwrap_or(n);
            if run_end < n && is_quote(lines[run_end]) && is_quote(lines[k - 1]) {
                k = run_end; // a long quote line wrapped without its marker
            } else {
                break;
            }
        }
    }
    let t = next_nonblank(lines, block_end);
    if t == n
        || is_sig_delimiter(lines[t])
        || is_original_message_rule(lines[t])
        || header_block_at(lines, t).is_some()
        || reply_header_at(lines, t).is_some()
    {
        return After::TopPost;
    }
    if lines[t..].iter().any(|l| is_quote(l)) { After::Inline } else { After::BottomPost(block_end) }
}

/// Drop a trailing run of quotes, blank lines and the reply header left dangling above them.
fn strip_trailing_quotes(lines: &[&str], mut end: usize) -> usize {
    loop {
        while end > 0 && (is_blank(lines[end - 1]) || is_quote(lines[end - 1])) {
            end -= 1;
        }
        // A header (possibly over several lines) ending exactly at the new end.
        match (end.saturating_sub(3)..end).find(|&s| reply_header_at(lines, s).is_some_and(|e| e + 1 == end)) {
            Some(s) => end = s,
            None => return end,
        }
    }
}

fn ends_with_colon(line: &str) -> bool {
    line.trim_end().ends_with([':', '：'])
}

fn next_nonblank(lines: &[&str], from: usize) -> usize {
    (from..lines.len()).find(|&k| !is_blank(lines[k])).unwrap_or(lines.len())
}

/// Walk back from a header block over blank lines, rules (`====`, `____`) and a preceding
/// "Message du : …"-style line, so they go with the quoted part.
fn back_over_decoration(lines: &[&str], mut i: usize) -> usize {
    let mut steps = 0;
    while i > 0 && steps < 4 {
        let prev = lines[i - 1].trim();
        let decoration = prev.is_empty()
            || prev.chars().all(|c| "-_=*~#".contains(c) || c.is_whitespace())
            || (is_header_field(prev) && prev.chars().any(|c| c.is_ascii_digit()) && prev.len() < 60);
        if !decoration {
            break;
        }
        i -= 1;
        if !prev.is_empty() {
            steps += 1;
        }
    }
    i
}

// ---- line classifiers -------------------------------------------------------------------

/// Outlook's `-----Original Message-----` and its translations.
static ORIGINAL_MESSAGE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^\s*[-=_*]{2,}\s*(original message|original-nachricht|ursprüngliche nachricht|message d'origine|message original|mensaje original|messaggio originale|oorspronkelijk bericht|origineel bericht|mensagem original|ursprungligt meddelande|originalmeddelande|oprindelig meddelelse|oprindelig besked|opprinnelig melding|alkuperäinen viesti|wiadomość oryginalna|oryginalna wiadomość|исходное сообщение|původní zpráva|eredeti üzenet|orijinal mesaj|原始邮件|原始郵件|元のメッセージ|reply message)\s*[-=_*]{2,}\s*$",
    )
    .expect("valid regex")
});

/// Words that open a forwarded-message marker.
const FORWARD_WORDS: &[&str] = &["forwarded message", "begin forwarded message", "weitergeleitete nachricht", "message transféré", "début du message réexpédié", "mensaje reenviado", "messaggio inoltrato", "doorgestuurd bericht", "mensagem encaminhada", "vidarebefordrat meddelande", "videresendt meddelelse", "videresendt melding", "przekazana wiadomość", "пересылаемое сообщение", "转发的邮件", "轉寄的郵件", "転送されたメッセージ"];

/// Forwarded-message markers: what follows is kept.
static FORWARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"(?i)^\s*(?:[-=_*]{{2,}}\s*)?({})\b.*$", FORWARD_WORDS.join("|"))).expect("valid regex"));

/// The first line of a quoted header block: From in the languages mail clients are used in.
static FROM_FIELD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*\**\s*(from|von|de|da|van|från|fra|od|от|kimden|feladó|lähettäjä|发件人|寄件者|差出人|보낸 사람)\s*\**\s*[:：]").expect("valid regex")
});

/// Other fields of a quoted header block (Sent, Date, To, Subject, Cc and translations).
static HEADER_FIELD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^\s*\**\s*(sent|date|to|cc|bcc|subject|gesendet|datum|an|betreff|envoyé(?: le)?|à|a|objet|copie à|enviado(?: el)?|fecha|para|asunto|inviato|data|oggetto|verzonden|aan|onderwerp|skickat|till|ämne|sendt|til|emne|dato|wysłano|do|temat|отправлено|кому|тема|дата|gönderildi|kime|konu|elküldve|címzett|tárgy|lähetetty|vastaanottaja|aihe|发送时间|收件人|主题|日期|寄件日期|收件者|主旨|送信日時|宛先|件名|message du|보낸 날짜|받는 사람|제목)\s*\**\s*[:：]",
    )
    .expect("valid regex")
});

/// A reply header: "On … wrote:" and its translations, at the end of the (joined) line.
static WROTE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(wrote|writes|schrieb|a écrit|escribió|escribio|ha scritto|scrisse|schreef|escreveu|skrev|skriver|napisał\(a\)|napisała|napisał|napsal\(a\)|napsala|napsal|пишет|написал\(а\)|написала|написал|kirjoitti|yazdı|írta|写道|寫道|のメッセージ)\s*[:：]\s*$",
    )
    .expect("valid regex")
});

/// A year or a clock time: what attribution lines carry besides an address.
static DATE_OR_TIME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b(1[89]|20)\d\d\b|\b\d{1,2}[:.]\d{2}\b").expect("valid regex"));

/// Words that open a reply header ("On …", "Am …").
const OPENING_WORDS: &[&str] = &["on", "am", "le", "el", "il", "op", "em", "den", "in data", "w dniu", "dnia", "quoting", "zitat von"];

/// How reply headers open ("On Mon …", "Am 3. Feb …", "2017-11-24 …").
static HEADER_OPENING: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"(?i)^\s*(-{{2,}}\s*)?(({})\b|\d)", OPENING_WORDS.join("|"))).expect("valid regex"));

/// Start of an English-style reply header without a closing colon ("On … wrote").
static ON_WROTE_NO_COLON: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(-{2,}\s*)?(on|am|le|el|il|op|em|den|in data|w dniu|dnia)\s.*\d.*[@<].*\s(wrote|schrieb|a écrit|escribió|ha scritto|schreef|escreveu|skrev|napisał)\s*(-{2,})?\s*$")
        .expect("valid regex")
});

/// A date-and-address attribution line: `2017-11-24 16:32 GMT+01:00 Name <a@b.c>:`.
static ADDRESS_COLON: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[\w.+'-]+@[\w-]+(\.[\w-]+)+\s*[>)\]]?\s*[:：]\s*$").expect("valid regex")
});

/// How mobile and webmail signatures open ("Sent from my …").
const MOBILE_WORDS: &[&str] = &["sent from my", "sent from", "sent with", "sent using", "sent via", "get outlook for", "obtenir outlook pour", "télécharger outlook pour", "holen sie sich outlook für", "descargar outlook para", "scarica outlook per", "envoyé à partir de", "envoyé de mon", "envoyé depuis mon", "envoyé depuis", "envoyé avec", "von meinem", "gesendet von", "gesendet mit", "enviado desde mi", "enviado desde", "enviado do meu", "enviado de meu", "enviado com", "inviato da", "inviato dal mio", "verzonden vanaf mijn", "verstuurd vanaf mijn", "verzonden met", "skickat från min", "skickat från", "sendt fra min", "sendt fra", "wysłane z", "отправлено с", "iphoneから送信", "发自我的", "從我的"];

/// "Sent from my iPhone" and kin: a short standard line, optionally with a link.
static MOBILE_SIGNATURE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r"(?i)^\s*({})(\s+[\p{{L}}\p{{N}}'’&+.-]+){{0,6}}\s*([(<]\s*https?://\S*\s*[)>])?\s*$", MOBILE_WORDS.join("|"))).expect("valid regex")
});

// Each classifier first asks a cheap question whose "no" is exact (a colon its pattern requires,
// the words it starts with), so ordinary lines never run a regex, and a short-lived
// `postdesk deliver` never compiles one it does not need (compiling them all cost it ~8 ms).

fn is_original_message_rule(line: &str) -> bool {
    rule_run(line.trim_start()) >= 2 && ORIGINAL_MESSAGE.is_match(line)
}

fn is_forward_marker(line: &str) -> bool {
    opens_with_word(after_rule(line), FORWARD_WORDS) && FORWARD.is_match(line)
}

/// Length of the run of rule characters (`-=_*`) `s` starts with.
fn rule_run(s: &str) -> usize {
    s.chars().take_while(|c| "-=_*".contains(*c)).count()
}

/// The line after leading whitespace and an optional rule of two or more `-=_*` (and the
/// whitespace after it), as the marker patterns allow before their words.
fn after_rule(line: &str) -> &str {
    let s = line.trim_start();
    match rule_run(s) {
        n if n >= 2 => s.trim_start_matches(['-', '=', '_', '*']).trim_start(),
        _ => s,
    }
}

/// Whether `s` starts with one of `words` (lower-case), in any case. Called for every line:
/// allocation-free unless a word with non-ASCII letters shares the line's first letter.
fn opens_with_word(s: &str, words: &[&str]) -> bool {
    let Some(first) = s.chars().next() else { return false };
    let first = first.to_lowercase().next().unwrap_or(first);
    let mut head: Option<String> = None;
    words.iter().any(|w| {
        if !w.starts_with(first) {
            false
        } else if w.is_ascii() {
            s.len() >= w.len() && s.as_bytes()[..w.len()].eq_ignore_ascii_case(w.as_bytes())
        } else {
            head.get_or_insert_with(|| s.chars().take(32).flat_map(char::to_lowercase).collect()).starts_with(w)
        }
    })
}

/// Quoted header fields (From, Sent, … in every language) all end in a colon.
fn has_field_colon(line: &str) -> bool {
    line.contains([':', '：'])
}

fn is_from_field(line: &str) -> bool {
    has_field_colon(line) && FROM_FIELD.is_match(line)
}

fn is_header_field(line: &str) -> bool {
    has_field_colon(line) && HEADER_FIELD.is_match(line)
}

/// `HEADER_OPENING`: "On …", "Am …", a digit, after an optional `--`.
fn opens_like_header(line: &str) -> bool {
    let s = line.trim_start();
    let s = if s.starts_with("--") { s.trim_start_matches('-').trim_start() } else { s };
    (opens_with_word(s, OPENING_WORDS) || s.chars().next().is_some_and(char::is_numeric)) && HEADER_OPENING.is_match(line)
}

fn is_underscore_rule(line: &str) -> bool {
    let t = line.trim();
    t.len() >= 10 && t.chars().all(|c| c == '_')
}

fn is_mobile_signature(line: &str) -> bool {
    line.len() <= 120 && opens_with_word(line.trim_start(), MOBILE_WORDS) && MOBILE_SIGNATURE.is_match(line)
}

fn is_sig_delimiter(line: &str) -> bool {
    line == "-- " || line.trim_end() == "--"
}

/// A quoted header block starting at `i`: at least two header fields (From, Sent, Date, To,
/// Subject and their translations) in consecutive lines, one of them From. Returns its last line.
fn header_block_at(lines: &[&str], i: usize) -> Option<usize> {
    let first = lines.get(i)?;
    if is_quote(first) || !(is_from_field(first) || is_header_field(first)) {
        return None;
    }
    let (mut fields, mut from, mut last) = (0, false, i);
    // Fields may wrap onto a continuation line (long address lists), so allow one gap line.
    let mut gap = 0;
    for (k, l) in lines.iter().enumerate().skip(i).take(8) {
        if is_quote(l) || is_blank(l) {
            break;
        }
        if is_from_field(l) {
            from = true;
        } else if !is_header_field(l) {
            gap += 1;
            if gap > 1 {
                break;
            }
            continue;
        }
        gap = 0;
        fields += 1;
        last = k;
    }
    (from && fields >= 2).then_some(last)
}

/// A reply header starting at `i`, on one line or joined with up to two following lines (Gmail
/// wraps long attributions). Returns its last line.
fn reply_header_at(lines: &[&str], i: usize) -> Option<usize> {
    let first = lines.get(i)?;
    if is_blank(first) || is_quote(first) || first.len() > 400 {
        return None;
    }
    let mut joined = first.trim().to_string();
    for k in 0..3 {
        let last = i + k;
        if k > 0 {
            let l = lines.get(last)?;
            // Gmail may wrap the closing ">:" of the address onto a line of its own.
            let closing = l.trim().trim_start_matches('>').trim() == ":";
            if is_blank(l) || (is_quote(l) && !closing) || l.len() > 400 {
                return None;
            }
            // Only a line that looks like the start of an attribution may be joined with the next.
            if k == 1 && !(first.contains(['@', '<', '(']) || first.chars().any(|c| c.is_ascii_digit()) || opens_like_header(first)) {
                return None;
            }
            joined.push(' ');
            joined.push_str(l.trim());
        }
        if is_reply_header(&joined, lines, last) {
            // A later line alone may be the real header, this line then being the end of the
            // reply ("…see you 2020.\nOn Mon … wrote:"). It is when that line opens like a header
            // or this one closes a sentence.
            let closes = first.trim_end().ends_with(['.', '!', '?', ';', ':']);
            if k > 0 && (i + 1..=last).any(|s| reply_header_single_span(lines, s, last) && (closes || opens_like_header(lines[s]))) {
                return None;
            }
            return Some(last);
        }
    }
    None
}

fn reply_header_single_span(lines: &[&str], start: usize, last: usize) -> bool {
    let joined = lines[start..=last].iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
    is_reply_header(&joined, lines, last)
}

fn is_reply_header(text: &str, lines: &[&str], last: usize) -> bool {
    // Every form below ends in a colon, except "On … <addr> … wrote", which has an @ or <.
    if !ends_with_colon(text) && !text.contains(['@', '<']) {
        return false;
    }
    let evidence = text.contains('@') || DATE_OR_TIME.is_match(text);
    if text.len() > 600 {
        return false;
    }
    if WROTE.is_match(text) {
        // "John wrote:" right above quotes counts even without a date or address.
        return evidence || quote_follows(lines, last);
    }
    if ON_WROTE_NO_COLON.is_match(text) {
        return true;
    }
    if ADDRESS_COLON.is_match(text) && DATE_OR_TIME.is_match(text) {
        return true;
    }
    // Any attribution-looking line ending in a colon that introduces `>` quotes.
    ends_with_colon(text) && evidence && text.len() < 300 && quote_follows(lines, last)
}

fn quote_follows(lines: &[&str], last: usize) -> bool {
    lines.get(next_nonblank(lines, last + 1)).is_some_and(|l| is_quote(l))
}

/// How many lines stay once the signature is removed.
fn strip_signature(lines: &[&str]) -> usize {
    let mut end = lines.len();
    for _ in 0..4 {
        let before = end;
        let first_text = lines[..end].iter().position(|l| !is_blank(l) && !is_quote(l));
        if let Some(first_text) = first_text {
            // RFC 3676 §4.3 "-- " delimiter; also the underscore rule of list footers when short.
            if let Some(d) = (first_text + 1..end).find(|&k| is_sig_delimiter(lines[k])) {
                end = d;
            } else if let Some(d) = (first_text + 1..end).find(|&k| is_short_rule(lines[k]) && end - k <= 12) {
                end = d;
            }
        }
        // A trailing mobile signature line.
        let last = lines[..end].iter().rposition(|l| !is_blank(l));
        if let Some(last) = last.filter(|&l| l > 0 && is_mobile_signature(lines[l])) {
            end = last;
        }
        end = strip_trailing_quotes(lines, end);
        // A rule left dangling above a removed signature or footer.
        while end > 1 && is_rule(lines[end - 1]) {
            end -= 1;
            end = strip_trailing_quotes(lines, end);
        }
        if end == before {
            break;
        }
    }
    end
}

/// A line of only rule characters (`----`, `____`, `====`), at least three.
fn is_rule(line: &str) -> bool {
    let t = line.trim();
    t.chars().count() >= 3 && t.chars().all(|c| "-_=*~".contains(c))
}

fn is_short_rule(line: &str) -> bool {
    let t = line.trim();
    t.len() >= 2 && t.chars().all(|c| c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefilters_let_every_word_of_their_patterns_through() {
        type Case<'a> = (&'a [&'a str], fn(&str) -> bool, &'a str);
        let cases: [Case; 3] =
            [(FORWARD_WORDS, is_forward_marker, ""), (MOBILE_WORDS, is_mobile_signature, ""), (OPENING_WORDS, opens_like_header, " Mon, 3 Feb 2025")];
        for (words, classify, rest) in cases {
            for w in words {
                let line = format!("  {}{rest}", w.chars().flat_map(char::to_uppercase).collect::<String>());
                assert!(classify(&line), "{line:?}");
            }
        }
        assert!(is_forward_marker("---------- Forwarded message ---------"));
        assert!(is_forward_marker("  Пересылаемое сообщение"));
        assert!(is_original_message_rule("-----Original Message-----"));
        assert!(is_from_field("*From:* a@b.c"));
        assert!(is_mobile_signature("Sent from my iPhone"));
        assert!(is_mobile_signature("Отправлено с iPhone"));
        assert!(opens_like_header("-- On Mon, 3 Feb 2025 Support wrote:"));
        assert!(opens_like_header("2017-11-24 16:32 GMT+01:00 Name <a@b.c>:"));
    }

    #[test]
    fn top_posted_reply_loses_the_quote_and_the_header() {
        let body = "Thanks, that worked.\n\nOn Mon, 3 Feb 2025 at 10:12, Support <support@example.com> wrote:\n> Please restart it.\n> \n> Regards\n";
        assert_eq!(visible_text(body), "Thanks, that worked.");
    }

    #[test]
    fn inline_answers_keep_their_questions() {
        let body = "On 3 Feb 2025, Support <s@example.com> wrote:\n> Which version?\n\n2.1\n\n> Which OS?\n\nLinux\n";
        // The answers and the questions they answer stay; only the attribution line goes.
        assert_eq!(visible_text(body), "> Which version?\n\n2.1\n\n> Which OS?\n\nLinux");
    }

    #[test]
    fn outlook_header_block_and_localised_rules_cut() {
        let body = "Geht wieder.\n\nVon: Support <s@example.com>\nGesendet: Montag, 3. Februar 2025 10:12\nAn: Kunde <k@example.com>\nBetreff: AW: Drucker\n\nBitte neu starten.";
        assert_eq!(visible_text(body), "Geht wieder.");
        let body = "Ok\r\n\r\n-----Ursprüngliche Nachricht-----\r\nVon: x\r\n";
        assert_eq!(visible_text(body), "Ok");
    }

    #[test]
    fn signatures_go_in_the_visible_text_only() {
        let body = "Hello\n\nSent from my iPhone\n\nOn 1 Jan 2020, at 10:00, A <a@b.c> wrote:\n\n> hi\n";
        assert_eq!(reply_text(body), "Hello\n\nSent from my iPhone");
        assert_eq!(visible_text(body), "Hello");
        assert_eq!(visible_text("Hi\n-- \nJane\nACME"), "Hi");
        assert_eq!(visible_text("Test.\n\n-------\nSent via Bell Mobility's Text Messaging service.\n-------"), "Test.");
        assert_eq!(visible_text("Sent from my desk, is much easier.\nok"), "Sent from my desk, is much easier.\nok");
    }

    #[test]
    fn forwarded_content_is_kept() {
        let body = "Please look at this.\n\n---------- Forwarded message ---------\nFrom: Bob <b@x.y>\nDate: Mon, 3 Feb 2025\nSubject: broken\nTo: me@x.y\n\nIt is broken.";
        assert_eq!(visible_text(body), body);
    }

    #[test]
    fn big_threads_stay_fast() {
        let body = "On 1 Jan 2020, A <a@b.c> wrote:\n> question\nanswer\n\n".repeat(20_000)
            + &"\n".repeat(50_000)
            + &"12:00 someone@example.com:\n".repeat(20_000);
        let t0 = std::time::Instant::now();
        let v = visible_text(&body);
        assert!(v.contains("answer"));
        assert!(t0.elapsed() < std::time::Duration::from_secs(5), "{:?}", t0.elapsed());
    }

    #[test]
    fn nothing_left_means_the_whole_text() {
        assert_eq!(visible_text("> only a quote\n> here"), "> only a quote\n> here");
        assert_eq!(visible_text(""), "");
    }
}
