//! A fake OAuth2 provider for tests (not product code): a tiny HTTP/1.1 server on 127.0.0.1 with
//! `/token` (RFC 6749 refresh_token grant and RFC 8628 device_code grant), `/device/code`
//! (RFC 8628 §3.1) and `/introspect` (RFC 7662, which Dovecot's oauth2 passdb asks). Access
//! tokens live a few seconds, refresh tokens rotate on each use, and `revoke` makes an
//! account's refresh tokens answer `invalid_grant`. Every request is counted in `log`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    /// refresh token → (account, grant it descends from)
    refresh: HashMap<String, (String, u64)>,
    /// access token → (account, expiry)
    access: HashMap<String, (String, Instant)>,
    /// device code → (user code, approved account)
    devices: HashMap<String, (String, Option<String>)>,
    next: u64,
    log: Vec<String>,
}

pub struct Provider {
    pub port: u16,
    pub lifetime: Duration,
    pub rotate: bool,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl Provider {
    /// Start serving; access tokens live `lifetime`.
    pub fn start(lifetime: Duration, rotate: bool) -> Arc<Provider> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let p = Arc::new(Provider { port, lifetime, rotate, state: Arc::new((Mutex::new(State::default()), Condvar::new())) });
        let server = p.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = server.clone();
                std::thread::spawn(move || {
                    let _ = s.serve(conn);
                });
            }
        });
        p
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A refresh token for `account`, as if it had logged in before, and the grant's id.
    pub fn grant(&self, account: &str) -> (String, u64) {
        let mut st = self.lock();
        st.next += 1;
        let (t, grant) = (format!("rt-{}", st.next), st.next);
        st.refresh.insert(t.clone(), (account.to_string(), grant));
        (t, grant)
    }

    /// An access token for `account` straight away (as if refreshed elsewhere).
    pub fn access_token(&self, account: &str) -> String {
        let mut st = self.lock();
        st.next += 1;
        let t = format!("at-{}-{:x}", st.next, rand_u64());
        st.access.insert(t.clone(), (account.to_string(), Instant::now() + self.lifetime));
        t
    }

    /// Revoke a grant: its refresh token, however often rotated, answers `invalid_grant` (the
    /// user withdrew consent for that app login). Access tokens already issued stay valid until
    /// they expire, as at real providers.
    pub fn revoke(&self, grant: u64) {
        self.lock().refresh.retain(|_, (_, g)| *g != grant);
    }

    /// The request log: `refresh ok ACCOUNT`, `refresh invalid_grant`, `introspect active ACCOUNT`,
    /// `introspect inactive`, `device code`, `device pending`, `device approved ACCOUNT`.
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.lock().log.iter().filter(|l| l.starts_with(prefix)).count()
    }

    /// Wait for a device authorization request and approve it for `account` (the user entering
    /// the code). Returns the user code shown.
    pub fn approve_next(&self, account: &str, timeout: Duration) -> String {
        let (m, cv) = &*self.state;
        let mut st = m.lock().unwrap();
        let start = Instant::now();
        loop {
            if let Some((_, (code, who))) = st.devices.iter_mut().find(|(_, (_, who))| who.is_none()) {
                *who = Some(account.to_string());
                return code.clone();
            }
            assert!(start.elapsed() < timeout, "no device authorization request came");
            st = cv.wait_timeout(st, Duration::from_millis(100)).unwrap().0;
        }
    }

    fn serve(&self, conn: TcpStream) -> std::io::Result<()> {
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut r = BufReader::new(conn.try_clone()?);
        let mut line = String::new();
        r.read_line(&mut line)?;
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        let form = parse_form(&String::from_utf8_lossy(&body));
        let (status, json) = self.answer(&path, &form);
        let mut w = conn;
        write!(w, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}", json.len())?;
        w.flush()
    }

    fn answer(&self, path: &str, form: &HashMap<String, String>) -> (&'static str, String) {
        let mut st = self.lock();
        let f = |k: &str| form.get(k).cloned().unwrap_or_default();
        match path {
            "/introspect" => {
                // Dovecot 2.3 reads a 4xx as fields: bad tokens get 200 {"active": false}.
                let now = Instant::now();
                match st.access.get(&f("token")).cloned() {
                    Some((account, exp)) if exp > now => {
                        st.log.push(format!("introspect active {account}"));
                        ("200 OK", format!(r#"{{"active": true, "username": "{account}"}}"#))
                    }
                    _ => {
                        st.log.push("introspect inactive".into());
                        ("200 OK", r#"{"active": false}"#.into())
                    }
                }
            }
            "/device/code" => {
                st.next += 1;
                let (device, user) = (format!("dc-{}", st.next), format!("WDJB-{:04}", st.next));
                st.devices.insert(device.clone(), (user.clone(), None));
                st.log.push("device code".into());
                self.state.1.notify_all();
                let uri = self.url("/device");
                ("200 OK", format!(r#"{{"device_code": "{device}", "user_code": "{user}", "verification_uri": "{uri}", "expires_in": 600, "interval": 1}}"#))
            }
            "/token" => match f("grant_type").as_str() {
                "refresh_token" => match st.refresh.get(&f("refresh_token")).cloned() {
                    Some((account, grant)) => {
                        st.log.push(format!("refresh ok {account}"));
                        if self.rotate {
                            st.refresh.remove(&f("refresh_token"));
                        }
                        self.issue(&mut st, &account, self.rotate.then_some(grant))
                    }
                    None => {
                        st.log.push("refresh invalid_grant".into());
                        ("400 Bad Request", r#"{"error": "invalid_grant", "error_description": "Token has been expired or revoked."}"#.into())
                    }
                },
                "urn:ietf:params:oauth:grant-type:device_code" => match st.devices.get(&f("device_code")).cloned() {
                    Some((_, Some(account))) => {
                        st.devices.remove(&f("device_code"));
                        st.log.push(format!("device approved {account}"));
                        st.next += 1;
                        let grant = st.next;
                        self.issue(&mut st, &account, Some(grant))
                    }
                    Some((_, None)) => {
                        st.log.push("device pending".into());
                        ("400 Bad Request", r#"{"error": "authorization_pending"}"#.into())
                    }
                    None => ("400 Bad Request", r#"{"error": "expired_token"}"#.into()),
                },
                _ => ("400 Bad Request", r#"{"error": "unsupported_grant_type"}"#.into()),
            },
            _ => ("404 Not Found", r#"{"error": "not_found"}"#.into()),
        }
    }

    /// An access token, and a new refresh token of `grant` if given.
    fn issue(&self, st: &mut State, account: &str, grant: Option<u64>) -> (&'static str, String) {
        st.next += 1;
        let access = format!("at-{}-{:x}", st.next, rand_u64());
        st.access.insert(access.clone(), (account.to_string(), Instant::now() + self.lifetime));
        let refresh = if let Some(grant) = grant {
            st.next += 1;
            let r = format!("rt-{}", st.next);
            st.refresh.insert(r.clone(), (account.to_string(), grant));
            format!(r#", "refresh_token": "{r}""#)
        } else {
            String::new()
        };
        ("200 OK", format!(r#"{{"access_token": "{access}", "token_type": "Bearer", "expires_in": {}{refresh}}}"#, self.lifetime.as_secs()))
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

fn parse_form(body: &str) -> HashMap<String, String> {
    body.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
