//! One training run as nn-train starts it: plans, dataset description, preprocessed cases and split
//! in; a run folder (`plans.json`, `dataset.json`, `dataset_fingerprint.json`, `settings.json`, `fold_F/`)
//! out, which is also an nnU-Net trainer folder.

use crate::data::TrainingCase;
use crate::splits::read_or_create_splits;
use crate::trainer::Stopped;
use crate::{EpochLog, InitArgs, Settings, Split, Trainer, TrainingLabels};
use nntools_dataset::{Descriptor, Labelling};
use nntools_io::{Error, OutputLock, Result, read_json, write_json};
use nntools_layout::DATASET_FINGERPRINT_JSON;
use nntools_layout::preprocessed::{MANIFEST, SPLITS};
use nntools_layout::run::{Fold, RunDir};
use nntools_planning::{Configuration, Plans};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the stages of nnU-Net's cascade hand labels to each other. 3d_lowres's final validation
/// resamples each validation case's prediction to 3d_cascade_fullres's preprocessed grid; with every
/// fold validated, every case has one, and 3d_cascade_fullres trains and validates on them.
#[derive(Debug, Clone, Default)]
pub struct Cascade {
    /// For a configuration with a previous stage: the folder of that stage's labels (`CASE.npy`, as
    /// [`RunDir::next_stage_output`] names it), on this configuration's preprocessed grid.
    pub previous_stage: Option<PathBuf>,
    /// For a configuration with a next stage: that stage's preprocessed folder, whose shapes the final
    /// validation resamples to.
    pub next_stage_data: Option<PathBuf>,
}

/// Everything nn-train was asked to do.
pub struct Request {
    pub plans_path: PathBuf,
    pub configuration: String,
    pub dataset_json: PathBuf,
    pub data_dir: PathBuf,
    pub splits: Option<PathBuf>,
    pub fold: Fold,
    pub run_dir: RunDir,
    pub settings: Settings,
    /// Weights to start from (all but the segmentation heads), unless resuming from a checkpoint.
    pub pretrained: Option<PathBuf>,
    /// Write this many augmented training samples as PNGs into `fold_F/augmented/` and stop.
    pub dump_augmented: Option<usize>,
    /// Only predict the fold's validation cases with its final checkpoint (no training).
    pub validate_only: bool,
    pub cascade: Cascade,
}

/// The split file to use and its splits: the given one, else the preprocessed folder's, else a new
/// seeded 5-fold split written there in nnU-Net's format.
fn splits(request: &Request, case_ids: &[String]) -> Result<(PathBuf, Vec<Split>)> {
    let path = request.splits.clone().unwrap_or_else(|| request.data_dir.join(SPLITS));
    if request.splits.is_some() && !path.is_file() {
        return Err(Error::bad_input(&path, "split file not found"));
    }
    let splits = read_or_create_splits(&path, case_ids)?;
    Ok((path, splits))
}

fn load_cases(dir: &Path, ids: &[String], previous_stage: Option<&Path>) -> Result<Vec<Arc<TrainingCase>>> {
    ids.iter().map(|id| TrainingCase::load(dir, id, previous_stage).map(Arc::new)).collect()
}

/// What a training run tells its caller while it runs.
pub enum Report<'a> {
    /// Something the user should know that does not stop the run.
    Warning(String),
    /// An epoch finished.
    Epoch(&'a EpochLog),
}

/// Refuses cascade folders that do not fit the configuration; warns when a fold of a stage with a next
/// stage will write no labels for it, which nnU-Net logs case by case.
fn check_cascade(
    cascade: &Cascade,
    fold: Fold,
    configuration_name: &str,
    configuration: &nntools_planning::Configuration,
    report: &mut dyn FnMut(Report<'_>),
) -> Result<()> {
    match (&configuration.previous_stage, &cascade.previous_stage) {
        (Some(previous), None) => {
            let hint = RunDir::new(format!("RUNS/{previous}")).next_stage_output(configuration_name);
            return Err(Error::bad_input(
                "--prev-stage",
                format!(
                    "{configuration_name} trains on {previous}'s predictions: give --prev-stage {}",
                    hint.display()
                ),
            ));
        }
        (None, Some(dir)) => {
            return Err(Error::bad_input(
                dir,
                format!("{configuration_name} has no previous stage (only a cascade stage takes --prev-stage)"),
            ));
        }
        _ => {}
    }
    if let (None, Some(dir)) = (&configuration.next_stage, &cascade.next_stage_data) {
        return Err(Error::bad_input(
            dir,
            format!("{configuration_name} has no next stage (only 3d_lowres takes --next-stage-data)"),
        ));
    }
    if let (Some(next), None, Fold::Index(fold)) = (&configuration.next_stage, &cascade.next_stage_data, fold) {
        report(Report::Warning(format!(
            "without --next-stage-data, {configuration_name} fold {fold} writes no labels for {next}, which cannot train until this fold is validated again with it"
        )));
    }
    Ok(())
}

/// The raw dataset's reference label maps beside its dataset.json, which nnU-Net's preprocessing copies to
/// `gt_segmentations` for the final validation (nnunetv2/experiment_planning/plan_and_preprocess_api.py:
/// `preprocess_dataset`).
const LABELS_TR: &str = "labelsTr";

/// Refuses a batch that cannot fit (a hand-edited `batch_size` of 100000) before the run folder is
/// touched, from the activations the network keeps for backpropagation.
fn check_batch_memory(request: &Request, configuration: &Configuration, descriptor: &Descriptor) -> Result<()> {
    let arch = &configuration.architecture.arch_kwargs;
    let labels = TrainingLabels::of(descriptor);
    let per_sample = nntools_network::activations_per_sample(
        arch,
        &configuration.patch_size,
        descriptor.channel_names.len(),
        labels.outputs(),
    );
    nntools_io::memory::check(&request.plans_path, 4.0 * per_sample * configuration.batch_size as f64, || {
        format!(
            "{}: a training batch of {} patches of {:?} voxels",
            request.configuration, configuration.batch_size, configuration.patch_size
        )
    })
}

/// Trains one fold; `report` sees every warning and every finished epoch.
pub fn train(request: Request, report: &mut dyn FnMut(Report<'_>)) -> Result<()> {
    let plans: Plans = read_json(&request.plans_path)?;
    let configuration =
        plans.configuration(&request.configuration).map_err(|p| Error::bad_input(&request.plans_path, p))?;
    check_cascade(&request.cascade, request.fold, &request.configuration, &configuration, report)?;
    let descriptor = Descriptor::read(&request.dataset_json)?;
    Labelling::of(&descriptor).map_err(|p| Error::bad_input(&request.dataset_json, p))?;
    check_batch_memory(&request, &configuration, &descriptor)?;
    let manifest_path = request.data_dir.join(MANIFEST);
    let manifest: serde_json::Value = read_json(&manifest_path)?;
    let case_ids: Vec<String> = serde_json::from_value(manifest["cases"].clone())
        .map_err(|e| Error::bad_input(&manifest_path, format!("no case list: {e}")))?;
    // and the file that lists them
    let (train_ids, val_ids, case_list) = match request.fold {
        Fold::All => (case_ids.clone(), case_ids.clone(), manifest_path),
        Fold::Index(fold) => {
            let (path, splits) = splits(&request, &case_ids)?;
            let split = splits.get(fold).ok_or_else(|| {
                Error::bad_input(&request.data_dir, format!("fold {fold} does not exist ({} folds)", splits.len()))
            })?;
            (split.train.clone(), split.val.clone(), path)
        }
    };
    let (device, precision) = (request.settings.device, request.settings.precision);
    let resolved_precision = precision.resolved(device).map_err(|p| Error::bad_input("--precision", p))?.to_string();
    let reference_labels = request.dataset_json.with_file_name(LABELS_TR);
    let validate = |fold, report: &mut dyn FnMut(Report<'_>)| {
        crate::validate_fold(&request.run_dir, fold, &request.data_dir, &val_ids, &request.cascade, device, precision)?;
        let fold_dir = request.run_dir.fold(Fold::Index(fold));
        if reference_labels.is_dir() {
            return crate::write_validation_summary(&fold_dir, &reference_labels, &descriptor);
        }
        report(Report::Warning(format!(
            "{}: no reference labels beside the dataset.json, so {} is not written",
            reference_labels.display(),
            fold_dir.validation_summary().display()
        )));
        Ok(())
    };
    if request.validate_only {
        let Fold::Index(fold) = request.fold else {
            return Err(Error::bad_input(&request.run_dir, "--validate-only needs a fold number"));
        };
        // validation writes into the fold folder: not while a training of the fold is running
        let fold_dir = request.run_dir.fold(Fold::Index(fold));
        let _fold_lock =
            request.run_dir.path().is_dir().then(|| OutputLock::acquire_or_refuse(fold_dir.path())).transpose()?;
        return validate(fold, report);
    }
    if train_ids.is_empty() {
        return Err(Error::bad_input(&case_list, "no training cases"));
    }
    let settings = serde_json::json!({
        "configuration": request.configuration,
        "fold": match request.fold { Fold::All => "all".to_owned(), Fold::Index(f) => f.to_string() },
        "epochs": request.settings.epochs,
        "iterations": request.settings.iterations,
        "validation_iterations": request.settings.validation_iterations,
        "seed": request.settings.seed,
        "precision": resolved_precision,
        "train_cases": train_ids,
        "val_cases": val_ids,
    });
    // the next stage's data is read only by the final validation: checked now, not after training
    if let (Some(next), Fold::Index(_)) = (&request.cascade.next_stage_data, request.fold) {
        for id in &val_ids {
            crate::data::preprocessed_shape(next, id)?;
        }
    }
    let previous_stage = request.cascade.previous_stage.as_deref();
    let train_cases = load_cases(&request.data_dir, &train_ids, previous_stage)?;
    let val_cases = load_cases(&request.data_dir, &val_ids, previous_stage)?;
    let fold_dir = request.settings.fold_dir.clone();
    let resume = request.settings.resume;
    let dataset: serde_json::Value = read_json(&request.dataset_json)?;
    let plans_json = serde_json::to_value(&plans).map_err(|e| Error::runtime(&request.plans_path, e))?;
    let init_args = InitArgs { plans: plans_json, dataset_json: dataset.clone(), fold: request.fold };
    let mut trainer = Trainer::new(
        &request.configuration,
        &configuration,
        TrainingLabels::of(&descriptor),
        train_cases,
        val_cases,
        request.settings,
        init_args,
    )
    .map_err(|p| Error::bad_input(&request.plans_path, p))?;
    if resume {
        trainer.resume()?;
    }
    // written once every input, a checkpoint to resume from included, has been read: a refused run
    // leaves the run folder as it was. The fold is trained under its lock (`RUN/.fold_F.nn-lock`), held
    // to the end, so that the same fold started twice (a Slurm array task rerun after a node failure
    // while the first still runs) is refused with the holder named.
    nntools_io::create_output_folder(request.run_dir.path())?;
    let _fold_lock = OutputLock::acquire_or_refuse(fold_dir.path())?;
    std::fs::create_dir_all(&fold_dir).map_err(|e| Error::io(&fold_dir, &e))?;
    for dir in [request.run_dir.path(), fold_dir.path()] {
        nntools_io::remove_stale_temporaries(dir)?;
    }
    write_json(&request.run_dir.plans(), &plans)?;
    write_json(&request.run_dir.dataset_json(), &dataset)?;
    // nnU-Net copies it from the preprocessed folder, beside the plans (nnUNetTrainer.py: `on_train_start`);
    // only its model export needs it (model_sharing/model_export.py: `export_pretrained_model`)
    let fingerprint = request.plans_path.with_file_name(DATASET_FINGERPRINT_JSON);
    if fingerprint.is_file() {
        nntools_io::write_atomically(&request.run_dir.fingerprint(), |tmp| {
            std::fs::copy(&fingerprint, tmp).map(drop).map_err(|e| Error::io(&fingerprint, &e))
        })?;
    } else {
        report(Report::Warning(format!(
            "{}: not found beside the plans, so the run folder has none (nnU-Net's model export needs it)",
            fingerprint.display()
        )));
    }
    write_json(&fold_dir.settings(), &settings)?;
    if let Some(count) = request.dump_augmented {
        return trainer.dump_augmented(count, &fold_dir.augmented());
    }
    if let Some(weights) = request.pretrained.as_ref().filter(|_| trainer.epoch() == 0) {
        trainer.load_pretrained(weights)?;
    }
    trainer.run(&mut |log| report(Report::Epoch(log))).map_err(|stopped| match stopped {
        Stopped::Interrupted { epoch } => Error::runtime(
            &request.run_dir,
            format!("interrupted in epoch {epoch}; checkpoint_latest saved, continue with --resume"),
        ),
        Stopped::Failed(error) => error,
    })?;
    drop(trainer);
    // nnU-Net validates every cross-validation fold at the end; `--fold all` has no held-out cases
    match request.fold {
        Fold::Index(fold) => validate(fold, report),
        Fold::All => Ok(()),
    }
}
