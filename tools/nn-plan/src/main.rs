mod stages;

use clap::Parser;
use nntools_cli::flags::Quiet;
use nntools_dataset::{Dataset, Descriptor, Fingerprint};
use nntools_io::{Error, ReaderWriter};
use nntools_layout::DATASET_JSON;
use nntools_planning::{PlanRequest, Preset, plan};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const TOOL: &str = "nn-plan";

/// Plan an nnU-Net experiment: the plans file (nnU-Net v2's nnUNetPlans.json) with the 2d, 3d_fullres
/// and, for large images, 3d_lowres + 3d_cascade_fullres configurations, from a dataset fingerprint.
///
/// Target spacing, transposition, patch size, network topology and batch size follow nnU-Net v2.8.1's
/// planners rule for rule, so the plans equal nnU-Net's for the same fingerprint. Reads nnU-Net's own
/// dataset_fingerprint.json as well as nn-fingerprint's.
#[derive(Parser)]
#[command(name = TOOL, version, args_conflicts_with_subcommands = true, arg_required_else_help = true, after_help = "\
Examples:
  nn-plan --fingerprint fingerprint.json --dataset raw/Dataset004_Hippocampus -o nnUNetPlans.json
  nn-fingerprint raw/Dataset004_Hippocampus | nn-plan --fingerprint - --dataset raw/Dataset004_Hippocampus/dataset.json > plans.json
  nn-plan --fingerprint fingerprint.json --dataset raw/Dataset004_Hippocampus --planner resenc-l -o nnUNetResEncUNetLPlans.json

  # the pipeline's stages for WORK (what scripts/nnunet.sh, scripts/Makefile and the Slurm script run):
  nn-plan stages --work work --configs 3d_lowres,3d_cascade_fullres --folds 0-4
  {\"configuration\":\"3d_lowres\",\"data_configuration\":\"3d_lowres\",\"data\":\"work/preprocessed/3d_lowres\",...,
   \"train_args\":[\"--next-stage-data\",\"work/preprocessed/3d_fullres\"],\"needs\":[],...}
  {\"configuration\":\"3d_cascade_fullres\",\"data_configuration\":\"3d_fullres\",\"data\":\"work/preprocessed/3d_fullres\",...,
   \"train_args\":[\"--prev-stage\",\"work/runs/3d_lowres/predicted_next_stage/3d_cascade_fullres\"],
   \"needs\":[{\"configuration\":\"3d_lowres\",\"all_folds\":true,\"marks\":[...]}],...}")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    plan: Option<Args>,
    // on the top level, not in Args: clap never fills an optional flattened group that flattens another
    #[command(flatten)]
    quiet: Quiet,
}

#[derive(clap::Subcommand)]
enum Command {
    /// The pipeline's stages for a work folder, as planned: each configuration's preprocessed folder
    /// (and the configuration nn-resample makes it with), run folder, extra nn-train arguments of the
    /// cascade, the configurations it needs, and the next-stage marks it writes.
    Stages(stages::StagesArgs),
}

/// Planning (the usage without a subcommand).
#[derive(clap::Args)]
struct Args {
    /// Dataset fingerprint (nn-fingerprint's output or nnU-Net's dataset_fingerprint.json); `-` reads stdin.
    #[arg(short, long)]
    fingerprint: PathBuf,
    /// The raw dataset's dataset.json, or the raw dataset folder holding it.
    #[arg(short, long)]
    dataset: PathBuf,
    /// Output plans file; `-` writes to stdout.
    #[arg(short, long, default_value = "-")]
    output: PathBuf,
    /// Planner: nnU-Net's default (PlainConvUNet) or a residual-encoder preset (M: 8 GB, L: 24 GB, XL: 40 GB).
    #[arg(long, default_value = "default", value_parser = Preset::NAMES)]
    planner: String,
    /// GPU memory to plan for, in GB (nnU-Net's -gpu_memory_target); default: the planner's own target.
    #[arg(long)]
    gpu_memory_gb: Option<f64>,
}

/// The folder name nnU-Net calls the dataset (`DatasetXXX_Name`), from the folder holding dataset.json.
fn dataset_name(json_path: &Path) -> Result<String, Error> {
    let folder = json_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let folder = folder.canonicalize().map_err(|e| Error::io(folder, &e))?;
    Ok(folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
}

/// The dataset's reader-writer class: tried on its first image where the dataset's images are beside
/// dataset.json, else chosen by the file ending alone.
fn reader_writer(json_path: &Path, descriptor: &Descriptor) -> Result<ReaderWriter, Error> {
    let root = json_path.parent().unwrap_or(Path::new("."));
    if root.join("imagesTr").is_dir() {
        return Dataset::open(root)?.reader_writer();
    }
    let overwrite = descriptor.overwrite_image_reader_writer.as_deref();
    ReaderWriter::for_dataset(json_path, overwrite, &descriptor.file_ending, None)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = cli.quiet.quiet;
    let args = match cli {
        Cli { command: Some(Command::Stages(stages)), .. } => return nntools_cli::run(TOOL, || stages::main(&stages)),
        Cli { plan: Some(args), .. } => args,
        Cli { command: None, plan: None, .. } => unreachable!("clap prints the help without arguments"),
    };
    nntools_cli::run(TOOL, || {
        let preset = Preset::from_name(&args.planner).expect("clap restricts the planner names");
        let json_path = if args.dataset.is_dir() { args.dataset.join(DATASET_JSON) } else { args.dataset.clone() };
        let descriptor = Descriptor::read(&json_path)?;
        let fingerprint: Fingerprint = nntools_io::read_json(&args.fingerprint)?;
        if let Some(gb) =
            args.gpu_memory_gb.filter(|&gb| preset != Preset::Default && gb != preset.default_gpu_memory_gb())
        {
            let expected = preset.default_gpu_memory_gb();
            nntools_cli::warn(
                TOOL,
                quiet,
                &format!("planning {} for {gb} GB instead of its {expected} GB", args.planner),
            );
        }
        let request = PlanRequest {
            dataset_name: dataset_name(&json_path)?,
            descriptor: &descriptor,
            dataset_json: &json_path,
            fingerprint: &fingerprint,
            fingerprint_path: &args.fingerprint,
            preset,
            gpu_memory_gb: args.gpu_memory_gb,
            reader_writer: reader_writer(&json_path, &descriptor)?,
        };
        let plans = plan(&request)?;
        nntools_io::write_json(&args.output, &plans)
    })
}
