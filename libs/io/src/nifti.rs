//! NIfTI-1 images (`.nii`, `.nii.gz`) as C-order arrays in nnU-Net's axis order, as SimpleITK reads them.
//!
//! A NIfTI file stores voxels with i fastest; read as a Fortran-order `[i, j, k]` array, its reversed
//! axes are a C-order `[k, j, i]` array at no cost. That is the order nnU-Net uses everywhere, so
//! `data[[z, y, x]]` here equals `data[z, y, x]` of nnU-Net's numpy arrays.

use crate::geometry::Geometry;
use crate::image::{Image, Stored};
use crate::inflate;
use crate::output::write_atomically;
use crate::{Error, PixelType, Result};
use flate2::read::MultiGzDecoder;
use ndarray::{Array3, ArrayView3};
use nifti::writer::WriterOptions;
use nifti::{NiftiHeader, NiftiType};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Size of a NIfTI-1 header on disk; the voxel data of a `.nii` starts at or after `vox_offset >= 352`.
const HEADER_BYTES: usize = 348;
/// Size of a NIfTI-2 header on disk, and its single-file magic.
const NIFTI2_HEADER_BYTES: usize = 540;
const NIFTI2_MAGIC: &[u8; 8] = b"n+2\0\r\n\x1a\n";
const SINGLE_FILE_MAGIC: &[u8; 4] = b"n+1\0";

/// Reads a NIfTI file's volumes as `f32` with `scl_slope`/`scl_inter` applied, as nnU-Net's readers do: a
/// 2-D image is one slice (`[1, y, x]`), a 4-D one several channels (`SimpleITKIO.read_images`).
pub(crate) fn read_nifti(path: &Path) -> Result<Vec<Image<f32>>> {
    let (layout, volumes) = read_f32_volumes(path)?;
    volumes.into_iter().map(|data| image_of(path, layout.volume_header(), data)).collect()
}

/// The image of a NIfTI file's voxels: SimpleITK's geometry of its header, made planar for a 2-D file.
fn image_of(path: &Path, header: NiftiHeader, data: Array3<f32>) -> Result<Image<f32>> {
    let geometry = Geometry::from_header(&header).map_err(|problem| Error::bad_input(path, problem))?;
    let dimension = if header.dim[0] == 2 { 2 } else { 3 };
    let geometry = if dimension == 2 { geometry.planar() } else { geometry };
    let scaling = with_valid_scaling(&header);
    let scaled = scaling.scl_slope != 1.0 || scaling.scl_inter != 0.0;
    // scaled values are what the image holds, as float32 (as write_volume writes them)
    let pixel = if scaled { PixelType::F32 } else { pixel_of(header.data_type().expect("checked when read")) };
    Ok(Image { data, geometry, stored: Stored { nifti_header: Some(header), ..Stored::new(dimension, pixel) } })
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

/// A NIfTI-2 header (540 bytes: 64-bit sizes and offset, double-precision geometry) as the equivalent
/// NIfTI-1 header, so that everything downstream (geometry, scaling, writing like it) works unchanged,
/// and the offset of its voxel data. Sizes must fit NIfTI-1's 16 bits, the codes their NIfTI-1 fields;
/// pixdim, quaternion, sform, scaling and calibration are rounded to single precision (geometry agrees
/// with SimpleITK's, which keeps doubles, to about 1e-7 relative). Outputs written like a NIfTI-2 image
/// are therefore NIfTI-1 files with the same geometry.
fn nifti2_header(path: &Path, bytes: &[u8]) -> Result<(NiftiHeader, u64)> {
    if bytes.len() < NIFTI2_HEADER_BYTES {
        return Err(Error::bad_input(
            path,
            format!("truncated NIfTI-2 header ({} of {NIFTI2_HEADER_BYTES} bytes)", bytes.len()),
        ));
    }
    if &bytes[4..12] != NIFTI2_MAGIC {
        return Err(Error::bad_input(
            path,
            "not a single-file NIfTI-2 image (magic is not \"n+2\"; .hdr/.img pairs are not supported)",
        ));
    }
    let little = i32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) == NIFTI2_HEADER_BYTES as i32;
    let field = |at: usize, width: usize| -> [u8; 8] {
        let mut value = [0u8; 8];
        let source = &bytes[at..at + width];
        if little {
            value[..width].copy_from_slice(source);
        } else {
            value[..width].iter_mut().zip(source.iter().rev()).for_each(|(v, b)| *v = *b);
        }
        value
    };
    let int = |at: usize, width: usize| -> i64 {
        let value = field(at, width);
        match width {
            2 => i64::from(i16::from_le_bytes([value[0], value[1]])),
            4 => i64::from(i32::from_le_bytes(value[..4].try_into().expect("4 bytes"))),
            _ => i64::from_le_bytes(value),
        }
    };
    let float = |at: usize| f64::from_le_bytes(field(at, 8)) as f32;
    let rank = int(16, 8);
    if !(1..=7).contains(&rank) {
        return Err(Error::bad_input(path, format!("invalid dimension count dim[0] = {rank}")));
    }
    let mut dim = [1u16; 8];
    dim[0] = rank as u16;
    for (i, d) in dim.iter_mut().enumerate().skip(1).take(rank as usize) {
        let size = int(16 + 8 * i, 8);
        *d = u16::try_from(size).map_err(|_| {
            Error::bad_input(path, format!("NIfTI-2 size dim[{i}] = {size} is too large (at most {})", u16::MAX))
        })?;
    }
    let small = |name: &str, at: usize, width: usize| -> Result<i16> {
        let value = int(at, width);
        i16::try_from(value).map_err(|_| Error::bad_input(path, format!("NIfTI-2 {name} {value} is too large")))
    };
    let byte = |name: &str, at: usize| -> Result<u8> {
        let value = int(at, 4);
        u8::try_from(value).map_err(|_| Error::bad_input(path, format!("NIfTI-2 {name} {value} is too large")))
    };
    let vox_offset = int(168, 8);
    if vox_offset < NIFTI2_HEADER_BYTES as i64 {
        return Err(Error::bad_input(path, format!("invalid vox_offset {vox_offset}")));
    }
    let row = |at: usize| [0, 1, 2, 3].map(|i| float(at + 8 * i));
    let header = NiftiHeader {
        sizeof_hdr: HEADER_BYTES as i32,
        magic: *SINGLE_FILE_MAGIC,
        endianness: if little { nifti::Endianness::Little } else { nifti::Endianness::Big },
        datatype: small("datatype", 12, 2)?,
        bitpix: small("bitpix", 14, 2)?,
        dim,
        intent_p1: float(80),
        intent_p2: float(88),
        intent_p3: float(96),
        pixdim: [0, 1, 2, 3, 4, 5, 6, 7].map(|i| float(104 + 8 * i)),
        vox_offset: 352.0,
        scl_slope: float(176),
        scl_inter: float(184),
        cal_max: float(192),
        cal_min: float(200),
        slice_duration: float(208),
        toffset: float(216),
        slice_start: small("slice_start", 224, 8)?,
        slice_end: small("slice_end", 232, 8)?,
        descrip: bytes[240..320].to_vec(),
        aux_file: bytes[320..344].try_into().expect("24 bytes"),
        qform_code: small("qform_code", 344, 4)?,
        sform_code: small("sform_code", 348, 4)?,
        quatern_b: float(352),
        quatern_c: float(360),
        quatern_d: float(368),
        quatern_x: float(376),
        quatern_y: float(384),
        quatern_z: float(392),
        srow_x: row(400),
        srow_y: row(432),
        srow_z: row(464),
        slice_code: byte("slice_code", 496)?,
        xyzt_units: byte("xyzt_units", 500)?,
        intent_code: small("intent_code", 504, 4)?,
        intent_name: bytes[508..524].try_into().expect("16 bytes"),
        dim_info: bytes[524],
        ..NiftiHeader::default()
    };
    Ok((header, vox_offset as u64))
}

/// The spatial shape `[nx, ny, nz]` of a header (`nz` 1 for a 2-D image) and its number of volumes along
/// the 4th dimension (1 for a 2-D or 3-D image), refusing anything else, and several volumes unless
/// `volumes_allowed`.
fn volume_layout(header: &NiftiHeader, volumes_allowed: bool) -> std::result::Result<([usize; 3], usize), String> {
    let rank = header.dim[0] as usize;
    if !(1..=7).contains(&rank) {
        return Err(format!("invalid dimension count dim[0] = {rank}"));
    }
    let dims = &header.dim[1..=rank];
    let expected = if volumes_allowed { "a 2-D, 3-D or 4-D image" } else { "a 2-D or 3-D image" };
    let volumes = if rank >= 4 { dims[3] as usize } else { 1 };
    if rank < 2 || dims[4.min(rank)..].iter().any(|&d| d != 1) || (volumes > 1 && !volumes_allowed) {
        return Err(format!("{rank}-D image where {expected} is expected (dim {dims:?})"));
    }
    if dims.contains(&0) {
        return Err(format!("empty image or negative size (dim {dims:?})"));
    }
    let nz = if rank == 2 { 1 } else { dims[2] as usize };
    Ok(([dims[0] as usize, dims[1] as usize, nz], volumes))
}

/// A NIfTI file's header and where its voxels are: `needed` bytes (all its volumes, in the file's
/// datatype and byte order) from `data_start` in the file, decompressed when it is gzip.
struct Layout {
    header: NiftiHeader,
    shape: [usize; 3],
    volumes: usize,
    datatype: NiftiType,
    data_start: u64,
    needed: usize,
}

impl Layout {
    /// The header of one of the file's volumes: the file's, made 3-D (geometry, datatype and scaling
    /// unchanged).
    fn volume_header(&self) -> NiftiHeader {
        let mut header = self.header.clone();
        if header.dim[0] > 3 {
            header.dim = [3, header.dim[1], header.dim[2], header.dim[3], 1, 1, 1, 1];
        }
        header
    }

    fn volume_voxels(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Whether a header's first field, `sizeof_hdr`, is NIfTI-2's in either byte order.
fn sized_as_nifti2(header_bytes: &[u8]) -> bool {
    header_bytes.get(..4).is_some_and(|size| {
        let size: [u8; 4] = size.try_into().expect("4 bytes");
        [i32::from_le_bytes(size), i32::from_be_bytes(size)].contains(&(NIFTI2_HEADER_BYTES as i32))
    })
}

/// Whether a NIfTI file is NIfTI-2, from its first bytes. SimpleITK reads no NIfTI-2, so nnU-Net's
/// trial read gives such a dataset `NibabelIO`.
pub(crate) fn is_nifti2(path: &Path) -> Result<bool> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, &e))?;
    let mut start = Vec::with_capacity(4);
    let mut file = std::io::BufReader::new(file);
    let compressed = inflate::is_gzip(std::io::BufRead::fill_buf(&mut file).map_err(|e| Error::io(path, &e))?);
    let stream: Box<dyn Read> = if compressed { Box::new(MultiGzDecoder::new(file)) } else { Box::new(file) };
    // a file too short or corrupt is refused by the reader that follows, with its own message
    let _ = stream.take(4).read_to_end(&mut start);
    Ok(sized_as_nifti2(&start))
}

fn corrupt(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::bad_input(path, format!("corrupt or truncated gzip stream: {e}"))
}

/// The header of a NIfTI file's bytes `raw` (gzip or not) and where its voxels are.
fn read_layout(path: &Path, raw: &[u8]) -> Result<Layout> {
    let mut stream: Box<dyn Read> =
        if inflate::is_gzip(raw) { Box::new(MultiGzDecoder::new(raw)) } else { Box::new(raw) };
    let mut header_bytes = Vec::with_capacity(NIFTI2_HEADER_BYTES);
    (&mut stream).take(HEADER_BYTES as u64).read_to_end(&mut header_bytes).map_err(corrupt(path))?;
    let (header, data_start) = if sized_as_nifti2(&header_bytes) {
        let rest = (NIFTI2_HEADER_BYTES - HEADER_BYTES) as u64;
        (&mut stream).take(rest).read_to_end(&mut header_bytes).map_err(corrupt(path))?;
        nifti2_header(path, &header_bytes)?
    } else {
        let header = parse_header(path, &header_bytes)?;
        if header.vox_offset < HEADER_BYTES as f32 {
            return Err(Error::bad_input(path, format!("invalid vox_offset {}", header.vox_offset)));
        }
        let data_start = header.vox_offset as u64;
        (header, data_start)
    };
    let (shape, volumes) = volume_layout(&header, true).map_err(|problem| Error::bad_input(path, problem))?;
    let datatype = header
        .data_type()
        .ok()
        .filter(|t| SUPPORTED_TYPES.contains(t))
        .ok_or_else(|| Error::bad_input(path, format!("unsupported NIfTI datatype code {}", header.datatype)))?;
    let needed = shape
        .iter()
        .chain([&volumes, &datatype.size_of()])
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .ok_or_else(|| Error::bad_input(path, format!("image sizes {:?} overflow", &header.dim[1..])))?;
    Ok(Layout { header, shape, volumes, datatype, data_start, needed })
}

/// The voxels a NIfTI file's header claims, every volume's, from the file's first bytes (gzip or not):
/// its header is read as [`read_layout`] reads it, at most a NIfTI-2 header's 540 bytes inflated.
pub(crate) fn claimed_voxels(path: &Path, leading_bytes: &[u8]) -> Result<u64> {
    let layout = read_layout(path, leading_bytes)?;
    // read_layout checked that their bytes (`needed`) fit a usize
    Ok((layout.volume_voxels() * layout.volumes) as u64)
}

/// The voxel bytes of a NIfTI file's bytes `raw`, as elements of `E` (`u8`, or `f32` for float32 voxels,
/// decoded in place), of which the first `layout.needed` bytes are the voxels.
fn voxel_data<E: bytemuck::Pod>(path: &Path, raw: &[u8], layout: &Layout) -> Result<Vec<E>> {
    let needed = layout.needed;
    let holds = |bytes: usize| {
        let voxels = needed / layout.datatype.size_of();
        Error::bad_input(
            path,
            format!("header claims {voxels} voxels ({needed} bytes) but the file holds {bytes} bytes of voxel data"),
        )
    };
    let start = usize::try_from(layout.data_start).unwrap_or(usize::MAX);
    if !inflate::is_gzip(raw) {
        let voxels = raw.get(start..).unwrap_or_default();
        return match voxels.get(..needed) {
            Some(voxels) => Ok(bytemuck::pod_collect_to_vec(voxels)),
            None => Err(holds(voxels.len())),
        };
    }
    inflate::inflate_range(raw, start, needed).map_err(corrupt(path))?.map_err(holds)
}

/// The voxel type of a NIfTI datatype, as the rest of the readers name it.
fn pixel_of(datatype: NiftiType) -> PixelType {
    match datatype {
        NiftiType::Uint8 => PixelType::U8,
        NiftiType::Int8 => PixelType::I8,
        NiftiType::Int16 => PixelType::I16,
        NiftiType::Uint16 => PixelType::U16,
        NiftiType::Int32 => PixelType::I32,
        NiftiType::Uint32 => PixelType::U32,
        NiftiType::Int64 => PixelType::I64,
        NiftiType::Float64 => PixelType::F64,
        _ => PixelType::F32,
    }
}

/// Scales values in place as ITK and the nifti crate do: `value * scl_slope + scl_inter` in float32,
/// with [`with_valid_scaling`]'s reading of the fields.
fn scale(values: &mut [f32], header: &NiftiHeader) {
    let NiftiHeader { scl_slope, scl_inter, .. } = with_valid_scaling(header);
    values.iter_mut().for_each(|v| *v = *v * scl_slope + scl_inter);
}

/// Stored voxel bytes (`datatype`, the header's byte order) as scaled `f32` values.
fn values_f32(bytes: &[u8], datatype: NiftiType, header: &NiftiHeader) -> Vec<f32> {
    let mut values = pixel_of(datatype).decode(bytes, header.endianness == nifti::Endianness::Big);
    scale(&mut values, header);
    values
}

/// `values` of volumes of `shape` (`[nx, ny, nz]`, i fastest) as C-order arrays in nnU-Net's axis order.
fn into_volumes(values: Vec<f32>, [nx, ny, nz]: [usize; 3], volumes: usize) -> Vec<Array3<f32>> {
    let array =
        |values: Vec<f32>| Array3::from_shape_vec((nz, ny, nx), values).expect("size checked against the header");
    if volumes == 1 {
        return vec![array(values)];
    }
    values.chunks_exact(nx * ny * nz).map(|volume| array(volume.to_vec())).collect()
}

/// Reads a NIfTI file's volumes as scaled `f32` values, decoding float32 voxels in the buffer they are
/// inflated into (the common case of nnU-Net datasets, one buffer instead of two).
fn read_f32_volumes(path: &Path) -> Result<(Layout, Vec<Array3<f32>>)> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
    let layout = read_layout(path, &raw)?;
    let values = if layout.datatype == NiftiType::Float32 {
        let mut values: Vec<f32> = voxel_data(path, &raw, &layout)?;
        drop(raw);
        if layout.header.endianness != nifti::Endianness::native() {
            values.iter_mut().for_each(|v| *v = f32::from_bits(v.to_bits().swap_bytes()));
        }
        scale(&mut values, &layout.header);
        values
    } else {
        let bytes: Vec<u8> = voxel_data(path, &raw, &layout)?;
        drop(raw);
        values_f32(&bytes, layout.datatype, &layout.header)
    };
    let volumes = into_volumes(values, layout.shape, layout.volumes);
    Ok((layout, volumes))
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

/// Reads a 2-D, 3-D or 4-D NIfTI file as its volumes along the 4th dimension (one for a 2-D or 3-D file).
pub fn read_volumes(path: &Path) -> Result<Vec<Volume>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
    let layout = read_layout(path, &raw)?;
    let mut bytes: Vec<u8> = voxel_data(path, &raw, &layout)?;
    let header = layout.volume_header();
    let volume_bytes = layout.volume_voxels() * layout.datatype.size_of();
    let volume = |bytes| Volume { header: header.clone(), shape: layout.shape, datatype: layout.datatype, bytes };
    if layout.volumes == 1 {
        // no copy of the common case
        bytes.truncate(volume_bytes);
        return Ok(vec![volume(bytes)]);
    }
    Ok(bytes[..layout.needed].chunks_exact(volume_bytes).map(|b| volume(b.to_vec())).collect())
}

/// Writes a volume as a 3-D NIfTI file with its own header, datatype and voxel values. A volume whose
/// header scales its values is written as the scaled `f32` values, since the writer cannot carry the
/// scaling fields over.
pub fn write_volume(path: &Path, volume: &Volume) -> Result<()> {
    let scaled = with_valid_scaling(&volume.header);
    if scaled.scl_slope != 1.0 || scaled.scl_inter != 0.0 {
        let data = into_volumes(values_f32(&volume.bytes, volume.datatype, &volume.header), volume.shape, 1);
        return write_like(path, data[0].view(), &volume.header);
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
        let written = tmp.with_file_name(format!("{}nifti{id}{ending}", crate::output::temporary_prefix()));
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

/// Writes a label map with `reference`'s header as uint8, or uint16 from label 255 on, as nnU-Net's
/// `write_seg` chooses (`np.uint8 if np.max(seg) < 255 else np.uint16`).
pub(crate) fn write_labels_like(path: &Path, labels: ArrayView3<u16>, reference: &NiftiHeader) -> Result<()> {
    if labels.iter().all(|&l| l < u16::from(u8::MAX)) {
        write_like(path, labels.mapv(|l| l as u8).view(), reference)
    } else {
        write_like(path, labels, reference)
    }
}

/// Writes one channel of an image as NIfTI in its own voxel type, with its NIfTI header if it came from
/// one, else a new header of its geometry.
pub(crate) fn write_with_pixel(path: &Path, image: &Image<f32>) -> Result<()> {
    let header = match &image.stored.nifti_header {
        Some(header) => header.clone(),
        None => new_header(&image.geometry, [image.data.shape()[0], image.data.shape()[1], image.data.shape()[2]]),
    };
    let data = &image.data;
    match image.stored.pixel {
        PixelType::U8 => write_like(path, data.mapv(|v| v as u8).view(), &header),
        PixelType::I8 => write_like(path, data.mapv(|v| v as i8).view(), &header),
        PixelType::U16 => write_like(path, data.mapv(|v| v as u16).view(), &header),
        PixelType::I16 => write_like(path, data.mapv(|v| v as i16).view(), &header),
        PixelType::U32 => write_like(path, data.mapv(|v| v as u32).view(), &header),
        PixelType::I32 => write_like(path, data.mapv(|v| v as i32).view(), &header),
        PixelType::U64 => write_like(path, data.mapv(|v| v as u64).view(), &header),
        PixelType::I64 => write_like(path, data.mapv(|v| v as i64).view(), &header),
        PixelType::F32 => write_like(path, data.view(), &header),
        PixelType::F64 => write_like(path, data.mapv(f64::from).view(), &header),
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
    use crate::read_image;
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
        assert!(err.message.contains("holds 2 channels where one is expected"), "{err}");
        let volumes = read_volumes(&source).unwrap();
        assert_eq!(volumes.len(), 2);
        for (c, volume) in volumes.iter().enumerate() {
            let path = dir.path().join(format!("part_{c:04}.nii.gz"));
            write_volume(&path, volume).unwrap();
            let image = read_image(&path).unwrap();
            assert_eq!(image.data, data.index_axis(Axis(0), c).mapv(f32::from));
            assert_eq!(image.geometry, Geometry::from_header(&geometry().to_header()).unwrap());
            let header = image.stored.nifti_header.unwrap();
            assert_eq!(header.data_type().unwrap(), NiftiType::Int16);
            assert_eq!(header.dim, [3, 5, 4, 3, 1, 1, 1, 1]);
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
    fn every_gzip_layout_reads_the_same_voxels() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("f.nii.gz");
        let data = Array3::from_shape_fn((3, 4, 5), |(z, y, x)| (z * 100 + y * 10 + x) as f32 / 4.0 - 7.0);
        write_new(&source, data.view(), &geometry()).unwrap();
        let member = std::fs::read(&source).unwrap();
        let mut inflated = Vec::new();
        MultiGzDecoder::new(member.as_slice()).read_to_end(&mut inflated).unwrap();
        let gzip = |bytes: &[u8]| {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(bytes).unwrap();
            encoder.finish().unwrap()
        };
        let mut lying_size = member.clone();
        let at = lying_size.len() - 4;
        lying_size[at..].copy_from_slice(&12345u32.to_le_bytes());
        let variants = [
            ("one member", member.clone()),
            ("an ISIZE that lies", lying_size),
            ("two members (bgzip)", [gzip(&inflated[..400]), gzip(&inflated[400..])].concat()),
            ("bytes after the voxels", gzip(&[inflated.as_slice(), b"trailing"].concat())),
        ];
        for (name, bytes) in variants {
            let path = dir.path().join("variant.nii.gz");
            std::fs::write(&path, bytes).unwrap();
            let images = read_nifti(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(images[0].data, data, "{name}");
        }
        // a stream cut within the voxels (the header whole) is refused by the streaming decoder
        let cut = gzip(&inflated);
        let path = dir.path().join("cut.nii.gz");
        std::fs::write(&path, &cut[..cut.len() - 40]).unwrap();
        let error = read_nifti(&path).unwrap_err();
        assert!(error.message.contains("corrupt or truncated gzip stream"), "{error}");
    }

    #[test]
    fn float32_voxels_are_scaled_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("scaled.nii");
        let data = Array3::from_shape_fn((3, 4, 5), |(z, y, x)| (z * 100 + y * 10 + x) as f32 - 0.25);
        write_new(&source, data.view(), &geometry()).unwrap();
        let mut bytes = std::fs::read(&source).unwrap();
        bytes[112..116].copy_from_slice(&0.5f32.to_le_bytes());
        bytes[116..120].copy_from_slice(&3.0f32.to_le_bytes());
        std::fs::write(&source, &bytes).unwrap();
        let image = read_image(&source).unwrap();
        assert_eq!(image.data, data.mapv(|v| v * 0.5 + 3.0));
        assert_eq!(image.stored.pixel, PixelType::F32);
        // a header claiming more voxels than the file holds
        bytes[42..44].copy_from_slice(&6u16.to_le_bytes());
        std::fs::write(&source, &bytes).unwrap();
        let error = read_image(&source).unwrap_err();
        assert!(
            error.message.ends_with("header claims 72 voxels (288 bytes) but the file holds 240 bytes of voxel data"),
            "{error}"
        );
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

    /// nibabel's NIfTI-2 fixture (3-D int16 of 5 x 4 x 3) with `change` applied to its bytes, read.
    fn read_nifti2(change: impl FnOnce(&mut Vec<u8>)) -> Result<Vec<Image<f32>>> {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sitk_formats/nifti2_i16.nii");
        let mut bytes = std::fs::read(fixture).unwrap();
        change(&mut bytes);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.nii");
        std::fs::write(&path, bytes).unwrap();
        read_nifti(&path)
    }

    fn nifti2_refusal(change: impl FnOnce(&mut Vec<u8>)) -> String {
        let error = read_nifti2(change).expect_err("must be refused");
        assert_eq!(error.kind, crate::ErrorKind::BadInput);
        assert!(!error.message.contains('\n'));
        error.message
    }

    #[test]
    fn nifti2_becomes_an_equivalent_nifti1_header_and_refuses_what_does_not_fit() {
        let images = read_nifti2(|_| {}).unwrap();
        let header = images[0].stored.nifti_header.as_ref().unwrap();
        assert_eq!((header.sizeof_hdr, &header.magic, header.dim), (348, b"n+1\0", [3, 5, 4, 3, 1, 1, 1, 1]));
        assert_eq!((header.datatype, header.sform_code), (4, 2));
        assert_eq!(images[0].data.shape(), [3, 4, 5]);
        let message = nifti2_refusal(|b| b[24..32].copy_from_slice(&70000i64.to_le_bytes()));
        assert!(message.ends_with("NIfTI-2 size dim[1] = 70000 is too large (at most 65535)"), "{message}");
        let message = nifti2_refusal(|b| b[24..32].copy_from_slice(&(-5i64).to_le_bytes()));
        assert!(message.contains("dim[1] = -5 is too large"), "{message}");
        let message = nifti2_refusal(|b| b[24..32].copy_from_slice(&65535i64.to_le_bytes()));
        assert!(message.contains("header claims 786420 voxels"), "{message}");
        let message = nifti2_refusal(|b| b[344..348].copy_from_slice(&40000i32.to_le_bytes()));
        assert!(message.ends_with("NIfTI-2 qform_code 40000 is too large"), "{message}");
        let message = nifti2_refusal(|b| b[168..176].copy_from_slice(&100i64.to_le_bytes()));
        assert!(message.ends_with("invalid vox_offset 100"), "{message}");
        assert!(nifti2_refusal(|b| b[4..8].copy_from_slice(b"ni2\0")).contains("not a single-file NIfTI-2 image"));
        assert!(nifti2_refusal(|b| b.truncate(500)).ends_with("truncated NIfTI-2 header (500 of 540 bytes)"));
        assert!(nifti2_refusal(|b| b.truncate(600)).contains("file holds 56 bytes of voxel data"));
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
