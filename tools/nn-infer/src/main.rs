use clap::Parser;
use nntools_cli::flags::{Device, MaxMemory, Part, Precision, Quiet, TorchThreads};
use nntools_dataset::{group_image_files, split_channel_suffix};
use nntools_inference::{CaseOptions, Event, Options, PreviousStage, Request, Resident, predict};
use nntools_io::{Error, ErrorKind, split_image_ending};
use nntools_layout::run::{CheckpointName, Fold};
use std::io::{BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const TOOL: &str = "nn-infer";

/// Predict raw images with a trained model folder, as nnU-Net's nnUNetv2_predict_from_modelfolder:
/// the training preprocessing, sliding window with Gaussian weighting and mirroring TTA, logits
/// averaged over folds, resampled back and written in each input image's exact geometry.
///
/// A model folder is nn-train's run folder or nnU-Net v2's trainer folder as nnU-Net wrote it
/// (nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIG, fold_F/checkpoint_final.pth read without Python). Several -m folders are ensembled by averaging their probabilities.
/// Inputs are found by their own ending, in any format nn-tools reads (NIfTI, .mha, .nrrd, .gipl, TIFF
/// stacks, PNG, BMP; nnU-Net takes only the model's file_ending), and each case is written in its input's
/// format and geometry: OUT/CASE.nii.gz (or .mha, .png, ...), with --save-probabilities also CASE.npz
/// (`probabilities`, float32, classes first, input geometry) and CASE.json (the case's preprocessing
/// properties), and CASE.made_by.json last: what made the case (models, plans and weights by content,
/// folds, options), which --continue compares.
///
/// On several machines: run `--part K/N` for K = 0..N-1 into the same output folder (add --continue to
/// rerun a part after an interruption). Each part predicts its own cases, and with --plan for a cascade,
/// their 3d_lowres predictions first, in a temporary folder of its own.
///
/// With `-i -` the model stays loaded and cases are read from stdin, one per line: a CASE_0000 image path
/// (with its sibling channel files CASE_0001, ... beside it) or exactly a case's channel files separated by
/// tabs. Each finished case is one JSON line on stdout, {"case", "output", "seconds"} or {"case", "error"};
/// a bad case is reported and the stream goes on. At the end of input the exit code is 0 when every case
/// succeeded, 2 when every failure was bad input, else 1.
#[derive(Parser)]
#[command(name = TOOL, version, after_help = "\
Examples:
  nn-infer -m runs/3d_fullres -i raw/Dataset004_Hippocampus/imagesTs -o predictions
  nn-infer -m runs/3d_fullres --folds 0,1 --no-tta -i case_0000.nii.gz -o predictions --device cpu
  nn-infer -m runs/3d_fullres -i imagesTs -o predictions --device cpu --precision bf16   (2-3x faster)
  nn-infer -m runs/2d -m runs/3d_fullres -i imagesTs -o ensemble --save-probabilities
  nn-infer -m runs/3d_fullres -i scan_0000.mha -o predictions   (writes predictions/scan.mha)
  nn-infer -m nnUNet_results/Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres -i imagesTs -o pred
  nn-infer -m runs/3d_cascade_fullres --prev-stage predictions_lowres -i imagesTs -o predictions
  nn-infer --plan inference_plan.json -i imagesTs -o predictions_raw   (then: nn-ensemble postprocess)
  nn-infer -m runs/3d_fullres -i imagesTs -o predictions --part 0/4 --continue
  find imagesTs -name '*_0000.nii.gz' | nn-infer -m runs/3d_fullres -i - -o pred   (model loaded once)")]
struct Args {
    /// Model folder: nn-train's run folder or nnU-Net's trainer folder as it is (plans.json,
    /// dataset.json, fold_F/checkpoint_final.pth or .safetensors); repeat to ensemble.
    #[arg(short, long = "model", required_unless_present = "plan")]
    models: Vec<PathBuf>,
    /// The models and folds `nn-ensemble select` chose (its inference_plan.json), instead of -m and
    /// --folds; its postprocessing is applied by `nn-ensemble postprocess --plan`.
    #[arg(long, conflicts_with_all = ["models", "folds"])]
    plan: Option<PathBuf>,
    /// Image folder(s) of CASE_XXXX<ending> files (CASE_0000.nii.gz, CASE_0000.mha, ...), or image files;
    /// `-` alone: cases from stdin, one per line.
    #[arg(short, long = "input", required = true, num_args = 1..)]
    inputs: Vec<PathBuf>,
    /// Output folder.
    #[arg(short, long)]
    output: PathBuf,
    /// Folds to use, comma-separated (default: every fold_N with the checkpoint).
    #[arg(long, value_delimiter = ',')]
    folds: Option<Vec<String>>,
    /// Checkpoint to use: final, best, latest, or a file name in the fold folders (as nnU-Net's -chk,
    /// e.g. checkpoint_final.pth); safetensors is read where a checkpoint exists in both formats.
    #[arg(long, default_value = "final")]
    checkpoint: String,
    /// No mirroring test-time augmentation (about 8x faster in 3D).
    #[arg(long)]
    no_tta: bool,
    /// Sliding-window step as a fraction of the patch size, at least one voxel (1/patch) along every axis.
    #[arg(long, default_value_t = 0.5)]
    step: f64,
    /// Also write CASE.npz with class probabilities and CASE.json.
    #[arg(long)]
    save_probabilities: bool,
    /// Folder with the 3d_lowres predictions (CASE.nii.gz), for a 3d_cascade_fullres model (with
    /// --plan, its 3d_lowres run predicts them first unless this is given).
    #[arg(long)]
    prev_stage: Option<PathBuf>,
    /// Skip the cases whose outputs are all there and were made by the same models, folds and options
    /// (their CASE.made_by.json), as nnU-Net's --continue_prediction (which only checks that they exist).
    /// Without it every case is predicted and its outputs overwritten.
    #[arg(long = "continue")]
    resume: bool,
    #[command(flatten)]
    part: Part,
    #[command(flatten)]
    device: Device,
    #[command(flatten)]
    precision: Precision,
    #[command(flatten)]
    threads: TorchThreads,
    #[command(flatten)]
    max_memory: MaxMemory,
    #[command(flatten)]
    quiet: Quiet,
}

fn main() -> ExitCode {
    let args = Args::parse();
    nntools_cli::run(TOOL, || {
        let part = args.part.parse()?;
        let (device, precision) =
            nntools_network::device_and_precision(&args.device.device, &args.precision.precision)?;
        if !(args.step > 0.0 && args.step <= 1.0) {
            return Err(Error::bad_input("--step", "must be in (0, 1]"));
        }
        let checkpoint: CheckpointName = args.checkpoint.parse().map_err(|p| Error::bad_input("--checkpoint", p))?;
        nntools_network::set_cpu_threads(args.threads.threads);
        args.max_memory.init()?;
        let given_predictions = args.prev_stage.clone().map(PreviousStage::Predictions);
        let (models, folds, prev_stage) = match &args.plan {
            Some(path) => {
                let plan: nntools_ensembling::InferencePlan = nntools_io::read_json(path)?;
                let folds = plan.folds.iter().copied().map(Fold::Index).collect();
                // a cascade stage's previous stage predicts first, unless its predictions are given
                let previous_model =
                    plan.models.iter().find_map(|m| m.previous_stage.clone()).map(PreviousStage::Model);
                (plan.models.into_iter().map(|m| m.run).collect(), Some(folds), given_predictions.or(previous_model))
            }
            None => {
                let parse = |fold: &String| fold.parse().map_err(|p| Error::bad_input("--folds", p));
                let folds = args.folds.as_ref().map(|folds| folds.iter().map(parse).collect()).transpose()?;
                (args.models.clone(), folds, given_predictions)
            }
        };
        let options = Options { folds, checkpoint, tta: !args.no_tta, step: args.step, device, precision };
        if args.inputs.iter().any(|input| input.as_os_str() == "-") {
            return stream(&args, &models, &options, prev_stage.is_some());
        }
        let request = Request {
            models,
            inputs: args.inputs.clone(),
            output: args.output.clone(),
            prev_stage,
            save_probabilities: args.save_probabilities,
            options,
            part,
            resume: args.resume,
        };
        let quiet = args.quiet.quiet;
        let bars = nntools_cli::progress_group(quiet);
        let mut cases = None;
        let mut tiles = None;
        predict(&request, &mut |event| match event {
            Event::Started { cases: n } => cases = Some(bars.add(nntools_cli::progress(n, "cases", quiet))),
            Event::CaseStarted { id, tiles: n } => tiles = Some(bars.add(nntools_cli::progress(n, id, quiet))),
            Event::Tile => tiles.iter().for_each(|t| t.inc(1)),
            Event::CasePredicted { .. } => {
                tiles.take().iter().for_each(|t| t.finish_and_clear());
                cases.iter().for_each(|c| c.inc(1));
            }
        })?;
        cases.iter().for_each(|c| c.finish_and_clear());
        Ok(())
    })
}

/// `-i -`: predicts the cases named on stdin with the models loaded once, one JSON line per case on stdout.
fn stream(args: &Args, models: &[PathBuf], options: &Options, previous_stage: bool) -> nntools_io::Result<()> {
    if args.inputs.len() > 1 {
        return Err(Error::bad_input("-i", "`-` (cases from stdin) must be the only input"));
    }
    for (given, flag) in
        [(args.part.part.is_some(), "--part"), (args.resume, "--continue"), (previous_stage, "--prev-stage")]
    {
        if given {
            return Err(Error::bad_input(flag, "not with -i - (cases from stdin)"));
        }
    }
    let resident = Resident::load(models, options)?;
    let output = &args.output;
    let created = !output.exists();
    if !created {
        nntools_io::remove_stale_temporaries(output)?;
    }
    let case = CaseOptions { tta: options.tta, save_probabilities: args.save_probabilities };
    let (mut succeeded, mut bad_input, mut failed) = (0usize, 0usize, 0usize);
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        if stdin.read_until(b'\n', &mut line).map_err(|e| Error::runtime("stdin", e))? == 0 {
            break;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let start = std::time::Instant::now();
        let (id, outcome) = match case_of_line(text, resident.channels()) {
            Ok((id, images)) => {
                let outcome = resident.predict_case(&id, &images, output, case, &mut || true);
                (id, outcome)
            }
            Err((id, e)) => (id, Err(e)),
        };
        let record = match outcome {
            Ok(path) => {
                succeeded += 1;
                let seconds = (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
                serde_json::json!({"case": id, "output": path.display().to_string(), "seconds": seconds})
            }
            Err(e) => {
                failed += 1;
                bad_input += usize::from(e.kind == ErrorKind::BadInput);
                serde_json::json!({"case": id, "error": e.message})
            }
        };
        writeln!(stdout, "{record}").and_then(|()| stdout.flush()).map_err(|e| Error::runtime("stdout", e))?;
    }
    if succeeded > 0 {
        resident.write_model_files(output)?;
    } else if created {
        // only succeeds when nothing was written
        let _ = std::fs::remove_dir(output);
    }
    let summary = format!("{failed} of {} cases failed (their errors are on stdout)", succeeded + failed);
    match (failed, bad_input) {
        (0, _) => Ok(()),
        (failed, bad) if failed == bad => Err(Error::bad_input("stdin", summary)),
        _ => Err(Error::runtime("stdin", summary)),
    }
}

/// The case a stdin line names, with its channel files: a `CASE_0000<ending>` path and its siblings
/// `CASE_0001<ending>`, ... beside it, or exactly the tab-separated files. On error, the case id as far as
/// the line tells it (else the line itself).
fn case_of_line(line: &[u8], channels: usize) -> Result<(String, Vec<PathBuf>), (String, Error)> {
    let files: Vec<PathBuf> =
        line.split(|&b| b == b'\t').map(|f| PathBuf::from(std::ffi::OsStr::from_bytes(f))).collect();
    let first = files[0].clone();
    let name = first.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let id = split_image_ending(&name)
        .and_then(|(stem, _)| split_channel_suffix(stem))
        .map_or_else(|| String::from_utf8_lossy(line).into_owned(), |(id, _)| id.to_owned());
    let fail = |e: Error| (id.clone(), e);
    let missing = files.iter().find(|f| !f.is_file());
    if let Some(missing) = missing {
        return Err(fail(Error::bad_input(missing, "no such image file")));
    }
    let files = match files.len() {
        1 => with_siblings(&first, channels),
        _ => files,
    };
    let mut cases = group_image_files(&files, channels).map_err(fail)?;
    if cases.len() != 1 {
        return Err(fail(Error::bad_input(&first, "the files of a line name several cases")));
    }
    Ok(cases.pop().expect("one case"))
}

/// `CASE_0000<ending>` and the files `CASE_0001<ending>`, ... that follow it beside it, up to `channels`.
fn with_siblings(first: &Path, channels: usize) -> Vec<PathBuf> {
    let mut files = vec![first.to_owned()];
    let name = first.file_name().unwrap_or_default().to_string_lossy();
    let Some((stem, ending)) = split_image_ending(&name) else { return files };
    let Some((id, 0)) = split_channel_suffix(stem) else { return files };
    for channel in 1..channels {
        let sibling = first.with_file_name(format!("{id}_{channel:04}{ending}"));
        if !sibling.is_file() {
            break;
        }
        files.push(sibling);
    }
    files
}
