use clap::{ArgGroup, Parser};
use nntools_cli::flags::{Force, MaxMemory, Part, Quiet, Workers};
use nntools_dataset::{Dataset, list_image_cases};
use nntools_io::Error;
use nntools_planning::Plans;
use nntools_preprocessing::{CaseFiles, Recipe, Stamp, preprocess_dataset};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::ExitCode;

const TOOL: &str = "nn-resample";

/// Preprocess a dataset for one configuration of the plans, as nnU-Net v2 does: transpose, crop to
/// nonzero, normalise, resample to the configuration's spacing, sample class locations.
///
/// Writes CASE.npy (float32, c,z,y,x), CASE_seg.npy, CASE_locations.npy and CASE.json per case, and
/// manifest.json. Cases whose outputs were made from the same plans, configuration and input files are
/// skipped, so a rerun after an interruption picks up where it stopped; --force redoes everything.
///
/// On several machines: run `--part K/N` for K = 0..N-1 on the same output folder, then once without
/// --part. The shards write no manifest.json (it marks a complete dataset, and each knows only its part);
/// the final pass skips every case the shards made and writes it.
#[derive(Parser)]
#[command(name = TOOL, version, group(ArgGroup::new("source").required(true).args(["input", "images"])), after_help = "\
Examples:
  nn-resample --plans nnUNetPlans.json -c 3d_fullres -i raw/Dataset004_Hippocampus -o pre/nnUNetPlans_3d_fullres
  nn-resample --plans nnUNetPlans.json -c 2d -i raw/Dataset004_Hippocampus -o pre/nnUNetPlans_2d -j 8
  nn-resample --plans nnUNetPlans.json -c 2d -i raw/Dataset004_Hippocampus -o pre/nnUNetPlans_2d --part 1/4
  nn-resample --plans nnUNetPlans.json -c 3d_fullres --images raw/Dataset004_Hippocampus/imagesTs -o pre/test")]
struct Args {
    /// Plans file (nn-plan's output or nnU-Net's nnUNetPlans.json).
    #[arg(short, long)]
    plans: PathBuf,
    /// Configuration to preprocess for (2d, 3d_fullres, 3d_lowres, ...).
    #[arg(short, long)]
    configuration: String,
    /// Raw dataset folder (dataset.json, imagesTr, labelsTr).
    #[arg(short, long)]
    input: Option<PathBuf>,
    /// A folder of unlabelled CASE_XXXX.nii.gz images instead (e.g. for inference).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Output folder for the preprocessed cases.
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    part: Part,
    #[command(flatten)]
    threads: Workers,
    #[command(flatten)]
    force: Force,
    #[command(flatten)]
    max_memory: MaxMemory,
    #[command(flatten)]
    quiet: Quiet,
}

fn main() -> ExitCode {
    let args = Args::parse();
    nntools_cli::run(TOOL, || {
        let part = args.part.parse()?;
        args.threads.init_pool()?;
        args.max_memory.init()?;
        let plans_bytes = std::fs::read(&args.plans).map_err(|e| Error::io(&args.plans, &e))?;
        let plans: Plans = serde_json::from_slice(&plans_bytes)
            .map_err(|e| Error::bad_input(&args.plans, format!("invalid plans: {e}")))?;
        let (descriptor, cases): (_, Vec<CaseFiles>) = match (&args.input, &args.images) {
            (Some(raw), _) => {
                let dataset = Dataset::open(raw)?;
                let cases = dataset
                    .cases
                    .iter()
                    .map(|c| CaseFiles {
                        id: c.id.clone(),
                        images: c.present_images().to_vec(),
                        label: Some(c.label.clone()),
                        reader_writer: None,
                    })
                    .collect();
                (Some(dataset.descriptor), cases)
            }
            (None, Some(dir)) => {
                let channels = plans.foreground_intensity_properties_per_channel.len();
                let cases = list_image_cases(dir, channels)?
                    .into_iter()
                    .map(|(id, images)| CaseFiles { id, images, label: None, reader_writer: None })
                    .collect();
                (None, cases)
            }
            (None, None) => unreachable!("clap requires an input"),
        };
        let cases = part.select(cases, |case| &case.id);
        let recipe = Recipe::new(&plans, &args.configuration, descriptor.as_ref())
            .map_err(|problem| Error::bad_input(&args.plans, problem))?;
        let stamp = Stamp {
            plans_sha256: format!("{:x}", Sha256::digest(&plans_bytes)),
            configuration: args.configuration.clone(),
        };
        let bar = nntools_cli::progress(cases.len(), "cases", args.quiet.quiet);
        let tick = || bar.inc(1);
        let summary =
            preprocess_dataset(&recipe, &cases, &args.output, &stamp, args.force.force, part.is_whole(), &tick);
        bar.finish_and_clear();
        let summary = summary?;
        if !args.quiet.quiet {
            eprintln!("{TOOL}: {} case(s) preprocessed, {} already current", summary.processed, summary.skipped);
        }
        Ok(())
    })
}
