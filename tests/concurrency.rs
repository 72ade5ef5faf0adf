//! Concurrent writers on one output never leave a corrupt or mixed output: two nn-resample on one folder
//! and two nn-infer with overlapping cases into one folder leave what one run leaves, byte for byte; a
//! fold another process holds is refused with the holder named; a holder killed with SIGKILL blocks no
//! rerun. Runs on tiny synthetic datasets, so it needs no ../shared.

use nntools_io::OutputLock;
use nntools_tests::{SyntheticDataset, binary, os_args, stderr};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Every file under `dir` (hidden ones included: no lock file may be left), by relative path.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.strip_prefix(dir).unwrap().to_owned(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn assert_same_files(got: &Path, expected: &Path) {
    let (got, expected) = (contents(got), contents(expected));
    assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "same files, no leftovers");
    for (name, bytes) in &expected {
        assert!(got[name] == *bytes, "{} differs from the single run's", name.display());
    }
}

/// Starts `tool` with each argument list at once and waits for all.
fn run_at_once(tool: &str, arg_lists: &[Vec<OsString>]) -> Vec<Output> {
    let children: Vec<_> = arg_lists
        .iter()
        .map(|args| {
            Command::new(binary(tool))
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children.into_iter().map(|child| child.wait_with_output().unwrap()).collect()
}

/// `nn-resample: N case(s) preprocessed, M already current` -> N.
fn processed(output: &Output) -> usize {
    let text = stderr(output);
    let line = text.lines().find(|l| l.contains("case(s) preprocessed")).unwrap_or_else(|| panic!("{text}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn two_resamples_on_one_folder_do_disjoint_work_and_leave_one_runs_bytes() {
    let cases = 12;
    let data = SyntheticDataset::with(cases, 1, [24, 40]);
    let single = data.dir.path().join("single");
    let output = data.resample("3d_fullres", &single, &["-q"]);
    assert!(output.status.success(), "{}", stderr(&output));

    let shared = data.dir.path().join("shared");
    let args = os_args(&[&"--plans", &data.plans, &"-c", &"3d_fullres", &"-i", &data.raw, &"-o", &shared, &"-j", &"1"]);
    let outputs = run_at_once("nn-resample", &[args.clone(), args]);
    for output in &outputs {
        assert!(output.status.success(), "{}", stderr(output));
    }
    // each case is made under its lock and checked under it: made once, by one of the two
    assert_eq!(outputs.iter().map(processed).sum::<usize>(), cases, "every case made exactly once");
    assert_same_files(&shared, &single);
}

/// A 3d_fullres run folder saved untrained (`--epochs 0`: prediction is what is tested here) on a tiny
/// dataset, and the dataset.
fn untrained_run() -> (SyntheticDataset, PathBuf) {
    let data = SyntheticDataset::with(6, 1, [20, 28]);
    let pre = data.dir.path().join("pre");
    let output = data.resample("3d_fullres", &pre, &["-q"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let run_dir = data.dir.path().join("run");
    let output = train(&data, &pre, &run_dir, "all", &["--epochs", "0"]);
    assert!(output.status.success(), "{}", stderr(&output));
    (data, run_dir)
}

fn train_args(data: &SyntheticDataset, pre: &Path, run_dir: &Path, fold: &str, extra: &[&str]) -> Vec<OsString> {
    let dataset_json = data.raw.join("dataset.json");
    let mut args = os_args(&[
        &"--plans",
        &data.plans,
        &"-c",
        &"3d_fullres",
        &"--data",
        &pre,
        &"--dataset",
        &dataset_json,
        &"--fold",
        &fold,
        &"-o",
        &run_dir,
        &"--device",
        &"cpu",
        &"-q",
    ]);
    args.extend(extra.iter().map(OsString::from));
    args
}

fn train(data: &SyntheticDataset, pre: &Path, run_dir: &Path, fold: &str, extra: &[&str]) -> Output {
    Command::new(binary("nn-train")).args(train_args(data, pre, run_dir, fold, extra)).output().unwrap()
}

#[test]
fn overlapping_infers_into_one_folder_leave_one_runs_bytes() {
    let (data, run_dir) = untrained_run();
    // cases 0-3 and 0, 1, 4, 5 of the six: two shards that start with the same two cases
    let mut images: Vec<PathBuf> =
        std::fs::read_dir(data.raw.join("imagesTr")).unwrap().map(|e| e.unwrap().path()).collect();
    images.sort();
    assert_eq!(images.len(), 6);
    let [first, second] = ["first", "second"].map(|n| data.dir.path().join(n));
    for (folder, picked) in [(&first, [0, 1, 2, 3]), (&second, [0, 1, 4, 5])] {
        std::fs::create_dir_all(folder).unwrap();
        for image in picked.map(|i| &images[i]) {
            std::fs::copy(image, folder.join(image.file_name().unwrap())).unwrap();
        }
    }
    let infer_args = |input: &Path, output: &Path| {
        os_args(&[
            &"-m",
            &run_dir,
            &"-i",
            &input,
            &"-o",
            &output,
            &"--save-probabilities",
            &"--no-tta",
            &"--device",
            &"cpu",
            &"-q",
        ])
    };
    let single = data.dir.path().join("single");
    let all = data.raw.join("imagesTr");
    let output = Command::new(binary("nn-infer")).args(infer_args(&all, &single)).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        contents(&single).len(),
        6 * 4 + 2,
        "label map, probabilities, properties and made_by record per case, plans and dataset"
    );

    let shared = data.dir.path().join("shared");
    for output in run_at_once("nn-infer", &[infer_args(&first, &shared), infer_args(&second, &shared)]) {
        assert!(output.status.success(), "{}", stderr(&output));
    }
    assert_same_files(&shared, &single);
}

#[test]
fn a_fold_another_process_holds_is_refused_with_the_holder_named_and_left_as_it_was() {
    let data = SyntheticDataset::with(5, 1, [20, 28]);
    let pre = data.dir.path().join("pre");
    let output = data.resample("3d_fullres", &pre, &["-q"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let run_dir = data.dir.path().join("run");
    let output = train(&data, &pre, &run_dir, "0", &["--epochs", "0"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let fold = run_dir.join("fold_0");
    let held = OutputLock::try_acquire(&fold).unwrap().expect("nothing else holds the fold");
    let before = contents(&run_dir);

    let output = train(&data, &pre, &run_dir, "0", &["--epochs", "1", "--iters", "1", "--val-iters", "1"]);
    assert_eq!(output.status.code(), Some(2), "a fold trained twice is a usage mistake: {}", stderr(&output));
    let message = stderr(&output);
    let holder = format!("in use by {}", OutputLock::holder(&fold).unwrap());
    assert!(message.contains(&format!("{}: {holder}", fold.display())), "{message}");
    assert!(message.contains(&format!("(pid {} on host ", std::process::id())), "{message}");
    assert_eq!(contents(&run_dir), before, "the refused run changed nothing");
    drop(held);
    assert!(!OutputLock::file_of(&fold).exists(), "a released lock leaves no file");
}

#[test]
fn a_holder_killed_with_sigkill_blocks_no_rerun() {
    let data = SyntheticDataset::with(5, 1, [20, 28]);
    let pre = data.dir.path().join("pre");
    let output = data.resample("3d_fullres", &pre, &["-q"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let run_dir = data.dir.path().join("run");
    let fold = run_dir.join("fold_0");
    let lock_file = OutputLock::file_of(&fold);
    // a training long enough to be caught holding its fold
    let mut holder = Command::new(binary("nn-train"))
        .args(train_args(&data, &pre, &run_dir, "0", &["--epochs", "1000", "--iters", "2", "--val-iters", "1"]))
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !std::fs::read_to_string(&lock_file).is_ok_and(|t| t.contains(&format!("(pid {} ", holder.id()))) {
        assert!(start.elapsed() < Duration::from_secs(120), "nn-train never took its fold's lock");
        assert!(holder.try_wait().unwrap().is_none(), "nn-train ended before it was caught holding the fold");
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = train(&data, &pre, &run_dir, "0", &["--epochs", "1", "--iters", "1", "--val-iters", "1"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    let expected = format!("in use by nn-train (pid {} on host ", holder.id());
    assert!(stderr(&refused).contains(&expected), "{}", stderr(&refused));

    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(lock_file.exists(), "SIGKILL leaves the lock file, but not the lock");
    let output = train(&data, &pre, &run_dir, "0", &["--epochs", "1", "--iters", "1", "--val-iters", "1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(fold.join("checkpoint_final.safetensors").is_file(), "the rerun trained the fold");
    assert!(!lock_file.exists(), "the rerun took the lock and removed its file");
}
