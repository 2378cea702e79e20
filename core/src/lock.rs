//! One writer per output folder (issue 16, `index_concurrent` / `train_concurrent`: two writers
//! of one `--out` mixed their files).
//!
//! A writer holds an advisory lock ([`std::fs::File::try_lock`]: `flock` on Unix) on a small lock
//! file that names it (PID, command line, start time), and removes the file when it is done. A
//! second writer finds the lock held and stops with a message naming the holder. The kernel drops
//! the lock when its holder dies, even by `kill -9`, so a lock file left behind by a dead writer
//! never blocks: the next writer takes it over and says so.
//!
//! Why not `create_new` plus a PID liveness check: a PID can be reused by an unrelated process
//! (the stale lock then blocks forever), and two writers that both find a stale file can both take
//! it over. The kernel's lock has neither problem; the PID in the file is only for messages.
//!
//! Where the lock file lies: inside a folder that is written in place (a run folder:
//! `<run>/.lock`), beside a folder that is replaced whole by a rename (an index folder:
//! `<parent>/.<name>.lock`), since the rename would carry a lock inside it away.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{EgaError, Result};

/// What a lock file says about its holder.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    command: String,
    started_unix_s: u64,
}

impl Holder {
    fn this_process() -> Self {
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        let started_unix_s =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Holder { pid: std::process::id(), command, started_unix_s }
    }

    fn describe(&self) -> String {
        let now = Self::this_process().started_unix_s;
        format!("PID {} (`{}`), started {} s ago", self.pid, self.command, now.saturating_sub(self.started_unix_s))
    }
}

/// A held lock on an output folder; released (and its file removed) when dropped.
#[derive(Debug)]
pub struct OutputLock {
    file: Option<File>,
    path: PathBuf,
}

/// The lock file of a folder that is replaced whole by a rename: `<parent>/.<name>.lock`.
pub fn beside(folder: &Path) -> PathBuf {
    let name = folder.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "out".into());
    folder.with_file_name(format!(".{name}.lock"))
}

/// True when `file` (open) is the file at `path` now: the lock file may have been removed by the
/// writer that released it between our open and our lock.
fn is_current(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(64 << 10).read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

impl OutputLock {
    /// Takes the lock file `path` for writing `folder` (named in messages). Returns the lock and,
    /// when a writer that died without releasing it left the file, a note saying it was taken
    /// over. Fails, naming the holder, when another live process holds it.
    pub fn acquire(path: &Path, folder: &Path) -> Result<(Self, Option<String>)> {
        for _ in 0..20 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|err| EgaError::io(path, err))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    // The holder writes its name just after taking the lock: give it a moment.
                    let mut holder = read_holder(&mut file);
                    for _ in 0..25 {
                        if holder.is_some() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        holder = read_holder(&mut file);
                    }
                    let holder = holder
                        .map(|h| h.describe())
                        .unwrap_or_else(|| "a process that has not written its name".into());
                    return Err(EgaError::Data(format!(
                        "{} is being written by another process: {holder}, holds {}; wait for it to finish, or choose another output folder",
                        folder.display(),
                        path.display()
                    )));
                }
                Err(TryLockError::Error(err)) => return Err(EgaError::io(path, err)),
            }
            if !is_current(&file, path) {
                continue; // released and removed meanwhile: lock the file that is there now
            }
            // A lock file with a holder in it that we could lock: its writer died (killed, or a
            // crash) without releasing it.
            let note = read_holder(&mut file).map(|dead| {
                format!(
                    "note: {} was left by a writer that is gone ({}, killed?); taking it over",
                    path.display(),
                    dead.describe()
                )
            });
            let json = serde_json::to_string(&Holder::this_process())?;
            file.set_len(0)
                .and_then(|_| file.seek(SeekFrom::Start(0)))
                .and_then(|_| file.write_all(json.as_bytes()))
                .and_then(|_| file.flush())
                .map_err(|err| EgaError::io(path, err))?;
            return Ok((OutputLock { file: Some(file), path: path.to_path_buf() }, note));
        }
        Err(EgaError::Data(format!("{}: could not take the lock (it kept being replaced)", path.display())))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Remove the file first, then unlock (closing it): a writer that opened the old file
        // meanwhile finds it is no longer the file at the path and takes a new one.
        let _ = std::fs::remove_file(&self.path);
        drop(self.file.take());
    }
}
