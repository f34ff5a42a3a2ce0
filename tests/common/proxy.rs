//! A small fault-injecting TCP proxy for the fault tests: listens on 127.0.0.1 (a free port),
//! forwards every connection to a server on 127.0.0.1, and on demand cuts every live connection
//! (now, or after N more bytes from the server), refuses new ones (accept, then close at once),
//! and counts connection attempts with their times so a test can tell backoff from a hot loop.
//! It can also stall (stop forwarding while keeping the connections open, like a hung server or
//! a dead network path), watches the client's commands for IMAP `IDLE`/`DONE` so a test can cut
//! exactly while the client idles, and tracks the last traffic (for TLS, where it cannot read the
//! commands). Loopback only; runs on its own small tokio runtime.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Shared {
    upstream: u16,
    /// Accepted connections, with their times.
    attempts: Mutex<Vec<Instant>>,
    refuse: AtomicBool,
    /// Close with RST instead of FIN when cutting.
    reset: AtomicBool,
    /// Bumped to cut every live connection.
    epoch: Option<tokio::sync::watch::Sender<u64>>,
    /// Bytes (server → client, over all connections) still allowed before everything is cut
    /// (or stalled, when `stall_at_budget`).
    budget: Mutex<Option<u64>>,
    stall_at_budget: AtomicBool,
    stalled: AtomicBool,
    /// When data last went through, as milliseconds since `born`.
    last_traffic_ms: AtomicU64,
    born: Option<Instant>,
    cuts: AtomicUsize,
    live: AtomicUsize,
    down_bytes: AtomicU64,
    next_id: AtomicU64,
    /// Connection id → the client's last command was IDLE (and no DONE yet).
    idling: Mutex<HashMap<u64, bool>>,
}

/// The proxy; stops (and drops every connection) when dropped.
pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// Forward 127.0.0.1:`port` (returned) to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16) -> FaultProxy {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("fault-proxy").enable_all().build().unwrap();
        let (tx, _) = tokio::sync::watch::channel(0u64);
        let shared = Arc::new(Shared { upstream, epoch: Some(tx), born: Some(Instant::now()), ..Default::default() });
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let sh = shared.clone();
        rt.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                tokio::spawn(serve(client, sh.clone()));
            }
        });
        FaultProxy { port, shared, rt: Some(rt) }
    }

    /// Cut every live connection now.
    pub fn cut_all(&self) {
        self.shared.cuts.fetch_add(1, Ordering::SeqCst);
        self.shared.epoch.as_ref().unwrap().send_modify(|e| *e += 1);
    }

    /// Cut every live connection once `n` more bytes went from the server to the client (the
    /// chunk that crosses the limit is forwarded only up to it, so a response is cut in half).
    pub fn cut_after(&self, n: u64) {
        self.shared.stall_at_budget.store(false, Ordering::SeqCst);
        *self.shared.budget.lock().unwrap() = Some(n);
    }

    /// Like `cut_after`, but then stall: forward nothing more, in either direction, on any
    /// connection (they stay open) until `unstall`.
    pub fn stall_after(&self, n: u64) {
        self.shared.stall_at_budget.store(true, Ordering::SeqCst);
        *self.shared.budget.lock().unwrap() = Some(n);
    }

    pub fn stalled(&self) -> bool {
        self.shared.stalled.load(Ordering::SeqCst)
    }

    pub fn unstall(&self) {
        self.shared.stalled.store(false, Ordering::SeqCst);
    }

    /// How long no data went through in either direction.
    pub fn quiet_for(&self) -> Duration {
        let sh = &self.shared;
        let now = sh.born.unwrap().elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(sh.last_traffic_ms.load(Ordering::SeqCst)))
    }

    /// Accept new connections and close them at once (the server "is down").
    pub fn refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
    }

    /// Cut with RST (abortive close) instead of FIN.
    pub fn reset_on_cut(&self, on: bool) {
        self.shared.reset.store(on, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn attempts(&self) -> usize {
        self.shared.attempts.lock().unwrap().len()
    }

    /// Times of the connections accepted so far.
    pub fn attempt_times(&self) -> Vec<Instant> {
        self.shared.attempts.lock().unwrap().clone()
    }

    /// Cuts done so far (by `cut_all` or by a byte budget).
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    pub fn live(&self) -> usize {
        self.shared.live.load(Ordering::SeqCst)
    }

    /// Bytes forwarded from the server to clients.
    pub fn down_bytes(&self) -> u64 {
        self.shared.down_bytes.load(Ordering::SeqCst)
    }

    /// Live connections whose client is in IMAP IDLE.
    pub fn idling(&self) -> usize {
        self.shared.idling.lock().unwrap().values().filter(|v| **v).count()
    }

    /// Wait (bounded) until `f` holds.
    pub fn wait(&self, timeout: Duration, what: &str, f: impl Fn(&FaultProxy) -> bool) {
        let start = Instant::now();
        while !f(self) {
            assert!(start.elapsed() < timeout, "proxy: timed out after {timeout:?} waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// While stalled, forward nothing.
async fn hold(sh: &Shared) {
    while sh.stalled.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn traffic(sh: &Shared) {
    sh.last_traffic_ms.store(sh.born.unwrap().elapsed().as_millis() as u64, Ordering::SeqCst);
}

async fn serve(client: TcpStream, sh: Arc<Shared>) {
    sh.attempts.lock().unwrap().push(Instant::now());
    if sh.refuse.load(Ordering::SeqCst) {
        return; // dropped: the client sees the connection closed before any greeting
    }
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", sh.upstream)).await else { return };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let id = sh.next_id.fetch_add(1, Ordering::SeqCst);
    sh.live.fetch_add(1, Ordering::SeqCst);
    let mut epoch = sh.epoch.as_ref().unwrap().subscribe();
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    {
    let up = async {
        // client → server: forward, and note IDLE / DONE
        let mut buf = vec![0u8; 16 * 1024];
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            hold(&sh).await;
            traffic(&sh);
            tail.extend_from_slice(&buf[..n]);
            if let Some(pos) = tail.iter().rposition(|b| *b == b'\n') {
                let lines = String::from_utf8_lossy(&tail[..=pos]).to_ascii_uppercase();
                for l in lines.lines() {
                    let l = l.trim_end();
                    if l.ends_with(" IDLE") {
                        sh.idling.lock().unwrap().insert(id, true);
                    } else if !l.is_empty() {
                        sh.idling.lock().unwrap().insert(id, false);
                    }
                }
                tail.drain(..=pos);
            }
            if uw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async {
        // server → client: forward within the byte budget
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match ur.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            hold(&sh).await;
            traffic(&sh);
            let mut allowed = n;
            let mut cut = false;
            {
                let mut b = sh.budget.lock().unwrap();
                if let Some(left) = *b {
                    if (n as u64) >= left {
                        allowed = left as usize;
                        cut = true;
                        *b = None;
                    } else {
                        *b = Some(left - n as u64);
                    }
                }
            }
            if allowed > 0 && cw.write_all(&buf[..allowed]).await.is_err() {
                return;
            }
            sh.down_bytes.fetch_add(allowed as u64, Ordering::SeqCst);
            if cut && sh.stall_at_budget.load(Ordering::SeqCst) {
                sh.stalled.store(true, Ordering::SeqCst);
            } else if cut {
                sh.cuts.fetch_add(1, Ordering::SeqCst);
                sh.epoch.as_ref().unwrap().send_modify(|e| *e += 1);
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = epoch.changed() => {}
    }
    }
    let reset = sh.reset.load(Ordering::SeqCst);
    if let (Ok(c), Ok(u)) = (cr.reunite(cw), ur.reunite(uw)) {
        if reset {
            let _ = c.set_zero_linger();
        }
        drop(c);
        drop(u);
    }
    sh.idling.lock().unwrap().remove(&id);
    sh.live.fetch_sub(1, Ordering::SeqCst);
}
