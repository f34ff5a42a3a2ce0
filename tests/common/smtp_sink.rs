//! A minimal SMTP sink on 127.0.0.1 for checking the exact bytes we put on the wire: it accepts
//! every command and records each session's commands and raw DATA stream (up to and including the
//! terminating `<CRLF>.<CRLF>`). Plain, no AUTH; real Postfix covers the rest.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// What one connection sent.
#[derive(Debug, Default, Clone)]
pub struct SinkSession {
    pub commands: Vec<String>,
    /// Each DATA stream as received, dot-stuffing and final dot included.
    pub data: Vec<Vec<u8>>,
}

pub struct SmtpSink {
    pub port: u16,
    pub sessions: Arc<Mutex<Vec<SinkSession>>>,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let s = sessions.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(conn, s));
            }
        });
        SmtpSink { port, sessions }
    }
}

fn serve(conn: std::net::TcpStream, sessions: Arc<Mutex<Vec<SinkSession>>>) {
    let idx = {
        let mut all = sessions.lock().unwrap();
        all.push(SinkSession::default());
        all.len() - 1
    };
    let mut out = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let _ = out.write_all(b"220 sink.test ESMTP\r\n");
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = String::from_utf8_lossy(&line).trim_end().to_string();
        sessions.lock().unwrap()[idx].commands.push(cmd.clone());
        let verb = cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink.test\r\n250-8BITMIME\r\n250 PIPELINING\r\n",
            "DATA" => {
                let _ = out.write_all(b"354 go on\r\n");
                let data = read_data(&mut r);
                sessions.lock().unwrap()[idx].data.push(data);
                b"250 queued\r\n"
            }
            "QUIT" => {
                let _ = out.write_all(b"221 bye\r\n");
                return;
            }
            _ => b"250 ok\r\n",
        };
        if out.write_all(reply).is_err() {
            return;
        }
    }
}

/// Read up to and including the first `<CRLF>.<CRLF>` (RFC 5321 §4.1.1.4), byte for byte.
fn read_data(r: &mut impl BufRead) -> Vec<u8> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return data;
        }
        data.extend_from_slice(&line);
        if line == b".\r\n" && (data.len() == 3 || data[..data.len() - 3].ends_with(b"\r\n")) {
            return data;
        }
    }
}
