//! Business calendars: weekly working hours in a named time zone (DST-aware, via jiff's bundled
//! tz database) minus holidays, or round the clock. Adds business time to an instant and measures
//! business time between two instants. Pure; instants are Unix seconds.

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use std::collections::BTreeSet;

/// A working window within one day, in minutes after midnight (`end` may be 1440).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u16,
    pub end: u16,
}

/// When the clock runs.
#[derive(Debug, Clone)]
pub enum Calendar {
    /// 24×7: business time is wall time.
    Always,
    Hours {
        tz: TimeZone,
        /// Monday first.
        week: [Vec<Window>; 7],
        holidays: BTreeSet<Date>,
    },
}

/// Longest search for working time (a calendar with no hours left would loop forever).
const MAX_DAYS: i32 = 3 * 366;

fn day_index(w: Weekday) -> usize {
    w.to_monday_zero_offset() as usize
}

impl Calendar {
    /// Parse `"08:00-12:00, 13:00-17:30"` (empty = day off).
    pub fn parse_windows(s: &str) -> Result<Vec<Window>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').ok_or_else(|| format!("`{part}` is not a time range like 08:00-17:00"))?;
            let w = Window { start: minutes(a)?, end: minutes(b)? };
            if w.end <= w.start {
                return Err(format!("`{part}` ends before it starts"));
            }
            out.push(w);
        }
        out.sort_by_key(|w| w.start);
        if out.windows(2).any(|p| p[1].start < p[0].end) {
            return Err(format!("`{s}` has overlapping ranges"));
        }
        Ok(out)
    }

    fn day_windows(&self, tz: &TimeZone, date: Date, week: &[Vec<Window>; 7], holidays: &BTreeSet<Date>) -> Vec<(i64, i64)> {
        if holidays.contains(&date) {
            return Vec::new();
        }
        week[day_index(date.weekday())]
            .iter()
            .filter_map(|w| {
                let at = |m: u16| -> Option<i64> {
                    if m >= 1440 {
                        let next = date.tomorrow().ok()?;
                        return tz.to_timestamp(next.at(0, 0, 0, 0)).ok().map(|t| t.as_second());
                    }
                    tz.to_timestamp(date.at((m / 60) as i8, (m % 60) as i8, 0, 0)).ok().map(|t| t.as_second())
                };
                Some((at(w.start)?, at(w.end)?))
            })
            .collect()
    }

    /// The instant `secs` of business time after `start` (Unix seconds).
    pub fn add(&self, start: i64, secs: i64) -> i64 {
        let Calendar::Hours { tz, week, holidays } = self else { return start + secs };
        let mut remaining = secs.max(0);
        let Ok(ts) = Timestamp::from_second(start) else { return start + secs };
        let mut date = tz.to_datetime(ts).date();
        for _ in 0..MAX_DAYS {
            for (s, e) in self.day_windows(tz, date, week, holidays) {
                let from = s.max(start);
                if from >= e {
                    continue;
                }
                if remaining <= e - from {
                    return from + remaining;
                }
                remaining -= e - from;
            }
            match date.tomorrow() {
                Ok(d) => date = d,
                Err(_) => break,
            }
        }
        start + secs
    }

    /// Business seconds between `a` and `b` (0 when `b <= a`).
    pub fn between(&self, a: i64, b: i64) -> i64 {
        if b <= a {
            return 0;
        }
        let Calendar::Hours { tz, week, holidays } = self else { return b - a };
        let Ok(ts) = Timestamp::from_second(a) else { return b - a };
        let mut date = tz.to_datetime(ts).date();
        let mut total = 0;
        for _ in 0..MAX_DAYS * 10 {
            let windows = self.day_windows(tz, date, week, holidays);
            for (s, e) in &windows {
                let (s, e) = ((*s).max(a), (*e).min(b));
                if e > s {
                    total += e - s;
                }
            }
            let Ok(next) = date.tomorrow() else { break };
            let Ok(next_start) = tz.to_timestamp(next.at(0, 0, 0, 0)) else { break };
            if next_start.as_second() >= b {
                break;
            }
            date = next;
        }
        total
    }
}

fn minutes(s: &str) -> Result<u16, String> {
    let s = s.trim();
    let (h, m) = s.split_once(':').ok_or_else(|| format!("`{s}` is not a time like 08:30"))?;
    let h: u16 = h.parse().map_err(|_| format!("`{s}` is not a time like 08:30"))?;
    let m: u16 = m.parse().map_err(|_| format!("`{s}` is not a time like 08:30"))?;
    if m > 59 || h > 24 || (h == 24 && m > 0) {
        return Err(format!("`{s}` is not a time of day"));
    }
    Ok(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn office(tz: &str, holidays: &[&str]) -> Calendar {
        let nine_five = Calendar::parse_windows("09:00-17:00").unwrap();
        Calendar::Hours {
            tz: TimeZone::get(tz).unwrap(),
            week: [nine_five.clone(), nine_five.clone(), nine_five.clone(), nine_five.clone(), nine_five, vec![], vec![]],
            holidays: holidays.iter().map(|d| d.parse().unwrap()).collect(),
        }
    }

    fn ts(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_second()
    }

    fn show(t: i64, tz: &str) -> String {
        Timestamp::from_second(t).unwrap().to_zoned_datetime(TimeZone::get(tz).unwrap()).datetime().to_string()
    }

    const H: i64 = 3600;

    #[test]
    fn within_a_day_and_over_night() {
        let c = office("UTC", &[]);
        // Monday 2026-11-30 10:00 + 2h = 12:00
        assert_eq!(show(c.add(ts("2026-11-30T10:00:00Z"), 2 * H), "UTC"), "2026-11-30T12:00:00");
        // Monday 16:00 + 4h = Tuesday 12:00 (1h Monday, 3h Tuesday)
        assert_eq!(show(c.add(ts("2026-11-30T16:00:00Z"), 4 * H), "UTC"), "2026-12-01T12:00:00");
        // before hours: starts at 09:00
        assert_eq!(show(c.add(ts("2026-11-30T06:00:00Z"), H), "UTC"), "2026-11-30T10:00:00");
    }

    #[test]
    fn weekends_and_holidays_are_skipped() {
        let c = office("UTC", &["2026-12-07"]);
        // Friday 2026-12-04 16:00 + 2h → Monday is a holiday → Tuesday 10:00
        assert_eq!(show(c.add(ts("2026-12-04T16:00:00Z"), 2 * H), "UTC"), "2026-12-08T10:00:00");
        // Saturday noon + 1h → Monday 10:00 (no holiday here)
        let c = office("UTC", &[]);
        assert_eq!(show(c.add(ts("2026-12-05T12:00:00Z"), H), "UTC"), "2026-12-07T10:00:00");
        assert_eq!(c.between(ts("2026-12-04T16:00:00Z"), ts("2026-12-07T10:00:00Z")), 2 * H);
    }

    #[test]
    fn daylight_saving_changes() {
        // Berlin springs forward on Sunday 2027-03-28; Monday 09:00 local is 07:00 UTC.
        let c = office("Europe/Berlin", &[]);
        let fri = ts("2027-03-26T15:00:00Z"); // Friday 16:00 CET
        assert_eq!(show(c.add(fri, 2 * H), "Europe/Berlin"), "2027-03-29T10:00:00");
        // and back in autumn (Sunday 2027-10-31): Friday 16:00 CEST + 2h → Monday 10:00 CET
        let fri = ts("2027-10-29T14:00:00Z");
        assert_eq!(show(c.add(fri, 2 * H), "Europe/Berlin"), "2027-11-01T10:00:00");
        // 24×7 is plain arithmetic
        assert_eq!(Calendar::Always.add(100, 50), 150);
    }

    #[test]
    fn parse_errors() {
        assert!(Calendar::parse_windows("9-17").is_err());
        assert!(Calendar::parse_windows("17:00-09:00").is_err());
        assert!(Calendar::parse_windows("08:00-12:00,11:00-13:00").is_err());
        assert_eq!(Calendar::parse_windows("08:00-12:00, 13:00-24:00").unwrap().len(), 2);
        assert!(Calendar::parse_windows("").unwrap().is_empty());
    }
}
