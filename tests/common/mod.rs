//! Helpers for the end-to-end tests: locating the built binaries and the shared ground truth.
//!
//! The binaries are built on first use by each test executable, in its own profile (`cargo build
//! --release` under `cargo test --release`), so that a test never runs a binary older than the
//! libraries it is built from; when they are current (as after `scripts/test.sh`'s build) that build
//! does nothing and takes about a second. Tests that need `../shared` (nnU-Net's reference
//! outputs and the real data sets) skip with a note when it is absent, as in a user's clone, but fail
//! under CI (`CI` set), where it must be present.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, PoisonError};

pub mod fuzzing;
pub mod reference;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the workspace").to_owned()
}

/// `../shared` beside the workspace, or `None` (with a note) when it is absent outside CI.
pub fn shared() -> Option<PathBuf> {
    let shared = workspace().join("../shared");
    if shared.join("data").is_dir() {
        return Some(shared);
    }
    assert!(std::env::var_os("CI").is_none(), "CI needs ../shared beside the workspace");
    eprintln!("skipped: needs ../shared (nnU-Net reference data), which this clone does not have");
    None
}

/// The folder of this test executable's profile (`target/release` under `cargo test --release`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_owned()
}

/// Brings workspace binaries up to date with cargo (`--bin NAME`, or `--bins` for all), in this test
/// executable's profile and target folder, once per selection and test executable. Cargo has released
/// its build lock by the time tests run; PATH and LIBTORCH_USE_PYTORCH are inherited, as the build
/// needs them.
fn build(selection: &str) {
    static BUILT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if built.contains(selection) || built.contains("--bins") {
        return;
    }
    let profile_dir = profile_dir();
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()).expect("a profile folder") {
        "debug" => "dev",
        name => name,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(workspace())
        .args(["build", "--locked", "--workspace", "--profile", profile, "--target-dir"])
        .arg(profile_dir.parent().expect("target/<profile>"))
        .args(selection.split(' '))
        .output()
        .expect("cargo starts");
    assert!(output.status.success(), "cargo build {selection} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    built.insert(selection.to_owned());
}

/// Path of a workspace binary, built first if it is not current.
pub fn binary(name: &str) -> PathBuf {
    build(&format!("--bin {name}"));
    profile_dir().join(name)
}

/// The folder of all workspace binaries, each built first if it is not current: for scripts that run
/// several tools (`NN_TOOLS_BIN`).
pub fn binaries_dir() -> PathBuf {
    build("--bins");
    profile_dir()
}

/// Runs a workspace binary with arguments; never panics on a failing exit code.
pub fn run(name: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(binary(name)).args(args.iter().map(|a| a.as_ref())).output().expect("binary starts")
}

/// Command-line arguments as owned strings, for commands built more than once.
pub fn os_args(items: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<std::ffi::OsString> {
    items.iter().map(|a| a.as_ref().to_owned()).collect()
}

/// `count` seeded moments, in milliseconds within `range`, at which a crash test kills a run: random
/// enough to land anywhere in it, fixed so that a failure reproduces.
pub fn kill_moments(seed: u64, count: usize, range: std::ops::Range<u64>) -> Vec<u64> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..count).map(|_| rng.random_range(range.clone())).collect()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Whether a tool refused `--precision bf16` because this CPU lacks native bfloat16; the bf16 tests then
/// skip, saying so.
pub fn bf16_refused(output: &Output) -> bool {
    let refused = output.status.code() == Some(2) && stderr(output).contains("no native bfloat16");
    if refused {
        eprintln!("skipped: this CPU has no native bfloat16 ({})", stderr(output).trim());
    }
    refused
}

/// Asserts success and returns stdout parsed as JSON.
pub fn json_stdout(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "failed with {:?}: {}", output.status, stderr(output));
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

/// Relative difference |a - b| / |b| (absolute when b is 0).
pub fn relative_difference(a: f64, b: f64) -> f64 {
    if b == 0.0 { a.abs() } else { ((a - b) / b).abs() }
}

/// Asserts two JSON documents are equal, numbers to `relative_tolerance`; extra keys in `ours` are
/// allowed. Reports the path of the first difference.
pub fn assert_json_matches(
    ours: &serde_json::Value,
    reference: &serde_json::Value,
    relative_tolerance: f64,
    path: &str,
) {
    use serde_json::Value;
    match (ours, reference) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, expected) in b {
                let got = a.get(key).unwrap_or_else(|| panic!("{path}/{key}: missing"));
                assert_json_matches(got, expected, relative_tolerance, &format!("{path}/{key}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: length");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_json_matches(x, y, relative_tolerance, &format!("{path}[{i}]"));
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!(relative_difference(a, b) <= relative_tolerance, "{path}: ours {a}, reference {b}");
        }
        _ => assert_eq!(ours, reference, "{path}"),
    }
}

/// Reads a JSON file.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A synthetic raw dataset (nn-synth, 2 channels) with its fingerprint and plans, in a temporary folder.
pub struct SyntheticDataset {
    pub dir: tempfile::TempDir,
    pub raw: PathBuf,
    pub plans: PathBuf,
}

impl SyntheticDataset {
    /// `cases` two-channel cases of 40-64 voxels per axis, planned with nn-plan.
    pub fn new(cases: usize) -> Self {
        Self::with(cases, 2, [40, 64])
    }

    /// `cases` cases of `channels` channels and `sizes` voxels per axis, planned with nn-plan.
    pub fn with(cases: usize, channels: usize, sizes: [usize; 2]) -> Self {
        let [cases, channels, min, max] = [cases, channels, sizes[0], sizes[1]].map(|v| v.to_string());
        Self::from_flags(
            &["--cases", &cases, "--channels", &channels, "--min-size", &min, "--max-size", &max, "--seed", "5"],
            &[],
        )
    }

    /// A dataset made by nn-synth with `synth_flags`, planned by nn-plan with `plan_flags`.
    pub fn from_flags(synth_flags: &[&str], plan_flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("Dataset901_Synthetic");
        let synth = Command::new(binary("nn-synth")).arg("-o").arg(&raw).args(synth_flags).output().unwrap();
        assert!(synth.status.success(), "{}", stderr(&synth));
        // beside the plans, as nnU-Net's preprocessed folder and the pipeline's work folder hold it
        let fingerprint = dir.path().join("dataset_fingerprint.json");
        assert!(run("nn-fingerprint", &[&raw, &"-o", &fingerprint]).status.success());
        let plans = dir.path().join("plans.json");
        let plan = Command::new(binary("nn-plan"))
            .args(
                [&"--fingerprint" as &dyn AsRef<std::ffi::OsStr>, &fingerprint, &"--dataset", &raw, &"-o", &plans]
                    .map(|a| a.as_ref()),
            )
            .args(plan_flags)
            .output()
            .unwrap();
        assert!(plan.status.success(), "{}", stderr(&plan));
        Self { dir, raw, plans }
    }

    /// Runs nn-resample for `configuration` into `out` with extra flags.
    pub fn resample(&self, configuration: &str, out: &Path, extra: &[&str]) -> Output {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"--plans", &self.plans, &"-c", &configuration, &"-i", &self.raw, &"-o", &out];
        args.extend(extra.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>));
        run("nn-resample", &args)
    }
}
