//! The Debian package, built from this tree with cargo-deb, installed with `dpkg -i` into this
//! machine (the suite runs as root), then used as an admin would: `postdesk check` and a piped
//! message as the service user, the files where the README says, private modes, the systemd
//! unit's exposure; purged at the end.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn mode(p: &str) -> (u32, u32, u32) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

fn id(flag: &str) -> u32 {
    String::from_utf8(run(Command::new("id").arg(flag).arg("postdesk")).stdout).unwrap().trim().parse().unwrap()
}

/// Purge the package even when the test fails half-way.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "postdesk"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// Written into the state dir once this test installed the package: a state dir without it is
/// a real installation, which this test must neither replace nor purge.
const OURS: &str = "/var/lib/postdesk/.installed-by-postdesk-tests";

#[test]
fn the_debian_package_installs_and_runs_as_its_service_user() {
    if Path::new("/var/lib/postdesk").exists() && !Path::new(OURS).exists() {
        println!("the_debian_package_…: a real Postdesk installation is on this machine (/var/lib/postdesk); not touching it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deb = dir.path().join("postdesk.deb");
    // The debug build the suite already made (cargo-deb strips it); `scripts/package.sh` makes
    // the release package.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo).args(["deb", "--profile", "dev", "--fast", "--no-separate-debug-symbols", "-o"]).arg(&deb).current_dir(env!("CARGO_MANIFEST_DIR")));
    let _purge = Purge;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    std::fs::write(OURS, "").unwrap();

    assert!(Path::new("/usr/bin/postdesk").is_file());
    assert!(Path::new("/usr/share/postdesk/templates/acknowledgement.txt.hbs").is_file());
    assert!(Path::new("/usr/share/postdesk/templates/lang/de/acknowledgement.txt.hbs").is_file());
    assert!(Path::new("/usr/share/doc/postdesk/README.md").is_file());
    assert!(Path::new("/usr/lib/systemd/system/postdesk.service").is_file());
    let (uid, gid) = (id("-u"), id("-g"));
    assert_eq!(mode("/var/lib/postdesk"), (0o700, uid, gid), "state dir private to the service user");
    assert_eq!(mode("/etc/postdesk/postdesk.toml"), (0o640, 0, gid), "config readable by root and the service group only");

    // As the service user, the shipped config passes check, and a piped message becomes a ticket.
    let check = run(Command::new("runuser").args(["-u", "postdesk", "--", "/usr/bin/postdesk", "--config", "/etc/postdesk/postdesk.toml", "check"]));
    assert!(String::from_utf8_lossy(&check.stdout).contains(": ok"), "{}", String::from_utf8_lossy(&check.stdout));
    let m = common::clients::thunderbird_new("Alice Example", "alice@example.org", "support@example.com", "Printer jammed", "Floor 3.");
    let mut deliver = Command::new("runuser")
        .args(["-u", "postdesk", "--", "/usr/bin/postdesk", "--config", "/etc/postdesk/postdesk.toml", "deliver", "--mailbox", "support"])
        .current_dir("/")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut deliver.stdin.take().unwrap(), &m.raw).unwrap();
    let out = deliver.wait_with_output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("created PD-1"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode("/var/lib/postdesk/postdesk.db"), (0o600, uid, gid));
    assert_eq!(mode("/var/lib/postdesk/secret"), (0o600, uid, gid));

    // The unit's hardening, as systemd scores it (lower is better; 1.6 when this was written).
    let out = Command::new("systemd-analyze").args(["security", "--offline=yes", "/usr/lib/systemd/system/postdesk.service"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text.lines().find_map(|l| l.split("exposure level for postdesk.service: ").nth(1)).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{text}"));
    println!("systemd-analyze security: exposure {level}");
    assert!(level <= 1.6, "exposure {level} above 1.6:\n{text}");
}
