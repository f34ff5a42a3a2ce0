//! Messages shaped the way real mail clients write them (headers copied from the clients'
//! observed behaviour): Thunderbird and mutt set In-Reply-To and References; Gmail does too and
//! sends multipart/alternative; Outlook often sends only Thread-Index/Thread-Topic with the
//! subject, which is why subject-tag threading exists.
#![allow(dead_code)]

fn uid() -> String {
    format!("{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    t ^ (N.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// A Message-ID as the client would make it; returned so tests can refer to it.
pub struct Mail {
    pub message_id: String,
    pub raw: Vec<u8>,
}

fn crlf(s: &str) -> Vec<u8> {
    s.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes()
}

/// Thunderbird, new conversation.
pub fn thunderbird_new(from_name: &str, from: &str, to: &str, subject: &str, body: &str) -> Mail {
    let id = format!("{}-{}@example.test", &uid()[..8], &uid()[..12]);
    let raw = format!(
        "Message-ID: <{id}>\nDate: Mon, 30 Nov 2026 10:00:00 +0100\nMIME-Version: 1.0\nUser-Agent: Mozilla Thunderbird\nContent-Language: en-US\nTo: {to}\nFrom: {from_name} <{from}>\nSubject: {subject}\nContent-Type: text/plain; charset=UTF-8; format=flowed\nContent-Transfer-Encoding: 7bit\n\n{body}\n"
    );
    Mail { message_id: id, raw: crlf(&raw) }
}

/// Thunderbird reply: In-Reply-To the parent, References the whole chain.
pub fn thunderbird_reply(from_name: &str, from: &str, to: &str, parent_subject: &str, parent_id: &str, parent_refs: &[String], body: &str) -> Mail {
    let id = format!("{}-{}@example.test", &uid()[..8], &uid()[..12]);
    let mut refs: Vec<String> = parent_refs.iter().map(|r| format!("<{r}>")).collect();
    refs.push(format!("<{parent_id}>"));
    let raw = format!(
        "Message-ID: <{id}>\nDate: Mon, 30 Nov 2026 10:05:00 +0100\nMIME-Version: 1.0\nUser-Agent: Mozilla Thunderbird\nSubject: Re: {parent_subject}\nContent-Language: en-US\nTo: {to}\nReferences: {}\nFrom: {from_name} <{from}>\nIn-Reply-To: <{parent_id}>\nContent-Type: text/plain; charset=UTF-8; format=flowed\nContent-Transfer-Encoding: 7bit\n\n{body}\n\nOn 30.11.26 10:01, Example Support wrote:\n> Thank you for writing.\n",
        refs.join("\n ")
    );
    Mail { message_id: id, raw: crlf(&raw) }
}

/// Gmail reply: multipart/alternative, In-Reply-To and References, Gmail-style Message-ID.
pub fn gmail_reply(from_name: &str, from: &str, to: &str, parent_subject: &str, parent_id: &str, parent_refs: &[String], body: &str) -> Mail {
    let id = format!("CAF{}+{}=Q@mail.gmail.com", uid(), uid());
    let boundary = format!("000000000000{}", &uid()[..12]);
    let mut refs: Vec<String> = parent_refs.iter().map(|r| format!("<{r}>")).collect();
    refs.push(format!("<{parent_id}>"));
    let raw = format!(
        "MIME-Version: 1.0\nReferences: {refs}\nIn-Reply-To: <{parent_id}>\nFrom: {from_name} <{from}>\nDate: Mon, 30 Nov 2026 10:07:00 +0100\nMessage-ID: <{id}>\nSubject: Re: {parent_subject}\nTo: Example Support <{to}>\nContent-Type: multipart/alternative; boundary=\"{boundary}\"\n\n--{boundary}\nContent-Type: text/plain; charset=\"UTF-8\"\n\n{body}\n\nOn Mon, Nov 30, 2026 at 10:01 AM Example Support <{to}> wrote:\n\n> Thank you for writing.\n\n--{boundary}\nContent-Type: text/html; charset=\"UTF-8\"\n\n<div dir=\"ltr\">{body}</div><br><div class=\"gmail_quote\"><div dir=\"ltr\" class=\"gmail_attr\">On Mon, Nov 30, 2026 at 10:01 AM Example Support &lt;{to}&gt; wrote:<br></div><blockquote class=\"gmail_quote\">Thank you for writing.</blockquote></div>\n\n--{boundary}--\n",
        refs = refs.join(" ")
    );
    Mail { message_id: id, raw: crlf(&raw) }
}

/// Outlook reply that kept only the subject (no In-Reply-To/References), with Thread-Index.
pub fn outlook_subject_only_reply(from_name: &str, from: &str, to: &str, parent_subject: &str, body: &str) -> Mail {
    let id = format!("AM0PR07MB{}{}@AM0PR07MB6243.eurprd07.prod.outlook.com", &uid()[..10].to_uppercase(), &uid()[..6].to_uppercase());
    let raw = format!(
        "From: {from_name} <{from}>\nTo: Example Support <{to}>\nSubject: RE: {parent_subject}\nThread-Topic: {parent_subject}\nThread-Index: AQHZ{}AAA==\nDate: Mon, 30 Nov 2026 09:09:00 +0000\nMessage-ID: <{id}>\nAccept-Language: en-US\nContent-Language: en-US\nX-MS-Has-Attach:\nX-MS-TNEF-Correlator:\nContent-Type: text/plain; charset=\"us-ascii\"\nContent-Transfer-Encoding: quoted-printable\nMIME-Version: 1.0\n\n{body}\n\n-----Original Message-----\nFrom: Example Support <{to}>\nSent: Monday, November 30, 2026 9:01 AM\nTo: {from_name} <{from}>\nSubject: {parent_subject}\n\nThank you for writing.\n",
        &uid()[..12]
    );
    Mail { message_id: id, raw: crlf(&raw) }
}

/// mutt reply: In-Reply-To and References, mutt-style Message-ID.
pub fn mutt_reply(from: &str, to: &str, parent_subject: &str, parent_id: &str, parent_refs: &[String], body: &str) -> Mail {
    let id = format!("20261130100900.GA{}@host.example.test", &uid()[..6]);
    let mut refs: Vec<String> = parent_refs.iter().map(|r| format!("<{r}>")).collect();
    refs.push(format!("<{parent_id}>"));
    let raw = format!(
        "Date: Mon, 30 Nov 2026 10:09:00 +0100\nFrom: {from}\nTo: {to}\nSubject: Re: {parent_subject}\nMessage-ID: <{id}>\nReferences: {}\nMIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\nContent-Disposition: inline\nIn-Reply-To: <{parent_id}>\nUser-Agent: Mutt/2.2.9 (2022-11-12)\n\n{body}\n\nOn Mon, Nov 30, 2026 at 10:01:00AM +0000, Example Support wrote:\n> Thank you for writing.\n",
        refs.join(" ")
    );
    Mail { message_id: id, raw: crlf(&raw) }
}

/// A Thunderbird mail with one binary attachment of `size` bytes (base64, 76-column lines).
pub fn with_attachment(from: &str, to: &str, subject: &str, name: &str, size: usize) -> Mail {
    let id = format!("{}-att@example.test", uid());
    let boundary = format!("------------{}", &uid()[..12]);
    let mut data = Vec::with_capacity(size);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.push(x as u8);
    }
    use std::fmt::Write;
    let mut b64 = String::with_capacity(size * 4 / 3 + size / 38 + 8);
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut col = 0;
    for chunk in data.chunks(3) {
        let n = (chunk[0] as u32) << 16 | (*chunk.get(1).unwrap_or(&0) as u32) << 8 | *chunk.get(2).unwrap_or(&0) as u32;
        let chars = [T[(n >> 18) as usize & 63], T[(n >> 12) as usize & 63], if chunk.len() > 1 { T[(n >> 6) as usize & 63] } else { b'=' }, if chunk.len() > 2 { T[n as usize & 63] } else { b'=' }];
        b64.push_str(std::str::from_utf8(&chars).unwrap());
        col += 4;
        if col >= 76 {
            b64.push_str("\r\n");
            col = 0;
        }
    }
    let mut raw = String::new();
    let _ = write!(
        raw,
        "Message-ID: <{id}>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\nUser-Agent: Mozilla Thunderbird\r\nTo: {to}\r\nFrom: Customer <{from}>\r\nSubject: {subject}\r\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\nThis is a multi-part message in MIME format.\r\n--{boundary}\r\nContent-Type: text/plain; charset=UTF-8; format=flowed\r\nContent-Transfer-Encoding: 7bit\r\n\r\nSee the attached file.\r\n\r\n--{boundary}\r\nContent-Type: application/octet-stream; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--{boundary}--\r\n"
    );
    Mail { message_id: id, raw: raw.into_bytes() }
}
