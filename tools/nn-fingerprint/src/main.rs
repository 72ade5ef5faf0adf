use clap::Parser;
use nntools_cli::flags::{Quiet, Workers};
use nntools_dataset::Dataset;
use nntools_fingerprint::{Options, analyse};
use std::path::PathBuf;
use std::process::ExitCode;

const TOOL: &str = "nn-fingerprint";

/// Check an nnU-Net raw dataset and write its fingerprint (nnU-Net v2's dataset_fingerprint.json).
///
/// Every training case is read once: integrity problems (missing files, shape or spacing mismatches,
/// NaN/Inf voxels, undeclared labels, a wrong numTraining) are reported one per line with exit code 2;
/// origin and direction mismatches are warnings. Then spacings, shapes after crop to nonzero and the
/// foreground intensity statistics (sampled exactly as nnU-Net samples them) are written as JSON.
#[derive(Parser)]
#[command(name = TOOL, version, after_help = "\
Examples:
  nn-fingerprint data/Dataset004_Hippocampus > fingerprint.json
  nn-fingerprint data/Dataset004_Hippocampus -o fingerprint.json -j 8
  nn-fingerprint --verify-only data/Dataset004_Hippocampus && echo dataset ok
  nn-fingerprint RAW | nn-plan --fingerprint - --dataset RAW/dataset.json > plans.json")]
struct Args {
    /// Raw dataset folder: dataset.json, imagesTr/CASE_XXXX.nii.gz, labelsTr/CASE.nii.gz.
    raw_dir: PathBuf,
    /// Output file; `-` writes to stdout.
    #[arg(short, long, default_value = "-")]
    output: PathBuf,
    #[command(flatten)]
    threads: Workers,
    /// Only check the dataset's integrity; write no fingerprint.
    #[arg(long)]
    verify_only: bool,
    #[command(flatten)]
    quiet: Quiet,
}

fn main() -> ExitCode {
    let args = Args::parse();
    nntools_cli::run(TOOL, || {
        args.threads.init_pool()?;
        let dataset = Dataset::open(&args.raw_dir)?;
        let bar = nntools_cli::progress(dataset.cases.len(), "cases", args.quiet.quiet);
        let tick = || bar.inc(1);
        let outcome = analyse(&dataset, &Options { verify_only: args.verify_only, on_case_done: Some(&tick) });
        bar.finish_and_clear();
        for warning in &outcome.warnings {
            nntools_cli::warn(TOOL, args.quiet.quiet, warning);
        }
        if args.verify_only {
            return outcome
                .problems
                .is_empty()
                .then_some(())
                .ok_or_else(|| nntools_io::Error::bad_input_lines(outcome.problems));
        }
        let fingerprint = outcome.into_fingerprint()?;
        nntools_io::write_json(&args.output, &fingerprint)
    })
}
