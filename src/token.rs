//! Signed reply tokens: our outgoing Message-IDs carry an HMAC over (ticket, nonce, issue hour,
//! recipient), so a reply threads even when clients drop headers and nobody can forge a token for
//! a ticket (osTicket's signed Message-IDs, GitLab's reply keys). Pure apart from nonce generation.
//!
//! Format: `pd.TICKET.NONCE.HOUR.MAC@domain`, HOUR the issue time in hours since 1970 (hex), MAC
//! 128 bits of HMAC-SHA256 (hex). Tokens of the earlier format `pd.TICKET.NONCE.MAC` (80-bit MAC,
//! no issue time) still verify, with an unknown age. A previous key (after a rotation) verifies
//! until its configured end.

use crate::ticket::TicketId;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Local-part prefix of every Message-ID we generate.
pub const PREFIX: &str = "pd";

/// Signs and verifies tokens with the desk's secret.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
    /// The key before the last rotation, and until when (unix seconds) it still verifies.
    previous: Option<(Vec<u8>, i64)>,
    domain: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("domain", &self.domain).finish_non_exhaustive()
    }
}

/// A token that parsed and whose signature matched the given recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub ticket: TicketId,
    /// When it was issued (unix seconds, to the hour); `None` for the earlier format.
    pub issued: Option<i64>,
    /// Signed for a mail that others were copied on ([`Signer::shared_message_id`]): everyone
    /// on that mail holds it, so it proves less than a token only its recipient saw.
    pub shared: bool,
}

/// What a shared token is signed for in place of the bare address: no address contains a space.
const SHARED: &str = "copied to others: ";

impl Signer {
    pub fn new(key: &[u8], domain: &str) -> Self {
        Signer { key: key.to_vec(), previous: None, domain: domain.to_ascii_lowercase() }
    }

    /// After a rotation: `key` still verifies (never signs) until `until` (unix seconds).
    pub fn with_previous(mut self, key: &[u8], until: i64) -> Self {
        self.previous = Some((key.to_vec(), until));
        self
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn mac(key: &[u8], text: &str, bytes: usize) -> String {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(text.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..bytes])
    }

    fn sig(key: &[u8], t: &Parts<'_>, recipient: &str) -> String {
        let rcpt = recipient.to_ascii_lowercase();
        match t.hour {
            Some(h) => Self::mac(key, &format!("v2.{}.{}.{h}.{rcpt}", t.ticket, t.nonce), 16),
            None => Self::mac(key, &format!("{}.{}.{rcpt}", t.ticket, t.nonce), 10),
        }
    }

    /// A fresh Message-ID (without brackets) for mail about `ticket` sent to `recipient` alone
    /// at `now` (unix seconds).
    pub fn message_id(&self, ticket: TicketId, recipient: &str, now: i64) -> String {
        self.sign(ticket, recipient, now)
    }

    /// The same for mail to `recipient` with others copied: it verifies for `recipient` as
    /// [`Verified::shared`], so the copied people, who all see it, cannot pass for the
    /// recipient where that matters (an agent's commands, an approver's answer).
    pub fn shared_message_id(&self, ticket: TicketId, recipient: &str, now: i64) -> String {
        self.sign(ticket, &format!("{SHARED}{recipient}"), now)
    }

    fn sign(&self, ticket: TicketId, signed_for: &str, now: i64) -> String {
        let nonce: String = hex::encode(rand::random::<[u8; 6]>());
        let hour = format!("{:x}", now.max(0) / 3600);
        let parts = Parts { ticket, nonce: &nonce, hour: Some(&hour), sig: "" };
        format!("{PREFIX}.{ticket}.{nonce}.{hour}.{}@{}", Self::sig(&self.key, &parts, signed_for), self.domain)
    }

    /// The token a plus-addressed recipient carries (`support+pd.1.n.s@example.com`), in
    /// Message-ID form so [`verify`](Self::verify) can check it.
    pub fn token_from_address(&self, addr: &str) -> Option<String> {
        let (local, _) = addr.rsplit_once('@')?;
        let (_, tag) = local.split_once('+')?;
        let id = format!("{tag}@{}", self.domain);
        let ok = split(&id, &self.domain).is_some();
        ok.then_some(id)
    }

    /// `support+pd.1.n.s@example.com`: a Reply-To carrying the token of `message_id`.
    pub fn reply_address(&self, queue_address: &str, message_id: &str) -> Option<String> {
        let (local, dom) = queue_address.rsplit_once('@')?;
        let (token, _) = message_id.rsplit_once('@')?;
        Some(format!("{local}+{token}@{dom}"))
    }

    /// Whether `id` is one of ours in form (right prefix and domain), whoever it was sent to.
    pub fn is_ours(&self, id: &str) -> bool {
        split(id, &self.domain).is_some()
    }

    /// Verify `id` as a token held by `sender` at `now` (unix seconds): the ticket it names and
    /// when it was issued, if the signature matches the current key (or the previous one, before
    /// its end).
    pub fn verify(&self, id: &str, sender: &str, now: i64) -> Option<Verified> {
        let parts = split(id, &self.domain)?;
        let keys = || std::iter::once(self.key.as_slice()).chain(self.previous.iter().filter(|(_, until)| now < *until).map(|(k, _)| k.as_slice()));
        let signed_for = |who: &str| keys().any(|k| equal(&Self::sig(k, &parts, who), parts.sig));
        let shared = if signed_for(sender) {
            false
        } else if parts.hour.is_some() && signed_for(&format!("{SHARED}{sender}")) {
            true
        } else {
            return None;
        };
        let issued = parts.hour.and_then(|h| i64::from_str_radix(h, 16).ok()).map(|h| h * 3600);
        Some(Verified { ticket: parts.ticket, issued, shared })
    }

    /// The ticket an id of ours names, without checking who holds it (for audit only).
    pub fn ticket_of(&self, id: &str) -> Option<TicketId> {
        split(id, &self.domain).map(|p| p.ticket)
    }
}

/// Compare without stopping at the first difference.
fn equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The fields of a token: `hour` is `None` for the earlier four-field format.
struct Parts<'a> {
    ticket: TicketId,
    nonce: &'a str,
    hour: Option<&'a str>,
    sig: &'a str,
}

/// `pd.42.…@desk.example.com`: one of our ids with its nonce, hour and signature cut out, for
/// logs and reports; anything else unchanged. Whoever holds a token can write to the ticket as
/// its recipient, so tokens never reach logs or command output (issue 17.11).
pub fn redact(id: &str) -> String {
    let (local, dom) = id.rsplit_once('@').unwrap_or((id, ""));
    let parts: Vec<&str> = local.split('.').collect();
    match parts.as_slice() {
        [PREFIX, ticket, _, _] | [PREFIX, ticket, _, _, _] if ticket.bytes().all(|b| b.is_ascii_digit()) => format!("{PREFIX}.{ticket}.…@{dom}"),
        _ => id.to_string(),
    }
}

/// `text` with every id of ours in it redacted like [`redact`] (threading explanations), in
/// either token format (`pd.T.NONCE.MAC`, `pd.T.NONCE.HOUR.MAC`).
pub fn redact_in(text: &str) -> String {
    static ID: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = ID.get_or_init(|| regex::Regex::new(&format!(r"\b{PREFIX}\.(\d+)(?:\.[0-9A-Za-z]+){{2,3}}@")).expect("static regex"));
    re.replace_all(text, format!("{PREFIX}.$1.…@").as_str()).into_owned()
}

fn split<'a>(id: &'a str, domain: &str) -> Option<Parts<'a>> {
    let (local, dom) = id.rsplit_once('@')?;
    if !dom.eq_ignore_ascii_case(domain) {
        return None;
    }
    let fields: Vec<&str> = local.split('.').collect();
    let (ticket, nonce, hour, sig) = match fields.as_slice() {
        [PREFIX, t, n, s] => (t, n, None, s),
        [PREFIX, t, n, h, s] => (t, n, Some(*h), s),
        _ => return None,
    };
    Some(Parts { ticket: ticket.parse().ok()?, nonce, hour, sig })
}

/// Load the signing key: the configured secret, or a random one generated once and kept in
/// `data_dir/secret` (mode 0600) so tokens stay valid across restarts. The file is created
/// exclusively and atomically (racing `deliver`s agree on one key) and never replaced: a key
/// that cannot be read or is not a key is an error, because a new one would silently break
/// every token sent so far.
pub fn load_or_create_key(configured: Option<&str>, data_dir: &std::path::Path) -> std::io::Result<Vec<u8>> {
    if let Some(s) = configured {
        return Ok(s.as_bytes().to_vec());
    }
    let path = data_dir.join("secret");
    loop {
        match std::fs::read(&path) {
            Ok(bytes) => return key_from_file(&path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = hex::encode(rand::random::<[u8; 32]>());
                if crate::fsmode::create_new_private(&path, key.as_bytes())? {
                    tracing::info!(path = %path.display(), "created the signing key");
                    return Ok(key.into_bytes());
                }
                // another process created it first: read theirs
            }
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("cannot read the signing key {}: {e}", path.display()))),
        }
    }
}

fn key_from_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    match std::str::from_utf8(bytes).map(str::trim) {
        Ok(s) if s.len() >= 32 => Ok(s.as_bytes().to_vec()),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not a signing key (32 or more characters of text); restore it, or remove it to start with a new key and break every earlier reply token", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_even_by_racing_processes() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("var");
        let keys: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..12).map(|_| s.spawn(|| load_or_create_key(None, &data).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let on_disk = std::fs::read_to_string(data.join("secret")).unwrap();
        assert!(keys.iter().all(|k| k == on_disk.trim().as_bytes()), "every racer signs with the key on disk");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(data.join("secret")).unwrap().permissions().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(&data).unwrap().flatten().map(|e| e.file_name()).filter(|n| n != "secret").collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn an_unusable_key_file_is_an_error_and_stays_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        for content in [b"short".as_slice(), b"\xff\xfe not text at all, but long enough to be a key"] {
            std::fs::write(dir.path().join("secret"), content).unwrap();
            assert!(load_or_create_key(None, dir.path()).is_err());
            assert_eq!(std::fs::read(dir.path().join("secret")).unwrap(), content, "never replaced");
        }
    }

    #[test]
    fn redaction_keeps_ticket_and_domain_only() {
        let s = Signer::new(b"0123456789abcdef0123", "desk.example.com");
        let id = s.message_id(42, "alice@example.org", 1_764_000_000);
        let (_, rest) = id.split_once(".42.").unwrap();
        let secret = rest.split('@').next().unwrap();
        assert_eq!(redact(&id), "pd.42.…@desk.example.com");
        assert!(!redact(&id).contains(secret));
        assert_eq!(redact("CAF00@mail.gmail.com"), "CAF00@mail.gmail.com");
        let text = format!("follow-up on PD-42 (signed reply token <{id}> verified)");
        assert_eq!(redact_in(&text), "follow-up on PD-42 (signed reply token <pd.42.…@desk.example.com> verified)");
    }

    #[test]
    fn tokens_verify_only_for_their_recipient_and_key() {
        const NOW: i64 = 1_796_000_000;
        let s = Signer::new(b"0123456789abcdef0123", "desk.example.com");
        let id = s.message_id(42, "Alice@Example.org", NOW);
        assert!(s.is_ours(&id));
        let issued = Some(NOW / 3600 * 3600);
        assert_eq!(s.verify(&id, "alice@example.org", NOW), Some(Verified { ticket: 42, issued, shared: false }));
        assert_eq!(s.verify(&id, "mallory@example.org", NOW), None);
        let other = Signer::new(b"another key entirely!", "desk.example.com");
        assert_eq!(other.verify(&id, "alice@example.org", NOW), None);
        // mail that others were copied on: verifies for its recipient, as shared, and no one else
        let copied = s.shared_message_id(42, "Alice@Example.org", NOW);
        assert_eq!(s.verify(&copied, "alice@example.org", NOW), Some(Verified { ticket: 42, issued, shared: true }));
        assert_eq!(s.verify(&copied, "bob@example.org", NOW), None);
        // a forged ticket number or issue time breaks the signature
        let forged = id.replacen("pd.42.", "pd.43.", 1);
        assert_eq!(s.verify(&forged, "alice@example.org", NOW), None);
        let (head, sig) = id.split_once('@').unwrap().0.rsplit_once('.').unwrap();
        let (head, _hour) = head.rsplit_once('.').unwrap();
        assert_eq!(s.verify(&format!("{head}.{:x}.{sig}@desk.example.com", NOW / 3600 + 1000), "alice@example.org", NOW), None);
        assert_eq!(s.ticket_of(&id), Some(42));
        assert!(!s.is_ours("pd.42.x.y@elsewhere.example"));
        let reply = s.reply_address("support@example.com", &id).unwrap();
        assert!(reply.starts_with("support+pd.42."), "{reply}");
        assert_eq!(s.token_from_address(&reply).as_deref(), Some(id.as_str()));
        assert_eq!(s.token_from_address("support+other@example.com"), None);
    }

    #[test]
    fn full_length_mac_legacy_tokens_and_rotation() {
        const NOW: i64 = 1_796_000_000;
        let old = Signer::new(b"the key before the rotation", "desk.example.com");
        let id = old.message_id(7, "alice@example.org", NOW);
        let sig = id.split_once('@').unwrap().0.rsplit('.').next().unwrap();
        assert!(sig.len() * 4 >= 128, "a MAC of at least 128 bits: {sig}");
        // A token of the earlier format (80-bit MAC, no issue time) still verifies; age unknown.
        let legacy = format!("pd.7.abcdef012345.{}@desk.example.com", Signer::mac(b"the key before the rotation", "7.abcdef012345.alice@example.org", 10));
        assert_eq!(old.verify(&legacy, "alice@example.org", NOW), Some(Verified { ticket: 7, issued: None, shared: false }));
        // Rotation: the new key signs, the previous one verifies until its end.
        let new = Signer::new(b"the key after the rotation!", "desk.example.com").with_previous(b"the key before the rotation", NOW + 86400);
        assert_eq!(new.verify(&id, "alice@example.org", NOW).map(|v| v.ticket), Some(7));
        assert_eq!(new.verify(&legacy, "alice@example.org", NOW).map(|v| v.ticket), Some(7));
        assert_eq!(new.verify(&id, "alice@example.org", NOW + 86400), None, "the grace period is over");
        assert_eq!(old.verify(&new.message_id(7, "alice@example.org", NOW), "alice@example.org", NOW), None, "the new key signs");
    }
}
