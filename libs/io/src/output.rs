//! Writing outputs so that a crash never leaves a partial file behind: everything is written to a
//! hidden temporary name in the destination folder and renamed into place once complete.

use crate::{Error, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The temporary name used while `path` is being written: same folder (so the rename is atomic),
/// same extension (so writers that pick compression from the name still do the right thing).
pub fn temporary_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".nntmp-{}-{name}", std::process::id()))
}

/// Removes the temporary files and folders that killed nn-tools processes left in `dir` (`.nntmp-PID-*`
/// of a PID no longer running; a live process's files are its own business, e.g. another fold writing
/// there).
pub fn remove_stale_temporaries(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, &e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, &e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(".nntmp-").and_then(|rest| rest.split('-').next()) else { continue };
        if !Path::new("/proc").join(pid).exists() {
            let path = entry.path();
            let folder = entry.file_type().is_ok_and(|t| t.is_dir());
            let removed = if folder { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            removed.map_err(|e| Error::runtime(&path, e))?;
        }
    }
    Ok(())
}

/// Runs `write` against a temporary file and renames it to `path` when it succeeds; on failure the
/// temporary file is removed and `path` is left untouched.
///
/// An existing `path` with exactly the new content is kept as it is (same mtime), so that `make` and
/// scripts/nnunet.sh see a rerun that changed nothing as changing nothing and redo no later stage.
pub fn write_atomically<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    let tmp = temporary_path(path);
    let result = write(&tmp).and_then(|()| {
        if same_contents(&tmp, path) {
            std::fs::remove_file(&tmp).map_err(|e| Error::io(&tmp, &e))
        } else {
            std::fs::rename(&tmp, path).map_err(|e| Error::io(path, &e))
        }
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Whether `existing` is a file with the same bytes as `new` (false when it cannot be read).
fn same_contents(new: &Path, existing: &Path) -> bool {
    use std::io::Read;
    let (Ok(a), Ok(b)) = (std::fs::metadata(new), std::fs::metadata(existing)) else { return false };
    if !b.is_file() || a.len() != b.len() {
        return false;
    }
    let (Ok(a), Ok(b)) = (File::open(new), File::open(existing)) else { return false };
    let (mut a, mut b) = (std::io::BufReader::with_capacity(1 << 20, a), std::io::BufReader::with_capacity(1 << 20, b));
    let (mut x, mut y) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let Ok(n) = a.read(&mut x) else { return false };
        if n == 0 {
            return true;
        }
        if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return false;
        }
    }
}

/// Builds the folder `out` in a temporary sibling and renames it into place once `fill` succeeds, so
/// `out` is either complete or absent (or, on failure with `force`, untouched). An existing `out` is
/// bad input unless `force`, and then replaced.
pub fn write_folder_atomically<F>(out: &Path, force: bool, fill: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    if out.exists() && !force {
        return Err(Error::bad_input(out, "already exists (use --force to replace it)"));
    }
    let staging = temporary_path(out);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| Error::runtime(&staging, e))?;
    }
    let result = fill(&staging).and_then(|()| {
        if out.exists() {
            std::fs::remove_dir_all(out).map_err(|e| Error::runtime(out, e))?;
        }
        std::fs::rename(&staging, out).map_err(|e| Error::runtime(out, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// Writes bytes produced by `fill` to `path` atomically, or to stdout when `path` is `-`.
pub fn write_stream<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    if path == Path::new("-") {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        return fill(&mut lock).and_then(|()| lock.flush()).map_err(|e| Error::runtime("<stdout>", e));
    }
    write_atomically(path, |tmp| {
        let file = File::create(tmp).map_err(|e| Error::io(path, &e))?;
        let mut out = BufWriter::new(file);
        fill(&mut out).and_then(|()| out.flush()).map_err(|e| Error::runtime(path, e))?;
        out.get_ref().sync_all().map_err(|e| Error::runtime(path, e))
    })
}

/// Serialises `value` as pretty JSON (with a trailing newline) to `path`, or to stdout for `-`.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write_stream(path, |out| {
        serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::other)?;
        out.write_all(b"\n")
    })
}

/// Reads and parses a JSON file (or stdin for `-`); a parse error names the file, line and column.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).map_err(|e| Error::runtime("<stdin>", e))?
    } else {
        std::fs::read_to_string(path).map_err(|e| Error::io(path, &e))?
    };
    serde_json::from_str(&text).map_err(|e| Error::bad_input(path, format!("invalid JSON: {e}")))
}

/// Writes `array` as the single entry `name` of a compressed `.npz` (numpy's `np.load(path)[name]`),
/// atomically.
pub fn write_npz<A, D>(path: &Path, name: &str, array: &ndarray::ArrayBase<A, D>) -> Result<()>
where
    A: ndarray::Data,
    A::Elem: ndarray_npy::WritableElement,
    D: ndarray::Dimension,
{
    write_atomically(path, |tmp| {
        let file = File::create(tmp).map_err(|e| Error::io(path, &e))?;
        let mut writer = ndarray_npy::NpzWriter::new_compressed(file);
        writer.add_array(name, array).map_err(|e| Error::runtime(path, e))?;
        writer.finish().map_err(|e| Error::runtime(path, e))?;
        Ok(())
    })
}

/// Reads the entry `name` of a `.npz` file.
pub fn read_npz<T, D>(path: &Path, name: &str) -> Result<ndarray::Array<T, D>>
where
    T: ndarray_npy::ReadableElement,
    D: ndarray::Dimension,
{
    let file = File::open(path).map_err(|e| Error::io(path, &e))?;
    let mut reader = ndarray_npy::NpzReader::new(file).map_err(|e| Error::bad_input(path, e))?;
    reader.by_name(name).map_err(|e| Error::bad_input(path, format!("{name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_text(path: &Path, text: &str) {
        write_atomically(path, |tmp| std::fs::write(tmp, text).map_err(|e| Error::io(tmp, &e))).unwrap();
    }

    #[test]
    fn identical_content_keeps_the_file_and_its_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_text(&path, "{\"x\": 1}\n");
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
        write_text(&path, "{\"x\": 1}\n");
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), old, "unchanged content, unchanged mtime");
        write_text(&path, "{\"x\": 2}\n");
        assert_ne!(std::fs::metadata(&path).unwrap().modified().unwrap(), old);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"x\": 2}\n");
        // same length, one byte different
        write_text(&path, "{\"x\": 3}\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"x\": 3}\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["a.json"], "no temporary left behind");
    }
}
