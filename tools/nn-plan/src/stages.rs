//! `nn-plan stages`: the pipeline's stages (nntools_planning::stages) printed for the scripts that run
//! them: JSON lines, bash assignments for scripts/nnunet.sh and the Slurm script, or a makefile
//! fragment for scripts/Makefile.

use nntools_io::{Error, Result};
use nntools_layout::work::Work;
use nntools_planning::Plans;
use nntools_planning::stages::{StageRequest, Stages, stages};
use std::fmt::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct StagesArgs {
    /// The pipeline's work folder (WORK_DIR of scripts/nnunet.sh); every path printed is under it.
    #[arg(long)]
    work: PathBuf,
    /// The plans; default: WORK/plans.json.
    #[arg(long)]
    plans: Option<PathBuf>,
    /// Configurations to run, comma-separated, in any order; default: every configuration of the
    /// plans, leaving out (with a note) a cascade stage that these folds cannot feed.
    #[arg(long, value_delimiter = ',')]
    configs: Option<Vec<String>>,
    /// Folds: a range (`0-4`) or a list (`0,1,2`).
    #[arg(long, default_value = "0-4", value_parser = parse_folds)]
    folds: Folds,
    /// `json`: one object per line and configuration; `shell`: one line of bash assignments per
    /// configuration (for `eval`); `make`: a makefile fragment of `stage_*` variables.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Output file; `-` writes to stdout.
    #[arg(short, long, default_value = "-")]
    output: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Json,
    Shell,
    Make,
}

#[derive(Clone)]
struct Folds(Vec<usize>);

fn parse_folds(text: &str) -> std::result::Result<Folds, String> {
    let number = |s: &str| s.trim().parse::<usize>().map_err(|_| format!("{s:?} is not a fold number"));
    let folds = match text.split_once('-') {
        Some((first, last)) => (number(first)?..=number(last)?).collect(),
        None => text.split(',').map(number).collect::<std::result::Result<Vec<_>, _>>()?,
    };
    if folds.is_empty() {
        return Err(format!("{text:?} names no fold"));
    }
    Ok(Folds(folds))
}

pub fn main(args: &StagesArgs) -> Result<()> {
    let work = Work::new(&args.work);
    let plans_path = args.plans.clone().unwrap_or_else(|| work.plans());
    let plans: Plans = nntools_io::read_json(&plans_path)?;
    let stages = stages(&StageRequest {
        plans: &plans,
        plans_path: &plans_path,
        work: &work,
        configurations: args.configs.as_deref(),
        folds: &args.folds.0,
    })?;
    let text = match args.format {
        Format::Json => json_lines(&stages),
        Format::Shell => shell_lines(&stages),
        Format::Make => make_fragment(&stages, &plans_path)?,
    };
    nntools_io::write_stream(&args.output, |out| out.write_all(text.as_bytes()))
}

fn json_lines(stages: &Stages) -> String {
    let stages_then_skipped = stages.stages.iter().map(|s| serde_json::to_value(s).expect("stages serialise"));
    let skipped = stages.skipped.iter().map(|s| serde_json::to_value(s).expect("notes serialise"));
    stages_then_skipped.chain(skipped).map(|line| format!("{line}\n")).collect()
}

/// One line per configuration that, evaluated by bash, sets `configuration`, `data_configuration`,
/// `data`, `manifest`, `run`, `train_args=(...)`, `inputs=(...)` (the marks of the stages it needs),
/// `next_stage` and `next_stage_manifest` (empty without a next stage), per fold `folds=(...)`,
/// `finals=(...)`, `validations=(...)` and `next_stage_marks=(...)`, and `skipped` (the reason it does
/// not run, else empty).
fn shell_lines(stages: &Stages) -> String {
    let mut text = String::new();
    for stage in &stages.stages {
        let inputs: Vec<&Path> = stage.needed_marks().collect();
        let next_name = stage.next_stage.as_ref().map_or("", |next| next.configuration.as_str());
        let next_manifest = stage.next_stage.as_ref().map(|next| next.data_manifest.as_path());
        let fold_numbers: Vec<String> = stage.folds.iter().map(|f| f.fold.to_string()).collect();
        let finals: Vec<&Path> = stage.folds.iter().map(|f| f.final_checkpoint.as_path()).collect();
        let validations: Vec<&Path> = stage.folds.iter().map(|f| f.validation.as_path()).collect();
        let marks: Vec<&Path> = stage.folds.iter().filter_map(|f| f.next_stage_mark.as_deref()).collect();
        let _ = writeln!(
            text,
            "configuration={} data_configuration={} data={} manifest={} run={} train_args=({}) inputs=({}) \
             next_stage={} next_stage_manifest={} folds=({}) finals=({}) validations=({}) next_stage_marks=({}) skipped=''",
            shell_word(&stage.configuration),
            shell_word(&stage.data_configuration),
            shell_path(&stage.data),
            shell_path(&stage.manifest),
            shell_path(&stage.run),
            shell_words(stage.train_args.iter().map(String::as_str)),
            shell_paths(&inputs),
            shell_word(next_name),
            next_manifest.map_or("''".to_owned(), shell_path),
            shell_words(fold_numbers.iter().map(String::as_str)),
            shell_paths(&finals),
            shell_paths(&validations),
            shell_paths(&marks),
        );
    }
    for skipped in &stages.skipped {
        let _ = writeln!(
            text,
            "configuration={} skipped={}",
            shell_word(&skipped.configuration),
            shell_word(&skipped.reason)
        );
    }
    text
}

/// `word` as one bash word: as it is when it holds only characters bash leaves alone, else in single
/// quotes.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./,:=@%+".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn shell_path(path: &Path) -> String {
    shell_word(&path.display().to_string())
}

fn shell_words<'a>(words: impl Iterator<Item = &'a str>) -> String {
    words.map(shell_word).collect::<Vec<_>>().join(" ")
}

fn shell_paths(paths: &[&Path]) -> String {
    paths.iter().map(|p| shell_path(p)).collect::<Vec<_>>().join(" ")
}

/// Variables for scripts/Makefile's rules: `stage_configurations`, `stage_folds`,
/// `stage_data_configurations` (what nn-resample makes, each once), per data configuration D
/// `stage_data.D` and `stage_manifest.D`, per configuration C `stage_data_of.C`, `stage_run.C`,
/// `stage_train_args.C`, `stage_inputs.C` (the marks of the stages it needs), `stage_next_stage_manifest.C`,
/// and per fold F `stage_final.C.F` and `stage_next_stage_mark.C.F`.
fn make_fragment(stages: &Stages, plans_path: &Path) -> Result<String> {
    let word = |path: &Path| -> Result<String> {
        let text = path.display().to_string();
        if text.contains(char::is_whitespace) {
            return Err(Error::bad_input(path, "make cannot name a path with white space"));
        }
        Ok(text.replace('$', "$$").replace('#', "\\#"))
    };
    let words = |paths: &[&Path]| -> Result<String> {
        Ok(paths.iter().map(|p| word(p)).collect::<Result<Vec<_>>>()?.join(" "))
    };
    let mut text = format!("# nn-plan stages --format make, from {}\n", plans_path.display());
    let names: Vec<&str> = stages.stages.iter().map(|s| s.configuration.as_str()).collect();
    let _ = writeln!(text, "stage_configurations := {}", names.join(" "));
    let folds: Vec<String> =
        stages.stages.first().map_or(Vec::new(), |s| s.folds.iter().map(|f| f.fold.to_string()).collect());
    let _ = writeln!(text, "stage_folds := {}", folds.join(" "));
    let mut data_configurations: Vec<&str> = Vec::new();
    for stage in &stages.stages {
        let data = stage.data_configuration.as_str();
        if !data_configurations.contains(&data) {
            data_configurations.push(data);
            let _ = writeln!(text, "stage_data.{data} := {}", word(&stage.data)?);
            let _ = writeln!(text, "stage_manifest.{data} := {}", word(&stage.manifest)?);
        }
    }
    let _ = writeln!(text, "stage_data_configurations := {}", data_configurations.join(" "));
    for stage in &stages.stages {
        let c = &stage.configuration;
        let train_args: Vec<&Path> = stage.train_args.iter().map(Path::new).collect();
        let inputs: Vec<&Path> = stage.needed_marks().collect();
        let next_manifest: Vec<&Path> = stage.next_stage.iter().map(|next| next.data_manifest.as_path()).collect();
        let _ = writeln!(text, "stage_data_of.{c} := {}", stage.data_configuration);
        let _ = writeln!(text, "stage_run.{c} := {}", word(&stage.run)?);
        let _ = writeln!(text, "stage_train_args.{c} := {}", words(&train_args)?);
        let _ = writeln!(text, "stage_inputs.{c} := {}", words(&inputs)?);
        let _ = writeln!(text, "stage_next_stage_manifest.{c} := {}", words(&next_manifest)?);
        for fold in &stage.folds {
            let f = fold.fold;
            let _ = writeln!(text, "stage_final.{c}.{f} := {}", word(&fold.final_checkpoint)?);
            let mark: Vec<&Path> = fold.next_stage_mark.iter().map(PathBuf::as_path).collect();
            let _ = writeln!(text, "stage_next_stage_mark.{c}.{f} := {}", words(&mark)?);
        }
    }
    for skipped in &stages.skipped {
        let _ = writeln!(text, "$(info {}: skipped: {})", skipped.configuration, skipped.reason);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_are_a_range_or_a_list() {
        assert_eq!(parse_folds("0-4").unwrap().0, [0, 1, 2, 3, 4]);
        assert_eq!(parse_folds("3,1").unwrap().0, [3, 1]);
        assert_eq!(parse_folds("2").unwrap().0, [2]);
        assert!(parse_folds("4-2").is_err());
        assert!(parse_folds("a").is_err());
    }

    #[test]
    fn shell_words_survive_bash() {
        assert_eq!(shell_word("w/runs/3d_lowres"), "w/runs/3d_lowres");
        assert_eq!(shell_word("my work/it's"), r"'my work/it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
