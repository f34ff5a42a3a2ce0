//! Daemon: starts the store, the outbound worker and one intake task per mailbox; reloads the desk
//! on SIGHUP (a broken config or template keeps the previous desk); shuts down in two phases —
//! stop taking work, let the message in hand finish, abort at the deadline.

use crate::clock::SharedClock;
use crate::config::{Problems, Source};
use crate::desk::{Desk, DeskHandle, KeyMode};
use crate::outbound::{Transport, Worker};
use crate::pipeline::Pipeline;
use crate::shutdown::{self, Trigger};
use crate::store::Store;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// One daemon per database: an exclusive lock on `<database>-daemon.pid`, which holds the
/// daemon's pid, kept for its whole life (the kernel drops it when the process ends, even by
/// kill -9). Two daemons on one database would send the same mail twice. `deliver` and the
/// other commands do not take it: SQLite's own locking keeps them safe beside the daemon.
#[derive(Debug)]
pub struct DaemonLock {
    _file: std::fs::File,
}

/// The daemon lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another postdesk daemon (pid {pid}) is running on {database}; stop it first: two daemons on one database would send mail twice")]
    Held { pid: String, database: PathBuf },
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl DaemonLock {
    fn path(database: &Path) -> PathBuf {
        let mut path = database.as_os_str().to_owned();
        path.push("-daemon.pid");
        PathBuf::from(path)
    }

    /// The pid of the daemon running on `database`, if one is (for `postdesk status`). The probe
    /// takes a shared lock for an instant, never the exclusive one.
    pub fn holder(database: &Path) -> Option<String> {
        use std::io::Read;
        let mut file = std::fs::File::open(Self::path(database)).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(_) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                Some(if pid.trim().is_empty() { "unknown".into() } else { pid.trim().to_string() })
            }
        }
    }

    pub fn take(database: &Path) -> Result<DaemonLock, LockError> {
        use std::io::{Read, Seek, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let path = Self::path(database);
        let io = |source| LockError::Io { path: path.clone(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&path).map_err(io)?;
        // `postdesk status` probes with a shared lock for an instant: try a few times before
        // concluding that another daemon holds it.
        let mut tries = 0;
        let locked = loop {
            match file.try_lock() {
                Err(std::fs::TryLockError::WouldBlock) if tries < 10 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        };
        match locked {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = if pid.trim().is_empty() { "unknown".to_string() } else { pid.trim().to_string() };
                return Err(LockError::Held { pid, database: database.to_path_buf() });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).and_then(|_| file.rewind()).and_then(|_| writeln!(file, "{}", std::process::id())).map_err(io)?;
        Ok(DaemonLock { _file: file })
    }
}

/// A started daemon; tests drive it in process, `run` drives it from signals.
pub struct Running {
    _lock: Option<DaemonLock>,
    trigger: Trigger,
    tasks: JoinSet<()>,
    pub pipeline: Pipeline,
    pub desk: DeskHandle,
    config_path: PathBuf,
    deadline: Duration,
}

/// Open the database, start the outbound worker and every intake.
pub async fn start(desk: Desk, config_path: &Path, clock: SharedClock) -> anyhow::Result<Running> {
    let cfg = &desk.config;
    // SQLite: one daemon per file. PostgreSQL: any number of nodes, which share the work by leases.
    let lock = if cfg.store.postgres_url.is_none() { Some(DaemonLock::take(&cfg.desk.database)?) } else { None };
    let store = Arc::new(Store::connect(&cfg.backend()).context("opening the database")?);
    store.set_node(&format!("{}/{}", cfg.store.node, std::process::id()));
    let pipeline = Pipeline::new(store.clone(), clock.clone());
    let (trigger, shutdown) = shutdown::channel();
    let handle = DeskHandle::new(desk);
    let cfg = &handle.current().config;
    let tokens = match (&cfg.outbound.oauth2, &cfg.outbound.transport) {
        (Some(o), crate::config::Transport::Smtp(e)) => {
            let events = crate::pipeline::oauth::RecordTokenEvents { pipeline: pipeline.clone(), desk: handle.clone(), account: e.username.clone().unwrap_or_default() };
            Some(Arc::new(crate::oauth::TokenSource::new(o.clone(), clock.clone(), Some(Arc::new(events)))?))
        }
        _ => None,
    };
    let transport = Arc::new(Transport::from_config(&cfg.outbound.transport, tokens)?);
    let mut tasks = JoinSet::new();
    let worker = Worker {
        store,
        transport,
        retry: cfg.outbound.retry.clone(),
        clock,
        wake: pipeline.outbox_wake.clone(),
        poll_interval: cfg.outbound.poll_interval,
    };
    tasks.spawn(worker.run(shutdown.clone()));
    if let Some(listen) = cfg.metrics_listen {
        crate::metrics::serve(listen, pipeline.counters.clone(), pipeline.store.clone(), pipeline.clock.clone(), shutdown.clone()).with_context(|| format!("metrics on {listen}"))?;
    }
    let mailboxes: Vec<String> = cfg.mailboxes.values().filter(|m| !matches!(m.source, Source::Pipe)).map(|m| m.name.clone()).collect();
    let deadline = cfg.shutdown_timeout;
    let has_sla = !cfg.sla.policies.is_empty() || cfg.lifecycle.is_some() || !cfg.weekly_report_to.is_empty();
    if has_sla {
        // One node at a time runs the timers (PostgreSQL).
        let (p, h, sd, ttl) = (pipeline.clone(), handle.clone(), shutdown.clone(), cfg.store.lease_ttl);
        tasks.spawn(async move { crate::intake::lease::leased("timers", ttl, None, &p, &sd, |child| sla_timer(p.clone(), h.clone(), child)).await });
    }
    if pipeline.store.is_postgres() {
        // Presence: `postdesk status` counts the nodes by these leases.
        let (p, sd, ttl, name) = (pipeline.clone(), shutdown.clone(), cfg.store.lease_ttl, format!("node:{}", pipeline.store.node()));
        tasks.spawn(async move { crate::intake::lease::leased(&name, ttl, None, &p, &sd, |child| async move { child.wait().await }).await });
    }
    for name in mailboxes {
        tasks.spawn(crate::intake::run_mailbox(name, pipeline.clone(), handle.clone(), shutdown.clone()));
    }
    // `postdesk deliver` hands mail to this process when it can (no desk to load, no database to open).
    let socket = crate::intake::handoff::socket_path(&cfg.desk.data_dir);
    match crate::intake::handoff::bind(&socket) {
        Ok(listener) => {
            tasks.spawn(crate::intake::handoff::serve(listener, socket, pipeline.clone(), handle.clone(), shutdown.clone()));
        }
        Err(e) => tracing::warn!(socket = %socket.display(), error = %e, "no deliver socket: `postdesk deliver` stores mail itself"),
    }
    tracing::info!(database = %pipeline.store.backend().display(), node = %pipeline.store.node(), "postdesk started");
    Ok(Running { _lock: lock, trigger, tasks, pipeline, desk: handle, config_path: config_path.to_path_buf(), deadline })
}

/// Announce SLA warnings and breaches as they fall due and run the lifecycle timers (checked
/// every second; the queries are index lookups); housekeeping once a minute.
async fn sla_timer(pipeline: Pipeline, desk: DeskHandle, shutdown: crate::shutdown::Shutdown) {
    for second in 0u64.. {
        let (p, d) = (pipeline.clone(), desk.current());
        let housekeeping = second.is_multiple_of(60);
        let work = move || {
            // Housekeeping first and on its own: a failing SLA tick must not stop it for good.
            let kept = if housekeeping { p.housekeeping_tick(&d).map(drop) } else { Ok(()) };
            p.sla_tick(&d)?;
            p.lifecycle_tick(&d)?;
            p.weekly_report_tick(&d)?;
            kept
        };
        match tokio::task::spawn_blocking(work).await {
            Ok(Err(e)) => tracing::error!(error = %e, "SLA timer"),
            Err(e) => tracing::error!(error = %e, "SLA timer task"),
            Ok(Ok(_)) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.wait() => break,
        }
    }
}

impl Running {
    /// Re-read config and templates through the start-up code; on any problem keep the current desk.
    /// Mailbox and outbound changes need a restart (their tasks hold connections); they are reported.
    pub fn reload(&self) -> Result<(), Problems> {
        let new = Desk::load(&self.config_path, KeyMode::Persistent)?;
        let old = self.desk.current();
        if format!("{:?}", old.config.mailboxes) != format!("{:?}", new.config.mailboxes)
            || format!("{:?}", old.config.outbound) != format!("{:?}", new.config.outbound)
        {
            tracing::warn!("mailbox or outbound settings changed: they take effect after a restart");
        }
        self.desk.replace(new);
        tracing::info!("configuration and templates reloaded");
        Ok(())
    }

    /// Stop: signal every task, wait up to the deadline, then abort what is left.
    pub async fn stop(mut self) {
        self.trigger.trigger();
        let deadline = tokio::time::sleep(self.deadline);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = self.tasks.join_next() => if next.is_none() { break },
                _ = &mut deadline => {
                    tracing::warn!(remaining = self.tasks.len(), "shutdown deadline reached; aborting");
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        tracing::info!("postdesk stopped");
    }
}

/// `postdesk run`: start, tell systemd we are ready, serve until SIGTERM/SIGINT, reload on SIGHUP.
pub async fn run(config_path: &Path, clock: SharedClock) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let desk = Desk::load(config_path, KeyMode::Persistent).map_err(crate::config::Problems::into_error)?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let running = start(desk, config_path, clock).await?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                if let Err(p) = running.reload() {
                    tracing::error!("reload failed; keeping the previous configuration:\n{p}");
                }
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
        }
    }
    tracing::info!("shutting down");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    running.stop().await;
    Ok(())
}
