//! Reports: what the desk did in a period — tickets opened and resolved per queue, type and day,
//! SLA compliance, median and p90 first-response and resolution times (overall, per queue, per
//! priority), backlog by age, top types, tags and CIs, customer satisfaction — as text, JSON
//! (fields are added, never renamed) or one self-contained HTML file with inline SVG charts
//! (`svg.rs`). Pure over the rows the store hands in.

mod svg;

use crate::store::{Rating, ReportRow};
use serde::Serialize;
use std::collections::BTreeMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Met/breached counts of one SLA target kind.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Compliance {
    pub met: u64,
    pub breached: u64,
}

/// Median and p90 of a duration, in seconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Spread {
    pub count: usize,
    pub median_s: Option<i64>,
    pub p90_s: Option<i64>,
}

/// Per queue (and per type) counts.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub opened: u64,
    pub resolved: u64,
    pub active: u64,
}

/// Knowledge at work (docs/KNOWLEDGE.md): new tickets whose acknowledgement suggested published
/// articles, and those the customer then closed before any agent answered.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Deflection {
    pub suggested: u64,
    pub deflected: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub since: String,
    pub until: String,
    pub by_queue: BTreeMap<String, Counts>,
    pub by_type: BTreeMap<String, Counts>,
    pub sla_first_response: Compliance,
    pub sla_resolution: Compliance,
    pub first_response: Spread,
    pub resolution: Spread,
    /// Active tickets by age: "<1d", "1-3d", "3-7d", ">7d".
    pub backlog_by_age: BTreeMap<String, u64>,
    /// Suggestions and deflections in the period (filled by the caller from the store).
    pub knowledge: Deflection,
    /// Tickets opened and resolved per day (or per `bucket_days` days in a long period).
    pub per_day: Series,
    /// First-response and resolution times per queue and per priority.
    pub times_by_queue: BTreeMap<String, Times>,
    pub times_by_priority: BTreeMap<String, Times>,
    /// Tickets opened in the period by type, tag and configuration item, most first.
    pub top_types: Vec<Top>,
    pub top_tags: Vec<Top>,
    pub top_cis: Vec<Top>,
    /// Customer satisfaction ratings given in the period (`add_csat`).
    pub csat: Satisfaction,
}

/// Opened/resolved counts over time.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Series {
    /// Days per point: 1, more when the period has over [`MAX_POINTS`] days.
    pub bucket_days: u32,
    pub points: Vec<Point>,
}

/// One point of a [`Series`]: the first day it covers (YYYY-MM-DD, UTC) and its counts.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Point {
    pub date: String,
    pub opened: u64,
    pub resolved: u64,
}

/// Most points of the per-day series; a longer period is bucketed.
pub const MAX_POINTS: i64 = 120;
/// Entries of each top list.
pub const TOP: usize = 10;

/// Time to first response and to resolution of one group.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Times {
    pub first_response: Spread,
    pub resolution: Spread,
}

/// A name and how many tickets carry it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Top {
    pub name: String,
    pub count: u64,
}

/// Satisfaction ratings of the period, on the scale of the newest rating (older ratings on
/// another scale are mapped onto it proportionally).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Satisfaction {
    pub count: u64,
    /// The scale, as configured: "1-5", "bad,okay,good"; empty without ratings.
    pub scale: String,
    /// Mean rating on that scale, one decimal.
    pub average: Option<f64>,
    /// Share of ratings in the top quarter of the scale (4 and 5 of 1-5), in percent.
    pub satisfied_pct: Option<f64>,
    /// Count per answer, worst first.
    pub distribution: Vec<Top>,
}

fn ts(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339).ok().map(|t| t.unix_timestamp())
}

fn spread(mut v: Vec<i64>) -> Spread {
    v.sort_unstable();
    let pick = |q: f64| -> Option<i64> { (!v.is_empty()).then(|| v[((v.len() - 1) as f64 * q).round() as usize]) };
    Spread { count: v.len(), median_s: pick(0.5), p90_s: pick(0.9) }
}

/// Build the report for `[since, now]`.
pub fn build(rows: &[ReportRow], since: OffsetDateTime, now: OffsetDateTime) -> Report {
    let (since_s, now_s) = (since.unix_timestamp(), now.unix_timestamp());
    let in_period = |t: Option<i64>| t.is_some_and(|t| t >= since_s && t <= now_s);
    let mut r = Report {
        since: crate::clock::rfc3339(since),
        until: crate::clock::rfc3339(now),
        by_queue: BTreeMap::new(),
        by_type: BTreeMap::new(),
        sla_first_response: Compliance::default(),
        sla_resolution: Compliance::default(),
        first_response: Spread::default(),
        resolution: Spread::default(),
        backlog_by_age: ["<1d", "1-3d", "3-7d", ">7d"].iter().map(|k| (k.to_string(), 0)).collect(),
        knowledge: Deflection::default(),
        per_day: Series::default(),
        times_by_queue: BTreeMap::new(),
        times_by_priority: BTreeMap::new(),
        top_types: Vec::new(),
        top_tags: Vec::new(),
        top_cis: Vec::new(),
        csat: Satisfaction::default(),
    };
    // Per-day buckets from the first day of the period (UTC) to the last, at most MAX_POINTS.
    let first_day = since.to_offset(time::UtcOffset::UTC).date();
    let days = (now.to_offset(time::UtcOffset::UTC).date() - first_day).whole_days().max(0) + 1;
    let bucket = (days + MAX_POINTS - 1) / MAX_POINTS;
    let mut points: Vec<Point> = (0..(days + bucket - 1) / bucket)
        .map(|i| Point { date: (first_day + time::Duration::days(i * bucket)).to_string(), opened: 0, resolved: 0 })
        .collect();
    let slot = |t: i64| -> Option<usize> {
        let d = OffsetDateTime::from_unix_timestamp(t).ok()?.date();
        usize::try_from((d - first_day).whole_days() / bucket).ok()
    };
    let (mut fr, mut res) = (Vec::new(), Vec::new());
    type Groups = BTreeMap<String, (Vec<i64>, Vec<i64>)>;
    let (mut by_queue, mut by_priority): (Groups, Groups) = (BTreeMap::new(), BTreeMap::new());
    let (mut types, mut tags, mut cis) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for row in rows {
        let created = ts(&row.created_at);
        let resolved = row.resolved_at.as_deref().and_then(ts);
        let ty = if row.ticket_type.is_empty() { "unset".to_string() } else { row.ticket_type.clone() };
        for counts in [r.by_queue.entry(row.queue.clone()).or_default(), r.by_type.entry(ty).or_default()] {
            if in_period(created) {
                counts.opened += 1;
            }
            if in_period(resolved) {
                counts.resolved += 1;
            }
            if row.status.is_active() {
                counts.active += 1;
            }
        }
        if row.status.is_active()
            && let Some(c) = created
        {
            let age = now_s - c;
            let bucket = match age {
                a if a < 86400 => "<1d",
                a if a < 3 * 86400 => "1-3d",
                a if a < 7 * 86400 => "3-7d",
                _ => ">7d",
            };
            *r.backlog_by_age.entry(bucket.to_string()).or_default() += 1;
        }
        if let Some(c) = created.filter(|c| in_period(Some(*c))) {
            if let Some(p) = slot(c).and_then(|i| points.get_mut(i)) {
                p.opened += 1;
            }
            if !row.ticket_type.is_empty() {
                *types.entry(row.ticket_type.clone()).or_insert(0) += 1;
            }
            for t in &row.tags {
                *tags.entry(t.clone()).or_insert(0) += 1;
            }
            for ci in &row.cis {
                *cis.entry(ci.clone()).or_insert(0) += 1;
            }
        }
        if let Some(z) = resolved.filter(|z| in_period(Some(*z)))
            && let Some(p) = slot(z).and_then(|i| points.get_mut(i))
        {
            p.resolved += 1;
        }
        let first = match (created, row.first_response_at.as_deref().and_then(ts)) {
            (Some(c), Some(f)) if in_period(Some(f)) => Some(f - c),
            _ => None,
        };
        let resolution = match (created, resolved) {
            (Some(c), Some(z)) if in_period(Some(z)) => Some(z - c),
            _ => None,
        };
        if first.is_some() || resolution.is_some() {
            for g in [by_queue.entry(row.queue.clone()).or_default(), by_priority.entry(row.priority.as_str().to_string()).or_default()] {
                g.0.extend(first);
                g.1.extend(resolution);
            }
        }
        fr.extend(first);
        res.extend(resolution);
        for (state, c) in [(&row.sla_first_response, &mut r.sla_first_response), (&row.sla_resolution, &mut r.sla_resolution)] {
            match state.as_deref() {
                Some("met") => c.met += 1,
                Some("breached") => c.breached += 1,
                _ => {}
            }
        }
    }
    r.first_response = spread(fr);
    r.resolution = spread(res);
    r.per_day = Series { bucket_days: bucket as u32, points };
    let times = |g: Groups| g.into_iter().map(|(k, (f, z))| (k, Times { first_response: spread(f), resolution: spread(z) })).collect();
    r.times_by_queue = times(by_queue);
    r.times_by_priority = times(by_priority);
    r.top_types = top(types);
    r.top_tags = top(tags);
    r.top_cis = top(cis);
    r
}

/// The `TOP` largest counts, most first (ties by name).
fn top(counts: BTreeMap<String, u64>) -> Vec<Top> {
    let mut v: Vec<Top> = counts.into_iter().map(|(name, count)| Top { name, count }).collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    v.truncate(TOP);
    v
}

/// Add the satisfaction ratings given in the period (newest first, as the store returns them).
pub fn add_csat(r: &mut Report, ratings: &[Rating]) {
    let Some(newest) = ratings.first() else { return };
    let Ok(scale) = crate::csat::Scale::parse(&newest.scale) else { return };
    let (lo, hi) = scale.bounds();
    let choices = scale.choices();
    let mut counts = vec![0u64; choices.len()];
    let (mut sum, mut satisfied) = (0.0, 0u64);
    for x in ratings {
        // On its own scale, 0.0 (worst) to 1.0 (best); an unreadable scale counts as given.
        let (a, b) = crate::csat::Scale::parse(&x.scale).map(|s| s.bounds()).unwrap_or((lo, hi));
        let norm = ((x.rating - a) as f64 / (b - a).max(1) as f64).clamp(0.0, 1.0);
        let on_ours = norm * (hi - lo) as f64;
        sum += lo as f64 + on_ours;
        if norm >= 0.75 {
            satisfied += 1;
        }
        if let Some(c) = counts.get_mut(on_ours.round() as usize) {
            *c += 1;
        }
    }
    let n = ratings.len() as u64;
    r.csat = Satisfaction {
        count: n,
        scale: scale.spec(),
        average: Some((sum / n as f64 * 10.0).round() / 10.0),
        satisfied_pct: Some((satisfied as f64 * 1000.0 / n as f64).round() / 10.0),
        distribution: choices.into_iter().zip(counts).map(|(name, count)| Top { name, count }).collect(),
    };
}

fn human(s: Option<i64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 3600 => format!("{}m", s / 60),
        Some(s) if s < 86400 => format!("{:.1}h", s as f64 / 3600.0),
        Some(s) => format!("{:.1}d", s as f64 / 86400.0),
    }
}

fn pct(c: &Compliance) -> String {
    let n = c.met + c.breached;
    if n == 0 { "-".into() } else { format!("{:.0}%", c.met as f64 * 100.0 / n as f64) }
}

/// Plain text, for the terminal and for mail.
pub fn text(r: &Report) -> String {
    let mut o = format!("Postdesk report {} – {}\n\n", r.since, r.until);
    // The first column as wide as its longest name (within reason), so the numbers line up.
    let w = r.by_queue.keys().chain(r.by_type.keys()).map(|k| k.chars().count()).max().unwrap_or(0).clamp(16, 60);
    o.push_str(&format!("{:<w$} {:>7} {:>9} {:>7}\n", "queue", "opened", "resolved", "active"));
    for (q, c) in &r.by_queue {
        o.push_str(&format!("{q:<w$} {:>7} {:>9} {:>7}\n", c.opened, c.resolved, c.active));
    }
    o.push_str(&format!("\n{:<w$} {:>7} {:>9} {:>7}\n", "type", "opened", "resolved", "active"));
    for (t, c) in &r.by_type {
        o.push_str(&format!("{t:<w$} {:>7} {:>9} {:>7}\n", c.opened, c.resolved, c.active));
    }
    o.push_str(&format!(
        "\nSLA first response: {} met, {} breached ({})\nSLA resolution:     {} met, {} breached ({})\n",
        r.sla_first_response.met,
        r.sla_first_response.breached,
        pct(&r.sla_first_response),
        r.sla_resolution.met,
        r.sla_resolution.breached,
        pct(&r.sla_resolution)
    ));
    o.push_str(&format!(
        "\nFirst response: median {}, p90 {} ({} tickets)\nResolution:     median {}, p90 {} ({} tickets)\n",
        human(r.first_response.median_s),
        human(r.first_response.p90_s),
        r.first_response.count,
        human(r.resolution.median_s),
        human(r.resolution.p90_s),
        r.resolution.count
    ));
    o.push_str("\nBacklog by age:");
    for k in ["<1d", "1-3d", "3-7d", ">7d"] {
        o.push_str(&format!(" {k} {}", r.backlog_by_age.get(k).copied().unwrap_or(0)));
    }
    o.push('\n');
    o.push_str(&format!("\nKnowledge: suggested to {} new tickets, deflected {} (closed by the customer before an agent answered)\n", r.knowledge.suggested, r.knowledge.deflected));
    for (what, groups) in [("queue", &r.times_by_queue), ("priority", &r.times_by_priority)] {
        if groups.is_empty() {
            continue;
        }
        o.push_str(&format!("\n{what:<w$} {:>10} {:>10} {:>10} {:>10}\n", "first p50", "first p90", "resol. p50", "resol. p90"));
        for (k, t) in ordered(groups, what == "priority") {
            o.push_str(&format!(
                "{:<w$} {:>10} {:>10} {:>10} {:>10}\n",
                k,
                human(t.first_response.median_s),
                human(t.first_response.p90_s),
                human(t.resolution.median_s),
                human(t.resolution.p90_s)
            ));
        }
    }
    let per = if r.per_day.bucket_days == 1 { "day".to_string() } else { format!("{} days", r.per_day.bucket_days) };
    o.push_str(&format!("\n{:<w$} {:>7} {:>9}\n", format!("per {per}"), "opened", "resolved"));
    for p in &r.per_day.points {
        o.push_str(&format!("{:<w$} {:>7} {:>9}\n", p.date, p.opened, p.resolved));
    }
    for (title, list) in [("Top types", &r.top_types), ("Top tags", &r.top_tags), ("Top configuration items", &r.top_cis)] {
        if !list.is_empty() {
            o.push_str(&format!("\n{title}: {}\n", list.iter().map(|t| format!("{} {}", t.name, t.count)).collect::<Vec<_>>().join(", ")));
        }
    }
    o.push_str(&csat_line(&r.csat));
    o
}

/// "Satisfaction: 12 ratings, average 4.3 (1-5), 83% satisfied; 1: 0, 2: 1, …"
fn csat_line(c: &Satisfaction) -> String {
    if c.count == 0 {
        return "\nSatisfaction: no ratings\n".into();
    }
    format!(
        "\nSatisfaction: {} rating{}, average {:.1} ({}), {:.0}% satisfied; {}\n",
        c.count,
        if c.count == 1 { "" } else { "s" },
        c.average.unwrap_or(0.0),
        c.scale,
        c.satisfied_pct.unwrap_or(0.0),
        c.distribution.iter().map(|t| format!("{}: {}", t.name, t.count)).collect::<Vec<_>>().join(", ")
    )
}

/// Groups in reading order: priorities from low to urgent, anything else by name.
fn ordered(groups: &BTreeMap<String, Times>, priority: bool) -> Vec<(&str, &Times)> {
    let mut v: Vec<(&str, &Times)> = groups.iter().map(|(k, t)| (k.as_str(), t)).collect();
    if priority {
        v.sort_by_key(|(k, _)| k.parse::<crate::ticket::Priority>().map(|p| p as u8).unwrap_or(u8::MAX));
    }
    v
}

/// The HTML report: one self-contained file (inline SVG and styles, no scripts, nothing
/// fetched) that reads the same in a browser and a mail client (see `svg.rs`).
pub fn html(r: &Report) -> String {
    svg::page(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::Status;
    use time::macros::datetime;

    fn row(id: i64, queue: &str, status: Status, created: &str, first: Option<&str>, resolved: Option<&str>, fr: Option<&str>) -> ReportRow {
        ReportRow {
            id,
            queue: queue.into(),
            ticket_type: String::new(),
            status,
            created_at: created.into(),
            first_response_at: first.map(Into::into),
            resolved_at: resolved.map(Into::into),
            sla_first_response: fr.map(Into::into),
            sla_resolution: None,
            priority: crate::ticket::Priority::Normal,
            tags: Vec::new(),
            cis: Vec::new(),
        }
    }

    #[test]
    fn counts_medians_and_backlog() {
        let rows = vec![
            row(1, "support", Status::Resolved, "2026-11-30T09:00:00Z", Some("2026-11-30T10:00:00Z"), Some("2026-11-30T12:00:00Z"), Some("met")),
            row(2, "support", Status::Open, "2026-11-28T09:00:00Z", Some("2026-11-28T13:00:00Z"), None, Some("breached")),
            row(3, "billing", Status::New, "2026-11-20T09:00:00Z", None, None, None),
        ];
        let r = build(&rows, datetime!(2026-11-25 00:00 UTC), datetime!(2026-11-30 18:00 UTC));
        assert_eq!(r.by_queue["support"], Counts { opened: 2, resolved: 1, active: 1 });
        assert_eq!(r.by_queue["billing"], Counts { opened: 0, resolved: 0, active: 1 });
        assert_eq!(r.sla_first_response, Compliance { met: 1, breached: 1 });
        assert_eq!(r.first_response.count, 2);
        assert_eq!(r.first_response.median_s, Some(4 * 3600), "1h and 4h: the upper median");
        assert_eq!(r.resolution.median_s, Some(3 * 3600));
        assert_eq!((r.backlog_by_age["1-3d"], r.backlog_by_age[">7d"]), (1, 1));
        assert!(text(&r).contains("SLA first response: 1 met, 1 breached (50%)"));
        assert!(html(&r).contains("<svg"));
    }

    fn rating(ticket: i64, rating: i64, label: &str, scale: &str) -> Rating {
        Rating { ticket, rating, label: label.into(), scale: scale.into(), comment: String::new(), rated_by: "a@example.org".into(), rated_at: "2026-11-30T10:00:00Z".into() }
    }

    #[test]
    fn days_groups_tops_and_satisfaction() {
        let mut rows = vec![
            row(1, "support", Status::Resolved, "2026-11-28T09:00:00Z", Some("2026-11-28T10:00:00Z"), Some("2026-11-29T09:00:00Z"), None),
            row(2, "billing", Status::Open, "2026-11-30T09:00:00Z", Some("2026-11-30T09:30:00Z"), None, None),
            row(3, "support", Status::Open, "2026-11-30T11:00:00Z", None, None, None),
        ];
        rows[0].priority = crate::ticket::Priority::Urgent;
        rows[0].tags = vec!["vpn".into(), "network".into()];
        rows[1].tags = vec!["vpn".into()];
        rows[2].cis = vec!["srv-db-01".into()];
        rows[0].ticket_type = "incident".into();
        let mut r = build(&rows, datetime!(2026-11-27 00:00 UTC), datetime!(2026-11-30 18:00 UTC));
        assert_eq!(r.per_day.bucket_days, 1);
        let days: Vec<(&str, u64, u64)> = r.per_day.points.iter().map(|p| (p.date.as_str(), p.opened, p.resolved)).collect();
        assert_eq!(days, vec![("2026-11-27", 0, 0), ("2026-11-28", 1, 0), ("2026-11-29", 0, 1), ("2026-11-30", 2, 0)]);
        assert_eq!(r.times_by_priority["urgent"].resolution.median_s, Some(86400));
        assert_eq!(r.times_by_queue["billing"].first_response.median_s, Some(1800));
        assert!(!r.times_by_queue.contains_key("other"));
        assert_eq!(r.top_tags, vec![Top { name: "vpn".into(), count: 2 }, Top { name: "network".into(), count: 1 }]);
        assert_eq!(r.top_cis, vec![Top { name: "srv-db-01".into(), count: 1 }]);
        assert_eq!(r.top_types, vec![Top { name: "incident".into(), count: 1 }]);

        // Newest scale first; a rating on an older 3-word scale maps onto 1-5 ("good" = 5).
        add_csat(&mut r, &[rating(1, 5, "5", "1-5"), rating(2, 2, "2", "1-5"), rating(3, 3, "good", "bad,okay,good")]);
        assert_eq!((r.csat.count, r.csat.average, r.csat.scale.as_str()), (3, Some(4.0), "1-5"));
        assert_eq!(r.csat.satisfied_pct, Some(66.7));
        assert_eq!(r.csat.distribution.iter().map(|t| t.count).collect::<Vec<_>>(), vec![0, 1, 0, 0, 2]);
        let t = text(&r);
        assert!(t.contains("Satisfaction: 3 ratings, average 4.0 (1-5), 67% satisfied; 1: 0, 2: 1, 3: 0, 4: 0, 5: 2"), "{t}");
        assert!(t.contains("Top tags: vpn 2, network 1") && t.contains("2026-11-30             2         0"), "{t}");
        let json = serde_json::to_value(&r).unwrap();
        for field in ["by_queue", "sla_first_response", "first_response", "backlog_by_age", "per_day", "times_by_priority", "top_cis", "csat"] {
            assert!(json.get(field).is_some(), "{field}");
        }
        let h = html(&r);
        assert_eq!(h.matches("http").count(), h.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(), "no link but the SVG namespace");
        assert!(!h.contains("<script") && !h.contains("src=") && !h.contains("href="), "no scripts, nothing fetched");
        assert!(h.lines().all(|l| l.len() < 998), "every line fits a mail line");
    }

    #[test]
    fn a_long_period_is_bucketed() {
        let r = build(&[], datetime!(2016-01-01 00:00 UTC), datetime!(2026-11-30 18:00 UTC));
        assert!(r.per_day.points.len() as i64 <= MAX_POINTS && r.per_day.bucket_days > 30, "{} points of {} days", r.per_day.points.len(), r.per_day.bucket_days);
        assert!(html(&r).contains(&format!("per {} days", r.per_day.bucket_days)));
        let r = build(&[], datetime!(2026-11-30 18:00 UTC), datetime!(2026-11-01 00:00 UTC));
        assert_eq!(r.per_day.points.len(), 1, "an empty or inverted period has one point");
    }
}
