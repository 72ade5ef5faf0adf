//! Input and output for nn-tools: NIfTI-1 images in nnU-Net's axis order with SimpleITK-compatible
//! geometry, JSON files, atomic writes, and the error type every library shares.

mod error;
mod geometry;
mod image;
mod metaimage;
mod nrrd;
mod output;
mod raster;

/// The header type images carry, re-exported so callers need not depend on the `nifti` crate.
pub use ::nifti::NiftiHeader;
pub use error::{Error, ErrorKind, Result};
pub use geometry::Geometry;
pub use image::{
    Image, Volume, Voxel, new_header, read_image, read_label_map, read_volumes, write_label_map, write_like, write_new,
    write_volume,
};
pub use metaimage::{read_metaimage, write_metaimage};
pub use nrrd::{read_nrrd, write_nrrd};
pub use output::{
    read_json, read_npz, remove_stale_temporaries, temporary_path, write_atomically, write_folder_atomically,
    write_json, write_npz, write_stream,
};
pub use raster::{PixelType, RasterImage};
