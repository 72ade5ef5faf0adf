//! The fuzz targets' bodies (fuzz/), shared with tests/fuzz_regressions.rs, which replays every input
//! the fuzzers ever crashed on. Each body feeds arbitrary bytes to a reader; any outcome but a panic
//! or an abort is fine.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A file name of this process that no other call uses.
fn scratch_file(ending: &str) -> PathBuf {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let dir = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    dir.join(format!("nntools-fuzz-{}-{}{ending}", std::process::id(), CALLS.fetch_add(1, Ordering::Relaxed)))
}

/// The NIfTI readers on `bytes`: as a `.nii` file, and gzip-compressed as a `.nii.gz` file (so the
/// fuzzer reaches the parser through the decompressor too); with the first byte odd, `bytes` are taken
/// as the `.nii.gz` file itself, to exercise the decompressor's error paths.
pub fn nifti(bytes: &[u8]) {
    use std::io::Write;
    let plain = scratch_file(".nii");
    let compressed = scratch_file(".nii.gz");
    std::fs::write(&plain, bytes).expect("scratch file");
    let gz = if bytes.first().is_some_and(|b| b % 2 == 1) {
        bytes.to_vec()
    } else {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).expect("in memory");
        encoder.finish().expect("in memory")
    };
    std::fs::write(&compressed, gz).expect("scratch file");
    for path in [&plain, &compressed] {
        let _ = nntools_io::read_image(path);
        let _ = nntools_io::read_label_map(path);
        let _ = nntools_io::read_volumes(path);
    }
    let _ = std::fs::remove_file(&plain);
    let _ = std::fs::remove_file(&compressed);
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
