//! Authentication-Results (RFC 8601) reading, just enough to answer one question: did one of
//! our trusted MTAs record `dkim=pass` (for the From domain) or `dmarc=pass`? Pure.
//!
//! Written here because the one Rust parser available (msg-auth-status 0.2) depends on an older
//! mail-parser and does not parse `dmarc` results.

/// One `method=result` with its properties (`header.d`, `header.from`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResInfo {
    pub method: String,
    pub result: String,
    pub props: Vec<(String, String)>,
}

/// A parsed header: the authserv-id that wrote it and its results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResults {
    pub authserv_id: String,
    pub results: Vec<ResInfo>,
}

/// RFC 8601 §2.2 allows CFWS comments anywhere: drop `( … )`, nesting included.
fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0u32;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' => escaped = true,
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// `s` cut at each character `at` accepts outside RFC 5322 quoted strings (a `;` or a space
/// inside `"…"` is part of a value: `smtp.mailfrom="a; dmarc=pass"@evil.test` is one value).
/// Empty pieces are dropped when `skip_empty`.
fn split_unquoted(s: &str, at: impl Fn(char) -> bool, skip_empty: bool) -> Vec<String> {
    let (mut out, mut cur) = (Vec::new(), String::new());
    let (mut quoted, mut escaped) = (false, false);
    for c in s.chars() {
        if escaped {
            escaped = false;
            cur.push(c);
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if !quoted && at(c) => {
                if !(skip_empty && cur.is_empty()) {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !(skip_empty && cur.is_empty()) {
        out.push(cur);
    }
    out
}

/// Parse one header value. `None` when it has no authserv-id.
pub fn parse(value: &str) -> Option<AuthResults> {
    let clean = strip_comments(value);
    let mut parts = split_unquoted(&clean, |c| c == ';', false).into_iter();
    // authserv-id [ CFWS authres-version ]
    let authserv_id = parts.next()?.split_whitespace().next()?.to_ascii_lowercase();
    let mut results = Vec::new();
    for part in parts {
        let words = split_unquoted(&part, char::is_whitespace, true);
        let mut words = words.iter().map(String::as_str);
        let Some(first) = words.next() else { continue };
        let Some((method, result)) = first.split_once('=') else { continue };
        // "method/version=result"
        let method = method.split('/').next().unwrap_or(method).to_ascii_lowercase();
        let mut props = Vec::new();
        for w in words {
            if let Some((k, v)) = w.split_once('=') {
                props.push((k.to_ascii_lowercase(), v.trim_matches('"').to_ascii_lowercase()));
            }
        }
        results.push(ResInfo { method, result: result.to_ascii_lowercase(), props });
    }
    Some(AuthResults { authserv_id, results })
}

/// True when a trusted authserv-id says DKIM passed for `from_domain` (`header.d` equal to or a
/// parent of it) or DMARC passed for it (`header.from` naming it).
pub fn passes<'a>(headers: impl Iterator<Item = &'a str>, trusted: &[String], from_domain: &str) -> bool {
    let from_domain = from_domain.to_ascii_lowercase();
    let aligned = |d: &str| from_domain == d || from_domain.ends_with(&format!(".{d}"));
    headers.filter_map(parse).filter(|ar| trusted.iter().any(|t| t == &ar.authserv_id)).any(|ar| {
        ar.results.iter().any(|r| {
            r.result == "pass"
                && match r.method.as_str() {
                    "dkim" => r.props.iter().any(|(k, v)| k == "header.d" && aligned(v)),
                    // RFC 7489 §11.2: the result names the From domain it was evaluated for.
                    "dmarc" => r.props.iter().any(|(k, v)| k == "header.from" && aligned(v)),
                    _ => false,
                }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_real_headers() {
        let gmail = "mx.google.com;\n       dkim=pass header.i=@example.com header.s=sel1 header.b=abc;\n       spf=pass (google.com: domain of a@example.com designates 1.2.3.4 as permitted sender) smtp.mailfrom=a@example.com;\n       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=example.com";
        let ar = parse(gmail).unwrap();
        assert_eq!(ar.authserv_id, "mx.google.com");
        assert_eq!(ar.results.iter().map(|r| r.method.as_str()).collect::<Vec<_>>(), vec!["dkim", "spf", "dmarc"]);
        assert!(passes([gmail].into_iter(), &["mx.google.com".into()], "example.com"));
        // untrusted authserv-id: a sender can write any header it likes
        assert!(!passes([gmail].into_iter(), &["mx.ourdomain.test".into()], "example.com"));
        // wrong domain
        assert!(!passes([gmail].into_iter(), &["mx.google.com".into()], "evil.test"));
        let fail = "mx.ourdomain.test; dkim=fail header.d=example.com; dmarc=fail header.from=example.com";
        assert!(!passes([fail].into_iter(), &["mx.ourdomain.test".into()], "example.com"));
        let dkim_only = "mx.ourdomain.test (Postfix); dkim=pass (2048-bit key) header.d=example.com header.s=s1";
        assert!(passes([dkim_only].into_iter(), &["mx.ourdomain.test".into()], "mail.example.com"));
        // What a sender puts in a quoted value the MTA echoes is not a result of the MTA's, and a
        // DMARC pass counts only for the From domain it names.
        let echoed = "mx.example.com; spf=pass smtp.mailfrom=\"e; dmarc=pass \"@evil.test; dmarc=fail header.from=example.com";
        assert_eq!(parse(echoed).unwrap().results.iter().map(|r| (r.method.as_str(), r.result.as_str())).collect::<Vec<_>>(), vec![("spf", "pass"), ("dmarc", "fail")]);
        assert!(!passes([echoed].into_iter(), &["mx.example.com".into()], "example.com"));
        assert!(!passes(["mx.example.com; dmarc=pass"].into_iter(), &["mx.example.com".into()], "example.com"));
        assert!(parse("").is_none());
        assert!(parse(";;;=").is_none() || parse(";;;=").unwrap().results.is_empty());
    }
}
