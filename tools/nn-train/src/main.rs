use clap::Parser;
use nntools_cli::flags::{Device, MaxMemory, Precision, Quiet, TorchThreads};
use nntools_io::Error;
use nntools_layout::run::{Fold, RunDir};
use nntools_training::{Augmentation, Cascade, Report, Request, Settings, train};
use std::path::PathBuf;
use std::process::ExitCode;

const TOOL: &str = "nn-train";

// jemalloc, linked unprefixed, is the process's malloc: libtorch's tensors come from it too. glibc maps
// every block over 32 MB afresh and unmaps it when freed, so each iteration faulted in and zeroed its
// activations again: at a 128^3 patch half of an epoch's time went to the kernel.
use tikv_jemalloc_sys as _;

/// jemalloc's options, read at its first allocation: freed pages are kept for the next iteration's
/// tensors and never returned to the kernel (a decay of -1). A finite decay returned them between
/// iterations and gave back most of the gain (measured in docs/performance.md).
#[unsafe(no_mangle)]
static malloc_conf: JemallocOptions = JemallocOptions(c"dirty_decay_ms:-1,muzzy_decay_ms:-1".as_ptr());

/// jemalloc's `const char *malloc_conf`.
#[repr(transparent)]
struct JemallocOptions(*const std::ffi::c_char);

// SAFETY: the pointer is to a static string that nothing writes.
unsafe impl Sync for JemallocOptions {}

/// Train nnU-Net's U-Net for one configuration and cross-validation fold: Dice + CE loss with deep
/// supervision (Dice + BCE with one sigmoid output per region for region-based datasets; an ignore
/// label is left out of both), SGD with Nesterov momentum and poly learning rate, foreground
/// oversampling, nnU-Net's augmentation.
///
/// Writes RUN_DIR/plans.json, dataset.json, dataset_fingerprint.json (copied from beside the plans) and
/// fold_F/ with log.jsonl (one JSON line per epoch), checkpoint_{best,latest,final}.safetensors (nnU-Net's
/// state_dict names) with their state sidecars, checkpoint_{best,final}.pth (nnU-Net's checkpoint) and,
/// after the final validation, validation/summary.json (against the labelsTr beside --dataset): a run
/// folder nnU-Net predicts with (nnUNetv2_predict_from_modelfolder) and continues (nnUNetv2_train --c).
/// --resume continues from the newest checkpoint with the same learning-rate position and random state.
/// SIGTERM or SIGINT stop after the current iteration and save checkpoint_latest (exit code 1).
///
/// The cascade, as nnU-Net trains it: every fold of 3d_lowres with --next-stage-data (3d_fullres's
/// preprocessed folder) writes its validation cases' labels to RUN_DIR/predicted_next_stage/
/// 3d_cascade_fullres/; 3d_cascade_fullres then trains on 3d_fullres's data with --prev-stage on them.
#[derive(Parser)]
#[command(name = TOOL, version, after_help = "\
Examples:
  nn-train --plans nnUNetPlans.json -c 3d_fullres --data pre/nnUNetPlans_3d_fullres --dataset raw/Dataset004_Hippocampus/dataset.json --fold 0 -o runs/3d_fullres
  nn-train ... --fold all --epochs 50 --iters 100 --device cpu
  nn-train ... --fold 0 -o runs/3d_fullres --device cpu --precision bf16   (CPUs with AVX512-BF16)
  nn-train ... --fold 0 -o runs/3d_fullres --resume
  nn-train --plans plans.json -c 3d_lowres --data pre/3d_lowres --next-stage-data pre/3d_fullres --dataset raw/dataset.json --fold 0 -o runs/3d_lowres
  nn-train --plans plans.json -c 3d_cascade_fullres --data pre/3d_fullres --prev-stage runs/3d_lowres/predicted_next_stage/3d_cascade_fullres --dataset raw/dataset.json --fold 0 -o runs/3d_cascade_fullres")]
struct Args {
    /// Plans file.
    #[arg(short, long)]
    plans: PathBuf,
    /// Configuration to train (2d, 3d_fullres, 3d_lowres, 3d_cascade_fullres).
    #[arg(short, long)]
    configuration: String,
    /// Preprocessed folder of that configuration (nn-resample's output).
    #[arg(long)]
    data: PathBuf,
    /// The dataset's dataset.json (labels).
    #[arg(long)]
    dataset: PathBuf,
    /// Cross-validation fold (0-4), or `all` to train on every case.
    #[arg(long)]
    fold: String,
    /// Run folder.
    #[arg(short, long)]
    output: PathBuf,
    #[arg(long, default_value_t = 1000)]
    epochs: usize,
    /// Training iterations per epoch.
    #[arg(long, default_value_t = 250)]
    iters: usize,
    /// Validation iterations per epoch.
    #[arg(long, default_value_t = 50)]
    val_iters: usize,
    #[command(flatten)]
    device: Device,
    #[command(flatten)]
    precision: Precision,
    /// Continue from the newest checkpoint in the fold folder.
    #[arg(long)]
    resume: bool,
    /// Seed of the initial weights, the batches' cases and patches, and their augmentation: the same
    /// seed on the same device gives the same run.
    #[arg(long, default_value_t = 12345)]
    seed: u64,
    /// Start from these weights (safetensors, nnU-Net names; every layer but the segmentation heads),
    /// e.g. a model pretrained on another dataset. Ignored when --resume finds a checkpoint.
    #[arg(long)]
    pretrained: Option<PathBuf>,
    /// Training augmentation: nnunet (nnU-Net's full pipeline, nnUNetTrainer), mirror-only, or none
    /// (nnUNetTrainerNoDA). nnU-Net has no mirror-only trainer: its checkpoints name nnUNetTrainerNoDA,
    /// with test-time mirroring allowed.
    #[arg(long, default_value = "nnunet")]
    augment: String,
    /// Write N augmented training patches (mid-slice PNGs, image and labels side by side) into
    /// RUN_DIR/fold_F/augmented/ and exit without training.
    #[arg(long, value_name = "N")]
    dump_augmented: Option<usize>,
    /// Only predict the fold's validation cases into fold_F/validation/ with checkpoint_final (done
    /// automatically after training; this redoes it).
    #[arg(long)]
    validate_only: bool,
    /// 3d_cascade_fullres: the folder of 3d_lowres's labels on this grid
    /// (RUNS/3d_lowres/predicted_next_stage/3d_cascade_fullres, written by its folds' validation).
    #[arg(long, value_name = "DIR")]
    prev_stage: Option<PathBuf>,
    /// 3d_lowres: the next stage's preprocessed folder (3d_fullres's); the final validation then also
    /// writes each validation case's labels on its grid to RUN_DIR/predicted_next_stage/3d_cascade_fullres.
    #[arg(long, value_name = "DIR")]
    next_stage_data: Option<PathBuf>,
    /// Split file in nnU-Net's splits_final.json format (default: DATA/splits_final.json, made if absent).
    #[arg(long)]
    splits: Option<PathBuf>,
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
        let (device, precision) =
            nntools_network::device_and_precision(&args.device.device, &args.precision.precision)?;
        let augment: Augmentation = args.augment.parse().map_err(|p: String| Error::bad_input("--augment", p))?;
        let fold: Fold = args.fold.parse().map_err(|p| Error::bad_input(&args.fold, p))?;
        nntools_network::set_cpu_threads(args.threads.threads);
        args.max_memory.init()?;
        // SIGTERM (a cluster's pre-emption) and SIGINT stop after the current iteration with a checkpoint
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(signal, stop.clone()).map_err(|e| Error::runtime("signal handler", e))?;
        }
        let run_dir = RunDir::new(&args.output);
        let request = Request {
            plans_path: args.plans.clone(),
            configuration: args.configuration.clone(),
            dataset_json: args.dataset.clone(),
            data_dir: args.data.clone(),
            splits: args.splits.clone(),
            fold,
            run_dir: run_dir.clone(),
            validate_only: args.validate_only,
            dump_augmented: args.dump_augmented,
            pretrained: args.pretrained.clone(),
            cascade: Cascade { previous_stage: args.prev_stage.clone(), next_stage_data: args.next_stage_data.clone() },
            settings: Settings {
                epochs: args.epochs,
                iterations: args.iters,
                validation_iterations: args.val_iters,
                seed: args.seed,
                device,
                precision,
                fold_dir: run_dir.fold(fold),
                resume: args.resume,
                augment,
                stop,
            },
        };
        let quiet = args.quiet.quiet;
        train(request, &mut |report| match report {
            Report::Warning(line) => nntools_cli::warn(TOOL, quiet, &line),
            Report::Epoch(log) if !quiet => {
                let dice: Vec<String> = log.pseudo_dice.iter().map(|d| format!("{d:.3}")).collect();
                eprintln!(
                    "{TOOL}: epoch {}: train loss {:.4}, val loss {:.4}, pseudo dice [{}], ema {:.4}, lr {:.5}, {:.1} s",
                    log.epoch,
                    log.train_loss,
                    log.val_loss,
                    dice.join(", "),
                    log.ema_pseudo_dice,
                    log.lr,
                    log.epoch_time_s
                );
            }
            Report::Epoch(_) => {}
        })
    })
}
