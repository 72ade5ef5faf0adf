use clap::Parser;
use nntools_cli::flags::Workers;
use nntools_dataset::Descriptor;
use nntools_evaluation::{Options, evaluate_folders};
use nntools_io::Error;
use nntools_layout::predictions::raw_dataset_json_of;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const TOOL: &str = "nn-eval";

/// Evaluate a folder of predicted label maps against the reference label maps of the same names, as
/// nnU-Net's nnUNetv2_evaluate_folder: per case and per class (or region) Dice, IoU, TP, FP, FN, TN,
/// n_pred and n_ref; means over cases ignoring NaN (Dice is NaN where reference and prediction are both
/// empty) and the mean over foreground classes, in nnU-Net's summary.json layout. Beyond nnU-Net:
/// HD95 (mm) and normalised surface Dice per case and class, from an exact Euclidean distance transform
/// honouring the voxel spacing (NaN where a mask is empty; NSD 0 where only one is).
#[derive(Parser)]
#[command(name = TOOL, version, after_help = "\
Examples:
  nn-eval --ref raw/Dataset004_Hippocampus/labelsTr --pred runs/3d_fullres/fold_0/validation -o summary.json
  nn-eval --ref labelsTs --pred predictions --dataset raw/Dataset004_Hippocampus/dataset.json -o - | jq .foreground_mean")]
struct Args {
    /// Folder of reference label maps (CASE<file_ending>, dataset.json's ending).
    #[arg(long = "ref")]
    reference: PathBuf,
    /// Folder of predicted label maps with the same names (or in another image format: CASE.mha against a
    /// reference CASE.nii.gz, for instance).
    #[arg(long)]
    pred: PathBuf,
    /// dataset.json with the labels (or regions) to evaluate (default: REF/../dataset.json).
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Output summary (`-`: stdout).
    #[arg(short, long, default_value = "-")]
    output: PathBuf,
    /// No surface metrics (HD95 and normalised surface Dice, computed by default).
    #[arg(long)]
    no_surface: bool,
    /// Tolerance of the normalised surface Dice, in mm.
    #[arg(long, default_value_t = 1.0)]
    nsd_tolerance_mm: f64,
    /// Evaluate only the references that have a prediction (default: a missing prediction is an error).
    #[arg(long)]
    chill: bool,
    /// Write a PNG per case into this folder: slices through the largest reference structure with the
    /// reference (green) and predicted (red) contours over the image (needs --images).
    #[arg(long, requires = "images")]
    overlays: Option<PathBuf>,
    /// Folder of the cases' images (CASE_0000.nii.gz), for --overlays.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Also print the per-class means (Dice, IoU, HD95 in mm, NSD) as a table on stdout; needs -o FILE.
    #[arg(long)]
    table: bool,
    #[command(flatten)]
    threads: Workers,
}

fn main() -> ExitCode {
    let args = Args::parse();
    nntools_cli::run(TOOL, || {
        args.threads.init_pool()?;
        let dataset = args.dataset.clone().unwrap_or_else(|| raw_dataset_json_of(&args.reference));
        let descriptor = Descriptor::read(&dataset)?;
        let options = Options {
            surface_tolerance: (!args.no_surface).then_some(args.nsd_tolerance_mm),
            chill: args.chill,
            overlays: args.overlays.clone().zip(args.images.clone()),
        };
        if args.table && args.output == Path::new("-") {
            return Err(Error::bad_input("--table", "needs -o FILE: the summary already goes to stdout"));
        }
        let summary = evaluate_folders(&args.reference, &args.pred, &descriptor, &options)?;
        summary.write(&args.output)?;
        if args.table {
            print!("{}", summary.class_table());
        }
        Ok(())
    })
}
