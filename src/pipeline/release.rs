//! Releasing a quarantined message: it runs through the pipeline again (after an admin fixed a
//! rule, or once a flood has passed), in the same transaction that takes it out of quarantine.

use super::{Delivery, IngestError, Now, Pipeline, Prepared, Report, dedupe_key, one, prepare};
use crate::desk::Desk;
use crate::store::Quarantined;

/// Why a quarantined message cannot be released as asked.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("message {0} is our own mail that came back (a loop); release it with --force if you are sure")]
    OwnMail(i64),
    #[error("message {0} was over the size limit and is already on its ticket as a header-only article; read it with `postdesk quarantine show {0} --raw`, then delete it")]
    TooLarge(i64),
    #[error("message {0} is no longer in quarantine (released or deleted meanwhile)")]
    Gone(i64),
    #[error("mailbox `{1}` of message {0} is no longer configured")]
    NoMailbox(i64, String),
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

impl Pipeline {
    /// Run quarantined message `q` (`raw`, its bytes) through the pipeline again. Its earlier
    /// refusal (the dedupe record without an article) is forgotten first, so it is not taken for
    /// a duplicate of itself; our own looped mail needs `force`.
    pub fn release(&self, desk: &Desk, q: &Quarantined, raw: &[u8], force: bool) -> Result<Report, ReleaseError> {
        match q.reason.as_str() {
            "own_mail" if !force => return Err(ReleaseError::OwnMail(q.id)),
            "too_large" => return Err(ReleaseError::TooLarge(q.id)),
            _ => {}
        }
        if !desk.config.mailboxes.contains_key(&q.mailbox) {
            return Err(ReleaseError::NoMailbox(q.id, q.mailbox.clone()));
        }
        let now = Now::at(self.clock.now());
        let d = Delivery { mailbox: &q.mailbox, raw, cursor: None, truncated_from: None };
        let mut prepared = prepare(desk, d);
        if let Prepared::Mail(_, verdict) = &mut prepared
            && force
            && verdict.class == crate::guard::Class::OwnLoop
        {
            // The admin says it is not a loop: handle it as a person's mail (still no automatic
            // answer: it carries our own loop headers).
            verdict.class = crate::guard::Class::Human;
            verdict.auto_reply_allowed = false;
            verdict.reasons.push("released from quarantine with --force".into());
        }
        let mut tx = self.store.begin().map_err(IngestError::from)?;
        if let Prepared::Mail(p, _) = &prepared {
            tx.forget_refusal(&dedupe_key(p)).map_err(IngestError::from)?;
        }
        if !tx.delete_quarantined(q.id).map_err(IngestError::from)? {
            // Released or deleted by someone else meanwhile: nothing to do (rolled back).
            return Err(ReleaseError::Gone(q.id));
        }
        let report = one(&mut tx, desk, d, prepared, true, &now)?;
        tx.commit().map_err(IngestError::from)?;
        if !report.mails.is_empty() {
            self.outbox_wake.notify_one();
        }
        Ok(report)
    }
}
