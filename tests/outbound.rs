//! What leaves Postdesk over SMTP, checked byte by byte at a small sink (tests/common/smtp_sink.rs):
//! no bare CR, bare LF or NUL, no line over 998 octets, dot-stuffing intact (issue 17.1, 17.2).

#[path = "common/smtp_sink.rs"]
mod smtp_sink;

use postdesk::config::{Endpoint, Tls};
use postdesk::outbound::compose::{AutoSubmitted, Outgoing, compose, wire_fault};
use postdesk::outbound::smtp::SmtpSender;
use postdesk::render::Rendered;
use postdesk::store::QueuedMail;
use smtp_sink::SmtpSink;
use std::time::Duration;

fn endpoint(port: u16) -> Endpoint {
    Endpoint { host: "127.0.0.1".into(), port, tls: Tls::None, ca_file: None, username: None, password: None, connect_timeout: Duration::from_secs(30) }
}

/// Every line-ending variant a customer can put in a body or a display name, including the
/// `<CR>.<CR>` smuggling sequence, reaches the relay as canonical CRLF lines in one message.
#[tokio::test]
async fn every_line_ending_variant_reaches_the_relay_as_crlf() {
    let variants = ["a\rb", "a\nb", "a\r\nb", "a\r\rb", "a\n\rb", "a\0b", "\r.\r", "\n.\n", "\r.\r\nMAIL FROM:<evil@x.y>\r\nRCPT TO:<v@x.y>\r\nDATA\r\n", "\r\n.\r\n", ".lead", "end\r"];
    let body = variants.join("|");
    let r = Rendered { subject: "Re: open 443\r.\r\nMAIL FROM:<a@b.c>".into(), text: body.clone(), html: Some(format!("<pre>{body}</pre>")) };
    let raw = compose(&Outgoing {
        from_name: "Eve\r.\r\nMAIL FROM:<evil@x.y>\0",
        from_address: "support@example.com",
        to_name: Some("Bob\r\n.\r\n"),
        to_address: "bob@example.org",
        cc: &[],
        reply_to: None,
        message_id: "pd.1.aa.bb@desk.example.com",
        in_reply_to: None,
        references: &[],
        auto: Some(AutoSubmitted::AutoReplied),
        domain: "desk.example.com",
        rendered: &r,
        date: std::time::SystemTime::UNIX_EPOCH,
    })
    .expect("composes");
    let sink = SmtpSink::start();
    let sender = SmtpSender::new(&endpoint(sink.port)).unwrap();
    let mail = QueuedMail { id: 1, ticket: None, message_id: "m".into(), envelope_from: "support@example.com".into(), recipients: vec!["bob@example.org".into()], raw: raw.clone(), attempts: 0 };
    let mut committed = 0;
    sender.send(&mail, &mut || {
        committed += 1;
        true
    })
    .await.expect("sink accepts");
    assert_eq!(committed, 1);
    let sessions = sink.sessions.lock().unwrap().clone();
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(s.data.len(), 1, "one DATA stream, nothing smuggled: {:?}", s.commands);
    assert_eq!(s.commands.iter().filter(|c| c.starts_with("MAIL FROM")).count(), 1, "{:?}", s.commands);
    let data = &s.data[0];
    assert!(data.ends_with(b"\r\n.\r\n"));
    let content = &data[..data.len() - 3];
    assert_eq!(wire_fault(content), None, "{}", String::from_utf8_lossy(content));
    // The only lone dot is the terminator; undoing dot-stuffing gives back exactly what we composed.
    let unstuffed: Vec<u8> = content.split_inclusive(|b| *b == b'\n').flat_map(|l| if l.starts_with(b".") { &l[1..] } else { l }).copied().collect();
    // lettre ends the data with `<CRLF>.<CRLF>` even after a final CRLF: one empty line more.
    let expected = [raw.as_slice(), b"\r\n"].concat();
    assert_eq!(String::from_utf8_lossy(&unstuffed), String::from_utf8_lossy(&expected));
    assert!(!content.split(|b| *b == b'\n').any(|l| l == b".\r"), "a lone dot line inside the data");
}
