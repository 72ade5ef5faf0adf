//! `nn-model export`: run folders to the zip nnU-Net's exporter writes
//! (nnunetv2/model_sharing/model_export.py: `export_pretrained_model`), which nnU-Net's
//! `install_model_from_zip_file` extracts into `nnUNet_results`.

use crate::folder::fold_order;
use crate::layout::{TrainerFolder, check_component};
use nntools_checkpoint::NnunetCheckpoint;
use nntools_io::{Error, Result, read_json, write_atomically};
use nntools_layout::run::{CheckpointName, Fold, RunDir};
use std::path::{Path, PathBuf};

/// The files nnU-Net's exporter takes from a trainer folder besides the fold files, in its order, and
/// whether nnU-Net's predictor needs them (it reads no fingerprint: a run without one is exported with
/// a warning).
const TRAINER_FILES: [(&str, bool); 3] = [
    (nntools_layout::PLANS_JSON, true),
    (nntools_layout::DATASET_FINGERPRINT_JSON, false),
    (nntools_layout::DATASET_JSON, true),
];

/// The warning about a file nnU-Net's exporter takes that a run lacks.
const MISSING_FOR_NNUNET: &str =
    "missing, not in the zip (nnU-Net's own exporter requires it; its installer and predictor do not)";

/// One file to put in the zip.
struct Entry {
    source: PathBuf,
    name: String,
}

/// Writes `runs` (each a run or trainer folder holding `.pth` checkpoints) to the zip `out`, as
/// nnU-Net's exporter lays it out: `DATASET/TRAINER__PLANS__CONFIG/{plans,dataset_fingerprint,dataset}.json`
/// and `fold_F/{CHECKPOINT.pth,progress.png,validation/summary.json}` (with `debug.json` and
/// `network_architecture.pdf` where present, as the exporter takes them). `folds` defaults to every
/// fold folder. Returns warnings: a run without dataset_fingerprint.json, a fold without progress.png
/// or validation summary, which nnU-Net's exporter requires but its installer and predictor do not.
pub fn export_zip(
    runs: &[PathBuf],
    folds: Option<&[Fold]>,
    checkpoint: &CheckpointName,
    out: &Path,
) -> Result<Vec<String>> {
    let mut entries = Vec::new();
    let mut trainer_folders: Vec<String> = Vec::new();
    let mut warnings = Vec::new();
    for path in runs {
        let (folder, run_entries) = run_entries(path, folds, checkpoint, &mut warnings)?;
        let name = folder.to_string();
        if trainer_folders.contains(&name) {
            return Err(Error::bad_input(path, format!("is a second {name}: each model goes into the zip once")));
        }
        trainer_folders.push(name);
        entries.extend(run_entries);
    }
    write_atomically(out, |tmp| write_zip(tmp, &entries).map_err(|e| Error::runtime(out, e)))?;
    Ok(warnings)
}

/// The zip entries of one run folder and the trainer folder it becomes.
fn run_entries(
    path: &Path,
    folds: Option<&[Fold]>,
    checkpoint: &CheckpointName,
    warnings: &mut Vec<String>,
) -> Result<(TrainerFolder, Vec<Entry>)> {
    if !path.is_dir() {
        return Err(Error::bad_input(path, "not a folder (expected a run or trainer folder)"));
    }
    let run = RunDir::new(path);
    let mut trainer_files = Vec::new();
    for (file, required) in TRAINER_FILES {
        let source = path.join(file);
        if source.is_file() {
            trainer_files.push(file);
        } else if required {
            return Err(Error::bad_input(&source, "missing (nnU-Net's predictor reads it)"));
        } else {
            warnings.push(format!("{}: {MISSING_FOR_NNUNET}", source.display()));
        }
    }
    let plans: serde_json::Value = read_json(&run.plans())?;
    let plans_field = |key: &str| {
        let value = plans.get(key).and_then(serde_json::Value::as_str);
        let value = value.ok_or_else(|| Error::bad_input(run.plans(), format!("no {key:?}")))?;
        check_component(value)
            .map_err(|problem| Error::bad_input(run.plans(), format!("{key} {value:?} {problem}")))?;
        Ok::<_, Error>(value.to_owned())
    };
    let (dataset, plans_name) = (plans_field("dataset_name")?, plans_field("plans_name")?);
    let folds = match folds {
        Some(folds) => folds.to_vec(),
        None => fold_folders(path)?,
    };
    if folds.is_empty() {
        return Err(Error::bad_input(path, format!("no fold folder (fold_F/{checkpoint})")));
    }
    let mut model: Option<(String, String)> = None;
    let mut fold_entries = Vec::new();
    for fold in folds {
        let fold_dir = run.fold(fold);
        let pth = fold_dir.path().join(checkpoint.to_string());
        if !pth.is_file() {
            let problem = "missing (nn-model export ships nnU-Net's .pth checkpoints, which nn-train writes beside its safetensors)";
            return Err(Error::bad_input(&pth, problem));
        }
        let read = NnunetCheckpoint::read(&pth)?;
        let this = (read.trainer_name, read.configuration);
        match &model {
            Some(first) if *first != this => {
                let problem =
                    format!("trainer {} configuration {}, other folds hold {} {}", this.0, this.1, first.0, first.1);
                return Err(Error::bad_input(&pth, problem));
            }
            Some(_) => {}
            None => model = Some(this),
        }
        let fold_name = fold.to_string();
        let optional = ["debug.json"];
        for file in optional {
            let source = fold_dir.path().join(file);
            if source.is_file() {
                fold_entries.push((source, format!("{fold_name}/{file}")));
            }
        }
        fold_entries.push((pth, format!("{fold_name}/{checkpoint}")));
        for (file, required_by_nnunet) in
            [("progress.png", true), ("network_architecture.pdf", false), ("validation/summary.json", true)]
        {
            let source = fold_dir.path().join(file);
            if source.is_file() {
                fold_entries.push((source, format!("{fold_name}/{file}")));
            } else if required_by_nnunet {
                warnings.push(format!(
                    "{}: missing, not in the zip (nnU-Net's own exporter requires it)",
                    source.display()
                ));
            }
        }
    }
    let (trainer, configuration) = model.expect("at least one fold");
    for (what, value) in [("trainer_name", &trainer), ("configuration", &configuration)] {
        check_component(value).map_err(|problem| Error::bad_input(path, format!("{what} {value:?} {problem}")))?;
    }
    let folder = TrainerFolder { dataset, trainer, plans: plans_name, configuration };
    let mut entries: Vec<Entry> =
        fold_entries.into_iter().map(|(source, name)| Entry { source, name: format!("{folder}/{name}") }).collect();
    entries.extend(
        trainer_files.into_iter().map(|file| Entry { source: path.join(file), name: format!("{folder}/{file}") }),
    );
    Ok((folder, entries))
}

/// The fold folders of a run, in nnU-Net's order.
fn fold_folders(path: &Path) -> Result<Vec<Fold>> {
    let mut folds = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, &e))? {
        let entry = entry.map_err(|e| Error::io(path, &e))?;
        if let Some(fold) = Fold::of_folder_name(&entry.file_name().to_string_lossy()) {
            folds.push(fold);
        }
    }
    folds.sort_by_key(|fold| fold_order(*fold));
    Ok(folds)
}

/// Writes the entries deflated, as nnU-Net's exporter (`zipfile.ZIP_DEFLATED`).
fn write_zip(path: &Path, entries: &[Entry]) -> std::io::Result<()> {
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path)?);
    for entry in entries {
        let mut source = std::fs::File::open(&entry.source)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", entry.source.display())))?;
        let size = source.metadata()?.len();
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o644)
            .large_file(size >= u64::from(u32::MAX));
        zip.start_file(entry.name.as_str(), options)?;
        std::io::copy(&mut source, &mut zip)?;
    }
    zip.finish()?.sync_all()
}
