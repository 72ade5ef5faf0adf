//! `nn-model install`: a model zip into `nnUNet_results`, as nnU-Net's
//! nnunetv2/model_sharing/model_import.py: `install_model_from_zip_file` extracts it, but safely: every
//! entry is checked before anything is written (no `..`, no absolute path, no symbolic link, no
//! duplicate, nothing outside the trainer folders), inflated bytes are counted as they stream against
//! a limit (a zip's declared sizes are not trusted), and the zip is extracted into a temporary folder
//! inside the results root whose trainer folders are renamed into place once all is well.

use crate::layout::{Placement, placement};
use nntools_io::{Error, Result, remove_stale_temporaries, temporary_path};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The signature of a zip central directory header (APPNOTE.TXT 4.3.12).
const CENTRAL_HEADER_SIGNATURE: u32 = 0x0201_4b50;
/// Its fixed part, before the name, extra field and comment.
const CENTRAL_HEADER_LEN: usize = 46;

/// Unix file types in a zip entry's mode (`st_mode & S_IFMT`).
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

/// One entry to extract.
struct Planned {
    index: usize,
    name: String,
    is_dir: bool,
    placement: Placement,
}

/// Installs the model zip `zip` into `results` and returns the trainer folders it created (as
/// `results/DATASET/TRAINER__PLANS__CONFIG`). Folders or files of the zip that exist already are
/// refused unless `force`, and then replaced. On any problem nothing is left in `results`.
pub fn install_zip(zip: &Path, results: &Path, max_inflated_bytes: u64, force: bool) -> Result<Vec<PathBuf>> {
    let bad = |problem: String| Error::bad_input(zip, problem);
    if results.exists() && !results.is_dir() {
        return Err(Error::bad_input(results, "is not a folder (expected the results folder)"));
    }
    let file = File::open(zip).map_err(|e| Error::io(zip, &e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(format!("not a readable zip archive: {e}")))?;
    check_unique_names(zip, &archive)?;
    let mut planned = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        let entry = archive.by_index_raw(index).map_err(|e| bad(format!("entry {index}: {e}")))?;
        let name = entry.name().to_owned();
        let refuse = |problem: &str| bad(format!("entry {name:?} {problem}"));
        let is_dir = entry.is_dir();
        match entry.unix_mode().map(|mode| mode & S_IFMT) {
            Some(S_IFLNK) => return Err(refuse("is a symbolic link")),
            None | Some(0 | S_IFREG) => {}
            Some(S_IFDIR) if is_dir => {}
            Some(_) => return Err(refuse("is not a regular file or folder")),
        }
        let placement = placement(&name, is_dir).map_err(|problem| refuse(&problem))?;
        planned.push(Planned { index, name, is_dir, placement });
    }
    let units = units(&planned);
    if !units.iter().any(|(_, trainer)| *trainer) {
        return Err(bad("holds no trainer folder DATASET/TRAINER__PLANS__CONFIG/".to_owned()));
    }
    if !force && let Some((unit, _)) = units.iter().find(|(unit, _)| results.join(unit).exists()) {
        return Err(Error::bad_input(results.join(unit), "already exists (use --force to replace it)"));
    }
    let created_root = !results.exists();
    nntools_io::create_output_folder(results)?;
    remove_stale_temporaries(results)?;
    let staging = temporary_path(&results.join("install"));
    let installed = std::fs::create_dir(&staging)
        .map_err(|e| Error::io(&staging, &e))
        .and_then(|()| extract(zip, &mut archive, &planned, &staging, max_inflated_bytes))
        .and_then(|()| move_into_place(&units, &staging, results));
    let cleaned = match std::fs::remove_dir_all(&staging) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::runtime(&staging, e)),
        _ => Ok(()),
    };
    if installed.is_err() && created_root {
        let _ = std::fs::remove_dir(results);
    }
    installed?;
    cleaned?;
    Ok(units.into_iter().filter(|(_, trainer)| *trainer).map(|(unit, _)| results.join(unit)).collect())
}

/// The units the entries install (relative paths, whether a trainer folder), each once, in zip order.
fn units(planned: &[Planned]) -> Vec<(PathBuf, bool)> {
    let mut units: Vec<(PathBuf, bool)> = Vec::new();
    for entry in planned.iter().filter(|entry| entry.placement.unit_len > 1) {
        let unit: PathBuf = entry.placement.components[..entry.placement.unit_len].iter().collect();
        if !units.iter().any(|(known, _)| *known == unit) {
            units.push((unit, entry.placement.trainer));
        }
    }
    units
}

/// Refuses a zip whose central directory names one path twice, which the zip crate's archive
/// silently collapses to one entry (an unpacker that keeps the other would install other files).
fn check_unique_names(zip: &Path, archive: &zip::ZipArchive<File>) -> Result<()> {
    use std::io::{Seek, SeekFrom};
    let start = archive.central_directory_start();
    let mut file = std::io::BufReader::new(File::open(zip).map_err(|e| Error::io(zip, &e))?);
    let mut directory = Vec::new();
    file.seek(SeekFrom::Start(start)).and_then(|_| file.read_to_end(&mut directory)).map_err(|e| Error::io(zip, &e))?;
    let mut names: Vec<&[u8]> = Vec::with_capacity(archive.len());
    let mut at = 0;
    while let Some(header) = directory.get(at..at + CENTRAL_HEADER_LEN)
        && u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) == CENTRAL_HEADER_SIGNATURE
    {
        let field = |offset: usize| usize::from(u16::from_le_bytes([header[offset], header[offset + 1]]));
        let (name_len, extra_len, comment_len) = (field(28), field(30), field(32));
        let name_start = at + CENTRAL_HEADER_LEN;
        let Some(name) = directory.get(name_start..name_start + name_len) else { break };
        names.push(name);
        at = name_start + name_len + extra_len + comment_len;
    }
    names.sort_unstable();
    match names.windows(2).find(|pair| pair[0] == pair[1]) {
        Some(pair) => Err(Error::bad_input(zip, format!("entry {:?} appears twice", String::from_utf8_lossy(pair[0])))),
        None => Ok(()),
    }
}

/// Extracts the entries into `staging`, counting inflated bytes against `limit` as they stream.
fn extract(
    zip: &Path,
    archive: &mut zip::ZipArchive<File>,
    planned: &[Planned],
    staging: &Path,
    limit: u64,
) -> Result<()> {
    let mut inflated = 0u64;
    let mut buffer = vec![0u8; 1 << 16];
    for entry in planned {
        let bad = |problem: String| Error::bad_input(zip, format!("entry {:?} {problem}", entry.name));
        // a file where another entry needs a folder (`a/b` and `a/b/c`) is the zip's fault
        let created = |path: &Path, e: std::io::Error| match e.kind() {
            std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotADirectory => {
                bad("clashes with another entry (a file and a folder of one name)".to_owned())
            }
            _ => Error::runtime(path, e),
        };
        let destination: PathBuf = staging.join(entry.placement.components.iter().collect::<PathBuf>());
        if entry.is_dir {
            std::fs::create_dir_all(&destination).map_err(|e| created(&destination, e))?;
            continue;
        }
        let mut reader = archive.by_index(entry.index).map_err(|e| bad(format!("cannot be read: {e}")))?;
        let parent = destination.parent().expect("an entry lies in a folder");
        std::fs::create_dir_all(parent).map_err(|e| created(parent, e))?;
        let mut out = File::create_new(&destination).map_err(|e| created(&destination, e))?;
        loop {
            let read = reader.read(&mut buffer).map_err(|e| bad(format!("cannot be read: {e}")))?;
            if read == 0 {
                break;
            }
            inflated += read as u64;
            if inflated > limit {
                let problem =
                    format!("inflates the zip past {limit} bytes (the limit: raise it with --max-inflated-gb)");
                return Err(bad(problem));
            }
            out.write_all(&buffer[..read]).map_err(|e| Error::runtime(&destination, e))?;
        }
        out.sync_all().map_err(|e| Error::runtime(&destination, e))?;
    }
    Ok(())
}

/// Renames each extracted unit into `results`, replacing what is there.
fn move_into_place(units: &[(PathBuf, bool)], staging: &Path, results: &Path) -> Result<()> {
    for (unit, _) in units {
        let target = results.join(unit);
        let parent = target.parent().expect("a unit lies in its dataset folder");
        std::fs::create_dir_all(parent).map_err(|e| Error::runtime(parent, e))?;
        if let Ok(meta) = std::fs::symlink_metadata(&target) {
            let removed = if meta.is_dir() { std::fs::remove_dir_all(&target) } else { std::fs::remove_file(&target) };
            removed.map_err(|e| Error::runtime(&target, e))?;
        }
        std::fs::rename(staging.join(unit), &target).map_err(|e| Error::runtime(&target, e))?;
    }
    Ok(())
}
