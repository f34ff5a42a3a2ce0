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

/// `pd.42.…@desk.example.com`: one of our ids with its nonce and signature cut out, for logs and
/// reports; anything else unchanged. Whoever holds a token can write to the ticket as its
/// recipient, so tokens never reach logs or command output (issue 17.11).
pub fn redact(id: &str) -> String {
    let (local, dom) = id.rsplit_once('@').unwrap_or((id, ""));
    let parts: Vec<&str> = local.split('.').collect();
    match parts.as_slice() {
        [PREFIX, ticket, _, _] if ticket.bytes().all(|b| b.is_ascii_digit()) => format!("{PREFIX}.{ticket}.…@{dom}"),
        _ => id.to_string(),
    }
}

/// `text` with every id of ours in it redacted like [`redact`] (threading explanations).
pub fn redact_in(text: &str) -> String {
    static ID: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = ID.get_or_init(|| regex::Regex::new(&format!(r"\b{PREFIX}\.(\d+)\.[0-9A-Za-z]+\.[0-9A-Za-z]+@")).expect("static regex"));
    re.replace_all(text, format!("{PREFIX}.$1.…@").as_str()).into_owned()
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
/// `data_dir/secret` (mode 0600) so tokens stay valid across restarts.
pub fn load_or_create_key(configured: Option<&str>, data_dir: &std::path::Path) -> std::io::Result<Vec<u8>> {
    if let Some(s) = configured {
        return Ok(s.as_bytes().to_vec());
    }
    let path = data_dir.join("secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => Ok(s.trim().as_bytes().to_vec()),
        _ => {
            std::fs::create_dir_all(data_dir)?;
            let key = hex::encode(rand::random::<[u8; 32]>());
            let tmp = data_dir.join("secret.tmp");
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                }
                f.write_all(key.as_bytes())?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
            Ok(key.into_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_ticket_and_domain_only() {
        let s = Signer::new(b"0123456789abcdef0123", "desk.example.com");
        let id = s.message_id(42, "alice@example.org");
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
