//! Writing outputs so that a crash never leaves a partial file behind: everything is written to a
//! hidden temporary name in the destination folder and renamed into place once complete.

use crate::{Error, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The longest file name Linux file systems accept (`NAME_MAX`), in bytes.
const NAME_MAX: usize = 255;

/// The temporary name used while `path` is being written: same folder (so the rename is atomic),
/// same extension (so writers that pick compression from the name still do the right thing). A long
/// name loses its start rather than its end, so that any legal final name has a legal temporary.
pub fn temporary_path(path: &Path) -> PathBuf {
    hidden_sibling(path, &temporary_prefix(), "")
}

/// `.nntmp-PID_HOST-`, the start of this process's temporary names: HOST (a hash of the host name) tells
/// [`remove_stale_temporaries`] whether PID can be looked up here, for folders that processes on several
/// machines of a cluster write at once.
pub(crate) fn temporary_prefix() -> String {
    format!(".nntmp-{}_{:08x}-", std::process::id(), host_hash())
}

/// FNV-1a of this machine's host name: the same in every process here, short, without `-`, `.` or `_`.
fn host_hash() -> u32 {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    host.trim().bytes().fold(0x811c_9dc5, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193))
}

/// `path`'s name between `prefix` and `suffix`, in the same folder; a name too long for `NAME_MAX`
/// loses its start.
pub(crate) fn hidden_sibling(path: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut start = name.len().saturating_sub(NAME_MAX - prefix.len() - suffix.len());
    while !name.is_char_boundary(start) {
        start += 1;
    }
    path.with_file_name(format!("{prefix}{}{suffix}", &name[start..]))
}

/// Where writing `path` must go: through a symbolic link to the file it names (the link stays), and
/// straight into a FIFO or a device (`-o /dev/null`, `-o /dev/stdout`, process substitution), which
/// a rename would replace. A folder is refused: a file was asked for.
enum Destination {
    /// A regular file, existing or not: written to a temporary and renamed into place.
    File(PathBuf),
    /// A FIFO, character device or socket: written in place, as it stands.
    Special(PathBuf),
}

fn destination(path: &Path) -> Result<Destination> {
    // a link is followed to its final target (a dangling one is replaced like a missing file); any
    // other path stays as given, so that messages name what the user wrote
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink());
    let target = match is_link {
        true => std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned()),
        false => path.to_owned(),
    };
    match std::fs::metadata(&target) {
        Ok(meta) if meta.is_dir() => Err(Error::bad_input(path, "is a folder, expected a file name")),
        Ok(meta) if !meta.is_file() => Ok(Destination::Special(target)),
        _ => Ok(Destination::File(target)),
    }
}

/// Removes the temporary files and folders that killed nn-tools processes of this machine left in `dir`
/// (`.nntmp-PID_HOST-*` of a PID no longer running; a live process's files are its own business, e.g.
/// another fold writing there, and so are another machine's, whose PIDs cannot be looked up here).
pub fn remove_stale_temporaries(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, &e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, &e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name.strip_prefix(".nntmp-").and_then(|rest| rest.split('-').next()) else { continue };
        // a name without a host is one this machine wrote before hosts were recorded
        let (pid, host) = owner.split_once('_').unwrap_or((owner, ""));
        let here = host.is_empty() || u32::from_str_radix(host, 16) == Ok(host_hash());
        if here && !Path::new("/proc").join(pid).exists() {
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
    let path = match destination(path)? {
        Destination::Special(target) => return write(&target),
        Destination::File(target) => target,
    };
    let path = path.as_path();
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

/// The most bytes handed to one `write(2)`. On this project's machines (Linux 6.18, ext4, a cgroup-v1
/// memory controller) one 71 MB write into the page cache took 0.2-0.4 s, the same bytes in writes of
/// at most 512 KB 0.02 s; a preprocessed Dataset005 case is such an array. Pieces cost nothing elsewhere.
const MAX_WRITE: usize = 256 << 10;

/// A file that is written in pieces of at most [`MAX_WRITE`] bytes.
pub(crate) struct Pieces(File);

impl Write for Pieces {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(&buf[..buf.len().min(MAX_WRITE)])
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl std::io::Seek for Pieces {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.0.seek(to)
    }
}

/// Creates the temporary `tmp` of `path` for writing: small writes are gathered, large ones go straight
/// to the file (no copy), in pieces.
pub(crate) fn create_temporary(path: &Path, tmp: &Path) -> Result<BufWriter<Pieces>> {
    let file = File::create(tmp).map_err(|e| Error::io(path, &e))?;
    Ok(BufWriter::with_capacity(MAX_WRITE, Pieces(file)))
}

/// Writes `parts`, one after the other, as the file `path`, atomically.
pub(crate) fn write_parts(path: &Path, parts: &[&[u8]]) -> Result<()> {
    write_atomically(path, |tmp| {
        let mut out = create_temporary(path, tmp)?;
        parts
            .iter()
            .try_for_each(|part| out.write_all(part))
            .and_then(|()| out.flush())
            .map_err(|e| Error::io(path, &e))
    })
}

/// Writes `array` as a `.npy` file, atomically: ndarray-npy writes the header, then the values of a
/// standard-layout array as one slice, which goes to the file without a copy.
pub fn write_npy<T: ndarray_npy::WriteNpyExt + ?Sized>(path: &Path, array: &T) -> Result<()> {
    write_atomically(path, |tmp| {
        let mut out = create_temporary(path, tmp)?;
        array.write_npy(&mut out).map_err(|e| Error::runtime(path, e))?;
        // No fsync: callers that need durability record what they wrote (nn-resample's CASE.json holds
        // every array's size, so an array that a power loss truncated makes its case stale).
        out.flush().map_err(|e| Error::io(path, &e))
    })
}

/// Why a file (or a device, or a dangling link) cannot be an output folder.
const NOT_A_FOLDER: &str = "not a directory (an output folder is expected)";

/// Creates the output folder `dir` and any missing parents, as `create_dir_all`; the one place every
/// tool makes its `-o` folder. Something other than a folder where `dir` or a parent must be (`-o`
/// naming an existing file) is bad input, named, rather than a runtime "File exists".
pub fn create_output_folder(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| not_a_folder(dir).unwrap_or_else(|| Error::io(dir, &e)))
}

/// The refusal of `dir` as an output folder when it, or the nearest of its parents that exists, is not
/// a folder (links followed).
fn not_a_folder(dir: &Path) -> Option<Error> {
    let existing = dir.ancestors().find(|a| !a.as_os_str().is_empty() && std::fs::symlink_metadata(a).is_ok())?;
    let folder = std::fs::metadata(existing).is_ok_and(|meta| meta.is_dir());
    (!folder).then(|| Error::bad_input(existing, NOT_A_FOLDER))
}

/// Builds the folder `out` in a temporary sibling and renames it into place once `fill` succeeds, so
/// `out` is either complete or absent (or, on failure with `force`, untouched). An existing `out` is
/// bad input unless `force`, and then replaced.
pub fn write_folder_atomically<F>(out: &Path, force: bool, fill: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    if let Some(refused) = not_a_folder(out) {
        return Err(refused);
    }
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
        let mut out = create_temporary(path, tmp)?;
        fill(&mut out).and_then(|()| out.flush()).map_err(|e| Error::runtime(path, e))?;
        // a pipe or a device has nothing to sync (and may refuse it)
        let file = &out.get_ref().0;
        match file.metadata() {
            Ok(meta) if !meta.is_file() => Ok(()),
            _ => file.sync_all().map_err(|e| Error::runtime(path, e)),
        }
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
        let mut writer = ndarray_npy::NpzWriter::new_compressed(create_temporary(path, tmp)?);
        writer.add_array(name, array).map_err(|e| Error::runtime(path, e))?;
        let mut out = writer.finish().map_err(|e| Error::runtime(path, e))?;
        out.flush().map_err(|e| Error::io(path, &e))
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
    fn npy_arrays_larger_than_a_write_are_written_whole() {
        use ndarray_npy::ReadNpyExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("case.npy");
        // 3 x 200 x 300 float32: 720,000 bytes, several pieces
        let data = ndarray::Array3::from_shape_fn((3, 200, 300), |(c, y, x)| (c * 60_000 + y * 300 + x) as f32 * 0.5);
        write_npy(&path, &data).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 128 + 720_000);
        let read = ndarray::Array3::<f32>::read_npy(File::open(&path).unwrap()).unwrap();
        assert_eq!(read, data);
        // a transposed view goes through ndarray-npy's other path and reads back as itself
        let view = data.view().reversed_axes();
        write_npy(&path, &view).unwrap();
        assert_eq!(ndarray::Array3::<f32>::read_npy(File::open(&path).unwrap()).unwrap(), view);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["case.npy"], "no temporary left behind");
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

    #[test]
    fn a_symbolic_link_is_followed_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("fingerprint.json");
        std::fs::write(&target, "old").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink("fingerprint.json", &link).unwrap();
        write_json(&link, &1).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link stays a link");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "1\n", "its target has the content");
        let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["fingerprint.json", "link.json"], "no temporary left behind");
    }

    #[test]
    fn a_fifo_is_written_into_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("plans.json");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
        };
        write_json(&fifo, &[1, 2]).unwrap();
        use std::os::unix::fs::FileTypeExt;
        // checked first: were the FIFO replaced, its reader would wait for ever
        assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "still a FIFO");
        assert_eq!(reader.join().unwrap(), "[\n  1,\n  2\n]\n");
    }

    #[test]
    fn a_folder_is_refused_as_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let error = write_json(dir.path(), &1).unwrap_err();
        assert_eq!(error.kind, crate::ErrorKind::BadInput);
        assert!(error.message.ends_with("is a folder, expected a file name"), "{}", error.message);
    }

    #[test]
    fn a_file_where_an_output_folder_must_be_is_refused_as_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_output_folder(&nested).unwrap();
        create_output_folder(&nested).unwrap();
        assert!(nested.is_dir());
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let refused = format!("{}: not a directory (an output folder is expected)", file.display());
        // the file itself, or a parent of the folder asked for
        for out in [file.clone(), file.join("sub/sub")] {
            let error = create_output_folder(&out).unwrap_err();
            assert_eq!((error.kind, error.message.as_str()), (crate::ErrorKind::BadInput, refused.as_str()));
            let error = write_folder_atomically(&out, true, |_| Ok(())).unwrap_err();
            assert_eq!((error.kind, error.message.as_str()), (crate::ErrorKind::BadInput, refused.as_str()));
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x", "the file is left as it was");
    }

    #[test]
    fn only_this_machines_dead_processes_temporaries_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let here = format!("{:08x}", host_hash());
        let elsewhere = format!("{:08x}", host_hash().wrapping_add(1));
        let dead = "999999999";
        let names = [
            format!(".nntmp-{dead}_{here}-a.npy"),
            format!(".nntmp-{dead}-b.npy"),
            format!(".nntmp-{dead}_{elsewhere}-c.npy"),
            temporary_path(&dir.path().join("d.npy")).file_name().unwrap().to_string_lossy().into_owned(),
            "e.npy".to_owned(),
        ];
        for name in &names {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        remove_stale_temporaries(dir.path()).unwrap();
        let mut left: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        let mut expected = names[2..].to_vec();
        expected.sort();
        assert_eq!(left, expected, "another machine's, a live process's and outputs stay");
    }

    #[test]
    fn the_longest_legal_name_has_a_legal_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("{}.nii.gz", "é".repeat(120)); // 247 bytes, a 2-byte character at every cut
        let path = dir.path().join(&name);
        let tmp = temporary_path(&path);
        let tmp_name = tmp.file_name().unwrap().to_str().unwrap();
        assert!(tmp_name.len() <= NAME_MAX && tmp_name.starts_with(".nntmp-") && tmp_name.ends_with("é.nii.gz"));
        write_text(&path, "x");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x");
    }
}
