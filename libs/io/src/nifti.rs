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
use nifti::writer::WriterOptions;
use nifti::{InMemNiftiVolume, IntoNdArray, NiftiHeader, NiftiType};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

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
    let header =
        NiftiHeader::from_reader(bytes).map_err(|e| Error::bad_input(path, format!("not a NIfTI-1 file: {e}")))?;
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

/// The spatial shape `[nx, ny, nz]` of a header and its number of 3-D volumes along the 4th dimension
/// (1 for a 3-D image), refusing anything else, and several volumes unless `volumes_allowed`.
fn volume_layout(header: &NiftiHeader, volumes_allowed: bool) -> std::result::Result<([usize; 3], usize), String> {
    let rank = header.dim[0] as usize;
    if !(1..=7).contains(&rank) {
        return Err(format!("invalid dimension count dim[0] = {rank}"));
    }
    let dims = &header.dim[1..=rank];
    let expected = if volumes_allowed { "a 3-D or 4-D image" } else { "a 3-D image" };
    let volumes = if rank >= 4 { dims[3] as usize } else { 1 };
    if rank < 3 || dims[4.min(rank)..].iter().any(|&d| d != 1) || (volumes > 1 && !volumes_allowed) {
        return Err(format!("{rank}-D image where {expected} is expected (dim {dims:?})"));
    }
    if dims.contains(&0) {
        return Err(format!("empty image or negative size (dim {dims:?})"));
    }
    Ok(([dims[0] as usize, dims[1] as usize, dims[2] as usize], volumes))
}

/// A NIfTI file as stored: its header and the voxel bytes of all its volumes, in the file's datatype
/// and byte order.
struct Stored {
    header: NiftiHeader,
    shape: [usize; 3],
    volumes: usize,
    datatype: NiftiType,
    bytes: Vec<u8>,
}

fn read_stored(path: &Path, volumes_allowed: bool) -> Result<Stored> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
    let corrupt = |e: std::io::Error| Error::bad_input(path, format!("corrupt or truncated gzip stream: {e}"));
    let compressed = raw.starts_with(&[0x1f, 0x8b]);
    let mut stream: Box<dyn Read> =
        if compressed { Box::new(MultiGzDecoder::new(raw.as_slice())) } else { Box::new(raw.as_slice()) };
    // Header first, so the voxel buffer can be allocated once at its exact size.
    let mut header_bytes = Vec::with_capacity(HEADER_BYTES);
    (&mut stream).take(HEADER_BYTES as u64).read_to_end(&mut header_bytes).map_err(corrupt)?;
    let header = parse_header(path, &header_bytes)?;
    let (shape, volumes) =
        volume_layout(&header, volumes_allowed).map_err(|problem| Error::bad_input(path, problem))?;
    let datatype = header
        .data_type()
        .ok()
        .filter(|t| SUPPORTED_TYPES.contains(t))
        .ok_or_else(|| Error::bad_input(path, format!("unsupported NIfTI datatype code {}", header.datatype)))?;
    if header.vox_offset < HEADER_BYTES as f32 {
        return Err(Error::bad_input(path, format!("invalid vox_offset {}", header.vox_offset)));
    }
    let voxels = shape.iter().product::<usize>() * volumes;
    let needed = voxels * datatype.size_of();
    // Trust the header's size only as far as the file could hold it (deflate expands at most about
    // 1032-fold), so a corrupt header cannot make us allocate gigabytes before the data runs out.
    let most = if compressed { raw.len().saturating_mul(1032) } else { raw.len() };
    let skip = header.vox_offset as u64 - HEADER_BYTES as u64;
    std::io::copy(&mut (&mut stream).take(skip), &mut std::io::sink()).map_err(corrupt)?;
    let mut bytes = Vec::with_capacity(needed.min(most));
    (&mut stream).take(needed as u64).read_to_end(&mut bytes).map_err(corrupt)?;
    if bytes.len() < needed {
        return Err(Error::bad_input(
            path,
            format!(
                "header claims {voxels} voxels ({needed} bytes) but the file holds {} bytes of voxel data",
                bytes.len()
            ),
        ));
    }
    Ok(Stored { header, shape, volumes, datatype, bytes })
}

fn decode(path: &Path) -> Result<(NiftiHeader, Array3<f32>)> {
    let stored = read_stored(path, false)?;
    let data = to_f32(path, &stored.header, stored.shape, stored.bytes)?;
    Ok((stored.header, data))
}

/// Voxel bytes of one 3-D volume (as stored, described by `header`) as `f32` with scaling applied, in
/// nnU-Net's axis order.
fn to_f32(path: &Path, header: &NiftiHeader, [nx, ny, nz]: [usize; 3], bytes: Vec<u8>) -> Result<Array3<f32>> {
    let volume = InMemNiftiVolume::from_raw_data(&with_valid_scaling(header), bytes)
        .map_err(|e| Error::bad_input(path, format!("invalid voxel data: {e}")))?;
    let array = volume.into_ndarray::<f32>().map_err(|e| Error::bad_input(path, e))?;
    let array =
        array.into_shape_with_order(([nx, ny, nz], Order::ColumnMajor)).map_err(|e| Error::bad_input(path, e))?;
    Ok(array.reversed_axes())
}

/// One 3-D volume of a NIfTI file (a channel of an MSD-style 4-D image), kept as stored: the header of
/// the file made 3-D (geometry, datatype and scaling unchanged) and the volume's voxel bytes.
#[derive(Debug, Clone)]
pub struct Volume {
    pub header: NiftiHeader,
    shape: [usize; 3],
    datatype: NiftiType,
    bytes: Vec<u8>,
}

/// Reads a 3-D or 4-D NIfTI file as its 3-D volumes along the 4th dimension (one for a 3-D file).
pub fn read_volumes(path: &Path) -> Result<Vec<Volume>> {
    let stored = read_stored(path, true)?;
    let mut header = stored.header;
    header.dim = [3, header.dim[1], header.dim[2], header.dim[3], 1, 1, 1, 1];
    let volume_bytes = stored.shape.iter().product::<usize>() * stored.datatype.size_of();
    Ok(stored.bytes[..volume_bytes * stored.volumes]
        .chunks_exact(volume_bytes)
        .map(|bytes| Volume {
            header: header.clone(),
            shape: stored.shape,
            datatype: stored.datatype,
            bytes: bytes.to_vec(),
        })
        .collect())
}

/// Writes a volume as a 3-D NIfTI file with its own header, datatype and voxel values. A volume whose
/// header scales its values is written as the scaled `f32` values, since the writer cannot carry the
/// scaling fields over.
pub fn write_volume(path: &Path, volume: &Volume) -> Result<()> {
    let scaled = with_valid_scaling(&volume.header);
    if scaled.scl_slope != 1.0 || scaled.scl_inter != 0.0 {
        let data = to_f32(path, &volume.header, volume.shape, volume.bytes.clone())?;
        return write_like(path, data.view(), &volume.header);
    }
    let mut bytes = volume.bytes.clone();
    let width = volume.datatype.size_of();
    if volume.header.endianness != nifti::Endianness::native() {
        bytes.chunks_exact_mut(width).for_each(<[u8]>::reverse);
    }
    let [nx, ny, nz] = volume.shape;
    let shape = (nz, ny, nx);
    // Unsigned integers of the same width carry the values' bits; the datatype says what they are.
    match width {
        1 => write_bits::<u8>(path, shape, &bytes, &volume.header, volume.datatype),
        2 => write_bits::<u16>(path, shape, &bytes, &volume.header, volume.datatype),
        4 => write_bits::<u32>(path, shape, &bytes, &volume.header, volume.datatype),
        _ => write_bits::<u64>(path, shape, &bytes, &volume.header, volume.datatype),
    }
}

fn write_bits<A: bytemuck::Pod>(
    path: &Path,
    shape: (usize, usize, usize),
    bytes: &[u8],
    header: &NiftiHeader,
    datatype: NiftiType,
) -> Result<()> {
    let values: Vec<A> = bytemuck::pod_collect_to_vec(bytes);
    let data = Array3::from_shape_vec(shape, values).map_err(|e| Error::runtime(path, e))?;
    write_typed(path, data.view(), header, datatype)
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
    write_typed(path, data, reference, T::DATA_TYPE)
}

fn write_typed<A: bytemuck::Pod>(
    path: &Path,
    data: ArrayView3<A>,
    reference: &NiftiHeader,
    datatype: NiftiType,
) -> Result<()> {
    let expected = [reference.dim[3] as usize, reference.dim[2] as usize, reference.dim[1] as usize];
    if reference.dim[0] >= 3 && data.shape() != expected {
        return Err(Error::bad_input(
            path,
            format!("array of shape {:?} cannot take a header of shape {expected:?}", data.shape()),
        ));
    }
    let compress = path.to_string_lossy().ends_with(".gz");
    write_atomically(path, |tmp| {
        // The nifti writer rebuilds its file name from the extension ("a.b.nii" becomes "a.nii"), so it
        // writes to a name without dots in the stem, renamed afterwards.
        static WRITES: AtomicUsize = AtomicUsize::new(0);
        let ending = if compress { ".nii.gz" } else { ".nii" };
        let id = WRITES.fetch_add(1, Ordering::Relaxed);
        let written = tmp.with_file_name(format!(".nntmp-{}-nifti{id}{ending}", std::process::id()));
        let result = WriterOptions::new(&written)
            .reference_header(reference)
            .compress(compress)
            .write_nifti_with_type(&data.reversed_axes(), datatype)
            .map_err(|e| Error::runtime(path, e))
            .and_then(|()| std::fs::rename(&written, tmp).map_err(|e| Error::runtime(path, e)));
        if result.is_err() {
            let _ = std::fs::remove_file(&written);
        }
        result
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

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array4, Axis};

    fn geometry() -> Geometry {
        Geometry {
            spacing: [2.5, 0.9, 0.8],
            origin: [4.0, -7.0, 12.0],
            direction: [0., -1., 0., 1., 0., 0., 0., 0., 1.],
        }
    }

    /// A 4-D NIfTI file of `channels` int16 volumes (c, z, y, x) = (c, 3, 4, 5) with `geometry()`.
    fn write_4d(path: &Path, channels: usize) -> Array4<i16> {
        let data =
            Array4::from_shape_fn((channels, 3, 4, 5), |(c, z, y, x)| (c * 1000 + z * 100 + y * 10 + x) as i16 - 7);
        let header = geometry().to_header();
        WriterOptions::new(path).reference_header(&header).write_nifti(&data.view().reversed_axes()).unwrap();
        data
    }

    #[test]
    fn splits_4d_volumes_keeping_type_and_geometry() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("multi.nii.gz");
        let data = write_4d(&source, 2);
        let err = read_image(&source).unwrap_err();
        assert!(err.message.contains("4-D image where a 3-D image is expected"), "{err}");
        let volumes = read_volumes(&source).unwrap();
        assert_eq!(volumes.len(), 2);
        for (c, volume) in volumes.iter().enumerate() {
            let path = dir.path().join(format!("part_{c:04}.nii.gz"));
            write_volume(&path, volume).unwrap();
            let image = read_image(&path).unwrap();
            assert_eq!(image.data, data.index_axis(Axis(0), c).mapv(f32::from));
            assert_eq!(image.geometry, Geometry::from_header(&geometry().to_header()).unwrap());
            assert_eq!(image.header.data_type().unwrap(), NiftiType::Int16);
            assert_eq!(image.header.dim, [3, 5, 4, 3, 1, 1, 1, 1]);
        }
    }

    #[test]
    fn a_3d_file_is_one_volume_and_scaling_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("scaled.nii");
        let data = Array3::from_shape_fn((3, 4, 5), |(z, y, x)| (z * 100 + y * 10 + x) as i16);
        write_new(&source, data.view(), &geometry()).unwrap();
        // scl_slope and scl_inter sit at bytes 112..120 of the header; the writer always resets them.
        let mut bytes = std::fs::read(&source).unwrap();
        bytes[112..116].copy_from_slice(&0.5f32.to_le_bytes());
        bytes[116..120].copy_from_slice(&3.0f32.to_le_bytes());
        std::fs::write(&source, bytes).unwrap();
        let volumes = read_volumes(&source).unwrap();
        assert_eq!(volumes.len(), 1);
        let path = dir.path().join("scaled_0000.nii");
        write_volume(&path, &volumes[0]).unwrap();
        let image = read_image(&path).unwrap();
        assert_eq!(image.data, data.mapv(|v| f32::from(v) * 0.5 + 3.0));
        assert_eq!(image.data, read_image(&source).unwrap().data);
    }

    #[test]
    fn dotted_names_are_written_under_their_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let data = Array3::from_shape_fn((2, 3, 4), |(z, y, x)| (z * 12 + y * 4 + x) as u8);
        for name in ["1.2.840_0000.nii", "a.b.nii.gz"] {
            write_new(&dir.path().join(name), data.view(), &geometry()).unwrap();
            assert_eq!(read_image(&dir.path().join(name)).unwrap().data, data.mapv(f32::from), "{name}");
        }
        let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["1.2.840_0000.nii", "a.b.nii.gz"]);
    }

    #[test]
    fn refuses_5d_images() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("vector.nii");
        let data = ndarray::Array5::<u8>::zeros((5, 4, 3, 1, 2));
        WriterOptions::new(&source).reference_header(&geometry().to_header()).write_nifti(&data).unwrap();
        let err = read_volumes(&source).unwrap_err();
        assert!(err.message.starts_with(&source.display().to_string()) && err.message.contains("5-D image"), "{err}");
    }
}
