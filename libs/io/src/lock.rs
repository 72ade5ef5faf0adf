//! Advisory locks on outputs, so that two processes writing the same output (two nn-resample on one
//! folder, overlapping nn-infer shards, a Slurm array task started twice) never interleave their
//! writes: the second waits, skips, or is refused with the holder named.
//!
//! The lock of `DIR/NAME` is the hidden file `DIR/.NAME.nn-lock` (readers of output folders skip hidden
//! names), locked with flock(2) and holding one line naming its holder (`nn-train (pid 123 on host
//! node7)`). The kernel releases a flock when its process ends in any way, so a killed holder never
//! blocks a rerun; the lock file a killed holder leaves is reused and removed by the next one.

use crate::output::hidden_sibling;
use crate::{Error, Result};
use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;
use std::fs::File;
use std::io::{Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// An exclusive lock on one output, held until dropped (or until the process ends).
#[derive(Debug)]
pub struct OutputLock {
    file: File,
    path: PathBuf,
}

/// What to do when another process holds the lock.
#[derive(Clone, Copy)]
enum Wait {
    No,
    Yes,
}

impl OutputLock {
    /// The lock file of `output`: `.NAME.nn-lock` beside it.
    pub fn file_of(output: &Path) -> PathBuf {
        hidden_sibling(output, ".", ".nn-lock")
    }

    /// Takes the lock of `output` if no other process holds it; `None` when one does.
    pub fn try_acquire(output: &Path) -> Result<Option<Self>> {
        Self::acquire(output, Wait::No)
    }

    /// Takes the lock of `output`, waiting for another holder to release it.
    pub fn wait(output: &Path) -> Result<Self> {
        Ok(Self::acquire(output, Wait::Yes)?.expect("a waiting lock is always taken"))
    }

    /// Takes the lock of `output`, or fails with a message naming the process that holds it: bad usage
    /// (exit 2), as a fold submitted twice is a mistake to fix, not a failure to retry.
    pub fn acquire_or_refuse(output: &Path) -> Result<Self> {
        Self::try_acquire(output)?.ok_or_else(|| {
            let holder = Self::holder(output).unwrap_or_else(|| "another process".to_owned());
            Error::bad_input(
                output,
                format!(
                    "in use by {holder}; wait until it ends, or end it (its lock is {})",
                    Self::file_of(output).display()
                ),
            )
        })
    }

    /// Who holds, or last held, the lock of `output`, as its lock file names it.
    pub fn holder(output: &Path) -> Option<String> {
        let text = std::fs::read_to_string(Self::file_of(output)).ok()?;
        Some(text.trim()).filter(|t| !t.is_empty()).map(str::to_owned)
    }

    fn acquire(output: &Path, wait: Wait) -> Result<Option<Self>> {
        let path = Self::file_of(output);
        loop {
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::io(&path, &e))?;
            let operation = match wait {
                Wait::No => FlockOperation::NonBlockingLockExclusive,
                Wait::Yes => FlockOperation::LockExclusive,
            };
            match flock(&file, operation) {
                Ok(()) => {}
                Err(Errno::WOULDBLOCK) => return Ok(None),
                Err(Errno::INTR) => continue,
                Err(e @ (Errno::NOLCK | Errno::OPNOTSUPP | Errno::NOSYS)) => {
                    return Err(Error::runtime(
                        &path,
                        format!(
                            "cannot be locked ({e}): the file system needs flock support shared by all nodes \
                             (Lustre: mount with -o flock; NFS: without nolock, local_lock=none; see docs/formats.md)"
                        ),
                    ));
                }
                Err(e) => return Err(Error::runtime(&path, e)),
            }
            // the previous holder removes the file before releasing it: a lock on a file no longer at
            // `path` locks nothing, so start again with the file now there
            let locked = file.metadata().map_err(|e| Error::runtime(&path, e))?;
            let current = std::fs::metadata(&path).ok();
            if current.is_none_or(|now| (now.dev(), now.ino()) != (locked.dev(), locked.ino())) {
                continue;
            }
            let mut lock = Self { file, path };
            lock.record_holder()?;
            return Ok(Some(lock));
        }
    }

    /// Writes `TOOL (pid PID on host HOST)` into the lock file, for the messages of those refused.
    fn record_holder(&mut self) -> Result<()> {
        let tool = std::env::args_os()
            .next()
            .and_then(|arg0| Path::new(&arg0).file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "a process".to_owned());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let line = format!("{tool} (pid {} on host {})\n", std::process::id(), host.trim());
        let file = &mut self.file;
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(line.as_bytes()))
            .map_err(|e| Error::runtime(&self.path, e))
    }
}

impl Drop for OutputLock {
    /// Removes the lock file while still holding it (a process waiting on it sees it gone and starts
    /// again), then closing the file releases the lock.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_refuses_others_and_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("fold_0");
        let lock = OutputLock::try_acquire(&output).unwrap().expect("free");
        assert_eq!(OutputLock::file_of(&output), dir.path().join(".fold_0.nn-lock"));
        // flock locks belong to open files: a second open in this process is refused like another process
        assert!(OutputLock::try_acquire(&output).unwrap().is_none());
        let error = OutputLock::acquire_or_refuse(&output).unwrap_err();
        assert_eq!(error.kind, crate::ErrorKind::BadInput);
        let expected = format!("{}: in use by ", output.display());
        assert!(error.message.starts_with(&expected), "{}", error.message);
        assert!(error.message.contains(&format!("(pid {} on host ", std::process::id())), "{}", error.message);
        drop(lock);
        assert!(!OutputLock::file_of(&output).exists(), "released locks leave no file");
        assert!(OutputLock::try_acquire(&output).unwrap().is_some());
    }

    #[test]
    fn a_waiting_lock_is_taken_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("case.nii.gz");
        let lock = OutputLock::wait(&output).unwrap();
        let waiter = {
            let output = output.clone();
            std::thread::spawn(move || {
                let lock = OutputLock::wait(&output).unwrap();
                !std::fs::read_to_string(OutputLock::file_of(&output)).unwrap().is_empty() && lock.path.exists()
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!waiter.is_finished(), "waits while the lock is held");
        drop(lock);
        assert!(waiter.join().unwrap(), "then holds the lock file that is in place");
    }
}
