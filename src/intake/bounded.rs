//! A byte allowance under async-imap: the session says how much it expects before each command
//! (what it asked for, from the sizes the server reported), and the stream refuses more — an
//! unasked-for FETCH answer, a literal far larger than its reported size, a line without end.
//! async-imap buffers a whole response and re-parses it on every read, so without this a hostile
//! or broken server costs unbounded memory and CPU (issue 17.8, 17.10). A violation fails every
//! later read: the session ends and reconnects. Never decides about messages.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest response line outside literals (a `UID SEARCH` answer of ~500,000 UIDs).
pub const MAX_LINE: u64 = 4 * 1024 * 1024;

/// The session's side: sets what the next responses may cost, reads a violation.
#[derive(Debug, Clone)]
pub struct Allowance(Arc<Mutex<State>>);

#[derive(Debug)]
struct State {
    /// Bytes read so far, and the total the session allows.
    used: u64,
    allowed: u64,
    /// Length of the current line so far, outside literals.
    line: u64,
    /// Last bytes of the current line, to spot a literal's `{N}` before the CRLF.
    tail: Vec<u8>,
    /// Literal bytes still to come.
    literal: u64,
    violation: Option<String>,
}

impl Allowance {
    /// No limit (tests' and benchmarks' own sessions).
    pub fn unlimited() -> Allowance {
        Allowance::new(u64::MAX)
    }

    /// Allow `bytes` for the responses to come.
    pub fn new(bytes: u64) -> Allowance {
        Allowance(Arc::new(Mutex::new(State { used: 0, allowed: bytes, line: 0, tail: Vec::new(), literal: 0, violation: None })))
    }

    /// From now on the server may send `bytes` more (set before each command).
    pub fn allow(&self, bytes: u64) {
        let mut s = self.0.lock().expect("allowance lock");
        s.allowed = s.used.saturating_add(bytes);
    }

    /// What the server did wrong, once it did.
    pub fn violation(&self) -> Option<String> {
        self.0.lock().expect("allowance lock").violation.clone()
    }

    /// Account for `bytes` just read; `Err` names the violation.
    fn take(&self, bytes: &[u8]) -> Result<(), String> {
        let mut s = self.0.lock().expect("allowance lock");
        if let Some(v) = &s.violation {
            return Err(v.clone());
        }
        let r = s.scan(bytes);
        if let Err(v) = &r {
            s.violation = Some(v.clone());
        }
        r
    }
}

impl State {
    fn scan(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        self.used = self.used.saturating_add(bytes.len() as u64);
        if self.used > self.allowed {
            return Err(format!("server sent {} bytes more than asked for", self.used - self.allowed));
        }
        while !bytes.is_empty() {
            if self.literal > 0 {
                let skip = self.literal.min(bytes.len() as u64);
                self.literal -= skip;
                bytes = &bytes[skip as usize..];
                continue;
            }
            let b = bytes[0];
            bytes = &bytes[1..];
            if b == b'\n' {
                self.end_line()?;
                continue;
            }
            self.line += 1;
            if self.line > MAX_LINE {
                return Err(format!("response line longer than {MAX_LINE} bytes"));
            }
            if self.tail.len() == 24 {
                self.tail.remove(0);
            }
            self.tail.push(b);
        }
        Ok(())
    }

    /// A line ending in `{N}` or `{N+}` (RFC 3501 §4.3, RFC 7888) announces N literal bytes.
    fn end_line(&mut self) -> Result<(), String> {
        let t = self.tail.strip_suffix(b"\r").unwrap_or(&self.tail);
        let t = t.strip_suffix(b"}").map(|t| t.strip_suffix(b"+").unwrap_or(t));
        let size = t.and_then(|t| {
            let open = t.iter().rposition(|&c| c == b'{')?;
            std::str::from_utf8(&t[open + 1..]).ok()?.parse::<u64>().ok()
        });
        self.line = 0;
        self.tail.clear();
        if let Some(n) = size {
            let left = self.allowed.saturating_sub(self.used);
            if n > left {
                return Err(format!("server announced a literal of {n} bytes; at most {left} were asked for"));
            }
            self.literal = n;
        }
        Ok(())
    }
}

/// The stream async-imap reads: every byte read is checked against the allowance.
#[derive(Debug)]
pub struct Bounded<S> {
    inner: S,
    allowance: Allowance,
}

impl<S> Bounded<S> {
    pub fn new(inner: S, allowance: Allowance) -> Bounded<S> {
        Bounded { inner, allowance }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(v) = self.allowance.violation() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, v)));
        }
        let before = buf.filled().len();
        let this = &mut *self;
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        match this.allowance.take(&buf.filled()[before..]) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(v) => {
                buf.set_filled(before);
                Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, v)))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(a: &Allowance, chunks: &[&[u8]]) -> Result<(), String> {
        chunks.iter().try_for_each(|c| a.take(c))
    }

    #[test]
    fn literals_within_the_allowance_pass_in_any_chunking() {
        let a = Allowance::new(1000);
        let body = [b'x'; 100];
        let resp = [b"* 1 FETCH (UID 7 BODY[] {100}\r\n".as_slice(), &body, b")\r\na1 OK done\r\n"].concat();
        for split in [1, 5, 31, 200] {
            let a2 = Allowance::new(1000);
            assert_eq!(feed(&a2, &resp.chunks(split).collect::<Vec<_>>()), Ok(()), "split {split}");
        }
        assert_eq!(feed(&a, &[&resp]), Ok(()));
        // A literal's bytes do not count as a line, even when they hold no line break.
        let big = Allowance::new(MAX_LINE * 3);
        let lit = vec![b'y'; (MAX_LINE * 2) as usize];
        assert_eq!(feed(&big, &[format!("* 1 FETCH (BODY[] {{{}}}\r\n", lit.len()).as_bytes(), &lit, b")\r\n"]), Ok(()));
    }

    #[test]
    fn an_oversized_literal_is_refused_when_announced() {
        let a = Allowance::new(2000);
        let e = feed(&a, &[b"* 1 FETCH (UID 7 BODY[] {400000000}\r\n"]).unwrap_err();
        assert!(e.contains("400000000"), "{e}");
        // Every later read fails too.
        assert!(a.take(b"x").is_err());
        assert!(a.violation().is_some());
    }

    #[test]
    fn more_bytes_than_asked_for_and_endless_lines_are_refused() {
        let a = Allowance::new(10);
        assert!(feed(&a, &[b"* OK 12345", b"67890\r\n"]).is_err());
        let a = Allowance::unlimited();
        let chunk = vec![b'"'; 1 << 20];
        let r = (0..5).try_for_each(|_| a.take(&chunk));
        assert!(r.unwrap_err().contains("line longer"));
        // `allow` opens a fresh budget from where the stream is.
        let a = Allowance::new(10);
        assert_eq!(a.take(b"* OK 1234\r"), Ok(()));
        a.allow(20);
        assert_eq!(a.take(b"\n* OK hi\r\n"), Ok(()));
    }
}
