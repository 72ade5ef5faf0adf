//! The scripts take their stage rules from `nn-plan stages`: on the cascade plans fixture, with every
//! tool replaced by a stub that records its command line and writes the file the next stage checks
//! (only `nn-plan stages` runs for real), scripts/nnunet.sh, `make -n` with scripts/Makefile and the
//! Slurm script issue exactly the nn-resample and nn-train commands that `nn-plan stages` describes.

use nntools_tests::{binary, stderr, workspace};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PLANS: &str = "tests/fixtures/nnunet_plans/ct_lowres_cascade/nnUNetPlans.json";
const TOOLS: [&str; 6] = ["nn-fingerprint", "nn-plan", "nn-resample", "nn-train", "nn-ensemble", "nn-infer"];

/// Records `TOOL ARGS...` (tab-separated) in $STUB_LOG and writes what the pipeline checks next: the
/// fingerprint, the fixture plans, a manifest, a final checkpoint with its validation folder and, given
/// --next-stage-data, the fold's mark for $STUB_NEXT_STAGE, the inference plan. It sleeps before each
/// file so that every output is newer than its inputs on a file system with coarse timestamps.
const STUB: &str = r#"#!/usr/bin/env bash
set -eu
tool=$(basename "$0")
if [[ $tool == nn-plan && ${1:-} == stages ]]; then exec "$REAL_NN_PLAN" "$@"; fi
{ printf '%s' "$tool"; printf '\t%s' "$@"; echo; } >> "$STUB_LOG"
out="" fold="" next=false sub=${1:-}
while [[ $# -gt 0 ]]; do
    case $1 in
        -o) out=$2; shift 2 ;;
        --fold) fold=$2; shift 2 ;;
        --next-stage-data) next=true; shift 2 ;;
        *) shift ;;
    esac
done
sleep 0.02
case $tool in
    nn-fingerprint) echo '{}' > "$out" ;;
    nn-plan) cp "$STUB_PLANS" "$out" ;;
    nn-resample) mkdir -p "$out"; echo '{}' > "$out/manifest.json" ;;
    nn-train)
        mkdir -p "$out/fold_$fold/validation"
        echo '{}' > "$out/fold_$fold/checkpoint_final.json"
        if $next; then
            sleep 0.02
            mkdir -p "$out/predicted_next_stage/$STUB_NEXT_STAGE"
            echo '{}' > "$out/predicted_next_stage/$STUB_NEXT_STAGE/fold_$fold.json"
        fi ;;
    nn-ensemble) if [[ $sub == select ]]; then echo '{}' > "$out"; else mkdir -p "$out"; fi ;;
    nn-infer) mkdir -p "$out" ;;
esac
"#;

struct Stubs {
    dir: tempfile::TempDir,
    raw: PathBuf,
    bin: PathBuf,
    log: PathBuf,
}

impl Stubs {
    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        for folder in ["imagesTr", "labelsTr"] {
            std::fs::create_dir_all(raw.join(folder)).unwrap();
        }
        std::fs::write(raw.join("dataset.json"), "{}").unwrap();
        std::fs::write(raw.join("imagesTr/case_0000.nii.gz"), "").unwrap();
        std::fs::write(raw.join("labelsTr/case.nii.gz"), "").unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for tool in TOOLS {
            let stub = bin.join(tool);
            std::fs::write(&stub, STUB).unwrap();
            std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let log = dir.path().join("commands.log");
        Self { dir, raw, bin, log }
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .env("REAL_NN_PLAN", binary("nn-plan"))
            .env("STUB_LOG", &self.log)
            .env("STUB_PLANS", workspace().join(PLANS))
            .env("STUB_NEXT_STAGE", "3d_cascade_fullres");
        command
    }

    fn script(&self, work: &Path, flags: &[&str]) -> Output {
        let mut command = self.command(workspace().join("scripts/nnunet.sh"));
        command.arg(&self.raw).arg(work).args(flags).env("NN_TOOLS_BIN", &self.bin);
        command.output().unwrap()
    }

    fn make(&self, work: &Path, configs: &str, folds: &str) -> std::io::Result<Output> {
        let mut command = self.command("make");
        command.arg("-n").arg("-f").arg(workspace().join("scripts/Makefile"));
        command.arg(format!("RAW={}", self.raw.display())).arg(format!("WORK={}", work.display()));
        command
            .arg(format!("BIN={}", self.bin.display()))
            .arg(format!("CONFIGS={configs}"))
            .arg(format!("FOLDS={folds}"));
        command.output()
    }

    /// The commands the stubs recorded so far, each as its tool's name and arguments.
    fn recorded(&self) -> Vec<Vec<String>> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().map(|line| line.split('\t').map(str::to_owned).collect()).collect()
    }
}

/// `nn-plan stages` for real, as JSON lines.
fn described(work: &Path, configs: &str, folds: &str) -> Vec<Value> {
    let output = Command::new(binary("nn-plan"))
        .args(["stages", "--plans"])
        .arg(workspace().join(PLANS))
        .arg("--work")
        .arg(work)
        .args(["--configs", configs, "--folds", folds])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    String::from_utf8(output.stdout).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// A command line's options: flag -> value (`None` for the flags that take none); a repeated flag or a
/// stray word fails the test.
fn options(args: &[String]) -> BTreeMap<String, Option<String>> {
    const BARE: [&str; 4] = ["-q", "--resume", "--validate-only", "--chill"];
    let mut options = BTreeMap::new();
    let mut words = args.iter();
    while let Some(flag) = words.next() {
        assert!(flag.starts_with('-'), "stray word {flag:?} in {args:?}");
        let value = if BARE.contains(&flag.as_str()) { None } else { Some(words.next().unwrap().clone()) };
        assert!(options.insert(flag.clone(), value).is_none(), "{flag} twice in {args:?}");
    }
    options
}

fn text(value: &Value) -> String {
    value.as_str().unwrap().to_owned()
}

/// The options `nn-plan stages` implies for each fold's nn-train, in order.
fn expected_training(stages: &[Value], work: &Path, raw: &Path) -> Vec<BTreeMap<String, Option<String>>> {
    let mut commands = Vec::new();
    for stage in stages {
        for fold in stage["folds"].as_array().unwrap() {
            let train_args: Vec<String> = stage["train_args"].as_array().unwrap().iter().map(text).collect();
            let mut expected = options(&train_args);
            for (flag, value) in [
                ("--plans", work.join("plans.json").display().to_string()),
                ("-c", text(&stage["configuration"])),
                ("--data", text(&stage["data"])),
                ("--dataset", raw.join("dataset.json").display().to_string()),
                ("--fold", fold["fold"].to_string()),
                ("-o", text(&stage["run"])),
            ] {
                expected.insert(flag.to_owned(), Some(value));
            }
            commands.push(expected);
        }
    }
    commands
}

/// nn-resample's options for each distinct data configuration, in order.
fn expected_resampling(stages: &[Value], work: &Path, raw: &Path) -> Vec<BTreeMap<String, Option<String>>> {
    let mut seen = Vec::new();
    let mut commands = Vec::new();
    for stage in stages {
        let data_configuration = text(&stage["data_configuration"]);
        if seen.contains(&data_configuration) {
            continue;
        }
        seen.push(data_configuration.clone());
        let mut expected = BTreeMap::new();
        for (flag, value) in [
            ("--plans", Some(work.join("plans.json").display().to_string())),
            ("-c", Some(data_configuration)),
            ("-i", Some(raw.display().to_string())),
            ("-o", Some(text(&stage["data"]))),
            ("-q", None),
        ] {
            expected.insert(flag.to_owned(), value);
        }
        commands.push(expected);
    }
    commands
}

/// `command`'s options without the flags a script adds on its own (budget, device, precision, threads, resuming).
fn stage_options(command: &[String]) -> BTreeMap<String, Option<String>> {
    let mut options = options(command);
    for own in ["-q", "--resume", "--device", "--precision", "-j", "--validate-only"] {
        options.remove(own);
    }
    options
}

#[test]
fn the_script_and_make_issue_the_commands_nn_plan_stages_describes() {
    let stubs = Stubs::new();
    let configs = "2d,3d_lowres,3d_fullres,3d_cascade_fullres";

    // the script, every configuration by default, all five folds
    let work = stubs.dir.path().join("work");
    let run = stubs.script(&work, &["--folds", "0-4"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let stages = described(&work, configs, "0-4");
    assert_eq!(stages.len(), 4, "{stages:?}");
    let recorded = stubs.recorded();
    let of = |tool: &str| -> Vec<Vec<String>> {
        recorded.iter().filter(|c| c[0] == tool).map(|c| c[1..].to_vec()).collect()
    };
    let resampled: Vec<_> = of("nn-resample").iter().map(|c| options(c)).collect();
    assert_eq!(resampled, expected_resampling(&stages, &work, &stubs.raw));
    let trained: Vec<_> = of("nn-train").iter().map(|c| stage_options(c)).collect();
    assert_eq!(trained, expected_training(&stages, &work, &stubs.raw));
    assert!(of("nn-train").iter().all(|c| c.contains(&"--resume".to_owned())), "nothing was trained before");
    // the cascade's folds came after every lowres fold, on the lowres folds' labels
    let cascade = &stages[3];
    assert_eq!(text(&cascade["data"]), work.join("preprocessed/3d_fullres").display().to_string());
    for mark in cascade["needs"][0]["marks"].as_array().unwrap() {
        assert!(Path::new(&text(mark)).is_file(), "{mark} was not written");
    }
    // a rerun trains nothing
    let again = stubs.script(&work, &["--folds", "0-4"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stubs.recorded().iter().filter(|c| c[0] == "nn-train").count(), 20);

    // the Slurm script, fold 2 of each configuration in the same work folder: left alone while done
    // (scripts/nnunet.sh's rule), trained once its final checkpoint is gone
    let slurm_fold_2 = || {
        for stage in &stages {
            let mut command = stubs.command("bash");
            command.arg(workspace().join("scripts/slurm/train-folds.sbatch")).arg(&stubs.raw).arg(&work);
            let output = command
                .arg(text(&stage["configuration"]))
                .env("NN_TOOLS_BIN", &stubs.bin)
                .env("SLURM_ARRAY_TASK_ID", "2")
                .output()
                .unwrap();
            assert!(output.status.success(), "{}", stderr(&output));
        }
    };
    slurm_fold_2();
    assert_eq!(stubs.recorded().iter().filter(|c| c[0] == "nn-train").count(), 20, "done folds are left alone");
    for stage in &stages {
        std::fs::remove_file(Path::new(&text(&stage["run"])).join("fold_2/checkpoint_final.json")).unwrap();
    }
    slurm_fold_2();
    let recorded = stubs.recorded();
    let slurm: Vec<_> =
        recorded.iter().filter(|c| c[0] == "nn-train").skip(20).map(|c| stage_options(&c[1..])).collect();
    let fold_2: Vec<_> = expected_training(&stages, &work, &stubs.raw)
        .into_iter()
        .filter(|o| o["--fold"].as_deref() == Some("2"))
        .collect();
    assert_eq!(slurm, fold_2);

    // make -n on a new work folder: nn-fingerprint and nn-plan run (the stages come from the plans),
    // then make lists the stages' commands
    let work = stubs.dir.path().join("work_make");
    match stubs.make(&work, &configs.replace(',', " "), "0 1 2 3 4") {
        Err(e) => eprintln!("skipped the Makefile checks: no make ({e})"),
        Ok(dry) => {
            assert!(dry.status.success(), "{}", stderr(&dry));
            let stages = described(&work, configs, "0-4");
            let listed = String::from_utf8(dry.stdout).unwrap().replace("\\\n", " ");
            let commands_of = |tool: &str| -> Vec<Vec<String>> {
                let suffix = format!("/{tool}");
                listed
                    .lines()
                    .filter_map(|line| {
                        let words: Vec<&str> = line.split_whitespace().collect();
                        let at = words.iter().position(|w| w.ends_with(&suffix))?;
                        Some(words[at + 1..].iter().map(|w| w.to_string()).collect())
                    })
                    .collect()
            };
            let resampled: Vec<_> = commands_of("nn-resample").iter().map(|c| options(c)).collect();
            assert_eq!(resampled, expected_resampling(&stages, &work, &stubs.raw), "{listed}");
            let (revalidations, trainings): (Vec<_>, Vec<_>) =
                commands_of("nn-train").into_iter().partition(|c| c.contains(&"--validate-only".to_owned()));
            let trained: Vec<_> = trainings.iter().map(|c| stage_options(c)).collect();
            assert_eq!(trained, expected_training(&stages, &work, &stubs.raw), "{listed}");
            // the guarded revalidation of each lowres fold, with that fold's own command line
            let lowres = expected_training(&stages[1..2], &work, &stubs.raw);
            let revalidated: Vec<_> = revalidations.iter().map(|c| stage_options(c)).collect();
            assert_eq!(revalidated, lowres, "{listed}");
        }
    }
}

#[test]
fn the_cascade_without_all_folds_is_bad_input_when_asked_for_and_left_out_otherwise() {
    let stubs = Stubs::new();
    let work = stubs.dir.path().join("work");
    let run = stubs.script(&work, &["--configs", "3d_lowres,3d_cascade_fullres", "--folds", "0,1"]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    let errors: Vec<String> = stderr(&run).lines().filter(|l| !l.starts_with("== ")).map(str::to_owned).collect();
    assert_eq!(
        errors,
        ["nn-plan: error: --configs: 3d_cascade_fullres: it trains on every case's 3d_lowres prediction, which \
          needs --folds 0-4"]
    );
    assert!(!stubs.recorded().iter().any(|c| c[0] == "nn-train" || c[0] == "nn-resample"));

    let run = stubs.script(&work, &["--configs", "3d_cascade_fullres", "--folds", "0-4"]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("nn-plan: error: --configs: 3d_cascade_fullres: it needs 3d_lowres\n"));

    if let Ok(dry) = stubs.make(&stubs.dir.path().join("work_make"), "3d_lowres 3d_cascade_fullres", "0 1") {
        assert_eq!(dry.status.code(), Some(2), "{}", stderr(&dry));
        assert!(
            stderr(&dry).contains("nn-plan: error: --configs: 3d_cascade_fullres: it trains on"),
            "{}",
            stderr(&dry)
        );
        assert!(!String::from_utf8_lossy(&dry.stdout).contains("nn-train"));
    }

    // every configuration by default: the cascade is left out with a note, the rest trains
    let run = stubs.script(&work, &["--folds", "0,1"]);
    let log = stderr(&run);
    assert!(run.status.success(), "{log}");
    assert!(log.contains("== 3d_cascade_fullres: skipped: it trains on every case's 3d_lowres prediction"), "{log}");
    let trained: Vec<String> = stubs
        .recorded()
        .iter()
        .filter(|c| c[0] == "nn-train")
        .map(|c| options(&c[1..])["-c"].clone().unwrap())
        .collect();
    assert_eq!(trained, ["2d", "2d", "3d_lowres", "3d_lowres", "3d_fullres", "3d_fullres"]);
    // and 3d_lowres, without its next stage, writes no labels for it
    assert!(!stubs.recorded().iter().any(|c| c.contains(&"--next-stage-data".to_owned())));
}
