//! Reading a `torch.save` zip archive (torch/serialization.py: `_load`).

use crate::Value;
use crate::unpickle::{Storage, unpickle};
use nntools_io::{Error, Result};
use std::io::{Cursor, Read};
use std::path::Path;
use zip::ZipArchive;

/// What a pickle from before torch 1.6 (`_legacy_save`) starts with: PROTO 2, then the LONG1 magic
/// number 0x1950a86a20f9469cfc6c (torch/serialization.py: `MAGIC_NUMBER`).
const LEGACY_MAGIC: [u8; 14] = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Deflate's largest ratio of inflated to compressed size (each 258-byte match costs at least 2 bits);
/// an entry declaring more is refused before it is inflated.
const DEFLATE_MAX_RATIO: u64 = 1032;

/// Reads the object a `.pth` file holds, tensors resolved. Refuses (one line naming `path`) anything
/// but a torch zip archive whose pickle uses only the globals nnU-Net checkpoints need.
pub fn read_pth(path: &Path) -> Result<Value> {
    // a FIFO or /dev/zero would be read without end
    if !std::fs::metadata(path).map_err(|e| Error::io(path, &e))?.is_file() {
        return Err(Error::bad_input(path, "not a regular file"));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
    read_pth_bytes(path, &bytes)
}

/// [`read_pth`] on the bytes of a `.pth` file already in memory; `path` only names it in errors.
pub fn read_pth_bytes(path: &Path, bytes: &[u8]) -> Result<Value> {
    read_archive(bytes).map_err(|problem| Error::bad_input(path, problem.replace(['\n', '\r'], " ")))
}

fn read_archive(bytes: &[u8]) -> Result<Value, String> {
    if bytes.starts_with(&LEGACY_MAGIC) {
        return Err("a torch.save file from before torch 1.6 (not a zip archive), which nn-tools does not read: \
                    load it and save it again with torch 1.6 or newer"
            .into());
    }
    let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("not a torch.save zip archive ({e})"))?;
    // torch names the archive's top folder after the file's stem (torch/serialization.py: `_save`)
    let pickles: Vec<String> = archive
        .file_names()
        .filter(|name| name.strip_suffix("/data.pkl").is_some_and(|prefix| !prefix.is_empty() && !prefix.contains('/')))
        .map(str::to_string)
        .collect();
    let [pickle_name] = pickles.as_slice() else {
        return Err(format!(
            "not a torch.save zip archive: {} entries named ARCHIVE/data.pkl, where torch writes one",
            pickles.len()
        ));
    };
    let prefix = pickle_name.strip_suffix("data.pkl").expect("matched above").to_string();
    let big_endian = match read_entry(&mut archive, &format!("{prefix}byteorder"), None) {
        Err(EntryError::Missing) => false,
        Err(EntryError::Bad(problem)) => return Err(problem),
        Ok(order) if order == b"little" => false,
        Ok(order) if order == b"big" => true,
        Ok(order) => {
            return Err(format!("{prefix}byteorder is `{}`, not little or big", String::from_utf8_lossy(&order)));
        }
    };
    let pickle = read_entry(&mut archive, pickle_name, None).map_err(EntryError::into_problem)?;
    let mut load_storage = |key: &str, dtype: crate::Dtype, numel: u64| {
        let name = format!("{prefix}data/{key}");
        let expected = numel
            .checked_mul(dtype.size() as u64)
            .ok_or_else(|| format!("storage {name} of {numel} elements overflows"))?;
        let mut bytes = read_entry(&mut archive, &name, Some(expected)).map_err(|e| match e {
            EntryError::Missing => format!("storage {name} is missing"),
            EntryError::Bad(problem) => problem,
        })?;
        if big_endian {
            for element in bytes.chunks_exact_mut(dtype.size()) {
                element.reverse();
            }
        }
        Ok(Storage { dtype, bytes })
    };
    // views of the storages may hold each element several times (a state_dict's transposes, slices)
    // but not unboundedly more data than the file holds
    let tensor_budget = (bytes.len() as u64).saturating_mul(4).saturating_add(64 << 20);
    unpickle(&pickle, &mut load_storage, tensor_budget)
}

enum EntryError {
    Missing,
    Bad(String),
}

impl EntryError {
    fn into_problem(self) -> String {
        match self {
            EntryError::Missing => "an entry is missing".into(),
            EntryError::Bad(problem) => problem,
        }
    }
}

/// The inflated bytes of entry `name`, which must be `expected` long where that is given. Allocates
/// only as the entry's data arrives, at most its declared size, which deflate's ratio bounds.
fn read_entry(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    name: &str,
    expected: Option<u64>,
) -> Result<Vec<u8>, EntryError> {
    let bad = |problem: String| EntryError::Bad(format!("{name}: {problem}"));
    let mut entry = match archive.by_name(name) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => return Err(EntryError::Missing),
        Err(e) => return Err(bad(e.to_string())),
    };
    let declared = entry.size();
    if let Some(expected) = expected.filter(|&expected| expected != declared) {
        return Err(bad(format!("{declared} bytes where the pickle's storage needs {expected}")));
    }
    let most = match entry.compression() {
        zip::CompressionMethod::Stored => entry.compressed_size(),
        _ => entry.compressed_size().saturating_mul(DEFLATE_MAX_RATIO),
    };
    if declared > most {
        return Err(bad(format!("declares {declared} bytes from {} stored", entry.compressed_size())));
    }
    let mut bytes = Vec::new();
    (&mut entry).take(declared).read_to_end(&mut bytes).map_err(|e| bad(e.to_string()))?;
    if bytes.len() as u64 != declared {
        return Err(bad(format!("{} bytes where the archive declares {declared} (truncated?)", bytes.len())));
    }
    Ok(bytes)
}
