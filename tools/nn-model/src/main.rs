use clap::{Parser, Subcommand};
use nntools_cli::flags::{Force, Quiet};
use nntools_io::Error;
use nntools_layout::run::{CheckpointName, Fold};
use std::path::PathBuf;
use std::process::ExitCode;

const TOOL: &str = "nn-model";

/// nnU-Net models as they are shared: describe a model, export run folders to nnU-Net's model zip
/// (what `nnUNetv2_export_model_to_zip` writes, so `nnUNetv2_install_pretrained_model_from_zip` installs
/// it), and install model zips (nnU-Net's, or this tool's) into a results folder, safely.
#[derive(Parser)]
#[command(name = TOOL, version, after_help = "\
Examples:
  nn-model info nnUNet_results/Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres
  nn-model export runs/3d_fullres runs/2d -o Dataset004_Hippocampus.zip --folds 0,1,2,3,4
  nn-model install Dataset004_Hippocampus.zip -o nnUNet_results
  nn-infer -m nnUNet_results/Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres \\
      -i imagesTs -o predictions")]
struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    quiet: Quiet,
}

#[derive(Subcommand)]
enum Command {
    /// Print what a model holds, as JSON: dataset, plans identifier, configuration, trainer, network
    /// class, folds, parameter count, input channels and labels.
    ///
    /// MODEL is an nn-train run folder or an nnU-Net trainer folder (plans.json, dataset.json,
    /// fold_F/checkpoint_final.safetensors or .pth), or a single .pth or .safetensors checkpoint.
    /// Parameters are counted once each: nnU-Net's checkpoints repeat tensors under alias keys.
    #[command(after_help = "\
Examples:
  nn-model info runs/3d_fullres
  nn-model info nnUNet_results/Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth")]
    Info {
        /// Run or trainer folder, or a .pth / .safetensors file.
        model: PathBuf,
        #[command(flatten)]
        checkpoint: CheckpointFlag,
    },
    /// Write run or trainer folders to one model zip laid out as nnU-Net's exporter lays it out:
    /// DATASET/TRAINER__PLANS__CONFIG/{plans,dataset,dataset_fingerprint}.json and
    /// fold_F/{checkpoint_final.pth,progress.png,validation/summary.json}.
    ///
    /// DATASET and PLANS come from plans.json (dataset_name, plans_name), TRAINER and CONFIG from the
    /// .pth checkpoints (trainer_name, configuration), which each fold must hold. Give several folders
    /// (configurations) to put them in one zip.
    #[command(after_help = "\
Examples:
  nn-model export runs/3d_fullres -o Dataset004_Hippocampus.zip
  nn-model export runs/3d_lowres runs/3d_cascade_fullres -o cascade.zip --folds 0,1 --checkpoint best")]
    Export {
        /// Run or trainer folders, one per configuration.
        #[arg(required = true)]
        models: Vec<PathBuf>,
        /// The zip to write.
        #[arg(short = 'o', long = "output", value_name = "ZIP")]
        output: PathBuf,
        /// Folds to export, comma-separated numbers or `all` (default: every fold folder).
        #[arg(long, value_delimiter = ',')]
        folds: Option<Vec<Fold>>,
        #[command(flatten)]
        checkpoint: CheckpointFlag,
    },
    /// Install a model zip into a results folder (nnU-Net's nnUNet_results) and print the trainer
    /// folders it created, one per line, ready for nn-infer -m.
    ///
    /// The zip is checked before anything is written: entries leaving the folder (..), absolute
    /// paths, symbolic links, duplicate names and anything outside DATASET/TRAINER__PLANS__CONFIG/
    /// (and the ensembles/ and inference_information files nnU-Net's exporter adds) are refused, as is a
    /// zip that inflates past --max-inflated-gb (bytes are counted as they are inflated, declared sizes
    /// are not trusted). On any problem nothing is left in the results folder.
    #[command(after_help = "\
Examples:
  nn-model install Dataset004_Hippocampus.zip -o nnUNet_results
  nn-model install Dataset219_AMOS.zip -o nnUNet_results --max-inflated-gb 200 --force")]
    Install {
        /// The model zip.
        zip: PathBuf,
        /// The results folder (nnUNet_results); created if missing.
        #[arg(short = 'o', long = "output", value_name = "RESULTS")]
        output: PathBuf,
        /// Refuse zips that inflate to more than this many gigabytes (10^9 bytes; fractions allowed).
        #[arg(long, value_name = "GB", default_value_t = 50.0)]
        max_inflated_gb: f64,
        #[command(flatten)]
        force: Force,
    },
}

/// `--checkpoint`, as nnU-Net's `-chk`.
#[derive(clap::Args)]
struct CheckpointFlag {
    /// final, best, latest, or a checkpoint's file name in the fold folders (checkpoint_final.pth).
    #[arg(long, default_value = "final")]
    checkpoint: CheckpointName,
}

fn main() -> ExitCode {
    let args = Args::parse();
    nntools_cli::run(TOOL, || match args.command {
        Command::Info { model, checkpoint } => {
            let info = nntools_model::model_info(&model, &checkpoint.checkpoint)?;
            nntools_io::write_json(std::path::Path::new("-"), &info)
        }
        Command::Export { models, output, folds, checkpoint } => {
            let warnings = nntools_model::export_zip(&models, folds.as_deref(), &checkpoint.checkpoint, &output)?;
            for warning in &warnings {
                nntools_cli::warn(TOOL, args.quiet.quiet, warning);
            }
            Ok(())
        }
        Command::Install { zip, output, max_inflated_gb, force } => {
            if !(max_inflated_gb > 0.0 && max_inflated_gb.is_finite()) {
                return Err(Error::bad_input("--max-inflated-gb", "must be a positive number"));
            }
            let limit = (max_inflated_gb * 1e9) as u64;
            for folder in nntools_model::install_zip(&zip, &output, limit, force.force)? {
                println!("{}", folder.display());
            }
            Ok(())
        }
    })
}
