//! The fuzz targets' bodies (fuzz/), shared with tests/fuzz_regressions.rs, which replays every input
//! the fuzzers ever crashed on. Each body feeds arbitrary bytes to a reader; any outcome but a panic
//! or an abort is fine.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use nntools_io::ReaderWriter;

/// The byte at which the MetaImage and NRRD targets split their input into a detached header and its
/// data file: a text header holds none, so the fuzzer finds the split easily.
pub const DETACHED_DATA_SEPARATOR: u8 = 0;

/// The data file name the detached-header inputs refer to (`ElementDataFile = data.raw`,
/// `data file: data.raw`); the targets write the data part under this name beside the header.
pub const DETACHED_DATA_FILE: &str = "data.raw";

/// A directory of this process that no other call uses (in RAM where /dev/shm exists), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let dir = base.join(format!("nntools-fuzz-{}-{}", std::process::id(), CALLS.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Self(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).expect("scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every way `class` reads `path`: as a case's channel files and as a label map; whether the first did.
fn read_with(class: ReaderWriter, path: &Path) -> bool {
    let read = class.read_images(&[path.to_path_buf()]).is_ok();
    let _ = class.read_seg(path);
    read
}

/// What the header of `path`, which holds `bytes`, claims (`nntools_io::claimed_voxels`, nn-serve's
/// check before a request is decoded); a file a reader `read` must have a header it parses.
fn claim(path: &Path, bytes: &[u8], read: bool) {
    let claim = nntools_io::claimed_voxels(path, bytes);
    assert!(claim.is_ok() || !read, "{} is read, yet its header claim is {claim:?}", path.display());
}

/// `bytes` split at the first [`DETACHED_DATA_SEPARATOR`]: a detached header and its data file.
fn split_detached(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&b| b == DETACHED_DATA_SEPARATOR) {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (bytes, &[]),
    }
}

/// A header with one data file as a single fuzz input for [`split_detached`]: the header's line starting
/// with `data_file_key` names [`DETACHED_DATA_FILE`] instead (builds seed inputs from real files).
pub fn detached_input(header: &str, data_file_key: &str, data: &[u8]) -> Vec<u8> {
    let mut input = Vec::new();
    for line in header.lines() {
        if line.starts_with(data_file_key) {
            input.extend_from_slice(format!("{data_file_key}{DETACHED_DATA_FILE}\n").as_bytes());
        } else {
            input.extend_from_slice(line.as_bytes());
            input.push(b'\n');
        }
    }
    input.push(DETACHED_DATA_SEPARATOR);
    input.extend_from_slice(data);
    input
}

/// The SimpleITK-class readers on `bytes` as a one-file image with `attached_ending`, and split by
/// [`split_detached`] into a header with `detached_ending` and its [`DETACHED_DATA_FILE`].
fn attached_and_detached(bytes: &[u8], attached_ending: &str, detached_ending: &str) {
    let scratch = Scratch::new();
    let attached = scratch.write(&format!("case{attached_ending}"), bytes);
    let read = read_with(ReaderWriter::SimpleItk, &attached);
    claim(&attached, bytes, read);
    let _ = nntools_io::read_image(&attached);
    let (header, data) = split_detached(bytes);
    scratch.write(DETACHED_DATA_FILE, data);
    read_with(ReaderWriter::SimpleItk, &scratch.write(&format!("case{detached_ending}"), header));
}

/// The MetaImage reader on `bytes` as a `.mha`, and as a `.mhd` with a detached data file.
pub fn metaimage(bytes: &[u8]) {
    attached_and_detached(bytes, ".mha", ".mhd");
}

/// The NRRD reader on `bytes` as a `.nrrd`, and as a `.nhdr` with a detached data file.
pub fn nrrd(bytes: &[u8]) {
    attached_and_detached(bytes, ".nrrd", ".nhdr");
}

/// The GIPL reader on `bytes` as a `.gipl` file.
pub fn gipl(bytes: &[u8]) {
    let scratch = Scratch::new();
    let path = scratch.write("case.gipl", bytes);
    let read = read_with(ReaderWriter::SimpleItk, &path);
    claim(&path, bytes, read);
}

/// The TIFF readers on `bytes` as a `.tif` file: as a 3-D stack (`Tiff3DIO`, its spacing sidecars
/// present so that no warning is printed per input) and as a 2-D image (`NaturalImage2DIO`).
pub fn tiff(bytes: &[u8]) {
    let scratch = Scratch::new();
    let path = scratch.write("case_0000.tif", bytes);
    // Tiff3DIO.read_images looks for CASE.json, read_seg for the file's own name with .json
    for sidecar in ["case.json", "case_0000.json"] {
        scratch.write(sidecar, br#"{"spacing": [2.0, 1.0, 0.5]}"#);
    }
    let read = read_with(ReaderWriter::Tiff3d, &path) | read_with(ReaderWriter::NaturalImage2d, &path);
    claim(&path, bytes, read);
    let _ = nntools_io::read_image(&path);
}

/// The natural-image readers on `bytes` as a `.png` and as a `.bmp` file (both, rather than one chosen
/// by a leading byte, so that real PNG and BMP files serve as seeds unchanged).
pub fn natural(bytes: &[u8]) {
    let scratch = Scratch::new();
    for name in ["case.png", "case.bmp"] {
        let path = scratch.write(name, bytes);
        let read = read_with(ReaderWriter::NaturalImage2d, &path);
        claim(&path, bytes, read);
    }
}

/// The NIfTI readers (NIfTI-1 and NIfTI-2) on `bytes`: as a `.nii` file, and gzip-compressed as a
/// `.nii.gz` file (so the fuzzer reaches the parser through the decompressor too); with the first byte
/// odd, `bytes` are taken as the `.nii.gz` file itself, to exercise the decompressor's error paths.
pub fn nifti(bytes: &[u8]) {
    use std::io::Write;
    let scratch = Scratch::new();
    let plain = scratch.write("case.nii", bytes);
    let gz = if bytes.first().is_some_and(|b| b % 2 == 1) {
        bytes.to_vec()
    } else {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).expect("in memory");
        encoder.finish().expect("in memory")
    };
    let compressed = scratch.write("case.nii.gz", &gz);
    for (path, bytes) in [(&plain, bytes), (&compressed, &gz[..])] {
        claim(path, bytes, nntools_io::read_image(path).is_ok());
        let _ = nntools_io::read_label_map(path);
        let _ = nntools_io::read_volumes(path);
        let _ = ReaderWriter::NibabelWithReorient.read_images(std::slice::from_ref(path));
    }
}

/// The JSON inputs on `bytes`: dataset.json (v1 and v2 forms, labels and regions), plans.json (every
/// configuration resolved and checked) and dataset_fingerprint.json.
pub fn json_inputs(bytes: &[u8]) {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(bytes) else { return };
    if let Ok(descriptor) = nntools_dataset::Descriptor::from_json(&json) {
        let _ = nntools_dataset::Labelling::of(&descriptor);
        let _ = descriptor.allowed_label_values();
    }
    if let Ok(plans) = serde_json::from_value::<nntools_planning::Plans>(json.clone()) {
        for name in plans.configuration_names() {
            let _ = plans.configuration(&name);
        }
    }
    let _ = serde_json::from_value::<nntools_dataset::Fingerprint>(json);
}

/// What separates the parts of a `pth` input that does not start with a zip signature: a bare pickle,
/// then the storages `data/0`, `data/1`, ... (so that the fuzzer mutates the pickle without breaking the
/// zip's CRCs).
pub const PTH_PARTS_SEPARATOR: &[u8] = b"\0nntools-storage\0";

/// The `.pth` reader on `bytes`: as a whole file where they start like a zip (`PK`), else as the parts
/// [`PTH_PARTS_SEPARATOR`] splits them into, zipped as torch.save does; and nnU-Net's checkpoint dict
/// taken from what it reads.
pub fn pth(bytes: &[u8]) {
    let path = Path::new("case.pth");
    let read = if bytes.starts_with(b"PK") {
        nntools_checkpoint::read_pth_bytes(path, bytes)
    } else {
        nntools_checkpoint::read_pth_bytes(path, &pth_archive(bytes))
    };
    if let Ok(value) = read {
        let _ = nntools_checkpoint::NnunetCheckpoint::from_value(path, value);
    }
}

/// torch.save's archive layout (`case/data.pkl`, `case/data/KEY`) around the parts of a `pth` input.
pub fn pth_archive(parts: &[u8]) -> Vec<u8> {
    let mut parts = split_parts(parts, PTH_PARTS_SEPARATOR);
    let mut archive = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut add = |name: String, data: &[u8]| {
        archive.start_file(name, stored).expect("in memory");
        std::io::Write::write_all(&mut archive, data).expect("in memory");
    };
    add("case/data.pkl".into(), parts.next().unwrap_or_default());
    for (key, storage) in parts.enumerate() {
        add(format!("case/data/{key}"), storage);
    }
    archive.finish().expect("in memory").into_inner()
}

fn split_parts<'a>(mut bytes: &'a [u8], separator: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let at = bytes.windows(separator.len()).position(|w| w == separator);
        let part = &bytes[..at.unwrap_or(bytes.len())];
        bytes = at.map_or(&[], |at| &bytes[at + separator.len()..]);
        Some(part)
    })
}

/// A `pth` input in parts made from a torch.save archive whose storages are keyed 0, 1, ... (seeds).
pub fn pth_parts_input(pth: &[u8]) -> Vec<u8> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(pth)).expect("a torch.save archive");
    let names: Vec<String> = archive.file_names().map(str::to_string).collect();
    let read = |archive: &mut zip::ZipArchive<_>, suffix: &str| -> Option<Vec<u8>> {
        let name = names.iter().find(|name| name.split_once('/').is_some_and(|(_, rest)| rest == suffix))?;
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut archive.by_name(name).ok()?, &mut data).ok()?;
        Some(data)
    };
    let mut input = read(&mut archive, "data.pkl").expect("data.pkl");
    for key in 0.. {
        let Some(storage) = read(&mut archive, &format!("data/{key}")) else { break };
        input.extend_from_slice(PTH_PARTS_SEPARATOR);
        input.extend_from_slice(&storage);
    }
    input
}
