//! Reports: what the desk did in a period — tickets opened and resolved per queue and type, SLA
//! compliance, median and p90 first-response and resolution times, backlog by age — as text,
//! JSON or HTML with SVG bar charts. Pure over the rows the store hands in.

use crate::store::ReportRow;
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
    };
    let (mut fr, mut res) = (Vec::new(), Vec::new());
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
        if let (Some(c), Some(f)) = (created, row.first_response_at.as_deref().and_then(ts))
            && in_period(Some(f))
        {
            fr.push(f - c);
        }
        if let (Some(c), Some(z)) = (created, resolved)
            && in_period(Some(z))
        {
            res.push(z - c);
        }
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
    r
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
    o.push_str(&format!("{:<16} {:>7} {:>9} {:>7}\n", "queue", "opened", "resolved", "active"));
    for (q, c) in &r.by_queue {
        o.push_str(&format!("{q:<16} {:>7} {:>9} {:>7}\n", c.opened, c.resolved, c.active));
    }
    o.push_str(&format!("\n{:<16} {:>7} {:>9} {:>7}\n", "type", "opened", "resolved", "active"));
    for (t, c) in &r.by_type {
        o.push_str(&format!("{t:<16} {:>7} {:>9} {:>7}\n", c.opened, c.resolved, c.active));
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
    o
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A horizontal SVG bar chart.
fn bars(title: &str, data: &[(String, u64)]) -> String {
    let max = data.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let h = 24 * data.len() + 30;
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"520\" height=\"{h}\" role=\"img\" aria-label=\"{}\">", esc(title));
    svg.push_str(&format!("<text x=\"0\" y=\"16\" font-weight=\"bold\">{}</text>", esc(title)));
    for (i, (label, v)) in data.iter().enumerate() {
        let y = 28 + i * 24;
        let w = (*v as f64 / max as f64 * 300.0).round() as u64;
        svg.push_str(&format!(
            "<text x=\"0\" y=\"{}\">{}</text><rect x=\"140\" y=\"{y}\" width=\"{w}\" height=\"16\" fill=\"#4a7bd0\"/><text x=\"{}\" y=\"{}\">{v}</text>",
            y + 13,
            esc(label),
            146 + w,
            y + 13
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// HTML with SVG charts.
pub fn html(r: &Report) -> String {
    let opened: Vec<(String, u64)> = r.by_queue.iter().map(|(q, c)| (q.clone(), c.opened)).collect();
    let resolved: Vec<(String, u64)> = r.by_queue.iter().map(|(q, c)| (q.clone(), c.resolved)).collect();
    let backlog: Vec<(String, u64)> = ["<1d", "1-3d", "3-7d", ">7d"].iter().map(|k| (k.to_string(), r.backlog_by_age.get(*k).copied().unwrap_or(0))).collect();
    let sla: Vec<(String, u64)> = vec![
        ("first resp. met".into(), r.sla_first_response.met),
        ("first resp. breached".into(), r.sla_first_response.breached),
        ("resolution met".into(), r.sla_resolution.met),
        ("resolution breached".into(), r.sla_resolution.breached),
    ];
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Postdesk report</title></head><body style=\"font-family:sans-serif\">\
         <h1>Postdesk report</h1><p>{} – {}</p>{}{}{}{}<pre>{}</pre></body></html>\n",
        esc(&r.since),
        esc(&r.until),
        bars("Opened per queue", &opened),
        bars("Resolved per queue", &resolved),
        bars("SLA compliance", &sla),
        bars("Backlog by age", &backlog),
        esc(&text(r))
    )
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
}
