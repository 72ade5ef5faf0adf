//! NIfTI-1 images (`.nii`, `.nii.gz`) as C-order arrays in nnU-Net's axis order.
//!
//! A NIfTI file stores voxels with i fastest; read as a Fortran-order `[i, j, k]` array, its reversed
//! axes are a C-order `[k, j, i]` array at no cost. That is the order nnU-Net uses everywhere, so
//! `data[[z, y, x]]` here equals `data[z, y, x]` of nnU-Net's numpy arrays.

use crate::geometry::Geometry;
use crate::output::write_atomically;
use crate::{Error, Result};
use flate2::read::MultiGzDecoder;
use ndarray::{Array3, ArrayView3, Order};
use nifti::volume::NiftiVolume;
use nifti::writer::WriterOptions;
use nifti::{InMemNiftiVolume, IntoNdArray, NiftiHeader, NiftiType};
use std::io::Read;
use std::path::Path;

/// Size of a NIfTI-1 header on disk; the voxel data of a `.nii` starts at or after `vox_offset >= 352`.
const HEADER_BYTES: usize = 348;
const NIFTI2_HEADER_BYTES: i32 = 540;
const SINGLE_FILE_MAGIC: &[u8; 4] = b"n+1\0";

/// A 3-D image: voxels in nnU-Net's axis order, the geometry SimpleITK would report, and the header it
/// came with (kept so that outputs can be written with the input's geometry bit for bit).
#[derive(Debug, Clone)]
pub struct Image<T> {
    pub data: Array3<T>,
    pub geometry: Geometry,
    pub header: NiftiHeader,
}

/// Reads a 3-D NIfTI image as `f32` with `scl_slope`/`scl_inter` applied, as nnU-Net's readers do.
pub fn read_image(path: &Path) -> Result<Image<f32>> {
    let (header, data) = decode(path)?;
    let geometry = Geometry::from_header(&header).map_err(|problem| Error::bad_input(path, problem))?;
    Ok(Image { data, geometry, header })
}

/// Reads a 3-D label map; every voxel must be a finite integer.
pub fn read_label_map(path: &Path) -> Result<Image<i32>> {
    let image = read_image(path)?;
    let mut bad = None;
    let data = image.data.mapv(|v| {
        let label = v as i32;
        if !v.is_finite() || label as f32 != v {
            bad.get_or_insert(v);
        }
        label
    });
    if let Some(value) = bad {
        return Err(Error::bad_input(path, format!("label map holds a non-integer value ({value})")));
    }
    Ok(Image { data, geometry: image.geometry, header: image.header })
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<NiftiHeader> {
    if bytes.len() < HEADER_BYTES {
        return Err(Error::bad_input(
            path,
            format!("truncated NIfTI header ({} of {HEADER_BYTES} bytes)", bytes.len()),
        ));
    }
    let header = NiftiHeader::from_reader(bytes)
        .map_err(|e| Error::bad_input(path, format!("not a NIfTI-1 file: {e}")))?;
    if header.sizeof_hdr == NIFTI2_HEADER_BYTES || header.sizeof_hdr.swap_bytes() == NIFTI2_HEADER_BYTES {
        return Err(Error::bad_input(path, "NIfTI-2 files are not supported; convert to NIfTI-1"));
    }
    if header.sizeof_hdr != HEADER_BYTES as i32 {
        return Err(Error::bad_input(path, format!("not a NIfTI-1 file (sizeof_hdr {})", header.sizeof_hdr)));
    }
    if &header.magic != SINGLE_FILE_MAGIC {
        return Err(Error::bad_input(
            path,
            "not a single-file NIfTI-1 image (magic is not \"n+1\"; .hdr/.img pairs are not supported)",
        ));
    }
    Ok(header)
}

/// The spatial shape `[nx, ny, nz]` of a header, refusing anything that is not a 3-D scalar volume.
fn spatial_shape(header: &NiftiHeader) -> std::result::Result<[usize; 3], String> {
    let rank = header.dim[0] as usize;
    if !(1..=7).contains(&rank) {
        return Err(format!("invalid dimension count dim[0] = {rank}"));
    }
    let dims = &header.dim[1..=rank];
    if rank < 3 {
        return Err(format!("{rank}-D image where a 3-D image is expected (dim {dims:?})"));
    }
    if dims[3..].iter().any(|&d| d != 1) {
        return Err(format!("{rank}-D image where a 3-D image is expected (dim {dims:?})"));
    }
    if dims[..3].contains(&0) {
        return Err(format!("empty image (dim {dims:?})"));
    }
    Ok([dims[0] as usize, dims[1] as usize, dims[2] as usize])
}

fn decode(path: &Path) -> Result<(NiftiHeader, Array3<f32>)> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
    let corrupt = |e: std::io::Error| Error::bad_input(path, format!("corrupt or truncated gzip stream: {e}"));
    let mut stream: Box<dyn Read> =
        if raw.starts_with(&[0x1f, 0x8b]) { Box::new(MultiGzDecoder::new(raw.as_slice())) } else { Box::new(raw.as_slice()) };
    // Header first, so the voxel buffer can be allocated once at its exact size.
    let mut header_bytes = Vec::with_capacity(HEADER_BYTES);
    (&mut stream).take(HEADER_BYTES as u64).read_to_end(&mut header_bytes).map_err(corrupt)?;
    let header = parse_header(path, &header_bytes)?;
    let [nx, ny, nz] = spatial_shape(&header).map_err(|problem| Error::bad_input(path, problem))?;
    let datatype = header
        .data_type()
        .ok()
        .filter(|t| SUPPORTED_TYPES.contains(t))
        .ok_or_else(|| Error::bad_input(path, format!("unsupported NIfTI datatype code {}", header.datatype)))?;
    if header.vox_offset < HEADER_BYTES as f32 {
        return Err(Error::bad_input(path, format!("invalid vox_offset {}", header.vox_offset)));
    }
    let voxels = nx * ny * nz;
    let needed = voxels * datatype.size_of();
    let skip = header.vox_offset as u64 - HEADER_BYTES as u64;
    std::io::copy(&mut (&mut stream).take(skip), &mut std::io::sink()).map_err(corrupt)?;
    let mut data = Vec::with_capacity(needed);
    (&mut stream).take(needed as u64).read_to_end(&mut data).map_err(corrupt)?;
    if data.len() < needed {
        return Err(Error::bad_input(
            path,
            format!("header claims {voxels} voxels ({needed} bytes) but the file holds {} bytes of voxel data", data.len()),
        ));
    }
    drop(stream);
    drop(raw);
    let volume = InMemNiftiVolume::from_raw_data(&with_valid_scaling(&header), data)
        .map_err(|e| Error::bad_input(path, format!("invalid voxel data: {e}")))?;
    debug_assert_eq!(volume.dim()[..3], header.dim[1..4]);
    let array = volume.into_ndarray::<f32>().map_err(|e| Error::bad_input(path, e))?;
    let array = array
        .into_shape_with_order(([nx, ny, nz], Order::ColumnMajor))
        .map_err(|e| Error::bad_input(path, e))?;
    Ok((header, array.reversed_axes()))
}

/// ITK's reading of the scaling fields (nnU-Net reads through SimpleITK): a zero or non-finite slope
/// counts as 1, a non-finite intercept as 0 (the Hippocampus images carry NaN in both).
fn with_valid_scaling(header: &NiftiHeader) -> NiftiHeader {
    let mut header = header.clone();
    if !header.scl_slope.is_finite() || header.scl_slope.abs() < f32::EPSILON {
        header.scl_slope = 1.0;
    }
    if !header.scl_inter.is_finite() {
        header.scl_inter = 0.0;
    }
    header
}

const SUPPORTED_TYPES: [NiftiType; 9] = [
    NiftiType::Uint8,
    NiftiType::Int8,
    NiftiType::Int16,
    NiftiType::Uint16,
    NiftiType::Int32,
    NiftiType::Uint32,
    NiftiType::Int64,
    NiftiType::Float32,
    NiftiType::Float64,
];

/// Voxel types that can be written.
pub trait Voxel: nifti::DataElement + bytemuck::Pod {}
impl<T: nifti::DataElement + bytemuck::Pod> Voxel for T {}

/// Writes `data` (nnU-Net axis order) with `reference`'s header: qform, sform, pixdim and every other
/// field are kept bit for bit; only dim, datatype, bitpix, vox_offset and scaling describe the new data.
/// Compression follows the file name (`.gz`); the file appears atomically.
pub fn write_like<T: Voxel>(path: &Path, data: ArrayView3<T>, reference: &NiftiHeader) -> Result<()> {
    let expected = [reference.dim[3] as usize, reference.dim[2] as usize, reference.dim[1] as usize];
    if reference.dim[0] >= 3 && data.shape() != expected {
        return Err(Error::bad_input(
            path,
            format!("array of shape {:?} cannot take a header of shape {expected:?}", data.shape()),
        ));
    }
    let compress = path.to_string_lossy().ends_with(".gz");
    write_atomically(path, |tmp| {
        WriterOptions::new(tmp)
            .reference_header(reference)
            .compress(compress)
            .write_nifti(&data.reversed_axes())
            .map_err(|e| Error::runtime(path, e))
    })
}

/// Writes a label map with `reference`'s geometry as uint8, or uint16 when a label exceeds 255.
pub fn write_label_map(path: &Path, labels: ArrayView3<u16>, reference: &NiftiHeader) -> Result<()> {
    if labels.iter().all(|&l| l <= u16::from(u8::MAX)) {
        write_like(path, labels.mapv(|l| l as u8).view(), reference)
    } else {
        write_like(path, labels, reference)
    }
}

/// Writes `data` (nnU-Net axis order) as a new image with the given geometry (sform and qform both set,
/// scanner-anatomical).
pub fn write_new<T: Voxel>(path: &Path, data: ArrayView3<T>, geometry: &Geometry) -> Result<()> {
    write_like(path, data, &new_header(geometry, [data.shape()[0], data.shape()[1], data.shape()[2]]))
}

/// A header for a new image of `shape` (nnU-Net axis order) with the given geometry (sform and qform
/// both set, scanner-anatomical).
pub fn new_header(geometry: &Geometry, shape: [usize; 3]) -> NiftiHeader {
    let mut header = geometry.to_header();
    let [nz, ny, nx] = shape;
    header.dim = [3, nx as u16, ny as u16, nz as u16, 1, 1, 1, 1];
    header
}
