//! Memory bounds on CT-sized volumes: nn-resample and nn-eval hold at most `-j` cases at once, so with
//! `-j 1` their peak resident memory stays under a fixed multiple of one case's float32 volume, however
//! many cases there are. Peak RSS comes from `/usr/bin/time -v` (the test skips, with a note, without
//! it). Bounds per case (documented in README's reliability section), in units of the case's float32
//! volume, so that holding a second case at once would exceed them:
//! - nn-resample, resampling included (cubic splines and per-label indicators in float64, as nnU-Net
//!   computes them): 14 x + 100 MB;
//! - nn-eval with surface metrics: 4 x + 100 MB.

use nntools_tests::{binary, run, stderr};
use std::path::Path;
use std::process::Command;

/// Peak RSS in bytes of `tool args`, which must succeed.
fn peak_rss(tool: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> u64 {
    let output = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(binary(tool))
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap();
    let err = stderr(&output);
    assert!(output.status.success(), "{tool}: {err}");
    let kb: u64 = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes): "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in: {err}"));
    kb * 1024
}

#[test]
fn ct_sized_cases_stay_within_their_memory_bounds() {
    if !Path::new("/usr/bin/time").is_file() {
        eprintln!("skipped: needs /usr/bin/time");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw");
    // two CT-like cases of 330-360 voxels per axis (about 40 million voxels each)
    let synth = run(
        "nn-synth",
        &[
            &"-o",
            &raw,
            &"--ct",
            &"--cases",
            &"2",
            &"--labels",
            &"3",
            &"--isotropic",
            &"--min-size",
            &"330",
            &"--max-size",
            &"360",
            &"--seed",
            &"4",
        ],
    );
    assert!(synth.status.success(), "{}", stderr(&synth));
    let largest = std::fs::read_dir(raw.join("imagesTr"))
        .unwrap()
        .map(|e| nntools_io::read_image(&e.unwrap().path()).unwrap().data.len() as u64)
        .max()
        .unwrap();
    let volume = largest * 4;
    let (resample_bound, eval_bound) = (volume * 14 + (100 << 20), volume * 4 + (100 << 20));
    let fingerprint = dir.path().join("fingerprint.json");
    let plans = dir.path().join("plans.json");
    assert!(run("nn-fingerprint", &[&raw, &"-o", &fingerprint]).status.success());
    assert!(run("nn-plan", &[&"--fingerprint", &fingerprint, &"--dataset", &raw, &"-o", &plans]).status.success());

    let resample = peak_rss(
        "nn-resample",
        &[&"--plans", &plans, &"-c", &"3d_fullres", &"-i", &raw, &"-o", &dir.path().join("pre"), &"-j", &"1", &"-q"],
    );
    let eval = peak_rss(
        "nn-eval",
        &[
            &"--ref",
            &raw.join("labelsTr"),
            &"--pred",
            &raw.join("labelsTr"),
            &"-o",
            &dir.path().join("summary.json"),
            &"-j",
            &"1",
        ],
    );
    let mb = |b: u64| b >> 20;
    eprintln!(
        "largest case {} MB as float32: nn-resample -j 1 peak {} MB, nn-eval -j 1 peak {} MB",
        mb(volume),
        mb(resample),
        mb(eval)
    );
    assert!(resample <= resample_bound, "nn-resample peak {} MB over {} MB", mb(resample), mb(resample_bound));
    assert!(eval <= eval_bound, "nn-eval peak {} MB over {} MB", mb(eval), mb(eval_bound));
}
