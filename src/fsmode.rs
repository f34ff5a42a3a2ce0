//! Private files: what Postdesk keeps in its data dir (database, sent log, signing key, spool) is
//! created 0600 in a 0700 directory whatever the umask of the process (an MTA running `deliver`
//! may have 022). Existing files and directories keep their modes; `postdesk check` warns about
//! ones others can read.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Create `dir` (and missing parents) with mode 0700; an existing one is left alone.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Create `path` empty with mode 0600 unless it exists (SQLite then keeps the mode, and gives
/// its -wal and -shm files the same one).
pub fn private_file(path: &Path) -> io::Result<()> {
    OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path).map(drop)
}

/// Write `bytes` to `path` only if no such file exists: written in full, synced and mode 0600
/// under a temporary name, then linked into place (`link` fails if the name exists, so two
/// racing writers cannot both win and nobody ever reads a half-written file).
/// `Ok(false)` when another writer got there first.
pub fn create_new_private(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    private_dir(dir)?;
    let tmp = dir.join(format!(".{}.{}.{:x}", path.file_name().and_then(|n| n.to_str()).unwrap_or("new"), std::process::id(), rand::random::<u64>()));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => {
                std::fs::File::open(dir)?.sync_all()?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}
