//! Pathological messages of about `size` bytes each: the shapes that once cost superlinear time
//! (issue 12 item 6) and their cousins. Shared by `tests/fuzz.rs` and `benches/parse.rs`.
#![allow(dead_code)]

const HEAD: &str = "From: Mallory <mallory@example.net>\r\nTo: support@example.test\r\nSubject: hostile\r\nMessage-ID: <hostile@example.net>\r\n";

/// Repeat `unit(i)` until the text is about `size` bytes.
fn fill(mut out: String, size: usize, unit: impl Fn(usize) -> String) -> String {
    let mut i = 0;
    while out.len() < size {
        out.push_str(&unit(i));
        i += 1;
    }
    out
}

/// Every shape, named, each about `size` bytes.
pub fn all(size: usize) -> Vec<(&'static str, Vec<u8>)> {
    let ids = |h: &str, dup: usize| fill(format!("{HEAD}{h}:"), size, move |i| format!(" <r{}@example.org>\r\n", i % dup)) + "\r\nbody\r\n";
    vec![
        ("references, all distinct", ids("References", usize::MAX).into_bytes()),
        ("references, 10 repeated", ids("References", 10).into_bytes()),
        ("in-reply-to list", ids("In-Reply-To", usize::MAX).into_bytes()),
        ("header fields", (fill(HEAD.to_string(), size, |i| format!("X-H{i}: v{i}\r\n")) + "\r\nbody\r\n").into_bytes()),
        ("received chain", (fill(HEAD.to_string(), size, |i| format!("Received: from h{i}.example.net by mx; Mon, 30 Nov 2026 10:00:00 +0000\r\n")) + "\r\nbody\r\n").into_bytes()),
        ("cc addresses", (fill(format!("{HEAD}Cc:"), size, |i| format!(" \"n {i}\"@example.org, p{i} <p{i}@example.org>,\r\n")) + " last@example.org\r\n\r\nbody\r\n").into_bytes()),
        ("mime parts", mime_parts(size).into_bytes()),
        ("mime nesting", mime_nesting(size).into_bytes()),
        ("nested messages", nested_messages(size).into_bytes()),
        ("one long line", (format!("{HEAD}\r\n") + &"x".repeat(size)).into_bytes()),
        ("html nesting", (fill(format!("{HEAD}Content-Type: text/html\r\n\r\n"), size, |_| "<div><blockquote><table><tr><td>".into())).into_bytes()),
        ("quoted reply depth", (fill(format!("{HEAD}\r\n"), size, |i| format!("{} line {i}\r\n", ">".repeat(i % 200)))).into_bytes()),
        ("encoded words", (fill(format!("{HEAD}X-Words:"), size, |_| " =?utf-8?q?=C3=A9t=C3=A9?=\r\n".into()) + "\r\nbody\r\n").into_bytes()),
        ("text bounce", text_bounce(size).into_bytes()),
        ("junk lines", (fill(String::new(), size, |_| "----\r\n".into()) + HEAD + "\r\nbody\r\n").into_bytes()),
    ]
}

fn mime_parts(size: usize) -> String {
    fill(format!("{HEAD}Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"), size, |i| format!("--b\r\nContent-Type: application/octet-stream; name=\"f{i}.bin\"\r\n\r\nx\r\n")) + "--b--\r\n"
}

fn mime_nesting(size: usize) -> String {
    let open = fill(format!("{HEAD}Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n"), size / 2, |i| format!("--b{i}\r\nContent-Type: multipart/mixed; boundary=\"b{}\"\r\n\r\n", i + 1));
    open + "--bX\r\nContent-Type: text/plain\r\n\r\ndeep\r\n"
}

fn nested_messages(size: usize) -> String {
    fill(HEAD.to_string(), size, |i| format!("Content-Type: message/rfc822\r\n\r\nFrom: n{i}@example.org\r\nSubject: level {i}\r\n"))
}

/// An MTA's text bounce naming thousands of recipients in non-ASCII prose (bounce reading runs
/// regexes over the report text).
fn text_bounce(size: usize) -> String {
    let head = "Return-Path: <>\r\nFrom: MAILER-DAEMON@mx.example.net\r\nTo: support@example.test\r\nSubject: Delivery failure\r\nMessage-ID: <bounce@mx.example.net>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThis is the mail system. Your message could not be delivered.\r\n\r\n";
    fill(head.to_string(), size, |i| format!("<user{i}@example.org>: host mx.example.org said: 550 5.1.1 Benutzer unbekannt, Zustellung fehlgeschlagen (in reply to RCPT TO command) üöä\r\n"))
}
