//! The HTML report: one self-contained page (inline SVG charts, inline styles, no scripts, no
//! external resources), 640 px wide so it fits a mail client's reading pane. Labels never overlap
//! bars or each other: text widths are estimated conservatively, long labels are cut with an
//! ellipsis (the whole text in a `<title>` tooltip), and day labels are thinned to fit.

use super::{Report, Satisfaction, Spread, Top, human, ordered, pct};
use std::fmt::Write;

const WIDTH: f64 = 640.0;
const FONT: f64 = 12.0;
/// Left column of horizontal charts (labels), the bar area, the gap before a bar's value text.
const LABEL_W: f64 = 160.0;
const BAR_X: f64 = 170.0;
const BAR_W: f64 = 240.0;
const GAP: f64 = 6.0;
/// Most rows a horizontal chart draws (the rest are summed up in a line below it).
const MAX_ROWS: usize = 20;

const BLUE: &str = "#3b6fc4";
const LIGHT_BLUE: &str = "#9fbbe8";
const GREEN: &str = "#2e7d32";
const RED: &str = "#c62828";
const GREY: &str = "#8a8f98";
const INK: &str = "#1f2328";

pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A width no renderer's sans-serif exceeds for `s` at `size` px: generous per-character widths
/// (wide capitals and anything beyond ASCII count as a full em).
pub(super) fn text_width(s: &str, size: f64) -> f64 {
    s.chars()
        .map(|c| match c {
            'i' | 'l' | 'j' | 'I' | '.' | ',' | ':' | ';' | '\'' | '|' | '!' | ' ' => 0.4,
            'M' | 'W' | 'm' | 'w' | '@' | '%' => 1.0,
            c if c.is_ascii_uppercase() => 0.8,
            c if c.is_ascii() => 0.65,
            _ => 1.0,
        })
        .sum::<f64>()
        * size
}

/// `s` cut (with an ellipsis) to fit `max` px at `size`; `true` when cut.
pub(super) fn fit(s: &str, max: f64, size: f64) -> (String, bool) {
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    if text_width(&s, size) <= max {
        return (s, false);
    }
    let budget = max - text_width("…", size);
    let mut out = String::new();
    let mut w = 0.0;
    for c in s.chars() {
        let cw = text_width(c.encode_utf8(&mut [0; 4]), size);
        if w + cw > budget {
            break;
        }
        w += cw;
        out.push(c);
    }
    out.push('…');
    (out, true)
}

/// `<text>` that fits `max` px, with the whole text as a tooltip when it had to be cut.
fn label(x: f64, y: f64, s: &str, max: f64, size: f64, attrs: &str) -> String {
    let (shown, cut) = fit(s, max, size);
    let tip = if cut { format!("<title>{}</title>", esc(s)) } else { String::new() };
    format!("<text x=\"{x:.1}\" y=\"{y:.1}\" font-size=\"{size}\"{attrs}>{tip}{}</text>\n", esc(&shown))
}

fn svg_open(h: f64, title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{h:.0}\" viewBox=\"0 0 {WIDTH} {h:.0}\" role=\"img\" aria-label=\"{}\" font-family=\"Helvetica, Arial, sans-serif\" fill=\"{INK}\" style=\"display:block;max-width:100%;height:auto;margin:0 0 18px 0\">\n{}",
        esc(title),
        label(0.0, 16.0, title, WIDTH, 14.0, " font-weight=\"bold\"")
    )
}

/// A legend on its own line below the title: swatch, text, swatch, text …
fn legend(y: f64, items: &[(&str, &str)]) -> String {
    let mut o = String::new();
    let mut x = 0.0;
    for (name, colour) in items {
        let _ = writeln!(o, "<rect class=\"swatch\" x=\"{x:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{colour}\"/>", y - 9.0);
        o.push_str(&label(x + 14.0, y, name, 200.0, FONT, ""));
        x += 14.0 + text_width(name, FONT).min(200.0) + 16.0;
    }
    o
}

/// One row of a horizontal chart: a label, one or more bars (each stacked from segments) and
/// the value text after the longest bar.
struct Row {
    label: String,
    bars: Vec<Vec<(f64, &'static str)>>,
    value: String,
}

/// Horizontal bars: labels in the left column, bars scaled to the largest, values right of the
/// bars. Nothing overlaps: each text gets its own column or row and is cut to fit it.
fn hbars(title: &str, legend_items: &[(&str, &str)], rows: &[Row]) -> String {
    let shown = &rows[..rows.len().min(MAX_ROWS)];
    let max = shown.iter().flat_map(|r| r.bars.iter().map(|b| b.iter().map(|s| s.0).sum::<f64>())).fold(0.0, f64::max).max(1e-9);
    let top = if legend_items.is_empty() { 28.0 } else { 46.0 };
    let bar_h = 12.0;
    let row_h = |r: &Row| (r.bars.len().max(1) as f64) * (bar_h + 2.0) + 8.0;
    let more = rows.len() - shown.len();
    let h = top + shown.iter().map(row_h).sum::<f64>() + if more > 0 { 20.0 } else { 0.0 } + 4.0;
    let mut o = svg_open(h, title);
    if !legend_items.is_empty() {
        o.push_str(&legend(36.0, legend_items));
    }
    let mut y = top;
    for r in shown {
        let rh = row_h(r);
        // Baseline of the row's texts: the middle of its bars, plus a third of the font size.
        let base = y + r.bars.len().max(1) as f64 * (bar_h + 2.0) / 2.0 + 3.0;
        o.push_str(&label(0.0, base, &r.label, LABEL_W, FONT, ""));
        let mut end: f64 = BAR_X;
        for (i, bar) in r.bars.iter().enumerate() {
            let by = y + i as f64 * (bar_h + 2.0);
            let mut x = BAR_X;
            for (v, colour) in bar {
                let w = v / max * BAR_W;
                if w > 0.0 {
                    let _ = writeln!(o, "<rect class=\"bar\" x=\"{x:.1}\" y=\"{by:.1}\" width=\"{w:.1}\" height=\"{bar_h}\" fill=\"{colour}\"/>");
                }
                x += w;
            }
            end = end.max(x);
        }
        let vx = end + GAP;
        o.push_str(&label(vx, base, &r.value, WIDTH - vx, FONT, ""));
        y += rh;
    }
    if more > 0 {
        o.push_str(&label(0.0, y + 14.0, &format!("… and {more} more"), WIDTH, FONT, &format!(" fill=\"{GREY}\"")));
    }
    o.push_str("</svg>\n");
    o
}

fn count_rows(data: &[(String, u64)]) -> Vec<Row> {
    data.iter().map(|(k, v)| Row { label: k.clone(), bars: vec![vec![(*v as f64, BLUE)]], value: v.to_string() }).collect()
}

fn top_rows(list: &[Top]) -> Vec<Row> {
    count_rows(&list.iter().map(|t| (t.name.clone(), t.count)).collect::<Vec<_>>())
}

/// Opened and resolved per day as grouped columns, with a y axis; day labels thinned so each
/// has room (and cut to the room they have).
fn columns(r: &Report) -> String {
    let pts = &r.per_day.points;
    let title = if r.per_day.bucket_days == 1 { "Opened and resolved per day".to_string() } else { format!("Opened and resolved per {} days", r.per_day.bucket_days) };
    let (left, right, top, plot_h, bottom) = (44.0, 8.0, 52.0, 140.0, 24.0);
    let h = top + plot_h + bottom;
    let mut o = svg_open(h, &title);
    o.push_str(&legend(36.0, &[("opened", BLUE), ("resolved", GREEN)]));
    let max = pts.iter().map(|p| p.opened.max(p.resolved)).max().unwrap_or(0).max(1);
    // Gridlines at round steps: at most 4 above zero, so their labels (14 px apart at least) never touch.
    let step = nice_step(max);
    let top_value = max.div_ceil(step).saturating_mul(step);
    let base = top + plot_h;
    let mut v = 0;
    while v <= top_value {
        let y = base - v as f64 / top_value as f64 * plot_h;
        let _ = writeln!(o, "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#d0d4da\" stroke-width=\"1\"/>", WIDTH - right);
        o.push_str(&label(left - 6.0, y + 4.0, &v.to_string(), left - 8.0, 11.0, " text-anchor=\"end\""));
        v += step;
    }
    let n = pts.len().max(1) as f64;
    let slot = (WIDTH - left - right) / n;
    let bw = (slot * 0.8 / 2.0).max(0.5);
    for (i, p) in pts.iter().enumerate() {
        let x0 = left + i as f64 * slot + slot * 0.1;
        for (j, (val, colour)) in [(p.opened, BLUE), (p.resolved, GREEN)].into_iter().enumerate() {
            let bh = val as f64 / top_value as f64 * plot_h;
            if bh > 0.0 {
                let _ = writeln!(
                    o,
                    "<rect class=\"bar\" x=\"{:.2}\" y=\"{:.2}\" width=\"{bw:.2}\" height=\"{bh:.2}\" fill=\"{colour}\"><title>{} {}: {val}</title></rect>",
                    x0 + j as f64 * bw,
                    base - bh,
                    esc(&p.date),
                    if j == 0 { "opened" } else { "resolved" }
                );
            }
        }
    }
    // Day labels: MM-DD within a year, else the whole date; every k-th so each has its room.
    let long = pts.first().zip(pts.last()).is_some_and(|(a, b)| a.date.get(..4) != b.date.get(..4));
    let lw = |d: &str| text_width(if long { d } else { d.get(5..).unwrap_or(d) }, 11.0);
    let widest = pts.iter().map(|p| lw(&p.date)).fold(0.0, f64::max);
    let every = ((widest + 8.0) / slot).ceil().max(1.0) as usize;
    // Kept inside the chart; a label pushed inwards that would touch its neighbour is left out.
    let mut last_right = f64::MIN;
    for (i, p) in pts.iter().enumerate().step_by(every) {
        let text = if long { p.date.as_str() } else { p.date.get(5..).unwrap_or(&p.date) };
        let cx = (left + (i as f64 + 0.5) * slot).clamp(left + widest / 2.0, WIDTH - right - widest / 2.0);
        if cx - widest / 2.0 < last_right + 8.0 {
            continue;
        }
        last_right = cx + widest / 2.0;
        o.push_str(&label(cx, base + 16.0, text, widest, 11.0, " text-anchor=\"middle\""));
    }
    o.push_str("</svg>\n");
    o
}

/// 1, 2 or 5 times a power of ten, so that `max` needs at most 4 steps.
fn nice_step(max: u64) -> u64 {
    let mut p = 1u64;
    loop {
        for m in [1, 2, 5] {
            let s = p.saturating_mul(m);
            if max.div_ceil(s) <= 4 {
                return s;
            }
        }
        p = p.saturating_mul(10);
    }
}

fn spread_value(s: &Spread) -> String {
    if s.count == 0 { "no tickets".into() } else { format!("p50 {} · p90 {} ({})", human(s.median_s), human(s.p90_s), s.count) }
}

fn times_rows(groups: &std::collections::BTreeMap<String, super::Times>, priority: bool, first: bool) -> Vec<Row> {
    ordered(groups, priority)
        .into_iter()
        .map(|(k, t)| {
            let s = if first { &t.first_response } else { &t.resolution };
            let secs = |v: Option<i64>| v.unwrap_or(0).max(0) as f64;
            Row { label: k.to_string(), bars: vec![vec![(secs(s.median_s), BLUE)], vec![(secs(s.p90_s), LIGHT_BLUE)]], value: spread_value(s) }
        })
        .collect()
}

fn sla_rows(r: &Report) -> Vec<Row> {
    [("First response", &r.sla_first_response), ("Resolution", &r.sla_resolution)]
        .into_iter()
        .map(|(k, c)| Row {
            label: k.into(),
            bars: vec![vec![(c.met as f64, GREEN), (c.breached as f64, RED)]],
            value: format!("{} met · {} breached ({})", c.met, c.breached, pct(c)),
        })
        .collect()
}

fn csat_block(c: &Satisfaction) -> String {
    if c.count == 0 {
        return "<p style=\"margin:0 0 18px 0\">Satisfaction: no ratings in this period.</p>\n".into();
    }
    let n = c.distribution.len().max(2) as f64;
    let rows: Vec<Row> = c
        .distribution
        .iter()
        .enumerate()
        .map(|(i, t)| {
            // Red for the worst answer through grey to green for the best.
            let colour = match i as f64 / (n - 1.0) {
                f if f < 0.34 => RED,
                f if f < 0.67 => GREY,
                _ => GREEN,
            };
            Row { label: t.name.clone(), bars: vec![vec![(t.count as f64, colour)]], value: t.count.to_string() }
        })
        .collect();
    format!(
        "<p style=\"margin:0 0 8px 0\"><b>Satisfaction:</b> {} rating{}, average {:.1} on {}, {:.0}% satisfied</p>\n{}",
        c.count,
        if c.count == 1 { "" } else { "s" },
        c.average.unwrap_or(0.0),
        esc(&c.scale.replace(',', ", ")),
        c.satisfied_pct.unwrap_or(0.0),
        hbars("Satisfaction ratings", &[], &rows)
    )
}

/// The whole page. Each figure is one entry of `panels`: a new figure is one more push.
pub(super) fn page(r: &Report) -> String {
    let mut panels: Vec<String> = Vec::new();
    panels.push(columns(r));
    let queues: Vec<Row> = r
        .by_queue
        .iter()
        .map(|(q, c)| Row { label: q.clone(), bars: vec![vec![(c.opened as f64, BLUE)], vec![(c.resolved as f64, GREEN)]], value: format!("{} opened · {} resolved", c.opened, c.resolved) })
        .collect();
    panels.push(hbars("Opened and resolved per queue", &[("opened", BLUE), ("resolved", GREEN)], &queues));
    panels.push(hbars("SLA: met and breached", &[("met", GREEN), ("breached", RED)], &sla_rows(r)));
    for (title, priority, first) in [
        ("First response time per queue", false, true),
        ("First response time per priority", true, true),
        ("Resolution time per queue", false, false),
        ("Resolution time per priority", true, false),
    ] {
        let groups = if priority { &r.times_by_priority } else { &r.times_by_queue };
        if !groups.is_empty() {
            panels.push(hbars(title, &[("median (p50)", BLUE), ("p90", LIGHT_BLUE)], &times_rows(groups, priority, first)));
        }
    }
    panels.push(csat_block(&r.csat));
    let backlog: Vec<(String, u64)> = ["<1d", "1-3d", "3-7d", ">7d"].iter().map(|k| (k.to_string(), r.backlog_by_age.get(*k).copied().unwrap_or(0))).collect();
    panels.push(hbars("Open backlog by age", &[], &count_rows(&backlog)));
    for (title, list) in [("Top ticket types", &r.top_types), ("Top tags", &r.top_tags), ("Top configuration items", &r.top_cis)] {
        if !list.is_empty() {
            panels.push(hbars(title, &[], &top_rows(list)));
        }
    }
    let mut o = String::from("<!doctype html>\n<html><head><meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>Postdesk report</title></head>\n");
    let _ = writeln!(
        o,
        "<body style=\"margin:0;padding:16px;background:#ffffff;color:{INK};font-family:Helvetica,Arial,sans-serif;font-size:14px\">\n<div style=\"max-width:{WIDTH}px\">\n<h1 style=\"font-size:20px;margin:0 0 4px 0\">Postdesk report</h1>\n<p style=\"margin:0 0 18px 0;color:{GREY}\">{} – {}</p>",
        esc(&r.since.replace('T', " ").replace('Z', "")),
        esc(&r.until.replace('T', " ").replace('Z', " UTC"))
    );
    for p in panels {
        o.push_str(&p);
    }
    // The figures as text: what a mail client that shows no SVG still shows.
    let _ = writeln!(o, "<h2 style=\"font-size:16px;margin:18px 0 6px 0\">Figures</h2>\n<pre style=\"font-size:12px;line-height:1.35;white-space:pre-wrap\">{}</pre>\n</div>\n</body></html>", esc(&super::text(r)));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_cut_to_fit_with_a_tooltip() {
        let (s, cut) = fit("a very long queue name that goes on and on and on", LABEL_W, FONT);
        assert!(cut && s.ends_with('…') && text_width(&s, FONT) <= LABEL_W, "{s}");
        let l = label(0.0, 0.0, "Ünïcödé <queue> & more text than fits in here, surely", 100.0, FONT, "");
        assert!(l.contains("<title>Ünïcödé &lt;queue&gt; &amp; more") && !l.contains("<queue>"), "{l}");
        assert_eq!(fit("short", LABEL_W, FONT), ("short".to_string(), false));
        assert_eq!(fit("", 0.0, FONT), (String::new(), false));
    }

    #[test]
    fn steps_are_round_and_few() {
        for (max, step) in [(1, 1), (4, 1), (5, 2), (9, 5), (17, 5), (40, 10), (41, 20), (1_000_000, 500_000), (u64::MAX, 5_000_000_000_000_000_000)] {
            assert_eq!(nice_step(max), step, "{max}");
        }
    }
}
