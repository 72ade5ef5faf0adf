//! scripts/slurm on a real one-node Slurm: scripts/slurm/local-cluster.sh starts munged, slurmctld and
//! slurmd from a temporary folder (installing Debian's slurm-wlm and munge first where they are missing);
//! the whole pipeline goes through `scripts/slurm/submit.sh --wait` with preprocessing and prediction in
//! two shards and must predict exactly what scripts/nnunet.sh predicts on the same data; a fold submitted
//! with `sbatch train-folds.sbatch`, as a user would, is signalled mid-training, requeues itself and
//! ends with the weights of an uninterrupted nn-train run. Needs root (the daemons run as SlurmUser=root)
//! and the daemons or apt-get: skips with a note otherwise, never under CI.

use nntools_tests::{binaries_dir, run, stderr, workspace};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The local cluster, stopped (its recorded daemons, by pid) when dropped, also when the test fails.
struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

fn local_cluster(action: &str, dir: &Path) -> Output {
    Command::new(workspace().join("scripts/slurm/local-cluster.sh")).arg(action).arg(dir).output().unwrap()
}

fn on_path(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success())
}

impl Cluster {
    /// The started cluster, or `None` with a note where this machine cannot run one (outside CI).
    fn start() -> Option<Self> {
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n");
        let installed = ["munged", "slurmctld", "slurmd", "sbatch"].iter().all(|p| on_path(p));
        if !root || !(installed || on_path("apt-get")) {
            let why = if root { "Slurm and MUNGE are not installed and there is no apt-get" } else { "not root" };
            assert!(std::env::var_os("CI").is_none(), "CI must run the Slurm test, but: {why}");
            eprintln!("skipped: a local Slurm cluster needs root and slurm-wlm/munge or apt-get: {why}");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let output = local_cluster("start", dir.path());
        let cluster = Cluster { conf: dir.path().join("slurm.conf"), dir };
        assert!(output.status.success(), "local-cluster.sh start: {}", stderr(&output));
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            format!("export SLURM_CONF={}", cluster.conf.display())
        );
        Some(cluster)
    }

    /// A Slurm client command (sbatch, scontrol, scancel, squeue) or script talking to this cluster.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.env("SLURM_CONF", &self.conf);
        command
    }

    fn client(&self, program: &str, args: &[&str]) -> String {
        let output = self.command(program).args(args).output().unwrap();
        assert!(output.status.success(), "{program} {args:?}: {}", stderr(&output));
        String::from_utf8(output.stdout).unwrap()
    }

    /// scontrol's record of a job: `Key=value` fields on one line.
    fn job(&self, id: &str) -> String {
        self.client("scontrol", &["show", "job", "-o", id])
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let output = local_cluster("stop", self.dir.path());
        if !output.status.success() {
            eprintln!("local-cluster.sh stop: {}", stderr(&output));
        }
    }
}

fn field<'a>(record: &'a str, key: &str) -> &'a str {
    let start = record.find(&format!(" {key}=")).unwrap_or_else(|| panic!("no {key} in {record}")) + key.len() + 2;
    record[start..].split_whitespace().next().unwrap()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fresh WORK with `from`'s fingerprint, plans and 2d data, as a user's preprocessed folder.
fn preprocessed_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("preprocessed")).unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .args([from.join("plans.json"), from.join("dataset_fingerprint.json")])
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
    let status =
        Command::new("cp").arg("-r").arg(from.join("preprocessed/2d")).arg(to.join("preprocessed")).status().unwrap();
    assert!(status.success());
}

const PIPELINE_OPTIONS: [&str; 15] = [
    "--configs",
    "2d,3d_fullres",
    "--folds",
    "0-4",
    "--epochs",
    "1",
    "--iters",
    "2",
    "--val-iters",
    "1",
    "--device",
    "cpu",
    "-j",
    "1",
    "--wait",
];

#[test]
fn submitted_pipeline_predicts_as_nnunet_sh_and_a_requeued_fold_ends_as_an_uninterrupted_one() {
    let Some(cluster) = Cluster::start() else { return };
    let data = tempfile::tempdir().unwrap();
    let raw = data.path().join("raw");
    let output = run(
        "nn-synth",
        &[
            &"-o",
            &raw,
            &"--cases",
            &"8",
            &"--test-cases",
            &"2",
            &"--min-size",
            &"20",
            &"--max-size",
            &"26",
            &"--seed",
            &"5",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let bin = binaries_dir();

    // the pipeline through Slurm: the plan job, 2 + 1 preprocessing jobs per configuration, a training
    // array per configuration, select, 2 prediction shards, postprocessing
    let slurm_work = data.path().join("slurm");
    let started = Instant::now();
    let submitted = cluster
        .command(workspace().join("scripts/slurm/submit.sh"))
        .arg(&raw)
        .arg(&slurm_work)
        .args(PIPELINE_OPTIONS)
        .args(["--parts", "2"])
        .env("NN_TOOLS_BIN", &bin)
        .output()
        .unwrap();
    let through_slurm = started.elapsed();
    assert!(submitted.status.success(), "submit.sh: {}", stderr(&submitted));
    let jobs: Vec<String> = String::from_utf8(submitted.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    let expected = "plan resample-2d-0 resample-2d-1 resample-2d resample-3d_fullres-0 resample-3d_fullres-1 \
        resample-3d_fullres train-2d train-3d_fullres select predict-0 predict-1 postprocess";
    assert_eq!(jobs.join(" "), expected);

    // scripts/nnunet.sh with the same options, --wait aside
    let nnunet_sh = |work: &Path| {
        Command::new(workspace().join("scripts/nnunet.sh"))
            .arg(&raw)
            .arg(work)
            .args(&PIPELINE_OPTIONS[..PIPELINE_OPTIONS.len() - 1])
            .env("NN_TOOLS_BIN", &bin)
            .output()
            .unwrap()
    };
    let local_work = data.path().join("local");
    let started = Instant::now();
    let local = nnunet_sh(&local_work);
    let on_one_machine = started.elapsed();
    assert!(local.status.success(), "nnunet.sh: {}", stderr(&local));
    eprintln!(
        "{} jobs through Slurm: {:.1} s; scripts/nnunet.sh: {:.1} s",
        jobs.len() + 8, // each training array's five tasks are jobs of their own
        through_slurm.as_secs_f64(),
        on_one_machine.as_secs_f64()
    );
    let predictions = |work: &Path| {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(work.join("predictions"))
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path();
                (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap())
            })
            .collect();
        files.sort();
        files
    };
    let from_slurm = predictions(&slurm_work);
    let names: Vec<&str> = from_slurm.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["synth_008.nii.gz", "synth_009.nii.gz"]);
    assert!(from_slurm == predictions(&local_work), "predictions through Slurm differ from nnunet.sh's");
    // the same WORK layout and stamps: nnunet.sh finds submit.sh's run complete and does nothing
    let continued = nnunet_sh(&slurm_work);
    assert!(continued.status.success(), "nnunet.sh after submit.sh: {}", stderr(&continued));
    let steps: Vec<String> = stderr(&continued).lines().filter(|l| l.starts_with("== ")).map(str::to_owned).collect();
    assert_eq!(steps.len(), 17, "{steps:?}");
    assert!(
        steps.iter().all(|s| s.ends_with(": current") || s.ends_with(": done") || s.starts_with("== done: ")),
        "nnunet.sh redid work after submit.sh: {steps:?}"
    );

    // pre-emption: sbatch train-folds.sbatch as a user submits it, from its path in the repository and
    // without telling it where the binaries are (unless the tests run another profile than release)
    let started = Instant::now();
    let work = data.path().join("preempted");
    preprocessed_copy(&slurm_work, &work);
    let budget = ["--epochs", "8", "--iters", "6", "--val-iters", "1"];
    let mut sbatch = cluster.command("sbatch");
    sbatch
        .args(["--parsable", "--array=0"])
        .arg(format!("--output={}/train-%A_%a.log", work.display()))
        .arg(workspace().join("scripts/slurm/train-folds.sbatch"))
        .arg(&raw)
        .arg(&work)
        .arg("2d")
        .args(budget)
        .args(["--device", "cpu", "-j", "1"])
        .env_remove("NN_TOOLS_BIN");
    if bin != workspace().join("target/release") {
        sbatch.arg("--bin").arg(&bin);
    }
    let output = sbatch.output().unwrap();
    assert!(output.status.success(), "sbatch: {}", stderr(&output));
    let task = format!("{}_0", String::from_utf8(output.stdout).unwrap().trim());
    let fold = work.join("runs/2d/fold_0");
    wait_until("the fold's first epoch", Duration::from_secs(120), || {
        std::fs::read_to_string(fold.join("log.jsonl")).is_ok_and(|log| !log.is_empty())
    });
    cluster.client("scancel", &["--batch", "--signal=TERM", &task]);
    wait_until("the requeue", Duration::from_secs(60), || field(&cluster.job(&task), "JobState") == "PENDING");
    // Slurm holds a requeued job for two minutes (its EligibleTime); slurmd refuses to relaunch a job
    // it is still cleaning up, so the test lets it finish before releasing the job at once
    std::thread::sleep(Duration::from_secs(10));
    cluster.client("scontrol", &["update", &format!("JobId={task}"), "StartTime=now"]);
    wait_until("the requeued fold", Duration::from_secs(300), || {
        !matches!(field(&cluster.job(&task), "JobState"), "PENDING" | "RUNNING" | "COMPLETING")
    });
    let record = cluster.job(&task);
    let log = std::fs::read_to_string(work.join(format!("train-{}.log", task))).unwrap();
    assert_eq!(field(&record, "JobState"), "COMPLETED", "{record}\n{log}");
    assert_eq!(field(&record, "Restarts"), "1", "{record}");
    assert!(log.contains("checkpoint_latest saved, continue with --resume"), "{log}");
    assert!(log.contains("stopped by SIGTERM; requeueing"), "{log}");
    eprintln!("the fold signalled, requeued and finished through Slurm: {:.1} s", started.elapsed().as_secs_f64());

    let reference = data.path().join("uninterrupted");
    let mut args = nntools_tests::os_args(&[
        &"--plans",
        &work.join("plans.json"),
        &"-c",
        &"2d",
        &"--data",
        &work.join("preprocessed/2d"),
        &"--dataset",
        &raw.join("dataset.json"),
        &"--fold",
        &"0",
        &"-o",
        &reference,
        &"--device",
        &"cpu",
        &"-j",
        &"1",
        &"-q",
    ]);
    args.extend(budget.iter().map(Into::into));
    let output = Command::new(nntools_tests::binary("nn-train")).args(&args).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let weights = |dir: &Path| std::fs::read(dir.join("checkpoint_final.safetensors")).unwrap();
    assert!(weights(&fold) == weights(&reference.join("fold_0")), "the requeued fold's weights differ");
}
