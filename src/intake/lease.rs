//! Work one node at a time does (reading an IMAP mailbox, the timers), on PostgreSQL: wait for
//! the lease, work while renewing it every third of its time, stop the work as soon as a renewal
//! fails or finds another holder, and give the lease up at shutdown. The work sees a shutdown
//! signal of its own, so losing the lease stops it the way SIGTERM does (the batch in hand
//! finishes or rolls back; its commit is fenced, `Pipeline::ingest_batch`). On SQLite the work
//! just runs: one daemon owns the file.

use crate::pipeline::Pipeline;
use crate::shutdown::{self, Shutdown};
use crate::store::{Lease, LeaseState};
use std::future::Future;
use std::time::Duration;

/// Run `work` whenever this node holds lease `name`, until `shutdown`.
pub async fn leased<F, Fut>(name: &str, ttl: Duration, pipeline: &Pipeline, shutdown: &Shutdown, mut work: F)
where
    F: FnMut(Shutdown) -> Fut,
    Fut: Future<Output = ()>,
{
    if !pipeline.store.is_postgres() {
        return work(shutdown.clone()).await;
    }
    let every = ttl / 3;
    loop {
        let Some(lease) = acquire(name, ttl, every, pipeline, shutdown).await else { return };
        tracing::info!(lease = name, token = lease.token, "lease taken: this node does the work");
        pipeline.fence(name, Some(lease.clone()));
        let (stop, child) = shutdown::channel();
        let job = work(child);
        tokio::pin!(job);
        let mut ticker = tokio::time::interval(every);
        ticker.tick().await;
        let mut finished = false;
        loop {
            tokio::select! {
                _ = &mut job => { finished = true; break }
                _ = shutdown.wait() => break,
                _ = ticker.tick() => match take(name, ttl, pipeline).await {
                    Ok(LeaseState::Held(l)) if l.token == lease.token => {}
                    other => {
                        tracing::warn!(lease = name, found = ?other.map(|s| format!("{s:?}")).map_err(|e| e.to_string()), "lease lost: stopping its work");
                        break;
                    }
                },
            }
        }
        stop.trigger();
        if !finished {
            job.await;
        }
        if shutdown.is_triggered() {
            let (store, node) = (pipeline.store.clone(), pipeline.store.node());
            let _ = tokio::task::spawn_blocking(move || store.release_lease(&lease, &node)).await;
            return;
        }
    }
}

/// Wait until the lease is ours (`None`: shutdown came first).
async fn acquire(name: &str, ttl: Duration, every: Duration, pipeline: &Pipeline, shutdown: &Shutdown) -> Option<Lease> {
    let mut said = false;
    loop {
        match take(name, ttl, pipeline).await {
            Ok(LeaseState::Held(l)) => return Some(l),
            Ok(LeaseState::HeldBy { holder, for_secs }) if !said => {
                tracing::info!(lease = name, %holder, expires_in_secs = for_secs, "lease held by another node; standing by");
                said = true;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(lease = name, error = %e, "cannot ask for the lease"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait() => return None,
        }
    }
}

async fn take(name: &str, ttl: Duration, pipeline: &Pipeline) -> Result<LeaseState, crate::store::StoreError> {
    let (store, name) = (pipeline.store.clone(), name.to_string());
    match tokio::task::spawn_blocking(move || store.take_lease(&name, &store.node(), ttl)).await {
        Ok(r) => r,
        Err(e) => Err(crate::store::StoreError::Io { path: "lease task".into(), source: std::io::Error::other(e.to_string()) }),
    }
}
