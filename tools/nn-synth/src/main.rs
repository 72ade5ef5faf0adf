use clap::Parser;
use nntools_cli::flags::{Force, Workers};
use nntools_synth::{Modality, Slices, Spec, write_dataset};
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
  nn-synth -o raw/Dataset905_Brain --cases 20 --labels 4 --min-size 166 --max-size 176 --thick-every 5
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
    #[arg(long, conflicts_with = "thick_every")]
    isotropic: bool,
    /// Near-isotropic voxels except every Nth case, which has thick slices (a mixed collection).
    #[arg(long, value_name = "N")]
    thick_every: Option<usize>,
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
        write_dataset(&args.spec(), &args.output, args.force.force)
    })
}

impl Args {
    fn spec(&self) -> Spec {
        Spec {
            training_cases: self.cases,
            test_cases: self.test_cases,
            channels: self.channels,
            labels: self.labels,
            seed: self.seed,
            modality: if self.ct { Modality::Ct } else { Modality::Mri },
            slices: match (self.isotropic, self.thick_every) {
                (_, Some(n)) => Slices::ThickEvery(n),
                (true, None) => Slices::Isotropic,
                (false, None) => Slices::Thick,
            },
            shape_range: [self.min_size, self.max_size],
            file_ending: self.file_ending.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slices(flags: &[&str]) -> Slices {
        Args::try_parse_from([TOOL, "-o", "out"].iter().chain(flags)).unwrap().spec().slices
    }

    #[test]
    fn slice_flags_choose_which_cases_are_thick() {
        assert_eq!(slices(&[]), Slices::Thick);
        assert_eq!(slices(&["--isotropic"]), Slices::Isotropic);
        assert_eq!(slices(&["--thick-every", "5"]), Slices::ThickEvery(5));
        assert!(Args::try_parse_from([TOOL, "-o", "out", "--isotropic", "--thick-every", "5"]).is_err());
    }
}
