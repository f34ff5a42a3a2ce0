//! A private PostgreSQL cluster for the tests (`tests/harness/postgres.sh`): started once per
//! test binary, on first use, and stopped when the binary exits. Each test takes a database of
//! its own with [`fresh_database`]. Only std: databases are made and SQL is run through the
//! `psql` binary of the cluster's PostgreSQL.
//!
//! Stopping: a `static` is never dropped, so the `Drop` that stops the mail servers
//! (`MailServers`) cannot stop a shared cluster. Instead the cluster is stopped by an `atexit`
//! handler (libtest ends the process through `exit`, after every test, passed or failed), and,
//! when the binary dies without running it (kill -9, abort), by the harness's watcher
//! (`PG_OWNER_PID`), which stops the cluster within a second of this process ending. Either way
//! the harness's `stop` shuts the server down fast and removes its folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// How each database is created: encoding and locale as the brief of issue 15 says; text columns
/// are `COLLATE "C"` in the schema anyway.
const CREATE_OPTIONS: &str = "TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C' LC_CTYPE 'C.UTF-8'";

/// The running cluster of this test binary.
pub struct PgCluster {
    /// The harness folder (data, socket, log, env); removed when the cluster stops.
    pub dir: PathBuf,
    /// Everything the harness printed as `KEY=value` (`PG_PORT`, `PG_URL`, `PG_DATA`, `PG_LOG`,
    /// `PG_BIN`, `PG_SUPERUSER_URL`, …; tests/harness/README.md).
    pub env: HashMap<String, String>,
    pub port: u16,
    /// `postgres://postdesk@127.0.0.1:PORT/postgres`: the role `postdesk` (LOGIN CREATEDB).
    pub url: String,
    bin: PathBuf,
}

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();

fn repo() -> PathBuf {
    // Under cargo the manifest dir; compiled on its own (rustc), the working directory.
    match option_env!("CARGO_MANIFEST_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::current_dir().expect("current dir"),
    }
}

fn harness() -> PathBuf {
    repo().join("tests/harness/postgres.sh")
}

unsafe extern "C" {
    fn atexit(cb: extern "C" fn()) -> std::os::raw::c_int;
}

extern "C" fn stop_at_exit() {
    // Never unwind into C.
    let _ = std::panic::catch_unwind(|| {
        if let Some(c) = CLUSTER.get() {
            c.stop();
        }
    });
}

impl PgCluster {
    /// The cluster of this test binary, started on first use.
    pub fn get() -> &'static PgCluster {
        CLUSTER.get_or_init(PgCluster::start)
    }

    fn start() -> PgCluster {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("pd-pg-{}-{}", std::process::id(), nanos % 1_000_000_000_000));
        std::fs::create_dir_all(&dir).expect("create the cluster's folder");
        let out = Command::new("bash")
            .arg(harness())
            .arg("start")
            .arg(&dir)
            .env("PG_OWNER_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run tests/harness/postgres.sh");
        assert!(
            out.status.success(),
            "PostgreSQL did not start:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let get = |k: &str| env.get(k).cloned().unwrap_or_else(|| panic!("postgres.sh printed no {k}:\n{}", String::from_utf8_lossy(&out.stdout)));
        let port = get("PG_PORT").parse().expect("PG_PORT is a port");
        let url = get("PG_URL");
        let bin = PathBuf::from(get("PG_BIN"));
        let dir = env.get("DIR").map(PathBuf::from).unwrap_or(dir);
        // Registered once: get_or_init runs this once per process.
        // SAFETY: atexit is given a plain function that neither unwinds nor returns a value.
        unsafe {
            atexit(stop_at_exit);
        }
        PgCluster { dir, env, port, url, bin }
    }

    /// Stop the server (fast shutdown) and remove its folder. At exit this happens by itself;
    /// call it only to test what a lost database does (nothing restarts it).
    pub fn stop(&self) {
        let _ = Command::new("bash").arg(harness()).arg("stop").arg(&self.dir).stdin(Stdio::null()).output();
    }

    /// The URL of database `name` in this cluster, as `postdesk`.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postdesk@127.0.0.1:{}/{name}", self.port)
    }

    /// The PostgreSQL binaries (`psql`, `pg_dump`, …) of the cluster.
    pub fn bin(&self, tool: &str) -> PathBuf {
        self.bin.join(tool)
    }

    /// The server's log (read it when a test fails).
    pub fn log(&self) -> PathBuf {
        PathBuf::from(&self.env["PG_LOG"])
    }
}

fn psql_command(url: &str) -> Command {
    let c = PgCluster::get();
    let mut cmd = Command::new(c.bin("psql"));
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url]);
    for v in ["PGOPTIONS", "PGSERVICE", "PGSERVICEFILE", "PGPASSWORD", "PGPASSFILE", "PGSSLMODE", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PSQLRC"] {
        cmd.env_remove(v);
    }
    cmd.env("PGCONNECT_TIMEOUT", "10").stdin(Stdio::null());
    cmd
}

fn checked(what: &str, out: Output) -> String {
    assert!(out.status.success(), "psql {what} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `sql` (one or more statements) in the database at `url`; the unaligned, tuples-only
/// output (`|` between columns, a line per row). Panics with psql's message on any error.
pub fn psql(url: &str, sql: &str) -> String {
    checked(sql, psql_command(url).arg("-c").arg(sql).output().expect("run psql"))
}

/// Run the SQL file `path` in the database at `url`, in one transaction.
pub fn psql_file(url: &str, path: &Path) -> String {
    checked(&path.display().to_string(), psql_command(url).arg("--single-transaction").arg("-f").arg(path).output().expect("run psql"))
}

/// A new, empty database owned by `postdesk` in this binary's cluster (started on first use);
/// its URL, `postgres://postdesk@127.0.0.1:PORT/NAME`. The name holds `name_hint` (letters,
/// digits and `_`; the rest becomes `_`), so the server's log says which test it was.
pub fn fresh_database(name_hint: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let c = PgCluster::get();
    let hint: String = name_hint.chars().map(|ch| if ch.is_ascii_alphanumeric() { ch.to_ascii_lowercase() } else { '_' }).take(32).collect();
    // At most 63 bytes: "pd_" + 32 + "_" + pid (≤ 10) + "_" + counter.
    let name = format!("pd_{hint}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    psql(&c.url, &format!("CREATE DATABASE \"{name}\" OWNER postdesk {CREATE_OPTIONS}"));
    c.url_of(&name)
}
