//! `nn-infer -i -`: cases read from stdin with the model loaded once, one JSON line per case on stdout,
//! with the shared reference model (../shared/reference/infer) on two Hippocampus images, without TTA.

use nntools_tests::{binary, run, shared, stderr};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// File names and bytes of a folder's files, sorted by name.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_stream_with_bad_lines_reports_each_case_and_writes_what_batch_writes() {
    let Some(shared) = shared() else { return };
    let reference = shared.join("reference/infer");
    let (model, images) = (reference.join("model"), reference.join("images"));
    let [first, second] = ["hippocampus_017_0000.nii.gz", "hippocampus_019_0000.nii.gz"].map(|n| images.join(n));
    let out = tempfile::tempdir().unwrap();
    let [batch, streamed] = ["batch", "stream"].map(|name| out.path().join(name));
    let common = ["--no-tta", "--save-probabilities", "--device", "cpu", "-q"];

    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"-m", &model, &"-i", &first, &second, &"-o", &batch];
    args.extend(common.iter().map(|f| f as &dyn AsRef<std::ffi::OsStr>));
    let output = run("nn-infer", &args);
    assert!(output.status.success(), "{}", stderr(&output));

    // a missing file, a truncated one, and a tab-separated line of two cases' files between the good cases
    let missing = out.path().join("missing_0000.nii.gz");
    let corrupt = out.path().join("corrupt_0000.nii.gz");
    std::fs::write(&corrupt, &std::fs::read(&second).unwrap()[..400]).unwrap();
    let lines = [&first, &missing, &corrupt].map(|p| p.display().to_string());
    let input = format!(
        "{}\n\n{}\n{}\n{}\t{}\n{}\n",
        lines[0],
        lines[1],
        lines[2],
        first.display(),
        second.display(),
        second.display()
    );
    let mut child = Command::new(binary("nn-infer"))
        .args(["-m".as_ref(), model.as_os_str(), "-i".as_ref(), "-".as_ref(), "-o".as_ref(), streamed.as_os_str()])
        .args(common)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(2), "every failure is bad input: {}", stderr(&output));
    assert!(stderr(&output).contains("3 of 5 cases failed"), "{}", stderr(&output));

    let records: Vec<serde_json::Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let cases: Vec<&str> = records.iter().map(|r| r["case"].as_str().unwrap()).collect();
    assert_eq!(cases, ["hippocampus_017", "missing", "corrupt", "hippocampus_017", "hippocampus_019"]);
    for (record, case) in [(&records[0], "hippocampus_017"), (&records[4], "hippocampus_019")] {
        assert_eq!(record["output"], streamed.join(format!("{case}.nii.gz")).display().to_string(), "{record}");
        assert!(record["seconds"].as_f64().unwrap() > 0.0, "{record}");
        assert!(record.get("error").is_none(), "{record}");
    }
    let error = |i: usize| records[i]["error"].as_str().unwrap().to_owned();
    assert!(error(1).contains("missing_0000.nii.gz") && error(1).contains("no such image file"), "{}", error(1));
    assert!(error(2).contains("corrupt_0000.nii.gz"), "{}", error(2));
    assert!(error(3).contains("several cases"), "{}", error(3));
    // the same files, byte for byte: label maps, probabilities, properties, made_by records, plans, dataset.json
    let (ours, theirs) = (files(&streamed), files(&batch));
    let names: Vec<&str> = ours.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.len(), 10, "{names:?}");
    assert_eq!(names, theirs.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>());
    for ((name, a), (_, b)) in ours.iter().zip(&theirs) {
        assert!(a == b, "{name} differs from batch nn-infer's");
    }
}

#[test]
fn stdin_input_refuses_parts_resuming_and_other_inputs() {
    let Some(shared) = shared() else { return };
    let reference = shared.join("reference/infer");
    let (model, images) = (reference.join("model"), reference.join("images"));
    let out = tempfile::tempdir().unwrap();
    let output_dir = out.path().join("pred");
    let cases: [(Vec<&dyn AsRef<std::ffi::OsStr>>, &str); 3] =
        [(vec![&"--part", &"0/2"], "--part"), (vec![&"--continue"], "--continue"), (vec![&images], "only input")];
    for (extra, expected) in cases {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"-m", &model, &"-o", &output_dir, &"-i", &"-"];
        args.extend(extra);
        let output = run("nn-infer", &args);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{message}");
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(message.contains(expected), "{message}");
        assert!(output.stdout.is_empty());
    }
    assert!(!output_dir.exists());
}
