//! nnU-Net's inference (`nnunetv2/inference/predict_from_raw_data.py: nnUNetPredictor`): a trained model folder (ours
//! or nnU-Net v2's, weights as safetensors) predicts raw images: the training preprocessing, sliding-window
//! prediction with the Gaussian importance map and mirroring, logits averaged over folds, resampled back and written
//! in the input image's exact geometry. Several model folders are ensembled by averaging probabilities.
//!
//! [`predict`] runs a batch: cases stream through three stages on their own threads (read and preprocess,
//! predict, export and write), so at most one case per stage is in memory and the network never waits for
//! disk. [`Resident`] keeps the models loaded between cases, for `nn-infer -i -` (cases read from stdin)
//! and `nn-serve`; it predicts one case at a time through the same steps and writes the same bytes:
//!
//! ```text
//! pub struct Resident { .. }                  // Send: one worker thread owns it
//! impl Resident {
//!     pub fn load(models: &[PathBuf], options: &Options) -> Result<Self>;
//!     pub fn info(&self) -> ModelInfo;        // serde::Serialize: labels, channels, configurations, folds, version
//!     pub fn channels(&self) -> usize;
//!     pub fn predict_case(&self, id: &str, images: &[PathBuf], out_dir: &Path, case: CaseOptions,
//!                         keep_going: &mut dyn FnMut() -> bool) -> Result<PathBuf>;
//!     pub fn write_model_files(&self, out_dir: &Path) -> Result<()>;   // plans.json, dataset.json
//! }
//! pub struct CaseOptions { pub tta: bool, pub save_probabilities: bool }
//! ```
//!
//! `predict_case` returns an error of kind [`nntools_io::ErrorKind::Cancelled`] (and writes nothing) once `keep_going`,
//! asked before reading the case and before every network evaluation, returns false. Cascade stages (a
//! model that takes a previous stage's predictions) are refused by [`Resident::load`].

mod export;
mod made_by;
mod sliding_window;

pub use export::{Exported, export, labels_for_next_stage};
pub use sliding_window::{SlidingWindow, importance_map, tile_starts};

use made_by::{MadeBy, ModelIdentity, PreviousStageIdentity};
use ndarray::{Array3, Array4, Axis};
use nntools_dataset::{Descriptor, Labelling, Part, group_image_files, list_image_cases};
use nntools_io::{
    Error, Geometry, OutputLock, ReaderWriter, Result, Stored, read_json, split_image_ending, write_json,
    write_label_map, write_npz,
};
use nntools_layout::run::{CheckpointName, Fold, FoldDir, RunDir, WeightsFile};
use nntools_layout::{DATASET_JSON, PLANS_JSON, predictions};
use nntools_network::{Model, Precision};
use nntools_planning::Plans;
use nntools_preprocessing::{CaseFiles, Preprocessed, Properties, Recipe, preprocess_case};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use tch::{Device, Tensor};

/// What to predict with.
#[derive(Clone)]
pub struct Options {
    /// Folds to use; every `fold_N` holding the checkpoint when absent.
    pub folds: Option<Vec<Fold>>,
    /// `final`, `best`, `latest` or a checkpoint's file name.
    pub checkpoint: CheckpointName,
    /// Mirroring test-time augmentation.
    pub tta: bool,
    /// Sliding-window step as a fraction of the patch.
    pub step: f64,
    pub device: Device,
    /// The network's arithmetic (`--precision`).
    pub precision: Precision,
}

/// What inference reads from a checkpoint besides its weights: from nn-train's sidecar JSON, or from
/// an nnU-Net `.pth` as `nnUNetPredictor.initialize_from_trained_model_folder` reads it
/// (nnunetv2/inference/predict_from_raw_data.py).
#[derive(serde::Deserialize)]
struct CheckpointInfo {
    configuration: String,
    inference_allowed_mirroring_axes: Vec<usize>,
}

impl CheckpointInfo {
    fn read(file: &WeightsFile) -> Result<Self> {
        match file {
            WeightsFile::Safetensors { sidecar, .. } => read_json(sidecar),
            WeightsFile::Pth(path) => {
                let checkpoint = nntools_checkpoint::NnunetCheckpoint::read(path)?;
                Ok(Self {
                    configuration: checkpoint.configuration,
                    inference_allowed_mirroring_axes: checkpoint.inference_allowed_mirroring_axes,
                })
            }
        }
    }
}

/// What a model folder says about its cases: plans, labels, configuration (shared with the threads
/// that preprocess and export).
pub struct ModelFolder {
    pub dir: RunDir,
    pub plans: Plans,
    pub descriptor: Descriptor,
    pub recipe: Recipe,
    pub labelling: Labelling,
    /// Foreground labels of the previous stage, appended one-hot to the input (cascade only).
    previous_stage_labels: Option<Vec<i64>>,
    /// Weights of each fold used.
    weights: Vec<WeightsFile>,
    /// The checkpoint's configuration name (`3d_fullres`, ...).
    configuration: String,
    /// The axes the checkpoint allows mirroring along (used with TTA).
    mirror_axes: Vec<usize>,
    classes: usize,
}

/// A model folder's networks, one per fold, on the device.
pub struct Predictor {
    models: Vec<Model>,
    /// The sliding window with mirroring (TTA) and without.
    mirrored: SlidingWindow,
    plain: SlidingWindow,
    /// The options' TTA, which [`Predictor::logits`] uses.
    tta: bool,
    classes: i64,
    previous_stage_labels: Option<Vec<i64>>,
}

/// The weights file of each fold used.
fn fold_weights(run: &RunDir, options: &Options) -> Result<Vec<WeightsFile>> {
    let checkpoint = &options.checkpoint;
    if let Some(folds) = &options.folds {
        return folds
            .iter()
            .map(|&fold| {
                let folder = run.fold(fold);
                folder
                    .weights_file(checkpoint)
                    .ok_or_else(|| Error::bad_input(folder.0.join(checkpoint.to_string()), "checkpoint not found"))
            })
            .collect();
    }
    let entries = std::fs::read_dir(run).map_err(|e| Error::io(run, &e))?;
    let mut folds: Vec<(usize, WeightsFile)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| match Fold::of_folder_name(&e.file_name().to_string_lossy()) {
            Some(Fold::Index(index)) => Some((index, e.path())),
            _ => None,
        })
        .filter_map(|(index, path)| FoldDir::new(path).weights_file(checkpoint).map(|file| (index, file)))
        .collect();
    folds.sort_by_key(|(index, _)| *index);
    if folds.is_empty() {
        if let Some(all) = run.fold(Fold::All).weights_file(checkpoint) {
            return Ok(vec![all]);
        }
        return Err(Error::bad_input(run, format!("no fold_N/{checkpoint} (or .safetensors) in the model folder")));
    }
    Ok(folds.into_iter().map(|(_, file)| file).collect())
}

impl ModelFolder {
    /// Reads a model folder: `plans.json`, `dataset.json`, and the configuration and mirroring axes of
    /// the first fold's checkpoint (nn-train's `checkpoint_X.json` sidecar, or nnU-Net's `.pth`).
    pub fn open(dir: &Path, options: &Options) -> Result<Self> {
        let dir = RunDir::new(dir);
        let plans: Plans = read_json(&dir.plans())?;
        let descriptor = Descriptor::read(&dir.dataset_json())?;
        let weights = fold_weights(&dir, options)?;
        let info = CheckpointInfo::read(&weights[0])?;
        let recipe = Recipe::new(&plans, &info.configuration, None).map_err(|p| Error::bad_input(dir.plans(), p))?;
        let labelling = Labelling::of(&descriptor).map_err(|p| Error::bad_input(dir.dataset_json(), p))?;
        let classes = match &labelling {
            Labelling::Classes => descriptor.all_labels().len(),
            Labelling::Regions(_) => descriptor.foreground_entries().count(),
        };
        let previous_stage_labels =
            recipe.configuration.previous_stage.as_ref().map(|_| descriptor.foreground_labels());
        Ok(Self {
            dir,
            plans,
            descriptor,
            recipe,
            labelling,
            previous_stage_labels,
            weights,
            configuration: info.configuration,
            mirror_axes: info.inference_allowed_mirroring_axes,
            classes,
        })
    }
}

impl Predictor {
    /// Builds the folder's network once per fold on the device and loads the fold's weights.
    pub fn load(folder: &ModelFolder, options: &Options) -> Result<Self> {
        if options.device.is_cuda() {
            // every tile has the patch's shape: cuDNN's fastest algorithms are chosen once
            tch::Cuda::cudnn_set_benchmark(true);
        }
        let patch = &folder.recipe.configuration.patch_size;
        sliding_window::check_step(patch, options.step).map_err(|p| Error::bad_input("--step", p))?;
        let labels = &folder.previous_stage_labels;
        let input_channels = folder.recipe.channels() + labels.as_ref().map_or(0, Vec::len);
        let arch = &folder.recipe.configuration.architecture;
        let models = folder
            .weights
            .iter()
            .map(|weights| {
                let mut model = Model::new(
                    options.device,
                    &arch.network_class_name,
                    &arch.arch_kwargs,
                    input_channels,
                    folder.classes,
                )
                .map_err(|p| Error::bad_input(folder.dir.plans(), p))?;
                model.load_weights(weights.path())?;
                Ok(model)
            })
            .collect::<Result<Vec<_>>>()?;
        let mixed = options.precision.on(options.device).map_err(|p| Error::bad_input("--precision", p))?;
        let window =
            |mirror_axes: &[usize]| SlidingWindow::new(patch, options.step, mirror_axes, options.device, mixed);
        Ok(Self {
            models,
            mirrored: window(&folder.mirror_axes),
            plain: window(&[]),
            tta: options.tta,
            classes: folder.classes as i64,
            previous_stage_labels: labels.clone(),
        })
    }

    /// Network evaluations per case of this preprocessed shape `(c, z, y, x)`, over all folds.
    pub fn tile_count(&self, shape: &[usize]) -> usize {
        self.plain.tile_count(&shape[1..]) * self.models.len()
    }

    /// Refuses case `id` (preprocessed shape `(c, z, y, x)`) when its sliding window cannot fit in the
    /// memory budget (the fp16 sums of many classes over a large CT), before anything is allocated.
    fn check_memory(&self, id: &str, shape: &[usize]) -> Result<()> {
        let window = &self.plain;
        nntools_io::memory::check(id, window.memory_bytes(&shape[1..], self.classes), || {
            format!("a sliding window at step {} over {:?} voxels (patch {:?})", window.step, &shape[1..], window.patch)
        })
    }

    /// The network input of a preprocessed case: its channels, plus for the cascade the previous
    /// stage's labels one-hot (-1 and 0 give all-zero channels).
    fn input(&self, data: &Array4<f32>, previous_stage: Option<&Array3<i16>>) -> Tensor {
        let with_previous_stage = match (&self.previous_stage_labels, previous_stage) {
            (Some(labels), Some(seg)) => {
                let one_hot: Vec<_> = labels.iter().map(|&l| seg.mapv(|v| f32::from(i64::from(v) == l))).collect();
                let views: Vec<_> = one_hot.iter().map(|c| c.view()).collect();
                let extra = ndarray::stack(Axis(0), &views).expect("equal shapes");
                Some(ndarray::concatenate(Axis(0), &[data.view(), extra.view()]).expect("equal spatial shapes"))
            }
            _ => None,
        };
        let data = with_previous_stage.as_ref().unwrap_or(data);
        let shape: Vec<i64> = data.shape().iter().map(|&s| s as i64).collect();
        Tensor::from_slice(data.as_slice().expect("standard layout"))
            .view(shape.as_slice())
            .to_device(self.plain.gaussian.device())
    }

    /// Fold-averaged fp16 logits `(classes, z, y, x)` of preprocessed data `(c, z, y, x)` (with the
    /// previous stage's preprocessed labels for the cascade) on the prediction device, summed and
    /// divided in fp16 as nnU-Net's accumulators hold them, with the options' TTA; `on_tile` is called
    /// before every network evaluation.
    pub fn logits(
        &self,
        data: &Array4<f32>,
        previous_stage: Option<&Array3<i16>>,
        on_tile: &mut dyn FnMut(),
    ) -> Tensor {
        let mut keep_going = || {
            on_tile();
            true
        };
        self.logits_until(data, previous_stage, self.tta, &mut keep_going).expect("never stopped")
    }

    /// As [`Predictor::logits`], mirroring when `tta` says, and `None` once `keep_going`, called before
    /// every network evaluation, returns false.
    pub fn logits_until(
        &self,
        data: &Array4<f32>,
        previous_stage: Option<&Array3<i16>>,
        tta: bool,
        keep_going: &mut dyn FnMut() -> bool,
    ) -> Option<Tensor> {
        let window = if tta { &self.mirrored } else { &self.plain };
        let input = self.input(data, previous_stage);
        let mut sum: Option<Tensor> = None;
        for model in &self.models {
            let logits = window.predict(&model.net, &input, self.classes, &mut *keep_going)?;
            sum = Some(match sum {
                None => logits,
                Some(previous) => previous + logits,
            });
        }
        let logits = sum.expect("at least one fold");
        Some(if self.models.len() > 1 { logits / self.models.len() as f64 } else { logits })
    }
}

/// The input a cascade stage takes from its previous stage.
#[derive(Clone)]
pub enum PreviousStage {
    /// A folder of that stage's predictions (`CASE<ending>`).
    Predictions(PathBuf),
    /// That stage's model folder: the inputs are predicted with it first (same folds and options).
    Model(PathBuf),
}

/// Where images come from and where predictions go.
#[derive(Clone)]
pub struct Request {
    pub models: Vec<PathBuf>,
    /// Image folders and/or image files (`CASE_XXXX.nii.gz`).
    pub inputs: Vec<PathBuf>,
    pub output: PathBuf,
    /// For a cascade stage among the models.
    pub prev_stage: Option<PreviousStage>,
    pub save_probabilities: bool,
    pub options: Options,
    /// This process's share of the cases (`--part K/N`).
    pub part: Part,
    /// Skip the cases whose outputs are complete and were made by the same models, folds and options
    /// (`--continue`, nnU-Net's `--continue_prediction`); otherwise every case is predicted and overwritten.
    pub resume: bool,
}

/// Progress of a prediction run.
pub enum Event<'a> {
    Started { cases: usize },
    CaseStarted { id: &'a str, tiles: usize },
    Tile,
    CasePredicted { id: &'a str },
}

/// The ending of a case's first image and the reader for it: the plans' where it is the model's
/// ending, else the one nnU-Net would choose for the file (nnU-Net itself only reads the model's).
fn input_format(first_image: &Path, model_ending: &str) -> Result<(String, Option<ReaderWriter>)> {
    let ending = image_ending(first_image);
    if ending.eq_ignore_ascii_case(model_ending) {
        return Ok((ending, None));
    }
    Ok((ending, Some(ReaderWriter::for_file(first_image)?)))
}

fn cases(request: &Request, channels: usize) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let (dirs, files): (Vec<&PathBuf>, Vec<&PathBuf>) = request.inputs.iter().partition(|p| p.is_dir());
    let mut cases = Vec::new();
    for dir in dirs {
        cases.extend(list_image_cases(dir, channels)?);
    }
    if !files.is_empty() {
        let files: Vec<PathBuf> = files.into_iter().cloned().collect();
        for file in &files {
            if !file.is_file() {
                return Err(Error::bad_input(file, "no such image file or folder"));
            }
        }
        cases.extend(group_image_files(&files, channels)?);
    }
    let mut ids: Vec<&str> = cases.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    if let Some(pair) = ids.windows(2).find(|p| p[0] == p[1]) {
        return Err(Error::bad_input(&request.inputs[0], format!("case {} is given more than once", pair[0])));
    }
    Ok(request.part.select(cases, |(id, _)| id))
}

/// The ending of a case's images (`.nii.gz`, ...), which its prediction gets.
fn image_ending(first_image: &Path) -> String {
    let name = first_image.file_name().unwrap_or_default().to_string_lossy();
    split_image_ending(&name).map(|(_, e)| e.to_owned()).unwrap_or_default()
}

/// A case preprocessed for each model.
struct Prepared {
    id: String,
    /// The ending of the case's images, which its prediction gets.
    ending: String,
    per_model: Vec<Preprocessed>,
    made_by: MadeBy,
}

/// A case's fold-averaged logits for each model, with what exporting them needs.
struct Predicted {
    id: String,
    /// Logits on the prediction device, exported there.
    per_model: Vec<(Tensor, Properties)>,
    output: OutputFormat,
    made_by: MadeBy,
}

/// How a case's prediction is written: in its input's format (`ending`), like its first image.
#[derive(Debug, Clone)]
pub struct OutputFormat {
    pub ending: String,
    pub geometry: Geometry,
    pub stored: Stored,
}

/// A request's models, opened, and the cases they are to predict: the request's part, less with
/// `resume` those already made the same way.
struct Job {
    folders: Vec<ModelFolder>,
    cases: Vec<(String, Vec<PathBuf>)>,
    /// How every case is made, but for previous-stage predictions given as files (see [`Job::made_by`]).
    made_by: MadeBy,
}

/// Opens the model folders to ensemble, which must agree on channels and labels.
fn open_models(models: &[PathBuf], options: &Options) -> Result<Vec<ModelFolder>> {
    let folders = models.iter().map(|dir| ModelFolder::open(dir, options)).collect::<Result<Vec<_>>>()?;
    let first = folders.first().ok_or_else(|| Error::bad_input("-m", "no model folder given"))?;
    for p in &folders[1..] {
        if p.recipe.channels() != first.recipe.channels() || p.descriptor.labels != first.descriptor.labels {
            return Err(Error::bad_input(
                &p.dir,
                format!("its channels or labels differ from {}'s", first.dir.path().display()),
            ));
        }
    }
    Ok(folders)
}

/// How `folders` make a case with `options` (without a previous stage).
fn made_by_models(folders: &[ModelFolder], options: &Options, save_probabilities: bool) -> Result<MadeBy> {
    Ok(MadeBy {
        models: folders.iter().map(ModelIdentity::of).collect::<Result<_>>()?,
        previous_stage: None,
        checkpoint: options.checkpoint.to_string(),
        tta: options.tta,
        step: options.step,
        precision: options
            .precision
            .resolved(options.device)
            .map_err(|p| Error::bad_input("--precision", p))?
            .to_string(),
        save_probabilities,
    })
}

impl Job {
    fn new(request: &Request) -> Result<Self> {
        let options = &request.options;
        let folders = open_models(&request.models, options)?;
        let first = &folders[0];
        let channels = first.recipe.channels();
        let cascade = folders.iter().any(|f| f.previous_stage_labels.is_some());
        if cascade && request.prev_stage.is_none() {
            return Err(Error::bad_input(
                &first.dir,
                "a 3d_cascade_fullres model needs --prev-stage DIR (the 3d_lowres predictions)",
            ));
        }
        let previous_stage = match &request.prev_stage {
            Some(PreviousStage::Model(dir)) if cascade => {
                Some(PreviousStageIdentity::Model(ModelIdentity::of(&ModelFolder::open(dir, options)?)?))
            }
            _ => None,
        };
        let made_by = MadeBy { previous_stage, ..made_by_models(&folders, options, request.save_probabilities)? };
        let mut job = Self { cases: cases(request, channels)?, folders, made_by };
        if request.resume {
            let cases = std::mem::take(&mut job.cases);
            job.cases = cases
                .into_iter()
                .filter(|(id, images)| {
                    let ending = image_ending(&images[0]);
                    let made_by = job.made_by(request, id, &ending);
                    !made_by.is_ok_and(|made_by| made_by::is_current(&request.output, id, &ending, &made_by))
                })
                .collect();
        }
        Ok(job)
    }

    /// How case `id` (images ending in `ending`) is made: with previous-stage predictions given as files,
    /// the case's (by content) are part of it.
    fn made_by(&self, request: &Request, id: &str, ending: &str) -> Result<MadeBy> {
        let mut made_by = self.made_by.clone();
        let cascade = self.folders.iter().any(|f| f.previous_stage_labels.is_some());
        if let (true, Some(PreviousStage::Predictions(dir))) = (cascade, &request.prev_stage) {
            let sha256 = made_by::sha256_of(&predictions::label_map(dir, id, ending))?;
            made_by.previous_stage = Some(PreviousStageIdentity::Predictions { sha256 });
        }
        Ok(made_by)
    }
}

/// Predicts every case of the request (its part; with `resume` those not already made the same way) and
/// writes `OUT/CASE<ending>` (and `CASE.npz` + `CASE.json` with probabilities) and `OUT/CASE.made_by.json`,
/// plus the first model's `plans.json` and `dataset.json`. A previous stage given as a model predicts
/// the same cases first, into a temporary folder of this process's own inside OUT, which another process
/// predicting into OUT (another `--part`, on any machine) leaves alone.
pub fn predict(request: &Request, report: &mut dyn FnMut(Event)) -> Result<()> {
    let job = Job::new(request)?;
    let previous = match &request.prev_stage {
        None => return predict_cases(request, job, None, report),
        Some(PreviousStage::Predictions(dir)) => return predict_cases(request, job, Some(dir), report),
        Some(PreviousStage::Model(previous)) => previous,
    };
    let created = !request.output.exists();
    nntools_io::create_output_folder(&request.output)?;
    // a temporary name, so that the folder a killed run leaves is removed at the next start
    let scratch = nntools_io::temporary_path(&request.output.join("previous-stage"));
    let first = Request {
        models: vec![previous.clone()],
        output: scratch.clone(),
        prev_stage: None,
        save_probabilities: false,
        resume: false,
        ..request.clone()
    };
    let outcome = Job::new(&first)
        .and_then(|mut previous_job| {
            previous_job.cases.retain(|(id, _)| job.cases.iter().any(|(to_predict, _)| to_predict == id));
            predict_cases(&first, previous_job, None, report)
        })
        .and_then(|()| predict_cases(request, job, Some(&scratch), report));
    let _ = std::fs::remove_dir_all(&scratch);
    if outcome.is_err() && created {
        // only succeeds when no case was written
        let _ = std::fs::remove_dir(&request.output);
    }
    outcome
}

/// Predicts `job`'s cases, with the previous stage's predictions, if any, in `previous_predictions`.
fn predict_cases(
    request: &Request,
    job: Job,
    previous_predictions: Option<&Path>,
    report: &mut dyn FnMut(Event),
) -> Result<()> {
    // with nothing to predict (all current), no network is built
    let predictors = match job.cases.is_empty() {
        true => Vec::new(),
        false => job.folders.iter().map(|f| Predictor::load(f, &request.options)).collect::<Result<Vec<_>>>()?,
    };
    let Job { folders, cases, .. } = &job;
    let first = &folders[0];
    let model_ending = first.descriptor.file_ending.to_lowercase();
    let dataset_json = read_json::<serde_json::Value>(&first.dir.dataset_json())?;
    let created = !request.output.exists();
    nntools_io::create_output_folder(&request.output)?;
    nntools_io::remove_stale_temporaries(&request.output)?;
    report(Event::Started { cases: cases.len() });

    let outcome = std::thread::scope(|scope| {
        // rendezvous queues: a case is handed on only when the next stage takes it, so each stage holds
        // one case (on a GPU, at most two cases' logits are on the device)
        let (prepared_tx, prepared_rx) = sync_channel::<Result<Prepared>>(0);
        let (predicted_tx, predicted_rx) = sync_channel::<Predicted>(0);
        let job = &job;
        let model_ending = model_ending.as_str();
        scope.spawn(move || {
            for (id, images) in cases {
                let prepared = prepare(folders, id, images, model_ending, previous_predictions, |ending| {
                    job.made_by(request, id, ending)
                });
                let failed = prepared.is_err();
                // a closed queue means the run already failed
                if prepared_tx.send(prepared).is_err() || failed {
                    return;
                }
            }
        });
        let writer = scope.spawn(move || -> Result<()> {
            for case in predicted_rx {
                write_case(&job.folders, case, &request.output, request.save_probabilities)?;
            }
            Ok(())
        });
        for prepared in prepared_rx {
            let prepared = prepared?;
            let tiles = predictors.iter().zip(&prepared.per_model).map(|(p, c)| p.tile_count(c.data.shape())).sum();
            report(Event::CaseStarted { id: &prepared.id, tiles });
            let id = prepared.id.clone();
            let mut on_tile = || {
                report(Event::Tile);
                true
            };
            let predicted =
                predict_prepared(&predictors, prepared, request.options.tta, &mut on_tile)?.expect("never stopped");
            if predicted_tx.send(predicted).is_err() {
                break;
            }
            report(Event::CasePredicted { id: &id });
        }
        drop(predicted_tx);
        writer.join().expect("writer thread panicked")
    });
    match outcome {
        // written last, so that a failed run into a new folder leaves no folder behind
        Ok(()) => write_model_files(first, &dataset_json, &request.output),
        Err(e) => {
            if created {
                // only succeeds when no case was written (finished cases are complete and kept)
                let _ = std::fs::remove_dir(&request.output);
            }
            Err(e)
        }
    }
}

/// The first model's `plans.json` and `dataset.json` (as read before predicting) beside the predictions,
/// where nn-ensemble and nn-eval read them.
fn write_model_files(first: &ModelFolder, dataset_json: &serde_json::Value, out: &Path) -> Result<()> {
    write_json(&out.join(PLANS_JSON), &first.plans)?;
    write_json(&out.join(DATASET_JSON), dataset_json)
}

/// Reads case `id`'s images and preprocesses them for each model (a cascade stage with its previous
/// stage's prediction from `previous_predictions`); `made_by` says how the case is made, given the
/// ending of its images.
fn prepare(
    folders: &[ModelFolder],
    id: &str,
    images: &[PathBuf],
    model_ending: &str,
    previous_predictions: Option<&Path>,
    made_by: impl FnOnce(&str) -> Result<MadeBy>,
) -> Result<Prepared> {
    let first_image = images.first().ok_or_else(|| Error::bad_input(id, "no image files for the case"))?;
    let (ending, reader_writer) = input_format(first_image, model_ending)?;
    let per_model = folders
        .iter()
        .map(|f| {
            // only a cascade stage reads the previous stage's labels: for another model they would change
            // the normalisation mask
            let label = f
                .previous_stage_labels
                .as_ref()
                .and(previous_predictions)
                .map(|dir| predictions::label_map(dir, id, &ending));
            let files = CaseFiles { id: id.to_owned(), images: images.to_vec(), label, reader_writer };
            preprocess_case(&f.recipe, &files)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Prepared { id: id.to_owned(), made_by: made_by(&ending)?, ending, per_model })
}

/// Predicts a prepared case with each model's predictor (mirroring when `tta` says); `None` once
/// `keep_going`, called before every network evaluation, returns false. A case whose sliding window
/// cannot fit in the memory budget is refused first.
fn predict_prepared(
    predictors: &[Predictor],
    prepared: Prepared,
    tta: bool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<Option<Predicted>> {
    for (predictor, case) in predictors.iter().zip(&prepared.per_model) {
        predictor.check_memory(&prepared.id, case.data.shape())?;
    }
    let Prepared { id, ending, per_model, made_by } = prepared;
    let first = &per_model[0];
    let output = OutputFormat { ending, geometry: first.geometry, stored: first.stored.clone() };
    let per_model = predictors
        .iter()
        .zip(per_model)
        .map(|(p, case)| Some((p.logits_until(&case.data, case.seg.as_ref(), tta, keep_going)?, case.properties)))
        .collect::<Option<Vec<_>>>();
    Ok(per_model.map(|per_model| Predicted { id, per_model, output, made_by }))
}

/// Exports a case's logits and writes its label map (and probabilities) into `out`; with several models
/// their probabilities are averaged first.
fn write_case(folders: &[ModelFolder], case: Predicted, out: &Path, save_probabilities: bool) -> Result<()> {
    let several = folders.len() > 1;
    let mut exported: Vec<Exported> = folders
        .iter()
        .zip(&case.per_model)
        .map(|(p, (logits, properties))| {
            export(logits, properties, &p.recipe, &p.labelling, save_probabilities || several)
        })
        .collect();
    let labelling = &folders[0].labelling;
    let (labels, probabilities) = if several {
        let mut sum = exported[0].probabilities.take().expect("asked for");
        for e in &mut exported[1..] {
            sum += &e.probabilities.take().expect("asked for");
        }
        sum /= folders.len() as f32;
        (labelling.labels(sum.view()), Some(sum))
    } else {
        let only = exported.pop().expect("one model");
        (only.labels, only.probabilities)
    };
    let probabilities = probabilities.filter(|_| save_probabilities);
    let properties = &case.per_model[0].1;
    // under the case's lock (`OUT/.CASE.nn-lock`): another nn-infer writing this case into the folder (an
    // overlapping --part shard) writes its files all before or all after these, never between them
    let _lock = OutputLock::wait(&out.join(&case.id))?;
    made_by::forget(out, &case.id)?;
    write_prediction(out, &case.id, &labels, probabilities.as_ref(), properties, &case.output)?;
    made_by::record(out, &case.id, &case.output.ending, case.made_by)
}

/// Writes a case's prediction into `dir`: `ID<ending>` (uint8 labels, uint16 from 255 on) in `output`'s
/// format and geometry, and with probabilities `ID.npz` (`probabilities`, float32, classes first) and
/// `ID.json` (the preprocessing properties; for a TIFF stack its `spacing` is also Tiff3DIO's sidecar).
pub fn write_prediction(
    dir: &Path,
    id: &str,
    labels: &Array3<u16>,
    probabilities: Option<&Array4<f32>>,
    properties: &Properties,
    output: &OutputFormat,
) -> Result<()> {
    let path = predictions::label_map(dir, id, &output.ending);
    write_label_map(&path, labels.view(), &output.geometry, &output.stored)?;
    if let Some(probabilities) = probabilities {
        write_npz(&predictions::probabilities(dir, id), "probabilities", probabilities)?;
        write_json(&predictions::properties(dir, id), properties)?;
    }
    Ok(())
}

/// How one case is predicted by a [`Resident`].
#[derive(Debug, Clone, Copy)]
pub struct CaseOptions {
    /// Mirroring test-time augmentation (instead of the options' at load).
    pub tta: bool,
    /// Also write `CASE.npz` and `CASE.json`.
    pub save_probabilities: bool,
}

/// What resident models predict, for `nn-serve`'s `GET /v1/model`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    /// dataset.json's `labels`, as written there.
    pub labels: serde_json::Value,
    /// Channel names in channel order (`_0000`, `_0001`, ...).
    pub channel_names: Vec<String>,
    pub channels: usize,
    /// dataset.json's `file_ending` (the format nnU-Net reads; nn-tools reads any it supports).
    pub file_ending: String,
    /// Each model folder's configuration and folds, in the order given.
    pub models: Vec<ModelSummary>,
    pub checkpoint: String,
    pub tta: bool,
    pub step: f64,
    /// `--precision` as it resolved on the device.
    pub precision: String,
    pub nn_tools_version: String,
}

/// One model folder of [`ModelInfo`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelSummary {
    pub configuration: String,
    /// The fold folders used (`fold_0`, ..., or `fold_all`).
    pub folds: Vec<String>,
}

/// Models kept loaded between cases: `nn-infer -i -` and `nn-serve` predict through it, one case at a
/// time, with the preprocessing, prediction and export of [`predict`], writing the same files.
pub struct Resident {
    folders: Vec<ModelFolder>,
    predictors: Vec<Predictor>,
    model_ending: String,
    /// How every case is made, but for its TTA and probabilities ([`CaseOptions`]).
    made_by: MadeBy,
    dataset_json: serde_json::Value,
}

/// One worker thread owns a [`Resident`] (nn-serve hands it cases from its queue).
fn _resident_is_send() {
    fn send<T: Send>() {}
    send::<Resident>();
}

impl Resident {
    /// Opens the model folders (ensembled as [`Request::models`]) and loads their networks with `options`
    /// (folds, checkpoint, device, precision, step; its TTA is [`Resident::info`]'s default). A cascade
    /// stage is refused: it needs its previous stage's prediction of each case.
    pub fn load(models: &[PathBuf], options: &Options) -> Result<Self> {
        let folders = open_models(models, options)?;
        if let Some(cascade) = folders.iter().find(|f| f.previous_stage_labels.is_some()) {
            return Err(Error::bad_input(
                &cascade.dir,
                "a 3d_cascade_fullres model needs its previous stage's predictions, which a resident model \
                 (nn-infer -i -, nn-serve) does not take: predict with nn-infer --prev-stage",
            ));
        }
        let made_by = made_by_models(&folders, options, false)?;
        let dataset_json = read_json::<serde_json::Value>(&folders[0].dir.dataset_json())?;
        let predictors = folders.iter().map(|f| Predictor::load(f, options)).collect::<Result<Vec<_>>>()?;
        let model_ending = folders[0].descriptor.file_ending.to_lowercase();
        Ok(Self { folders, predictors, model_ending, made_by, dataset_json })
    }

    /// Labels, channels, configurations and folds of the models, and the options they predict with.
    pub fn info(&self) -> ModelInfo {
        let first = &self.folders[0];
        let fold_name = |w: &WeightsFile| {
            w.path().parent().and_then(Path::file_name).unwrap_or_default().to_string_lossy().into_owned()
        };
        ModelInfo {
            labels: self.dataset_json.get("labels").cloned().unwrap_or_default(),
            channel_names: first.descriptor.channel_names.clone(),
            channels: self.channels(),
            file_ending: first.descriptor.file_ending.clone(),
            models: self
                .folders
                .iter()
                .map(|f| ModelSummary {
                    configuration: f.configuration.clone(),
                    folds: f.weights.iter().map(fold_name).collect(),
                })
                .collect(),
            checkpoint: self.made_by.checkpoint.clone(),
            tta: self.made_by.tta,
            step: self.made_by.step,
            precision: self.made_by.precision.clone(),
            nn_tools_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// The number of input channels (image files per case, but for files holding several channels).
    pub fn channels(&self) -> usize {
        self.folders[0].recipe.channels()
    }

    /// Predicts case `id` from its channel files (any format nn-tools reads) and writes into `out_dir` the
    /// files [`predict`] writes for it: `ID<ending>` in the first image's format and geometry, with
    /// `save_probabilities` `ID.npz` and `ID.json`, and `ID.made_by.json`; returns the label map's path.
    /// `keep_going` is called before the case is read and before every network evaluation; once it
    /// returns false the case stops with an [`nntools_io::ErrorKind::Cancelled`] error and nothing is written.
    pub fn predict_case(
        &self,
        id: &str,
        images: &[PathBuf],
        out_dir: &Path,
        case: CaseOptions,
        keep_going: &mut dyn FnMut() -> bool,
    ) -> Result<PathBuf> {
        // the id names the output files: never a path of its own
        if id.is_empty() || id.starts_with('.') || id.contains(['/', '\\', '\0']) {
            return Err(Error::bad_input(id, "a case id is a file name without folders (e.g. case_001)"));
        }
        if !keep_going() {
            return Err(Error::cancelled(id));
        }
        let made_by = MadeBy { tta: case.tta, save_probabilities: case.save_probabilities, ..self.made_by.clone() };
        let prepared = prepare(&self.folders, id, images, &self.model_ending, None, |_| Ok(made_by))?;
        let predicted =
            predict_prepared(&self.predictors, prepared, case.tta, keep_going)?.ok_or_else(|| Error::cancelled(id))?;
        let path = predictions::label_map(out_dir, id, &predicted.output.ending);
        nntools_io::create_output_folder(out_dir)?;
        write_case(&self.folders, predicted, out_dir, case.save_probabilities)?;
        Ok(path)
    }

    /// Writes the first model's `plans.json` and `dataset.json` into `out_dir`, as [`predict`] does after
    /// its cases (nn-ensemble and nn-eval read them beside predictions).
    pub fn write_model_files(&self, out_dir: &Path) -> Result<()> {
        write_model_files(&self.folders[0], &self.dataset_json, out_dir)
    }
}
