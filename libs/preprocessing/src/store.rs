//! A preprocessed dataset on disk, written so that runs resume and interrupted runs leave nothing
//! half-written behind.
//!
//! Per case: `CASE.npy` (float32 `(c, z, y, x)`), `CASE_seg.npy` (int8, or int16 past 127;
//! `(1, z, y, x)`), `CASE_locations.npy` (int32 `(n, 4)`: class index, z, y, x) and `CASE.json`
//! (properties). Every file is written under a temporary name and renamed; `CASE.json` comes last and
//! records the plans hash, configuration and input files (size, mtime), so a case whose JSON matches
//! the current run is complete and skipped. `manifest.json` lists the finished cases; only a run over the
//! whole dataset writes it.

use crate::case::{CaseFiles, Preprocessed, Properties, Recipe, preprocess_case};
use ndarray::{Array2, Array3, ArrayD, Axis};
use ndarray_npy::ReadNpyExt;
use nntools_io::{Error, OutputLock, Result, write_json, write_npy};
use nntools_layout::preprocessed::{MANIFEST, data_file, locations_file, properties_file, seg_file};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// What makes outputs current: the plans (by content) and the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub plans_sha256: String,
    pub configuration: String,
}

/// An input file as it was when a case was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct InputFile {
    path: PathBuf,
    bytes: u64,
    mtime_ns: u128,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Provenance {
    #[serde(flatten)]
    stamp: Stamp,
    inputs: Vec<InputFile>,
}

/// `CASE.json`: nnU-Net's property keys plus how the case was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CaseRecord {
    #[serde(flatten)]
    properties: Properties,
    nn_tools: Provenance,
    /// Byte size of each array file written for the case, by file name.
    outputs: Vec<(String, u64)>,
}

#[derive(Debug, Serialize)]
struct Manifest<'a> {
    #[serde(flatten)]
    stamp: &'a Stamp,
    data_identifier: &'a str,
    cases: Vec<&'a str>,
}

/// How a run went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub processed: usize,
    pub skipped: usize,
}

fn input_files(files: &CaseFiles) -> Result<Vec<InputFile>> {
    files
        .images
        .iter()
        .chain(files.label.iter())
        .map(|path| {
            let meta = std::fs::metadata(path).map_err(|e| Error::io(path, &e))?;
            let mtime = meta.modified().map_err(|e| Error::runtime(path, e))?;
            let mtime_ns = mtime.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            Ok(InputFile { path: path.clone(), bytes: meta.len(), mtime_ns })
        })
        .collect()
}

fn file_size(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

/// Whether the case's outputs exist with the sizes recorded and were made from these inputs with this
/// stamp.
fn is_current(out: &Path, files: &CaseFiles, provenance: &Provenance) -> bool {
    let json = out.join(properties_file(&files.id));
    let Ok(text) = std::fs::read_to_string(&json) else { return false };
    let Ok(record) = serde_json::from_str::<CaseRecord>(&text) else { return false };
    let expected_files = if files.label.is_some() { 3 } else { 1 };
    record.nn_tools == *provenance
        && record.outputs.len() == expected_files
        && record.outputs.iter().all(|(name, bytes)| file_size(&out.join(name)) == Some(*bytes))
}

/// Writes a label map as preprocessed label maps are stored: `(1, z, y, x)`, int8, or int16 when a
/// value exceeds 127.
pub fn write_label_map_npy(path: &Path, labels: &Array3<i16>) -> Result<()> {
    let labels = labels.view().insert_axis(Axis(0));
    if labels.iter().all(|&v| v <= i16::from(i8::MAX)) {
        write_npy(path, &labels.mapv(|v| v as i8))
    } else {
        write_npy(path, &*labels)
    }
}

/// Reads a label map that [`write_label_map_npy`] wrote, widened to i16.
pub fn read_label_map_npy(path: &Path) -> Result<Array3<i16>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
    let labels = match ArrayD::<i8>::read_npy(bytes.as_slice()) {
        Ok(labels) => labels.mapv(i16::from),
        Err(_) => ArrayD::<i16>::read_npy(bytes.as_slice())
            .map_err(|e| Error::bad_input(path, format!("not an int8 or int16 label map: {e}")))?,
    };
    let shape = labels.shape().to_vec();
    match shape.as_slice() {
        [1, z, y, x] => Ok(labels.into_shape_with_order((*z, *y, *x)).expect("same number of elements")),
        _ => Err(Error::bad_input(path, format!("label map has shape {shape:?}, expected (1, z, y, x)"))),
    }
}

fn write_case(out: &Path, id: &str, case: Preprocessed, provenance: Provenance) -> Result<()> {
    let mut names = vec![data_file(id)];
    write_npy(&out.join(&names[0]), &case.data)?;
    if let Some(seg) = &case.seg {
        names.push(seg_file(id));
        write_label_map_npy(&out.join(&names[1]), seg)?;
        let rows: Vec<[i32; 4]> = case
            .class_locations
            .iter()
            .enumerate()
            .flat_map(|(class, locations)| {
                locations.iter().map(move |l| [class as i32, l[0] as i32, l[1] as i32, l[2] as i32])
            })
            .collect();
        let table = Array2::from_shape_vec((rows.len(), 4), rows.into_iter().flatten().collect()).expect("n x 4");
        names.push(locations_file(id));
        write_npy(&out.join(&names[2]), &table)?;
    }
    let outputs = names
        .into_iter()
        .map(|name| {
            let path = out.join(&name);
            file_size(&path).map(|bytes| (name, bytes)).ok_or_else(|| Error::runtime(&path, "vanished after writing"))
        })
        .collect::<Result<_>>()?;
    write_json(
        &out.join(properties_file(id)),
        &CaseRecord { properties: case.properties, nn_tools: provenance, outputs },
    )
}

/// Preprocesses every case into `out` in parallel, skipping cases that are current unless `force`.
/// `complete` says that `cases` is the whole dataset, so that `manifest.json` is written; one shard of it
/// (`nn-resample --part`) never writes the manifest (the final unsharded pass does) and removes one that
/// the cases it changed made stale.
/// `on_case_done` is called once per case (for progress display).
pub fn preprocess_dataset(
    recipe: &Recipe,
    cases: &[CaseFiles],
    out: &Path,
    stamp: &Stamp,
    force: bool,
    complete: bool,
    on_case_done: &(dyn Fn() + Sync),
) -> Result<Summary> {
    let created = !out.exists();
    nntools_io::create_output_folder(out)?;
    nntools_io::remove_stale_temporaries(out)?;
    // a case is made under its lock (`.CASE.nn-lock`), so that another nn-resample on this folder (or an
    // overlapping --part shard) never writes it at the same time, and is checked under it, so that a case
    // the other made meanwhile is skipped
    let make_case = |files: &CaseFiles, _lock: OutputLock| -> Result<bool> {
        let provenance = Provenance { stamp: stamp.clone(), inputs: input_files(files)? };
        let done = if !force && is_current(out, files, &provenance) {
            false
        } else {
            let case = preprocess_case(recipe, files)?;
            write_case(out, &files.id, case, provenance)?;
            true
        };
        on_case_done();
        Ok(done)
    };
    let lock_of = |files: &CaseFiles| out.join(&files.id);
    // first the cases no other process is making; then, waiting for their locks, those that one was
    let unlocked: Vec<Option<Result<bool>>> = cases
        .par_iter()
        .map(|files| {
            let lock = OutputLock::try_acquire(&lock_of(files)).transpose();
            lock.map(|lock| lock.and_then(|lock| make_case(files, lock)))
        })
        .collect();
    let results: Vec<Result<bool>> = unlocked
        .into_par_iter()
        .zip(cases)
        .map(|(result, files)| {
            result.unwrap_or_else(|| OutputLock::wait(&lock_of(files)).and_then(|lock| make_case(files, lock)))
        })
        .collect();
    let mut summary = Summary::default();
    let mut errors = Vec::new();
    let mut finished = Vec::new();
    for (files, result) in cases.iter().zip(results) {
        match result {
            Ok(processed) => {
                if processed {
                    summary.processed += 1
                } else {
                    summary.skipped += 1
                }
                finished.push(files.id.as_str());
            }
            Err(e) => errors.push(e),
        }
    }
    // the manifest marks a complete dataset (make's target, nn-train's case list), so a run with a
    // failed case leaves none; the finished cases stay and are skipped by the next run. A shard knows
    // only its own cases: it never writes the manifest, and removes an existing one once it changed a case.
    let manifest_path = out.join(MANIFEST);
    let failed = !errors.is_empty();
    if (failed || (!complete && summary.processed > 0)) && manifest_path.exists() {
        std::fs::remove_file(&manifest_path).map_err(|e| Error::runtime(&manifest_path, e))?;
    }
    if let Some(first) = errors.into_iter().next() {
        if created {
            // only succeeds when no case was written (finished cases are complete and kept)
            let _ = std::fs::remove_dir(out);
        }
        return Err(first);
    }
    if !complete {
        return Ok(summary);
    }
    finished.sort_unstable();
    let manifest = Manifest { stamp, data_identifier: &recipe.configuration.data_identifier, cases: finished };
    write_json(&manifest_path, &manifest)?;
    Ok(summary)
}
