//! The HTML report of a seeded desk, rendered by headless Chromium: the screenshot is not blank
//! (bars in their colours), and no label overlaps a bar or another label (a check script the
//! TEST injects into a copy of the page measures every text's getBBox(); the report itself has
//! no scripts). Chromium comes from `scripts/install-test-deps.sh`; without it this test fails,
//! it never skips.

mod common;

use common::clients;
use postdesk::clock::{Clock, ManualClock};
use postdesk::desk::{Desk, KeyMode};
use postdesk::pipeline::{Delivery, Pipeline};
use postdesk::store::Store;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const DESK: &str = r#"
[desk]
name = "Example Support"
domain = "desk.example.test"
data_dir = "var"
templates_dir = "templates"
secret = "report-browser-secret-0123456789"

[queues.support]
address = "support@example.test"
from_name = "Example Support"
sla = "standard"

[queues.second-level-support-for-very-important-customers]
address = "vip@example.test"
sla = "standard"

[mailboxes.support]
kind = "pipe"

[mailboxes.vip]
kind = "pipe"
queue = "second-level-support-for-very-important-customers"

[agents.alice]
name = "Alice Agent"
email = "alice@agents.example.test"
queues = ["support", "second-level-support-for-very-important-customers"]

[sla.policies.standard]
first_response = "2h"
resolution = "1d"

[csat]
scale = "1-5"

[cis]
file = "cis.csv"

[guard]
auto_mail_total = "off"
"#;

const CIS: &str = "name,type,owner,location\nweb01,server,ops@example.com,rack 3\nPRN-0042,printer,facilities@example.com,floor 3\nmail-gateway-frankfurt-primary-cluster,server,ops@example.com,dc\n";

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        if let Some(p) = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).map(|d| d.join(name)).find(|p| p.is_file()) {
            return p;
        }
    }
    panic!("headless Chromium is not installed: run scripts/install-test-deps.sh (as root); this test does not skip");
}

/// Chromium's flags for this machine, with a fresh profile in `dir`.
fn browser(dir: &Path) -> Command {
    let mut c = Command::new(chromium());
    c.args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]);
    c.arg(format!("--user-data-dir={}", dir.join("profile").display()));
    c
}

/// Two weeks of a small desk, ending now: tickets in two queues, most answered (some late: SLA
/// breaches), tagged, typed and prioritised by the agent, two thirds resolved, half of those
/// rated; some name configuration items.
fn seed(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("cis.csv"), CIS).unwrap();
    let path = common::write_config(dir, DESK);
    let desk = Desk::load(&path, KeyMode::Persistent).unwrap_or_else(|p| panic!("{p}"));
    let store = Arc::new(Store::open(&desk.config.desk.database).unwrap());
    let now = time::OffsetDateTime::now_utc();
    let start = (now - time::Duration::days(13)).replace_time(time::macros::time!(07:00));
    let clock = ManualClock::new(start);
    let p = Pipeline::new(store.clone(), Arc::new(clock.clone()));
    let ingest = |mailbox: &str, raw: &[u8]| p.ingest(&desk, Delivery { mailbox, raw, cursor: None, truncated_from: None }).unwrap();
    let mut seen = 0;
    let mut new_mail = || {
        let mut all = store.due_outbound("9999", 100_000).unwrap();
        all.sort_by_key(|m| m.id);
        let new: Vec<(Vec<String>, String)> = all.iter().skip(seen).map(|m| (m.recipients.clone(), String::from_utf8(m.raw.clone()).unwrap())).collect();
        seen = all.len();
        new
    };
    let h = |raw: &str, name: &str| common::header(raw, name).unwrap_or_default();
    let id = |raw: &str| h(raw, "message-id").trim_matches(['<', '>']).to_string();
    let tags = ["vpn", "printer", "email", "password", "a-very-long-tag-name-that-cannot-fit-the-label-column"];
    let cis = ["web01 is unreachable", "PRN-0042 jams", "mail-gateway-frankfurt-primary-cluster drops mail", "", ""];
    let n = 40;
    for i in 0..n {
        let at = start + time::Duration::days(i * 13 / n) + time::Duration::hours(i % 6);
        if at > now - time::Duration::days(2) {
            break;
        }
        // Each ticket's own story moves forward; the next one may start earlier than the last ended.
        clock.advance(at - clock.now());
        let customer = format!("customer.{}@example.org", common::spelled(&i.to_string()).replace(' ', "."));
        let (mailbox, to) = if i % 3 == 0 { ("vip", "vip@example.test") } else { ("support", "support@example.test") };
        let words = common::spelled(&i.to_string());
        let m = clients::thunderbird_new("Customer", &customer, to, &format!("Trouble {words}"), &format!("Hello, {} ({words}).", cis[(i % 5) as usize]));
        ingest(mailbox, &m.raw);
        let note = new_mail().into_iter().find(|(to, _)| to == &["alice@agents.example.test"]).expect("alice is told").1;
        // First response after 1 to 4 hours: over 2 h breaches the SLA.
        clock.advance(time::Duration::hours(1 + i % 4));
        p.sla_tick(&desk).unwrap();
        let ty = if i % 4 == 0 { "service_request" } else { "incident" };
        let prio = ["low", "normal", "high", "urgent"][(i % 4) as usize];
        let body = format!("/take\n/tag {}\n/type {ty}\n/priority {prio}\nWe are looking into it.", tags[(i % 5) as usize]);
        ingest(mailbox, &clients::thunderbird_reply("Alice", "alice@agents.example.test", to, &h(&note, "subject"), &id(&note), &[], &body).raw);
        new_mail();
        if i % 3 != 2 {
            clock.advance(time::Duration::hours(2 + (i * 7) % 30));
            p.sla_tick(&desk).unwrap();
            ingest(mailbox, &clients::thunderbird_reply("Alice", "alice@agents.example.test", to, &h(&note, "subject"), &id(&note), &[], "/status resolved").raw);
            let notice = new_mail().into_iter().find(|(to, _)| to == std::slice::from_ref(&customer)).expect("resolved notice").1;
            if i % 2 == 0 {
                clock.advance(time::Duration::hours(1));
                let rating = ["5", "4", "5", "2", "3", "5\nVery quick, thanks."][((i / 2) % 6) as usize];
                ingest(mailbox, &clients::thunderbird_reply("Customer", &customer, to, &h(&notice, "subject"), &id(&notice), &[], rating).raw);
            }
        }
    }
    path
}

fn report(config: &Path, since: &str, format: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_postdesk")).args(["--config"]).arg(config).args(["report", "--since", since, "--format", format]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Injected into a copy of the page: every text inside its SVG, clear of every bar, swatch and
/// other text; the verdict is written into the DOM for `--dump-dom`.
const CHECK: &str = r#"<script>
(function () {
  var bad = [], texts = 0;
  function over(a, b) { return a.x < b.x + b.width - 0.5 && b.x < a.x + a.width - 0.5 && a.y < b.y + b.height - 0.5 && b.y < a.y + a.height - 0.5; }
  document.querySelectorAll('svg').forEach(function (svg) {
    var vb = svg.viewBox.baseVal;
    var ts = Array.prototype.map.call(svg.querySelectorAll('text'), function (t) { return { s: t.textContent, b: t.getBBox() }; });
    var rs = Array.prototype.map.call(svg.querySelectorAll('rect'), function (r) { return r.getBBox(); });
    texts += ts.length;
    ts.forEach(function (a, i) {
      if (a.b.width <= 0) bad.push('empty: ' + a.s);
      if (a.b.x < -0.5 || a.b.y < -0.5 || a.b.x + a.b.width > vb.width + 0.5 || a.b.y + a.b.height > vb.height + 0.5) bad.push('outside: ' + a.s);
      ts.forEach(function (b, j) { if (j > i && over(a.b, b.b)) bad.push('text on text: ' + a.s + ' | ' + b.s); });
      rs.forEach(function (r) { if (over(a.b, r)) bad.push('text on bar: ' + a.s); });
    });
  });
  var out = document.createElement('pre');
  out.textContent = 'LABEL' + 'CHECK ' + texts + ' ' + JSON.stringify(bad) + ' ENDCHECK';
  document.body.appendChild(out);
})();
</script>"#;

#[test]
fn the_html_report_renders_with_bars_and_labels_that_fit() {
    let dir = tempfile::tempdir().unwrap();
    let config = seed(dir.path());
    let html = report(&config, "14d", "html");
    let json: serde_json::Value = serde_json::from_str(&report(&config, "14d", "json")).unwrap();
    assert!(json["csat"]["count"].as_u64().unwrap() >= 5, "{}", json["csat"]);
    assert!(json["sla_first_response"]["breached"].as_u64().unwrap() > 0 && json["sla_first_response"]["met"].as_u64().unwrap() > 0, "{}", json["sla_first_response"]);
    assert!(json["top_cis"].as_array().unwrap().len() >= 3 && json["top_tags"].as_array().unwrap().len() == 5, "{json}");
    assert!(!html.contains("<script"), "the report itself has no scripts");
    let page = dir.path().join("report.html");
    std::fs::write(&page, &html).unwrap();
    if let Some(keep) = std::env::var_os("POSTDESK_KEEP_REPORT") {
        std::fs::copy(&page, PathBuf::from(&keep).with_extension("html")).unwrap();
    }

    // 1. The screenshot is no blank page: ink, and bars in the report's blue, green and red.
    let shot = dir.path().join("shot.png");
    let out = browser(dir.path()).arg(format!("--screenshot={}", shot.display())).arg("--window-size=680,2600").arg(format!("file://{}", page.display())).output().unwrap();
    assert!(shot.is_file(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    if let Some(keep) = std::env::var_os("POSTDESK_KEEP_REPORT") {
        std::fs::copy(&shot, PathBuf::from(&keep).with_extension("png")).unwrap();
    }
    let decoder = png::Decoder::new(std::fs::File::open(&shot).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let px: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let near = |p: &[u8], c: [u8; 3]| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) < 24);
    let ink = px.iter().filter(|p| p[..3].iter().any(|v| *v < 200)).count();
    let (blue, green, red) = (px.iter().filter(|p| near(p, [0x3b, 0x6f, 0xc4])).count(), px.iter().filter(|p| near(p, [0x2e, 0x7d, 0x32])).count(), px.iter().filter(|p| near(p, [0xc6, 0x28, 0x28])).count());
    assert!(ink * 50 > px.len(), "mostly blank: {ink} of {} pixels inked", px.len());
    assert!(blue > 2000 && green > 1000 && red > 100, "bars missing: blue {blue}, green {green}, red {red} pixels");

    // 2. Labels fit: the injected check measures every SVG text in the rendered page, for two
    //    weeks, a quarter (day labels thinned) and years (bucketed, whole dates as labels).
    for (since, html) in [("14d", html), ("90d", report(&config, "90d", "html")), ("2019-06-01", report(&config, "2019-06-01", "html"))] {
        if let Some(keep) = std::env::var_os("POSTDESK_KEEP_REPORT") {
            std::fs::write(format!("{}-{since}.html", keep.to_string_lossy()), &html).unwrap();
        }
        let checked = dir.path().join("checked.html");
        std::fs::write(&checked, html.replace("</body>", &format!("{CHECK}\n</body>"))).unwrap();
        let out = browser(dir.path()).arg("--dump-dom").arg(format!("file://{}", checked.display())).output().unwrap();
        let dom = String::from_utf8_lossy(&out.stdout);
        let verdict = dom.split("LABELCHECK ").nth(1).and_then(|s| s.split(" ENDCHECK").next()).unwrap_or_else(|| panic!("the check did not run: {}", String::from_utf8_lossy(&out.stderr)));
        let (count, bad) = verdict.split_once(' ').unwrap();
        assert!(count.parse::<usize>().unwrap() > 60, "--since {since}: texts measured: {count}");
        assert_eq!(bad, "[]", "--since {since}: labels that do not fit");
    }
}
