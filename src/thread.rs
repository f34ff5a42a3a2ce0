//! Thread: decides which ticket an inbound message belongs to. Order (first match wins):
//! 1. a signed reply token of ours in In-Reply-To/References that verifies for the sender;
//! 2. any Message-ID we stored or sent named in In-Reply-To/References, only when the sender
//!    already takes part in that ticket (Message-IDs are not secret: they travel in every copy);
//! 3. our subject tag, only when the sender already takes part in that ticket;
//! 4. otherwise a new ticket (linked as possibly related when a stranger named a ticket by a
//!    Message-ID or a tag: the stranger joins nothing and learns nothing).
//!
//! Pure: history comes in through the [`History`] trait.

use crate::reference::RefFormat;
use crate::store::StoreError;
use crate::ticket::{Status, TicketId};
use crate::token::Signer;
use serde::Serialize;

/// What threading needs to know about the past.
pub trait History {
    /// The ticket that an inbound or outbound Message-ID was recorded on.
    fn ticket_by_message_id(&mut self, id: &str) -> Result<Option<TicketId>, StoreError>;
    /// Status and participants (requester included, lower-case) of a ticket, if it exists.
    fn ticket_summary(&mut self, id: TicketId) -> Result<Option<(Status, Vec<String>)>, StoreError>;
}

/// How a follow-up was matched to its ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Via {
    /// A signed token of ours, verified for this sender; `issued` (unix seconds) when it says.
    Token {
        message_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        issued: Option<i64>,
        /// The mail it came with was copied to others too (`token::Verified::shared`).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        shared: bool,
    },
    /// A Message-ID we know, named in In-Reply-To/References by a participant.
    MessageId { message_id: String },
    /// Our subject tag, from a participant of the ticket.
    SubjectTag,
}

/// The threading decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    FollowUp {
        ticket: TicketId,
        #[serde(flatten)]
        via: Via,
    },
    New {
        /// A ticket a non-participant named (tag or Message-ID): linked, never joined.
        possibly_related: Option<TicketId>,
    },
}

impl Decision {
    pub fn ticket(&self) -> Option<TicketId> {
        match self {
            Decision::FollowUp { ticket, .. } => Some(*ticket),
            Decision::New { .. } => None,
        }
    }

    /// One line for logs and the dry run.
    pub fn describe(&self, refs: &RefFormat) -> String {
        match self {
            Decision::FollowUp { ticket, via: Via::Token { message_id, .. } } => {
                format!("follow-up on {} (signed reply token <{message_id}> verified for the sender)", refs.format(*ticket))
            }
            Decision::FollowUp { ticket, via: Via::MessageId { message_id } } => {
                format!("follow-up on {} (In-Reply-To/References names <{message_id}>)", refs.format(*ticket))
            }
            Decision::FollowUp { ticket, via: Via::SubjectTag } => {
                format!("follow-up on {} (subject tag from a participant)", refs.format(*ticket))
            }
            Decision::New { possibly_related: Some(t) } => {
                format!("new ticket (the mail names {} but the sender is not a participant: linked, not joined)", refs.format(*t))
            }
            Decision::New { possibly_related: None } => "new ticket".to_string(),
        }
    }
}

/// Decide the ticket for a message from `sender` with the given ancestors and subject.
/// `tokens` are extra token candidates (from plus-addressed recipients, in Message-ID form);
/// `now` (unix seconds) decides whether a previous signing key still counts.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    sender: &str,
    tokens: &[String],
    ancestors: &[&str],
    subject: &str,
    history: &mut dyn History,
    signer: &Signer,
    refs: &RefFormat,
    now: i64,
) -> Result<Decision, StoreError> {
    // 1. Signed token verified for this sender.
    for id in tokens.iter().map(String::as_str).chain(ancestors.iter().copied()) {
        if let Some(v) = signer.verify(id, sender, now)
            && history.ticket_summary(v.ticket)?.is_some()
        {
            return Ok(Decision::FollowUp { ticket: v.ticket, via: Via::Token { message_id: id.to_string(), issued: v.issued, shared: v.shared } });
        }
    }
    // 2. Any Message-ID we recorded, from a participant of its ticket.
    let is_participant = |history: &mut dyn History, ticket: TicketId| -> Result<Option<bool>, StoreError> {
        Ok(history.ticket_summary(ticket)?.map(|(_, people)| !sender.is_empty() && people.iter().any(|p| p == sender)))
    };
    let mut named = None;
    for id in ancestors {
        if let Some(ticket) = history.ticket_by_message_id(id)? {
            match is_participant(history, ticket)? {
                Some(true) => return Ok(Decision::FollowUp { ticket, via: Via::MessageId { message_id: id.to_string() } }),
                Some(false) => named = named.or(Some(ticket)),
                None => {}
            }
        }
    }
    // 3. Subject tag, participants only (osTicket's rule: the tag alone proves nothing).
    if let Some(ticket) = refs.find(subject) {
        match is_participant(history, ticket)? {
            Some(true) => return Ok(Decision::FollowUp { ticket, via: Via::SubjectTag }),
            Some(false) => named = named.or(Some(ticket)),
            None => {}
        }
    }
    Ok(Decision::New { possibly_related: named })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Fake {
        ids: HashMap<String, TicketId>,
        tickets: HashMap<TicketId, Vec<String>>,
    }

    impl History for Fake {
        fn ticket_by_message_id(&mut self, id: &str) -> Result<Option<TicketId>, StoreError> {
            Ok(self.ids.get(id).copied())
        }
        fn ticket_summary(&mut self, id: TicketId) -> Result<Option<(Status, Vec<String>)>, StoreError> {
            Ok(self.tickets.get(&id).map(|p| (Status::Open, p.clone())))
        }
    }

    fn setup() -> (Fake, Signer, RefFormat) {
        let mut f = Fake::default();
        f.tickets.insert(7, vec!["alice@example.org".into()]);
        f.ids.insert("orig@example.org".into(), 7);
        (f, Signer::new(b"test key test key test key", "desk.example.com"), RefFormat::new("PD-"))
    }

    #[test]
    fn threading_order() {
        let (mut h, s, r) = setup();
        let token = s.message_id(7, "alice@example.org", 0);
        let d = decide("alice@example.org", &[], &[&token], "whatever", &mut h, &s, &r, 0).unwrap();
        assert!(matches!(d, Decision::FollowUp { ticket: 7, via: Via::Token { .. } }));

        let d = decide("alice@example.org", &[], &["orig@example.org"], "x", &mut h, &s, &r, 0).unwrap();
        assert!(matches!(d, Decision::FollowUp { ticket: 7, via: Via::MessageId { .. } }));

        let d = decide("alice@example.org", &[], &[], "RE: [PD-7] printer", &mut h, &s, &r, 0).unwrap();
        assert_eq!(d, Decision::FollowUp { ticket: 7, via: Via::SubjectTag });
    }

    #[test]
    fn strangers_with_a_tag_get_a_new_linked_ticket() {
        let (mut h, s, r) = setup();
        let d = decide("mallory@example.net", &[], &[], "Re: [PD-7] printer", &mut h, &s, &r, 0).unwrap();
        assert_eq!(d, Decision::New { possibly_related: Some(7) });
        // a token issued to alice does not verify for mallory, and is not a known id
        let token = s.message_id(7, "alice@example.org", 0);
        let d = decide("mallory@example.net", &[], &[&token], "hi", &mut h, &s, &r, 0).unwrap();
        assert_eq!(d, Decision::New { possibly_related: None });
        // a Message-ID of the ticket proves nothing either: copies of it travel with every mail
        let d = decide("mallory@example.net", &[], &["orig@example.org"], "hi", &mut h, &s, &r, 0).unwrap();
        assert_eq!(d, Decision::New { possibly_related: Some(7) });
        // unknown ticket numbers are just text
        let d = decide("alice@example.org", &[], &[], "[PD-999] x", &mut h, &s, &r, 0).unwrap();
        assert_eq!(d, Decision::New { possibly_related: None });
    }

    #[test]
    fn plus_address_tokens_thread_without_headers() {
        let (mut h, s, r) = setup();
        let token = s.message_id(7, "alice@example.org", 0);
        let d = decide("alice@example.org", std::slice::from_ref(&token), &[], "no tag", &mut h, &s, &r, 0).unwrap();
        assert!(matches!(d, Decision::FollowUp { ticket: 7, via: Via::Token { .. } }));
        let d = decide("mallory@example.net", &[token], &[], "no tag", &mut h, &s, &r, 0).unwrap();
        assert_eq!(d, Decision::New { possibly_related: None });
    }
}
