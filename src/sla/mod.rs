//! Service levels: business calendars and the arithmetic of SLA targets (first response, next
//! response, resolution) — when each is due, when to warn, how pending time pauses the clock.
//! Pure: the pipeline and the timer hold the targets in the store and call in here.

pub mod calendar;

use crate::config::WarnAt;
use calendar::Calendar;
use serde::Serialize;

/// Which promise a target tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    FirstResponse,
    NextResponse,
    Resolution,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::FirstResponse, Kind::NextResponse, Kind::Resolution];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::FirstResponse => "first_response",
            Kind::NextResponse => "next_response",
            Kind::Resolution => "resolution",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Human wording for notifications.
    pub fn label(self) -> &'static str {
        match self {
            Kind::FirstResponse => "first response",
            Kind::NextResponse => "next response",
            Kind::Resolution => "resolution",
        }
    }
}

/// One SLA target of a ticket (times in Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub kind: Kind,
    pub started_at: i64,
    pub target_secs: i64,
    /// Business seconds spent paused (pending) so far.
    pub paused_secs: i64,
    pub paused_since: Option<i64>,
    pub due_at: Option<i64>,
    pub warn_at: Option<i64>,
    pub warned_at: Option<i64>,
    pub breached_at: Option<i64>,
    pub met_at: Option<i64>,
}

impl Target {
    pub fn new(kind: Kind, started_at: i64, target_secs: i64) -> Target {
        Target { kind, started_at, target_secs, paused_secs: 0, paused_since: None, due_at: None, warn_at: None, warned_at: None, breached_at: None, met_at: None }
    }

    /// Recompute `due_at` and `warn_at` (nothing is due while paused or once met).
    pub fn schedule(&mut self, cal: &Calendar, warn: WarnAt) {
        if self.paused_since.is_some() || self.met_at.is_some() {
            self.due_at = None;
            self.warn_at = None;
            return;
        }
        let budget = self.target_secs + self.paused_secs;
        self.due_at = Some(cal.add(self.started_at, budget));
        let warn_budget = match warn {
            WarnAt::Percent(p) => self.target_secs * p as i64 / 100 + self.paused_secs,
            WarnAt::Before(b) => (budget - b as i64).max(self.paused_secs),
        };
        self.warn_at = Some(cal.add(self.started_at, warn_budget));
    }

    /// Stop the clock (ticket pending).
    pub fn pause(&mut self, now: i64) {
        if self.met_at.is_none() && self.paused_since.is_none() {
            self.paused_since = Some(now);
        }
    }

    /// Restart the clock, crediting the business time spent paused.
    pub fn resume(&mut self, cal: &Calendar, warn: WarnAt, now: i64) {
        if let Some(since) = self.paused_since.take() {
            self.paused_secs += cal.between(since, now);
        }
        self.schedule(cal, warn);
    }

    pub fn meet(&mut self, now: i64) {
        if self.met_at.is_none() {
            self.met_at = Some(now);
            self.due_at = None;
            self.warn_at = None;
        }
    }

    /// Met in time: answered before the due time, or not yet due.
    pub fn met_in_time(&self) -> Option<bool> {
        self.met_at.map(|m| self.breached_at.is_none_or(|b| m < b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pausing_moves_the_due_time_by_the_paused_business_time() {
        let cal = Calendar::Always;
        let mut t = Target::new(Kind::Resolution, 1000, 3600);
        t.schedule(&cal, WarnAt::Percent(80));
        assert_eq!((t.due_at, t.warn_at), (Some(4600), Some(1000 + 2880)));
        t.pause(2000);
        t.schedule(&cal, WarnAt::Percent(80));
        assert_eq!(t.due_at, None, "nothing is due while pending");
        t.resume(&cal, WarnAt::Percent(80), 2600);
        assert_eq!(t.due_at, Some(4600 + 600));
        assert_eq!(t.warn_at, Some(1000 + 2880 + 600));
        let mut w = Target::new(Kind::FirstResponse, 0, 3600);
        w.schedule(&cal, WarnAt::Before(600));
        assert_eq!(w.warn_at, Some(3000));
        w.meet(100);
        assert_eq!((w.due_at, w.met_in_time()), (None, Some(true)));
    }
}
