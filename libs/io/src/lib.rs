//! Input and output for nn-tools: images in every format nnU-Net v2 reads (NIfTI, MetaImage, NRRD, TIFF,
//! PNG, BMP) in nnU-Net's axis order with SimpleITK-compatible geometry, nnU-Net's reader-writer
//! classes, JSON files, atomic writes, and the error type every library shares.

mod error;
mod geometry;
mod gipl;
mod image;
mod inflate;
mod lock;
pub mod memory;
mod metaimage;
mod natural;
mod nifti;
mod nrrd;
mod output;
mod raster;
mod reader_writer;
mod reorient;
mod tiff;

/// The header type images carry, re-exported so callers need not depend on the `nifti` crate.
pub use ::nifti::NiftiHeader;
pub use error::{Error, ErrorKind, Result};
pub use geometry::Geometry;
pub use gipl::{read_gipl, write_gipl};
pub use image::{
    Claim, Format, IMAGE_ENDINGS, Image, Stored, claimed_voxels, read_image, read_label_map, split_image_ending,
    write_image, write_label_map, write_rgb,
};
pub use lock::OutputLock;
pub use metaimage::{read_metaimage, write_metaimage};
pub use nifti::{Volume, Voxel, new_header, read_volumes, write_like, write_new, write_volume};
pub use nrrd::{nrrd_key_values, read_nrrd, write_nrrd};
pub use output::{
    create_output_folder, read_json, read_npz, remove_stale_temporaries, temporary_path, write_atomically,
    write_folder_atomically, write_json, write_npy, write_npz, write_stream,
};
pub use raster::{PixelType, RasterImage};
pub use reader_writer::{CaseImages, ReaderWriter};
pub use reorient::Reorientation;
