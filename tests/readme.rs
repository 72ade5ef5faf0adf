//! README's tutorial, run as a new user would: every ```sh block in order, in one shell, in an empty
//! folder, with the built binaries on PATH. A command that README shows and that fails here fails the
//! test, so README cannot drift from the tools.

use nntools_tests::{binaries_dir, workspace};
use std::process::Command;

/// The ```sh blocks of `markdown`, in order.
fn shell_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "README ends inside a code block");
    blocks
}

#[test]
fn readme_tutorial_runs_as_written() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let blocks = shell_blocks(&readme);
    assert!(blocks.len() >= 6, "the tutorial's blocks: {}", blocks.len());
    let dir = tempfile::tempdir().unwrap();
    let bin = binaries_dir();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let script = format!("set -euo pipefail\nset -x\n{}", blocks.concat());
    let output =
        Command::new("bash").arg("-c").arg(&script).current_dir(dir.path()).env("PATH", path).output().unwrap();
    assert!(output.status.success(), "README's tutorial failed:\n{}", String::from_utf8_lossy(&output.stderr));

    // what the tutorial promises is there
    let work = dir.path().join("work");
    for file in [
        "plans.json",
        "inference_plan.json",
        "runs/3d_fullres/fold_0/progress.png",
        "runs/2d/fold_4/checkpoint_final.json",
    ] {
        assert!(work.join(file).is_file(), "{file} missing");
    }
    let count = |folder: &str| std::fs::read_dir(work.join(folder)).map(|d| d.count()).unwrap_or(0);
    assert_eq!(count("predictions"), 2, "one prediction per test image");
    assert!(count("overlays") >= 2, "an overlay per validation case");
    let rgb_predictions: Vec<_> = std::fs::read_dir(dir.path().join("work2d/predictions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    assert_eq!(rgb_predictions.len(), 2, "a PNG label map per RGB test image: {rgb_predictions:?}");
}

#[test]
fn shell_blocks_are_found_in_order() {
    let markdown = "text\n```sh\na\nb\n```\n```json\n{}\n```\n    indented\n```sh\nc\n```\n";
    assert_eq!(shell_blocks(markdown), ["a\nb\n", "c\n"]);
}
