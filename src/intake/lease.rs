//! Work one node at a time does (reading an IMAP mailbox, the timers), on PostgreSQL: wait for
//! the lease, work while renewing it every third of its time, stop the work as soon as a renewal
//! fails or finds another holder, and give the lease up at shutdown. The work sees a shutdown
//! signal of its own, so losing the lease stops it the way SIGTERM does (the batch in hand
//! finishes or rolls back; its commit is fenced, `Pipeline::ingest_batch`). On SQLite the work
//! just runs: one daemon owns the file.
//!
//! Mailboxes are shared out: with N nodes alive (their `node:` leases) and M mailboxes, a node
//! holds at most ⌈M/N⌉ mailbox leases once others could take the rest. A node over its share
//! gives up the excess (the last ones in name order, so the nodes agree on which) at a renewal
//! and stands back for a while before it asks again, so a node that joins gets work; a mailbox
//! nobody else takes is taken back.

use crate::pipeline::Pipeline;
use crate::shutdown::{self, Shutdown};
use crate::store::{Lease, LeaseState};
use std::future::Future;
use std::time::Duration;

/// Run `work` whenever this node holds lease `name`, until `shutdown`. `share`: the number of
/// leases of this kind (mailboxes) the nodes share out, if any.
pub async fn leased<F, Fut>(name: &str, ttl: Duration, share: Option<usize>, pipeline: &Pipeline, shutdown: &Shutdown, mut work: F)
where
    F: FnMut(Shutdown) -> Fut,
    Fut: Future<Output = ()>,
{
    if !pipeline.store.is_postgres() {
        return work(shutdown.clone()).await;
    }
    let every = ttl / 3;
    loop {
        let Some(lease) = acquire(name, ttl, every, share, pipeline, shutdown).await else { return };
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
                    Ok(LeaseState::Held(l)) if l.token == lease.token => {
                        if let Some(total) = share
                            && over_share(name, total, pipeline).await
                        {
                            tracing::info!(lease = name, "more than this node's share of the mailboxes: handing this one over");
                            break;
                        }
                    }
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
        // Whether stopping, handing over or lost: a lease we still hold goes at once (the
        // release names our token, so a lease another node took is left alone).
        let (store, node, given) = (pipeline.store.clone(), pipeline.store.node(), lease.clone());
        let _ = tokio::task::spawn_blocking(move || store.release_lease(&given, &node)).await;
        if shutdown.is_triggered() {
            return;
        }
        // Stand back for a while: another node takes the mailbox if it can.
        tokio::select! {
            _ = tokio::time::sleep(ttl) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// Whether `name` is among the mailbox leases this node holds beyond its share (the last in
/// name order), with `total` mailboxes and the nodes alive now.
async fn over_share(name: &str, total: usize, pipeline: &Pipeline) -> bool {
    let store = pipeline.store.clone();
    let Ok(Ok(leases)) = tokio::task::spawn_blocking(move || store.leases()).await else { return false };
    excess(&leases, &pipeline.store.node(), total).iter().any(|n| n == name)
}

/// The mailbox leases `me` holds beyond ⌈total / nodes alive⌉, last in name order first.
fn excess(leases: &[(String, String, f64)], me: &str, total: usize) -> Vec<String> {
    let alive = |(_, _, left): &&(String, String, f64)| *left > 0.0;
    let nodes = leases.iter().filter(alive).filter(|(n, _, _)| n.starts_with("node:")).count().max(1);
    let share = total.div_ceil(nodes).max(1);
    let mut mine: Vec<String> = leases.iter().filter(alive).filter(|(n, h, _)| n.starts_with("mailbox:") && h == me).map(|(n, _, _)| n.clone()).collect();
    mine.sort();
    mine.split_off(share.min(mine.len()))
}

/// Wait until the lease is ours (`None`: shutdown came first). A node that already holds its
/// share of mailboxes lets a free one be for two rounds, so a node with fewer takes it first.
async fn acquire(name: &str, ttl: Duration, every: Duration, share: Option<usize>, pipeline: &Pipeline, shutdown: &Shutdown) -> Option<Lease> {
    let mut said = false;
    let mut patience = 0;
    loop {
        if let Some(total) = share
            && patience < 2
            && at_share(total, pipeline).await
        {
            patience += 1;
            tokio::select! {
                _ = tokio::time::sleep(every) => continue,
                _ = shutdown.wait() => return None,
            }
        }
        patience = 0;
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

/// Whether this node holds its share of the `total` mailboxes already.
async fn at_share(total: usize, pipeline: &Pipeline) -> bool {
    let store = pipeline.store.clone();
    let Ok(Ok(leases)) = tokio::task::spawn_blocking(move || store.leases()).await else { return false };
    let me = pipeline.store.node();
    let alive: Vec<_> = leases.iter().filter(|(_, _, left)| *left > 0.0).collect();
    let nodes = alive.iter().filter(|(n, _, _)| n.starts_with("node:")).count().max(1);
    let mine = alive.iter().filter(|(n, h, _)| n.starts_with("mailbox:") && *h == me).count();
    mine >= total.div_ceil(nodes)
}

async fn take(name: &str, ttl: Duration, pipeline: &Pipeline) -> Result<LeaseState, crate::store::StoreError> {
    let (store, name) = (pipeline.store.clone(), name.to_string());
    match tokio::task::spawn_blocking(move || store.take_lease(&name, &store.node(), ttl)).await {
        Ok(r) => r,
        Err(e) => Err(crate::store::StoreError::Io { path: "lease task".into(), source: std::io::Error::other(e.to_string()) }),
    }
}

#[cfg(test)]
mod tests {
    use super::excess;

    fn l(name: &str, holder: &str) -> (String, String, f64) {
        (name.to_string(), holder.to_string(), 5.0)
    }

    #[test]
    fn a_node_over_its_share_gives_up_the_last_mailboxes_in_name_order() {
        let mut leases = vec![l("node:a/1", "a/1"), l("mailbox:support", "a/1"), l("mailbox:billing", "a/1"), l("mailbox:sales", "a/1"), l("mailbox:hr", "a/1")];
        assert!(excess(&leases, "a/1", 4).is_empty(), "alone, a node keeps every mailbox");
        leases.push(l("node:b/2", "b/2"));
        assert_eq!(excess(&leases, "a/1", 4), ["mailbox:sales", "mailbox:support"]);
        leases.push(l("node:c/3", "c/3"));
        assert_eq!(excess(&leases, "a/1", 4), ["mailbox:hr", "mailbox:sales", "mailbox:support"][1..], "⌈4/3⌉ = 2 stay");
        leases.push(("node:d/4".into(), "d/4".into(), -1.0));
        assert_eq!(excess(&leases, "a/1", 4).len(), 2, "an expired node does not count");
    }
}
