//! Maildir intake: watches `PATH/new`, hands each file to the pipeline, and after the commit moves
//! it to `PATH/cur` with the Seen flag. A crash between commit and rename is harmless: the
//! pipeline recognises the second delivery as a duplicate.

use crate::desk::DeskHandle;
use crate::pipeline::Pipeline;
use crate::shutdown::Shutdown;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::Instrument;

/// Run until shutdown.
pub async fn run(name: String, path: PathBuf, poll: Duration, pipeline: Pipeline, desk: DeskHandle, shutdown: Shutdown) {
    let span = tracing::info_span!("mailbox", mailbox = %name);
    async move {
        for sub in ["new", "cur", "tmp"] {
            if let Err(e) = std::fs::create_dir_all(path.join(sub)) {
                tracing::error!(path = %path.display(), error = %e, "cannot create Maildir");
            }
        }
        tracing::info!(path = %path.display(), "watching Maildir");
        // Health is written when it changes and at most once a minute otherwise: scans run often.
        let mut reported: Option<(bool, std::time::Instant)> = None;
        loop {
            let result = scan(&name, &path, &pipeline, &desk, &shutdown).await;
            if let Err(e) = &result {
                tracing::warn!(error = %e, "Maildir scan failed; retrying");
            }
            let ok = result.is_ok();
            if reported.is_none_or(|(was, at)| was != ok || at.elapsed() > Duration::from_secs(60)) {
                super::report_health(&pipeline, &name, result.map(|_| "watching"), Some(0)).await;
                reported = Some((ok, std::time::Instant::now()));
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.wait() => break,
            }
        }
        tracing::info!("Maildir intake stopped");
    }
    .instrument(span)
    .await
}

/// Files per transaction, and bytes read before one (whichever comes first). As IMAP's default
/// `batch_size`: small enough that a backlog's batch holds the write lock and memory briefly.
const BATCH: usize = 50;
const BATCH_BYTES: usize = 32 << 20;

/// Process every file in `new/`, oldest name first, a batch per transaction. Returns how many
/// were processed.
pub async fn scan(name: &str, path: &Path, pipeline: &Pipeline, desk: &DeskHandle, shutdown: &Shutdown) -> Result<usize, String> {
    let new = path.join("new");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&new)
        .map_err(|e| format!("{}: {e}", new.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')))
        .collect();
    files.sort();
    let mut n = 0;
    // One transaction (one disk sync) per batch of files, bounded by count and bytes like IMAP's.
    let mut rest = files.as_slice();
    while !rest.is_empty() && !shutdown.is_triggered() {
        let (mut batch, mut raws, mut bytes) = (Vec::new(), Vec::new(), 0usize);
        while let Some((file, tail)) = rest.split_first() {
            if !batch.is_empty() && (batch.len() >= BATCH || bytes >= BATCH_BYTES) {
                break;
            }
            rest = tail;
            match std::fs::read(file) {
                Ok(raw) => {
                    bytes += raw.len();
                    raws.push(raw);
                    batch.push(file);
                }
                Err(e) => tracing::warn!(file = %file.display(), error = %e, "cannot read"),
            }
        }
        if batch.is_empty() {
            continue;
        }
        let reports = pipeline.ingest_many_async(desk.current(), name.to_string(), raws).await.map_err(|e| e.to_string())?;
        // Only after the commit: a crash before this point leaves the files in new/, and a file
        // stored but not yet moved is recognised as a duplicate when read again.
        for (file, report) in batch.iter().zip(&reports) {
            tracing::info!(file = %file.display(), message_id = %report.message_id, outcome = ?report.outcome, "message processed");
            let base = file.file_name().and_then(|n| n.to_str()).unwrap_or("msg").split(':').next().unwrap_or("msg").to_string();
            let dest = path.join("cur").join(format!("{base}:2,S"));
            if let Err(e) = std::fs::rename(file, &dest) {
                tracing::warn!(file = %file.display(), error = %e, "stored, but cannot move to cur/");
            }
            n += 1;
        }
    }
    Ok(n)
}
