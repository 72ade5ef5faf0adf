use clap::Parser;
use nntools_cli::flags::{Force, Workers};
use nntools_synth::{Modality, Spec, write_dataset};
use std::path::PathBuf;
use std::process::ExitCode;

const TOOL: &str = "nn-synth";

/// Write a seeded synthetic labelled dataset in nnU-Net raw format (dataset.json, imagesTr, labelsTr,
/// imagesTs): organ-like label blobs with texture, bias field and noise, per-case shapes and spacings.
/// The same flags and seed give the same files, byte for byte.
#[derive(Parser)]
#[command(name = TOOL, version, after_help = "\
Examples:
  nn-synth -o raw/Dataset900_Synth
  nn-synth -o raw/Dataset901_SynthCT --ct --cases 20 --labels 5 --seed 3
  nn-synth -o raw/Dataset902_Multi --channels 2 --test-cases 4 --isotropic
  nn-synth -o raw/Dataset903_Mha --file-ending .mha
  nn-synth -o raw/Dataset904_Rgb --file-ending .png --channels 3 --cases 20")]
struct Args {
    /// Output dataset folder (must not exist unless --force).
    #[arg(short, long)]
    output: PathBuf,
    /// Number of labelled training cases.
    #[arg(long, default_value_t = 8)]
    cases: usize,
    /// Number of unlabelled cases in imagesTs.
    #[arg(long, default_value_t = 0)]
    test_cases: usize,
    /// Image channels per case.
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Foreground labels (background excluded).
    #[arg(long, default_value_t = 2)]
    labels: usize,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// CT-like intensities (Hounsfield units, int16) instead of MRI-like ones.
    #[arg(long)]
    ct: bool,
    /// Near-isotropic voxels instead of thick slices along the slowest axis.
    #[arg(long)]
    isotropic: bool,
    /// Smallest number of voxels along an axis.
    #[arg(long, default_value_t = 24)]
    min_size: usize,
    /// Largest number of voxels along an axis.
    #[arg(long, default_value_t = 40)]
    max_size: usize,
    /// Image format: .nii.gz, .nii, .mha, .nrrd, .gipl, or .png for 2-D images (each case's middle slice;
    /// --channels 3 makes one RGB file per case, as nnU-Net's 2-D example).
    #[arg(long, default_value = ".nii.gz")]
    file_ending: String,
    #[command(flatten)]
    force: Force,
    #[command(flatten)]
    threads: Workers,
}

fn main() -> ExitCode {
    let args = Args::parse();
    nntools_cli::run(TOOL, || {
        args.threads.init_pool()?;
        let spec = Spec {
            training_cases: args.cases,
            test_cases: args.test_cases,
            channels: args.channels,
            labels: args.labels,
            seed: args.seed,
            modality: if args.ct { Modality::Ct } else { Modality::Mri },
            anisotropic: !args.isotropic,
            shape_range: [args.min_size, args.max_size],
            file_ending: args.file_ending.clone(),
        };
        write_dataset(&spec, &args.output, args.force.force)
    })
}
