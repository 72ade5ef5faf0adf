use clap::{Parser, Subcommand};
use nntools_cli::flags::Workers;
use nntools_dataset::Descriptor;
use nntools_ensembling::{
    InferencePlan, SelectRequest, average_folders, folder_descriptor, postprocess_folder, select,
};
use nntools_io::{Error, read_json};
use std::path::PathBuf;
use std::process::ExitCode;

const TOOL: &str = "nn-ensemble";

/// Ensembling, model selection and postprocessing, as nnU-Net's nnUNetv2_ensemble,
/// nnUNetv2_find_best_configuration and nnUNetv2_apply_postprocessing.
#[derive(Parser)]
#[command(name = TOOL, version, after_help = "\
Examples:
  nn-ensemble select --runs runs/2d runs/3d_fullres --ref raw/Dataset004_Hippocampus/labelsTr -o inference_plan.json
  nn-ensemble average -i pred_2d pred_3d_fullres -o pred_ensemble
  nn-ensemble postprocess -i pred_ensemble -o pred_final --plan inference_plan.json")]
struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    threads: Workers,
}

#[derive(Subcommand)]
enum Command {
    /// Average the probabilities (CASE.npz, from nn-infer --save-probabilities) of several prediction
    /// folders and write label maps in the input geometry.
    #[command(after_help = "\
Example:
  nn-ensemble average -i runs/2d/fold_0/validation runs/3d_fullres/fold_0/validation -o averaged \\
      --dataset raw/Dataset004_Hippocampus/dataset.json")]
    Average {
        /// Prediction folders with the same cases.
        #[arg(short, long = "input", required = true, num_args = 2..)]
        inputs: Vec<PathBuf>,
        /// Output folder (CASE.nii.gz per case).
        #[arg(short, long)]
        output: PathBuf,
        /// dataset.json (default: the first folder's).
        #[arg(long)]
        dataset: Option<PathBuf>,
        /// Also write the averaged CASE.npz.
        #[arg(long)]
        save_probabilities: bool,
    },
    /// Score every run and every pair of runs by the cross-validation foreground-mean Dice of their
    /// folds' validation predictions, pick the best, determine its postprocessing, and write
    /// inference_plan.json with the commands that apply it.
    #[command(after_help = "\
Example:
  nn-ensemble select --runs runs/2d runs/3d_fullres --ref raw/Dataset004_Hippocampus/labelsTr --folds 0,1,2,3,4 \\
      -o inference_plan.json")]
    Select {
        /// Run folders (nn-train's -o), one per configuration, with every fold's validation/.
        #[arg(long, required = true, num_args = 1..)]
        runs: Vec<PathBuf>,
        /// Reference label maps (the raw dataset's labelsTr).
        #[arg(long = "ref")]
        reference: PathBuf,
        /// Folds of the cross-validation.
        #[arg(long, value_delimiter = ',', default_value = "0,1,2,3,4")]
        folds: Vec<usize>,
        /// The inference plan to write.
        #[arg(short, long, default_value = "inference_plan.json")]
        output: PathBuf,
    },
    /// Print an inference plan: every candidate's cross-validation foreground-mean Dice, the choice and
    /// its postprocessing; or, with --runs, the chosen models' run folders, one per line.
    #[command(after_help = "\
Example:
  nn-ensemble show --plan work/inference_plan.json --runs")]
    Show {
        /// inference_plan.json from `nn-ensemble select`.
        #[arg(long)]
        plan: PathBuf,
        /// Print only the chosen models' run folders, one per line.
        #[arg(long)]
        runs: bool,
    },
    /// Apply the postprocessing of an inference plan to a folder of label maps.
    #[command(after_help = "\
Example:
  nn-ensemble postprocess -i predictions_raw -o predictions --plan inference_plan.json")]
    Postprocess {
        /// Folder of label maps (CASE.nii.gz, or any image format nn-tools reads), e.g. nn-infer's output;
        /// each is written in its own format.
        #[arg(short, long)]
        input: PathBuf,
        /// Output folder.
        #[arg(short, long)]
        output: PathBuf,
        /// inference_plan.json from `nn-ensemble select`.
        #[arg(long)]
        plan: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    nntools_cli::run(TOOL, || {
        args.threads.init_pool()?;
        let descriptor = |explicit: &Option<PathBuf>, folder: &PathBuf| match explicit {
            Some(path) => Descriptor::read(path),
            None => folder_descriptor(folder),
        };
        match &args.command {
            Command::Average { inputs, output, dataset, save_probabilities } => {
                average_folders(inputs, output, &descriptor(dataset, &inputs[0])?, *save_probabilities).map(|_| ())
            }
            Command::Select { runs, reference, folds, output } => {
                let plan = select(&SelectRequest {
                    runs: runs.clone(),
                    reference: reference.clone(),
                    folds: folds.clone(),
                    output: output.clone(),
                })?;
                for score in &plan.cross_validation {
                    println!("{:<40} {:.4}", score.configurations.join(" + "), score.foreground_dice);
                }
                let chosen: Vec<&str> = plan.models.iter().map(|m| m.configuration.as_str()).collect();
                println!(
                    "chosen: {} (Dice {:.4}; after postprocessing {:.4})",
                    chosen.join(" + "),
                    plan.foreground_dice_before_postprocessing,
                    plan.foreground_dice_after_postprocessing
                );
                println!("to predict a folder of images:");
                for command in &plan.commands {
                    println!("  {command}");
                }
                Ok(())
            }
            Command::Show { plan, runs } => {
                let plan: InferencePlan = read_json(plan)?;
                print!("{}", if *runs { chosen_runs(&plan) } else { summary(&plan) });
                Ok(())
            }
            Command::Postprocess { input, output, plan } => {
                let plan: InferencePlan = read_json(plan)?;
                if input == output {
                    return Err(Error::bad_input(output, "must differ from the input folder"));
                }
                postprocess_folder(input, output, &plan.postprocessing).map(|_| ())
            }
        }
    })
}

fn chosen_runs(plan: &InferencePlan) -> String {
    plan.models.iter().map(|model| format!("{}\n", model.run.display())).collect()
}

/// The candidates' scores, the choice and its postprocessing (steps written as Python writes the
/// plan's list, as scripts/demo.sh has always shown them).
fn summary(plan: &InferencePlan) -> String {
    let mut text = String::from("cross-validation, foreground-mean Dice:\n");
    for score in &plan.cross_validation {
        text.push_str(&format!("  {:<28} {:.4}\n", score.configurations.join(" + "), score.foreground_dice));
    }
    let chosen: Vec<&str> = plan.models.iter().map(|m| m.configuration.as_str()).collect();
    let steps: Vec<String> = plan
        .postprocessing
        .iter()
        .map(|step| format!("{{'keep_largest_component_of': {:?}}}", step.keep_largest_component_of))
        .collect();
    let postprocessing = if steps.is_empty() { "none".to_owned() } else { format!("[{}]", steps.join(", ")) };
    text.push_str(&format!("chosen: {}, postprocessing {postprocessing}\n", chosen.join(" + ")));
    text
}
