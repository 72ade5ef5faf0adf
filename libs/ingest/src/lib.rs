//! Getting data into nnU-Net's raw layout. A raw dataset is made from plain folders of images and
//! labels ([`create`]) or converted from an nnU-Net v1 / Medical Segmentation Decathlon task
//! ([`convert_v1`]): files are renamed to `CASE_XXXX<ending>` (4-D images split into one file per
//! channel), a v2 `dataset.json` is written, and the result is checked as `nn-fingerprint
//! --verify-only` checks it before the folder appears, so a failed run leaves nothing behind.

mod layout;
mod sources;
mod v1;

pub use sources::{CreateRequest, create, parse_numbered};
pub use v1::convert_v1;

use std::path::PathBuf;

/// How the files reach the new dataset.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Hard-link the source files (symbolic links across file systems) instead of copying them. Files
    /// that must change (split 4-D images, `.nii` compressed to match `.nii.gz`) are written anyway.
    pub link: bool,
    /// Replace an existing output folder.
    pub force: bool,
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
