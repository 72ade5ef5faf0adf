//! `--part K/N` and `nn-infer --continue` on a tiny synthetic dataset: two shards then an unsharded pass of
//! nn-resample leave byte for byte what one unsharded run leaves; two nn-infer shards into one folder
//! write byte for byte what one unsharded run writes; `--continue` redoes nothing that is current, and
//! redoes a case whose output is gone and every case when the options change. Without mirroring (--no-tta),
//! which would cost 8 times as much.

use nntools_tests::{SyntheticDataset, binary, run, stderr};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TEST_CASES: usize = 5;

fn dataset() -> SyntheticDataset {
    SyntheticDataset::from_flags(
        &[
            "--cases",
            "5",
            "--test-cases",
            "5",
            "--channels",
            "1",
            "--min-size",
            "16",
            "--max-size",
            "20",
            "--seed",
            "7",
        ],
        &[],
    )
}

/// Every file of `dir` (not its subfolders) by name, with its bytes.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// Runs `tool` twice at once, as parts 0/2 and 1/2 of `args`.
fn two_parts_at_once(tool: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) {
    let children: Vec<_> = ["0/2", "1/2"]
        .map(|part| Command::new(binary(tool)).args(args).args(["--part", part]).spawn().unwrap())
        .into_iter()
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{tool}: {}", stderr(&output));
    }
}

#[test]
fn resample_shards_then_a_final_pass_equal_one_run() {
    let s = dataset();
    let whole = s.dir.path().join("whole");
    let output = s.resample("3d_fullres", &whole, &["-q"]);
    assert!(output.status.success(), "{}", stderr(&output));

    let sharded = s.dir.path().join("sharded");
    let output = s.resample("3d_fullres", &sharded, &["-q", "--part", "1/2"]);
    assert!(output.status.success(), "{}", stderr(&output));
    // the sorted cases 1 and 3 of 0..4, four files each, and no manifest
    let mut names: Vec<String> = contents(&sharded).into_keys().collect();
    names.retain(|n| n.ends_with(".json"));
    assert_eq!(names, ["synth_001.json", "synth_003.json"]);
    two_parts_at_once(
        "nn-resample",
        &[&"--plans", &s.plans, &"-c", &"3d_fullres", &"-i", &s.raw, &"-o", &sharded, &"-q"],
    );
    assert!(!sharded.join("manifest.json").exists(), "a shard writes no manifest");
    assert_eq!(contents(&sharded).len(), 5 * 4);

    let output = s.resample("3d_fullres", &sharded, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("0 case(s) preprocessed, 5 already current"), "{}", stderr(&output));
    assert_eq!(contents(&sharded), contents(&whole), "shards + final pass = one run, byte for byte");
}

/// A case's record's identity: redone cases get a new record (removed before the case is rewritten), even
/// where the rewritten outputs are the same bytes and so keep their mtimes.
fn records(dir: &Path) -> BTreeMap<String, (i64, i64, u64)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".made_by.json"))
        .map(|e| {
            let meta = e.metadata().unwrap();
            (e.file_name().to_string_lossy().into_owned(), (meta.mtime(), meta.mtime_nsec(), meta.ino()))
        })
        .collect()
}

#[test]
fn infer_shards_equal_one_run_and_continue_redoes_only_what_changed() {
    let s = dataset();
    let pre = s.dir.path().join("pre");
    let output = s.resample("3d_fullres", &pre, &["-q"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let model = s.dir.path().join("run");
    let output = run(
        "nn-train",
        &[
            &"--plans",
            &s.plans,
            &"-c",
            &"3d_fullres",
            &"--data",
            &pre,
            &"--dataset",
            &s.raw.join("dataset.json"),
            &"--fold",
            &"0",
            &"-o",
            &model,
            &"--epochs",
            &"1",
            &"--iters",
            &"2",
            &"--val-iters",
            &"1",
            &"--device",
            &"cpu",
            &"-q",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let images = s.raw.join("imagesTs");
    let infer = |out: &PathBuf, extra: &[&str]| -> Output {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"-m", &model, &"-i", &images, &"-o", out, &"--device", &"cpu", &"-q", &"--no-tta"];
        args.extend(extra.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>));
        run("nn-infer", &args)
    };

    let whole = s.dir.path().join("whole");
    let output = infer(&whole, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let expected = contents(&whole);
    // a label map and a record per case, plans.json and dataset.json
    assert_eq!(expected.len(), 2 * TEST_CASES + 2, "{:?}", expected.keys());

    let sharded = s.dir.path().join("sharded");
    let output = infer(&sharded, &["--part", "0/2"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(records(&sharded).len(), 3, "part 0/2 of 5 sorted cases: 0, 2 and 4");
    std::fs::remove_dir_all(&sharded).unwrap();
    two_parts_at_once(
        "nn-infer",
        &[&"-m", &model, &"-i", &images, &"-o", &sharded, &"--device", &"cpu", &"-q", &"--no-tta"],
    );
    assert_eq!(contents(&sharded), expected, "two parts into one folder = one run, byte for byte");

    // nothing to redo: no case is rewritten
    let before = records(&sharded);
    let output = infer(&sharded, &["--continue"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(records(&sharded), before, "--continue redid a current case");
    assert_eq!(contents(&sharded), expected);

    // a missing output: only that case is redone
    let gone = expected.keys().find(|n| n.ends_with(".nii.gz")).unwrap().clone();
    let gone_id = gone.trim_end_matches(".nii.gz").to_owned();
    std::fs::remove_file(sharded.join(&gone)).unwrap();
    let output = infer(&sharded, &["--continue", "--part", "1/2"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!sharded.join(&gone).exists(), "{gone_id} is in part 0/2, not redone by part 1/2");
    assert_eq!(records(&sharded), before, "part 1/2 redid a current case");
    let output = infer(&sharded, &["--continue"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let after = records(&sharded);
    for (name, identity) in &after {
        let redone = before[name] != *identity;
        assert_eq!(redone, name.starts_with(&format!("{gone_id}.")), "{name} redone: {redone}");
    }
    assert_eq!(contents(&sharded), expected);

    // other options (mirroring would do as well, but costs 8 times as much): every case is redone, and
    // again nothing the next time
    let output = infer(&sharded, &["--continue", "--step", "1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let other_step = records(&sharded);
    assert!(after.iter().all(|(name, identity)| other_step[name] != *identity), "--step 1 redid every case");
    let record = nntools_tests::read_json(&sharded.join(format!("{gone_id}.made_by.json")));
    assert_eq!(record["made_by"]["step"], 1.0, "{record}");
    let output = infer(&sharded, &["--continue", "--step", "1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(records(&sharded), other_step);
    // without --continue, every case is predicted again
    let output = infer(&sharded, &["--step", "1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(records(&sharded).iter().all(|(name, identity)| other_step[name] != *identity));
}
