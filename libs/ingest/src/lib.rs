//! Getting data into nnU-Net's raw layout. A raw dataset is made from plain folders of images and
//! labels ([`create`]) or converted from an nnU-Net v1 / Medical Segmentation Decathlon task
//! ([`convert_v1`]): files are renamed to `CASE_XXXX<ending>` (4-D images split into one file per
//! channel), copied as they are or converted to another format, a v2 `dataset.json` is written, and the result is checked as `nn-fingerprint
//! --verify-only` checks it before the folder appears, so a failed run leaves nothing behind.

mod layout;
mod slicer;
mod sources;
mod v1;

pub use sources::{CreateRequest, create, parse_numbered};
pub use v1::convert_v1;

use nntools_io::ReaderWriter;
use std::path::PathBuf;

/// How the files reach the new dataset.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Hard-link the source files (symbolic links across file systems) instead of copying them. Files
    /// that must change (split 4-D images, `.nii` compressed to match `.nii.gz`, conversions) are
    /// written anyway.
    pub link: bool,
    /// Replace an existing output folder.
    pub force: bool,
    /// Write every image and label map in the format of this ending (one of [`dataset_endings`]);
    /// without it the sources keep their format, which they must share.
    pub to: Option<&'static str>,
}

/// The endings a dataset can have: those nnU-Net's reader-writer classes claim (a dataset's
/// `file_ending` selects its class, `nnunetv2/imageio/reader_writer_registry.py`).
pub fn dataset_endings() -> Vec<&'static str> {
    let mut endings: Vec<&'static str> = Vec::new();
    for ending in ReaderWriter::ALL.iter().flat_map(|rw| rw.supported_endings()) {
        if !endings.contains(ending) {
            endings.push(ending);
        }
    }
    endings
}

/// Parses `--to ENDING` (`.nii.gz`, `nii.gz`, `.MHA`, ...) as one of [`dataset_endings`].
pub fn parse_dataset_ending(text: &str) -> std::result::Result<&'static str, String> {
    let wanted = format!(".{}", text.trim().trim_start_matches('.').to_lowercase());
    let endings = dataset_endings();
    endings
        .iter()
        .find(|e| **e == wanted)
        .copied()
        .ok_or_else(|| format!("{text:?} is not a dataset file ending (one of {})", endings.join(" ")))
}

/// The images of one case as found in the sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Images {
    /// One file per channel, in channel order.
    Channels(Vec<PathBuf>),
    /// One file holding every channel: 3-D for one channel, 4-D (channels along the 4th axis) for several.
    Stacked(PathBuf),
}

/// One case to be written: its id, images and (for training cases) label map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceCase {
    pub id: String,
    pub images: Images,
    pub label: Option<PathBuf>,
}
