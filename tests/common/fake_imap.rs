//! A small scripted IMAP server on 127.0.0.1 for faults no real server shows on demand: answers
//! for UIDs never asked for, literals far beyond the reported size, parse errors after a large
//! literal, a line without end. Plain TCP, one folder, just the commands Postdesk sends. The
//! trick, when set, replaces the next body FETCH answer, once.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// How the next body FETCH misbehaves.
#[derive(Debug, Clone, PartialEq)]
pub enum Trick {
    None,
    /// After the answers asked for, `count` more messages of `bytes` each, UIDs `uid`, `uid-1`, ….
    ExtraUids { uid: u32, count: u32, bytes: usize },
    /// Announce a literal of this many bytes for a small message and keep sending.
    HugeLiteral(u64),
    /// Answer correctly, then break the syntax after the literal (a parse error).
    GarbageAfterLiteral,
    /// One response line of this many bytes without CRLF (an unterminated quoted string).
    EndlessLine(u64),
}

#[derive(Debug)]
pub struct FakeState {
    pub messages: Vec<(u32, Vec<u8>)>,
    pub uid_validity: u32,
    pub trick: Trick,
    pub commands: Vec<String>,
    pub logins: usize,
    /// What the server says first (a broken one: garbage).
    pub greeting: Vec<u8>,
    /// Bytes of the last trick written before the client hung up (or all of them), once done.
    pub trick_written: Option<u64>,
}

pub struct FakeImap {
    pub port: u16,
    pub state: Arc<Mutex<FakeState>>,
}

impl FakeImap {
    pub fn start(messages: Vec<(u32, Vec<u8>)>) -> FakeImap {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(FakeState { messages, uid_validity: 7, trick: Trick::None, commands: Vec::new(), logins: 0, greeting: b"* OK fake IMAP ready\r\n".to_vec(), trick_written: None }));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, st);
                });
            }
        });
        FakeImap { port, state }
    }

    pub fn set_trick(&self, t: Trick) {
        let mut s = self.state.lock().unwrap();
        s.trick = t;
        s.trick_written = None;
    }

    pub fn add(&self, uid: u32, raw: Vec<u8>) {
        self.state.lock().unwrap().messages.push((uid, raw));
    }
}

fn serve(conn: TcpStream, st: Arc<Mutex<FakeState>>) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    let greeting = st.lock().unwrap().greeting.clone();
    out.write_all(&greeting)?;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        st.lock().unwrap().commands.push(cmd.clone());
        let (tag, rest) = cmd.split_once(' ').unwrap_or((&cmd, ""));
        let upper = rest.to_ascii_uppercase();
        if upper.starts_with("LOGIN") {
            st.lock().unwrap().logins += 1;
        } else if upper == "CAPABILITY" {
            out.write_all(b"* CAPABILITY IMAP4rev1\r\n")?;
        } else if upper.starts_with("SELECT") || upper.starts_with("EXAMINE") {
            let s = st.lock().unwrap();
            let next = s.messages.iter().map(|m| m.0).max().unwrap_or(0).saturating_add(1);
            write!(out, "* {} EXISTS\r\n* OK [UIDVALIDITY {}] ok\r\n* OK [UIDNEXT {next}] ok\r\n", s.messages.len(), s.uid_validity)?;
        } else if upper.starts_with("UID SEARCH") {
            let range = upper.split_whitespace().nth(3).unwrap_or("1:*");
            let (a, b) = range.split_once(':').unwrap_or((range, range));
            let (from, to): (u32, u32) = (a.parse().unwrap_or(1), b.parse().unwrap_or(u32::MAX));
            let s = st.lock().unwrap();
            let uids: Vec<String> = s.messages.iter().filter(|m| m.0 >= from && m.0 <= to).map(|m| m.0.to_string()).collect();
            write!(out, "* SEARCH {}\r\n", uids.join(" "))?;
        } else if upper.starts_with("UID FETCH") {
            fetch(&mut out, &upper, &st)?;
        } else if upper == "LOGOUT" {
            out.write_all(b"* BYE bye\r\n")?;
            write!(out, "{tag} OK done\r\n")?;
            return Ok(());
        }
        write!(out, "{tag} OK done\r\n")?;
    }
}

fn fetch(out: &mut TcpStream, cmd: &str, st: &Arc<Mutex<FakeState>>) -> std::io::Result<()> {
    let set = cmd.split_whitespace().nth(2).unwrap_or("");
    let asked: Vec<u32> = set.split(',').filter_map(|u| u.parse().ok()).collect();
    let (msgs, trick) = {
        let mut s = st.lock().unwrap();
        let msgs: Vec<(u32, Vec<u8>)> = s.messages.iter().filter(|m| asked.contains(&m.0)).cloned().collect();
        let body = cmd.contains("BODY.PEEK[]");
        (msgs, if body { std::mem::replace(&mut s.trick, Trick::None) } else { Trick::None })
    };
    if cmd.contains("RFC822.SIZE") {
        for (i, (uid, raw)) in msgs.iter().enumerate() {
            write!(out, "* {} FETCH (UID {uid} RFC822.SIZE {})\r\n", i + 1, raw.len())?;
        }
        return Ok(());
    }
    let mut written = 0u64;
    let result = (|| -> std::io::Result<()> {
        if let Trick::EndlessLine(n) = trick {
            return chunks(out, b"* OK \"", n, &mut written);
        }
        for (i, (uid, raw)) in msgs.iter().enumerate() {
            if let Trick::HugeLiteral(n) = trick {
                return chunks(out, format!("* {} FETCH (UID {uid} BODY[] {{{n}}}\r\n", i + 1).as_bytes(), n, &mut written);
            }
            let close: &[u8] = if trick == Trick::GarbageAfterLiteral { b" ((((\x01\r\n" } else { b")\r\n" };
            let resp = [format!("* {} FETCH (UID {uid} BODY[] {{{}}}\r\n", i + 1, raw.len()).as_bytes(), raw, close].concat();
            out.write_all(&resp)?;
            written += resp.len() as u64;
        }
        if let Trick::ExtraUids { uid, count, bytes } = trick {
            for k in 0..count {
                let mut raw = format!("From: mallory@example.org\r\nTo: support@example.test\r\nSubject: forged {k}\r\nMessage-ID: <forged{k}@example.org>\r\n\r\n").into_bytes();
                raw.resize(bytes.max(raw.len()), b'x');
                let resp = [format!("* {} FETCH (UID {} BODY[] {{{}}}\r\n", 100 + k, uid - k, raw.len()).as_bytes(), &raw, b")\r\n"].concat();
                out.write_all(&resp)?;
                written += resp.len() as u64;
            }
        }
        Ok(())
    })();
    if trick != Trick::None {
        st.lock().unwrap().trick_written = Some(written);
    }
    result
}

/// `head` then `n` filler bytes in 64 KiB writes, counting what got out.
fn chunks(out: &mut TcpStream, head: &[u8], n: u64, written: &mut u64) -> std::io::Result<()> {
    out.write_all(head)?;
    *written += head.len() as u64;
    let block = vec![b'a'; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(block.len() as u64) as usize;
        out.write_all(&block[..k])?;
        *written += k as u64;
        left -= k as u64;
    }
    Ok(())
}
