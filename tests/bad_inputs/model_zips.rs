//! Hostile and broken model zips for `nn-model install`: each refused with exit 2 and one line naming
//! the zip (and the entry), before anything lands in the results folder. The zips are built here: a
//! valid nnU-Net layout, with one entry's name swapped byte for byte in the finished archive (local
//! header and central directory alike), so that names a zip writer would refuse can be made too.

use super::{Report, temporaries};
use nntools_tests::os_args as args;
use std::io::Write;
use std::path::Path;

const TRAINER: &str = "Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres";

/// An entry name that a spoilt variant replaces, byte for byte (the replacement has its length).
const PLACEHOLDER: &str = "Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres/fold_0/notes.txt";
/// Another entry, of the placeholder's length: the name a duplicate takes.
const TWIN: &str = "Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres/fold_0/notes.txu";

/// How one variant differs from the valid zip.
enum Spoil {
    /// The placeholder entry renamed (the name has the placeholder's length).
    Rename(String),
    /// An extra symbolic link entry.
    Symlink,
    /// An extra entry of this many zero bytes (deflated to a few kilobytes).
    Zeros(usize),
    /// The zip's bytes replaced.
    Bytes(fn(Vec<u8>) -> Vec<u8>),
}

/// `name` lengthened by trailing `/x` components (or `x`s) to exactly the placeholder's length.
fn padded(name: &str) -> String {
    let mut padded = name.to_owned();
    while padded.len() + 2 <= PLACEHOLDER.len() {
        padded.push_str("/x");
    }
    while padded.len() < PLACEHOLDER.len() {
        padded.push('x');
    }
    padded
}

fn write_zip(path: &Path, spoil: &Spoil) {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, contents) in [
        (format!("{TRAINER}/plans.json"), b"{}\n".to_vec()),
        (format!("{TRAINER}/dataset.json"), b"{}\n".to_vec()),
        (format!("{TRAINER}/fold_0/checkpoint_final.pth"), b"not read by install".to_vec()),
        (PLACEHOLDER.to_owned(), b"a note".to_vec()),
        (TWIN.to_owned(), b"another note".to_vec()),
    ] {
        zip.start_file(name, options).unwrap();
        zip.write_all(&contents).unwrap();
    }
    match spoil {
        Spoil::Symlink => zip.add_symlink(format!("{TRAINER}/fold_0/link"), "/etc/passwd", options).unwrap(),
        Spoil::Zeros(count) => {
            zip.start_file(format!("{TRAINER}/fold_0/zeros.bin"), options).unwrap();
            zip.write_all(&vec![0u8; *count]).unwrap();
        }
        Spoil::Rename(_) | Spoil::Bytes(_) => {}
    }
    let mut bytes = zip.finish().unwrap().into_inner();
    match spoil {
        Spoil::Rename(name) => {
            let (from, to) = (PLACEHOLDER.as_bytes(), name.as_bytes());
            assert_eq!(from.len(), to.len(), "{name}");
            let mut at = 0;
            while let Some(found) = bytes[at..].windows(from.len()).position(|w| w == from) {
                bytes[at + found..at + found + from.len()].copy_from_slice(to);
                at += found + from.len();
            }
        }
        Spoil::Bytes(spoil) => bytes = spoil(bytes),
        Spoil::Symlink | Spoil::Zeros(_) => {}
    }
    std::fs::write(path, bytes).unwrap();
}

fn entries_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count())
}

/// The zip's first entry's data: after its local header (30 bytes), name and extra field.
fn first_entry_data(bytes: &[u8]) -> usize {
    let field = |at: usize| usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
    30 + field(26) + field(28)
}

#[test]
fn hostile_model_zips() {
    let variants: Vec<(&str, Spoil)> = vec![
        ("zip-slip ../", Spoil::Rename(padded("../../../../tmp/nn-model-slip"))),
        ("nested zip-slip", Spoil::Rename(padded(&format!("{TRAINER}/../../../x")))),
        ("absolute path", Spoil::Rename(padded("/tmp/nn-model-absolute"))),
        ("entry outside the trainer folders", Spoil::Rename(padded("README"))),
        (
            "a file beside the trainer folders",
            Spoil::Rename(format!("Dataset004_Hippocampus/{}", "n".repeat(PLACEHOLDER.len() - 23))),
        ),
        ("a backslash path", Spoil::Rename(padded(&format!("{TRAINER}\\..\\..\\x")))),
        ("duplicate name", Spoil::Rename(TWIN.to_owned())),
        ("a file and a folder of one name", Spoil::Rename(padded(&format!("{TRAINER}/plans.json")))),
        ("symbolic link", Spoil::Symlink),
        ("zip bomb past --max-inflated-gb 0.001", Spoil::Zeros(2_000_000)),
        ("not a zip", Spoil::Bytes(|_| b"this is not a zip\n".to_vec())),
        ("truncated zip", Spoil::Bytes(|bytes| bytes[..bytes.len() / 2].to_vec())),
        (
            "corrupt deflate data",
            Spoil::Bytes(|mut bytes| {
                let start = first_entry_data(&bytes);
                bytes[start..start + 4].copy_from_slice(&[0xff; 4]);
                bytes
            }),
        ),
    ];
    let mut report = Report::default();
    for (what, spoil) in &variants {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("model.zip");
        write_zip(&zip, spoil);
        let results = dir.path().join("results");
        std::fs::create_dir(&results).unwrap();
        let command = args(&[&"install", &zip, &"-o", &results, &"--max-inflated-gb", &"0.001"]);
        report.check_names_first(
            what,
            dir.path(),
            "nn-model",
            &command,
            &zip,
            &[results.join("Dataset004_Hippocampus")],
        );
        if entries_under(&results) != 0 || !temporaries(dir.path()).is_empty() {
            report.failures.push(format!("nn-model on {what}: results folder not left empty"));
        }
    }
    // a results folder that is a file
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("model.zip");
    write_zip(&zip, &Spoil::Zeros(1000));
    let results = dir.path().join("results");
    std::fs::write(&results, "a file\n").unwrap();
    let command = args(&[&"install", &zip, &"-o", &results]);
    report.check_names_first("a results folder that is a file", dir.path(), "nn-model", &command, &results, &[]);
    // the valid zip installs within the same limit, into a results folder it creates, and so does an
    // ensemble's folder, one of the dataset-level files nnU-Net's exporter adds (only trainer folders
    // are printed)
    let ensemble = padded("Dataset004_Hippocampus/ensembles/ensemble___a__b__c___0/summary.json");
    for (what, spoil, installed) in [
        ("a valid zip", Spoil::Zeros(1000), PLACEHOLDER.to_owned()),
        ("an ensemble", Spoil::Rename(ensemble.clone()), ensemble),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("model.zip");
        write_zip(&zip, &spoil);
        let results = dir.path().join("results");
        let command = args(&[&"install", &zip, &"-o", &results, &"--max-inflated-gb", &"0.001"]);
        report.check(what, dir.path(), "nn-model", &command, 0, &zip, &[]);
        if !results.join(&installed).is_file() {
            report.failures.push(format!("nn-model on {what}: {installed} not installed"));
        }
    }
    report.finish("hostile_model_zips");
}
