//! Signed reply tokens: our outgoing Message-IDs carry an HMAC over (ticket, nonce, recipient),
//! so a reply threads even when clients drop headers and nobody can forge a token for a ticket
//! (osTicket's signed Message-IDs, GitLab's reply keys). Pure apart from nonce generation.

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
}

impl Signer {
    pub fn new(key: &[u8], domain: &str) -> Self {
        Signer { key: key.to_vec(), domain: domain.to_ascii_lowercase() }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn sig(&self, ticket: TicketId, nonce: &str, recipient: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("{ticket}.{nonce}.{}", recipient.to_ascii_lowercase()).as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..10])
    }

    /// A fresh Message-ID (without brackets) for mail about `ticket` sent to `recipient`.
    pub fn message_id(&self, ticket: TicketId, recipient: &str) -> String {
        let nonce: String = hex::encode(rand::random::<[u8; 6]>());
        format!("{PREFIX}.{ticket}.{nonce}.{}@{}", self.sig(ticket, &nonce, recipient), self.domain)
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

    /// Verify `id` as a token held by `sender`: the ticket it names, if the signature matches.
    pub fn verify(&self, id: &str, sender: &str) -> Option<Verified> {
        let (ticket, nonce, sig) = split(id, &self.domain)?;
        let expected = self.sig(ticket, nonce, sender);
        // constant-time enough for 20 hex chars: compare all bytes
        let ok = expected.len() == sig.len() && expected.bytes().zip(sig.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        ok.then_some(Verified { ticket })
    }

    /// The ticket an id of ours names, without checking who holds it (for audit only).
    pub fn ticket_of(&self, id: &str) -> Option<TicketId> {
        split(id, &self.domain).map(|(t, _, _)| t)
    }
}

fn split<'a>(id: &'a str, domain: &str) -> Option<(TicketId, &'a str, &'a str)> {
    let (local, dom) = id.rsplit_once('@')?;
    if !dom.eq_ignore_ascii_case(domain) {
        return None;
    }
    let mut parts = local.split('.');
    if parts.next()? != PREFIX {
        return None;
    }
    let ticket = parts.next()?.parse().ok()?;
    let nonce = parts.next()?;
    let sig = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    Some((ticket, nonce, sig))
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
    fn tokens_verify_only_for_their_recipient_and_key() {
        let s = Signer::new(b"0123456789abcdef0123", "desk.example.com");
        let id = s.message_id(42, "Alice@Example.org");
        assert!(s.is_ours(&id));
        assert_eq!(s.verify(&id, "alice@example.org"), Some(Verified { ticket: 42 }));
        assert_eq!(s.verify(&id, "mallory@example.org"), None);
        let other = Signer::new(b"another key entirely!", "desk.example.com");
        assert_eq!(other.verify(&id, "alice@example.org"), None);
        // a forged ticket number breaks the signature
        let forged = id.replacen("pd.42.", "pd.43.", 1);
        assert_eq!(s.verify(&forged, "alice@example.org"), None);
        assert_eq!(s.ticket_of(&id), Some(42));
        assert!(!s.is_ours("pd.42.x.y@elsewhere.example"));
        let reply = s.reply_address("support@example.com", &id).unwrap();
        assert!(reply.starts_with("support+pd.42."), "{reply}");
        assert_eq!(s.token_from_address(&reply).as_deref(), Some(id.as_str()));
        assert_eq!(s.token_from_address("support+other@example.com"), None);
    }
}
