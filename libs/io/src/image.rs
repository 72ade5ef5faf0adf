//! Images in every format nn-tools reads, as C-order arrays in nnU-Net's axis order, and outputs
//! written in the format their file name asks for, with the geometry of the image they belong to.
//!
//! Every image is 3-D here, as in nnU-Net: a 2-D file is one slice (`[1, y, x]`) whose spacing along the
//! added axis is 999 times its largest spacing (`nnunetv2/imageio/simpleitk_reader_writer.py:
//! SimpleITKIO.read_images`), and [`Stored::dimension`] remembers that outputs are 2-D files again.

use crate::geometry::Geometry;
use crate::raster::RasterImage;
use crate::reorient::Reorientation;
use crate::{Error, NiftiHeader, PixelType, ReaderWriter, Result, gipl, metaimage, natural, nifti, nrrd, tiff};
use ndarray::{Array3, ArrayView3, Axis, IxDyn};
use std::path::Path;

/// One channel of an image: voxels in nnU-Net's axis order, the geometry SimpleITK would report (made
/// 3-D for a 2-D file), and how the file stored it.
#[derive(Debug, Clone, PartialEq)]
pub struct Image<T> {
    pub data: Array3<T>,
    pub geometry: Geometry,
    pub stored: Stored,
}

/// How the file an image came from stores it: what writing an output like it needs (nnU-Net keeps its
/// reader's properties for `write_seg` for the same reason).
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The file's spatial dimension: 2 for a 2-D image (read as one slice), else 3.
    pub dimension: usize,
    /// The file's voxel type.
    pub pixel: PixelType,
    /// A NIfTI file's header, copied into NIfTI outputs bit for bit (only dim, datatype and scaling
    /// describe the new data).
    pub nifti_header: Option<NiftiHeader>,
    /// How `NibabelIOWithReorient` reoriented the file's array to RAS; NIfTI label maps written like it
    /// are turned back first.
    pub reorientation: Option<Reorientation>,
}

impl Stored {
    /// A file of `dimension` spatial axes and `pixel` voxels without a NIfTI header.
    pub fn new(dimension: usize, pixel: PixelType) -> Self {
        Self { dimension, pixel, nifti_header: None, reorientation: None }
    }
}

/// The image formats, told apart by file ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Nifti,
    MetaImage,
    Nrrd,
    Png,
    Bmp,
    Tiff,
    Gipl,
}

/// Every file ending nn-tools reads, each with its format; where one ending ends another, the longer
/// comes first.
const ENDINGS: [(&str, Format); 12] = [
    (".nii.gz", Format::Nifti),
    (".nii", Format::Nifti),
    (".mha", Format::MetaImage),
    (".mhd", Format::MetaImage),
    (".nrrd", Format::Nrrd),
    (".nhdr", Format::Nrrd),
    (".png", Format::Png),
    (".bmp", Format::Bmp),
    (".tif", Format::Tiff),
    (".tiff", Format::Tiff),
    (".gipl.gz", Format::Gipl),
    (".gipl", Format::Gipl),
];

/// Every file ending nn-tools reads, in lower case.
pub const IMAGE_ENDINGS: [&str; ENDINGS.len()] = {
    let mut endings = [""; ENDINGS.len()];
    let mut i = 0;
    while i < ENDINGS.len() {
        endings[i] = ENDINGS[i].0;
        i += 1;
    }
    endings
};

/// Splits a file name into its stem and image ending (as spelled in the name; endings are matched
/// without regard to case, as nnU-Net compares them).
pub fn split_image_ending(name: &str) -> Option<(&str, &str)> {
    ENDINGS.iter().find_map(|(ending, _)| {
        let stem_len = name.len().checked_sub(ending.len())?;
        (name.is_char_boundary(stem_len) && name[stem_len..].eq_ignore_ascii_case(ending))
            .then(|| name.split_at(stem_len))
    })
}

impl Format {
    /// The format of a file, by its ending.
    pub fn of(path: &Path) -> Result<Self> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let (_, ending) = split_image_ending(&name).ok_or_else(|| {
            let known: Vec<&str> = ENDINGS.iter().map(|(e, _)| *e).collect();
            Error::bad_input(path, format!("not an image file name (known endings: {})", known.join(" ")))
        })?;
        Ok(ENDINGS.iter().find(|(e, _)| e.eq_ignore_ascii_case(ending)).expect("split by these endings").1)
    }
}

/// What an image file's header claims, as [`claimed_voxels`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The values the image holds, every channel's: a NIfTI's volumes, a MetaImage's or NRRD's
    /// components, RGB(A) samples and a TIFF's pages count, as the reader sizes the data it decodes.
    Voxels(u64),
    /// A MetaImage or NRRD header whose voxels live in another file, which it names (as a `.mhd` or
    /// `.nhdr` does): reading the image would read that file.
    DetachedData(String),
}

/// What the header of an image file named `path` claims (its ending chooses the format, errors name it),
/// read from the file's first bytes with the header parser of the file's own reader and before anything
/// is decoded: a NIfTI header is all that is inflated of a `.nii.gz`, a MetaImage or NRRD text header is
/// read within its reader's bound on headers, a TIFF's page directories are walked without decoding a
/// strip; nothing of the size the header claims is allocated. An error is a header the reader refuses
/// too (or one cut off by the end of `leading_bytes`); `Ok` does not promise that the reader reads the
/// rest of the file.
pub fn claimed_voxels(path: &Path, leading_bytes: &[u8]) -> Result<Claim> {
    match Format::of(path)? {
        Format::Nifti => nifti::claimed_voxels(path, leading_bytes).map(Claim::Voxels),
        Format::MetaImage => metaimage::claim(path, leading_bytes),
        Format::Nrrd => nrrd::claim(path, leading_bytes),
        Format::Png => natural::png_claimed_values(path, leading_bytes).map(Claim::Voxels),
        Format::Bmp => natural::bmp_claimed_values(path, leading_bytes).map(Claim::Voxels),
        Format::Tiff => tiff::claimed_values(path, leading_bytes).map(Claim::Voxels),
        Format::Gipl => gipl::claimed_voxels(path, leading_bytes).map(Claim::Voxels),
    }
}

/// Reads a single-channel image, with the reader nnU-Net chooses for a file of its ending.
pub fn read_image(path: &Path) -> Result<Image<f32>> {
    ReaderWriter::for_file(path)?.read_single(path)
}

/// Reads a label map, with the reader nnU-Net chooses for a file of its ending; every voxel must be a
/// finite integer.
pub fn read_label_map(path: &Path) -> Result<Image<i32>> {
    ReaderWriter::for_file(path)?.read_seg(path)
}

/// Writes a label map as nnU-Net's `write_seg` does, in the format of `path`'s ending, with `geometry`
/// and as a file of `stored.dimension`: uint8, or uint16 from label 255 on (`np.uint8 if np.max(seg) <
/// 255 else np.uint16`); compressed where the format allows. A NIfTI template header is copied.
pub fn write_label_map(path: &Path, labels: ArrayView3<u16>, geometry: &Geometry, stored: &Stored) -> Result<()> {
    let pixel = if labels.iter().all(|&l| l < 255) { PixelType::U8 } else { PixelType::U16 };
    let format = Format::of(path)?;
    if format == Format::Nifti {
        let header = match &stored.nifti_header {
            Some(header) => header.clone(),
            None => nifti::new_header(geometry, shape_of(labels.shape())),
        };
        if let Some(reorientation) = &stored.reorientation {
            return nifti::write_labels_like(path, reorientation.undo(labels).view(), &header);
        }
        return nifti::write_labels_like(path, labels, &header);
    }
    write_voxels(path, format, labels.mapv(f32::from).view(), pixel, geometry, stored)
}

/// Writes one channel of an image in the format of `path`'s ending, keeping its voxel type where the
/// format has it (nn-dataset's conversions).
pub fn write_image(path: &Path, image: &Image<f32>) -> Result<()> {
    let format = Format::of(path)?;
    if format == Format::Nifti {
        return nifti::write_with_pixel(path, image);
    }
    write_voxels(path, format, image.data.view(), image.stored.pixel, &image.geometry, &image.stored)
}

/// Writes the channels of a 2-D image as one RGB (3) or RGBA (4) 8-bit PNG, as `NaturalImage2DIO` reads
/// one file as that many channels; the first channel gives the geometry and voxel type.
pub fn write_rgb(path: &Path, channels: &[Image<f32>]) -> Result<()> {
    let first = channels.first().ok_or_else(|| Error::runtime(path, "no channels to write"))?;
    let planes: Vec<ArrayView3<f32>> = channels.iter().map(|c| c.data.view()).collect();
    let stacked = ndarray::concatenate(Axis(0), &planes)
        .map_err(|_| Error::runtime(path, "the channels of one image differ in shape"))?;
    let mut raster = to_raster(path, first.data.view(), &first.geometry, 2)?;
    raster.data = stacked.into_dyn();
    raster.channel_axis = true;
    crate::natural::write_natural(path, Format::of(path)?, &raster, first.stored.pixel)
}

fn shape_of(shape: &[usize]) -> [usize; 3] {
    [shape[0], shape[1], shape[2]]
}

/// Writes voxels in a format other than NIfTI.
fn write_voxels(
    path: &Path,
    format: Format,
    data: ArrayView3<f32>,
    pixel: PixelType,
    geometry: &Geometry,
    stored: &Stored,
) -> Result<()> {
    let raster = to_raster(path, data, geometry, stored.dimension)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy().to_lowercase();
    match format {
        Format::MetaImage if name.ends_with(".mha") => metaimage::write_metaimage(path, &raster, pixel, true),
        Format::Nrrd if name.ends_with(".nrrd") => nrrd::write_nrrd(path, &raster, pixel),
        Format::Gipl => gipl::write_gipl(path, &raster, pixel),
        Format::MetaImage | Format::Nrrd => {
            Err(Error::bad_input(path, "writing a detached header (.mhd, .nhdr) is not supported; use .mha or .nrrd"))
        }
        Format::Png | Format::Bmp | Format::Tiff if stored.dimension == 2 => {
            crate::natural::write_natural(path, format, &raster, pixel)
        }
        Format::Tiff => crate::tiff::write_tiff_stack(path, &raster, pixel, geometry),
        Format::Png | Format::Bmp => Err(Error::bad_input(
            path,
            format!("a 3-D image of shape {:?} cannot be written as a 2-D image", data.shape()),
        )),
        Format::Nifti => unreachable!("NIfTI is written from its header"),
    }
}

/// The image as the raster writers take it: file-order geometry of `dimension` axes; a 2-D image drops
/// its added axis (which must hold one slice).
fn to_raster(path: &Path, data: ArrayView3<f32>, geometry: &Geometry, dimension: usize) -> Result<RasterImage> {
    let [sz, sy, sx] = geometry.spacing;
    let d = &geometry.direction;
    if dimension == 2 {
        if data.shape()[0] != 1 {
            return Err(Error::bad_input(
                path,
                format!("an image of {} slices cannot be written as a 2-D image", data.shape()[0]),
            ));
        }
        let plane = data.index_axis(Axis(0), 0).to_owned().into_dyn();
        return Ok(RasterImage {
            spacing: vec![sx, sy],
            origin: geometry.origin[..2].to_vec(),
            direction: vec![d[0], d[1], d[3], d[4]],
            ..RasterImage::new(plane)
        });
    }
    Ok(RasterImage {
        spacing: vec![sx, sy, sz],
        origin: geometry.origin.to_vec(),
        direction: d.to_vec(),
        ..RasterImage::new(data.to_owned().into_dyn())
    })
}

/// The channels of a raster image as 3-D images with SimpleITK's geometry (`SimpleITKIO.read_images`):
/// a 2-D image becomes one slice, a vector or 4-D image several channels.
pub(crate) fn from_raster(path: &Path, raster: RasterImage) -> Result<Vec<Image<f32>>> {
    let spatial = raster.data.ndim() - usize::from(raster.channel_axis);
    let n = raster.spacing.len();
    // a 4-D MetaImage's geometry has a 4th axis; only the spatial part is kept
    let (spacing, origin) = (&raster.spacing[..spatial], &raster.origin[..spatial]);
    let direction: Vec<f64> =
        (0..spatial * spatial).map(|i| raster.direction[(i / spatial) * n + i % spatial]).collect();
    let geometry = match spatial {
        2 => Geometry::of_plane(
            [spacing[0], spacing[1]],
            [origin[0], origin[1]],
            [direction[0], direction[1], direction[2], direction[3]],
        ),
        3 => Geometry {
            spacing: [spacing[2], spacing[1], spacing[0]],
            origin: [origin[0], origin[1], origin[2]],
            direction: direction.try_into().expect("3 x 3"),
        },
        _ => return Err(Error::bad_input(path, format!("{spatial}-D image where a 2-D or 3-D image is expected"))),
    };
    let stored = Stored::new(spatial, raster.pixel);
    let channels: Vec<ndarray::ArrayD<f32>> = if raster.channel_axis {
        raster.data.axis_iter(Axis(0)).map(|c| c.to_owned()).collect()
    } else {
        vec![raster.data]
    };
    channels
        .into_iter()
        .map(|channel| {
            let shape = channel.shape().to_vec();
            let shape3 = if spatial == 2 { [1, shape[0], shape[1]] } else { [shape[0], shape[1], shape[2]] };
            let data = channel.into_shape_with_order(IxDyn(&shape3)).expect("same size").into_dimensionality();
            Ok(Image { data: data.expect("3-D"), geometry, stored: stored.clone() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_endings_without_regard_to_case() {
        assert_eq!(split_image_ending("a_0000.nii.gz"), Some(("a_0000", ".nii.gz")));
        assert_eq!(split_image_ending("a.NII"), Some(("a", ".NII")));
        assert_eq!(split_image_ending("road_0000.PNG"), Some(("road_0000", ".PNG")));
        assert_eq!(split_image_ending("stack.tiff"), Some(("stack", ".tiff")));
        assert_eq!(split_image_ending("notes.txt"), None);
        assert_eq!(split_image_ending("é.mha"), Some(("é", ".mha")));
        assert_eq!(Format::of(Path::new("x/y.nhdr")).unwrap(), Format::Nrrd);
        assert!(Format::of(Path::new("y.jpg")).unwrap_err().message.contains("not an image file name"));
    }

    #[test]
    fn rgb_channels_round_trip_through_one_png() {
        let dir = tempfile::tempdir().unwrap();
        let plane = Geometry::of_plane([1.0, 1.0], [0.0, 0.0], [1.0, 0.0, 0.0, 1.0]);
        let channels: Vec<Image<f32>> = (0..3)
            .map(|c| Image {
                data: Array3::from_shape_fn((1, 4, 5), |(_, y, x)| (c * 80 + y * 5 + x) as f32),
                geometry: plane,
                stored: Stored::new(2, PixelType::U8),
            })
            .collect();
        let path = dir.path().join("rgb_0000.png");
        write_rgb(&path, &channels).unwrap();
        let read = ReaderWriter::NaturalImage2d.read_images(std::slice::from_ref(&path)).unwrap();
        assert_eq!(
            read.iter().map(|i| &i.data).collect::<Vec<_>>(),
            channels.iter().map(|i| &i.data).collect::<Vec<_>>()
        );
        let refused = write_rgb(&dir.path().join("rg.png"), &channels[..2]).unwrap_err();
        assert!(refused.message.contains("only 3 or 4 uint8 channels"), "{refused}");
    }

    fn fixtures() -> Vec<std::path::PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dirs = [root.join("../../tests/fixtures/sitk_formats"), root.join("tests/fixtures/natural_tiff")];
        let mut files: Vec<_> =
            dirs.iter().flat_map(|d| std::fs::read_dir(d).unwrap()).map(|e| e.unwrap().path()).collect();
        files.retain(|f| split_image_ending(&f.file_name().unwrap().to_string_lossy()).is_some());
        files.sort();
        files
    }

    #[test]
    fn headers_claim_the_values_their_readers_read() {
        for path in fixtures() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).unwrap();
            let claim = claimed_voxels(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
            if name.ends_with(".mhd") || name.ends_with(".nhdr") {
                let data_file = name.split('.').next().unwrap().to_owned();
                assert!(
                    matches!(&claim, Claim::DetachedData(file) if file.starts_with(&data_file)),
                    "{name}: {claim:?}"
                );
                continue;
            }
            let images = ReaderWriter::for_file(&path).unwrap().read_images(std::slice::from_ref(&path)).unwrap();
            let read: usize = images.iter().map(|image| image.data.len()).sum();
            // Pillow applies a palette: three channels of each index the header counts
            let per_sample = if name == "palette.png" { 3 } else { 1 };
            assert_eq!(claim, Claim::Voxels((read / per_sample) as u64), "{name}");
            // the header alone suffices where the data follows it
            if name.ends_with(".nii.gz") || name.ends_with(".nii") || name.ends_with(".mha") || name.ends_with(".gipl")
            {
                let prefix = &bytes[..bytes.len().min(600)];
                assert_eq!(claimed_voxels(&path, prefix), Ok(claim), "{name}");
            }
        }
    }

    #[test]
    fn claims_are_read_without_decoding_what_they_claim() {
        // a .nii.gz of a header alone claiming 10^9 voxels: only the header is inflated
        let mut header = vec![0u8; 352];
        header[..4].copy_from_slice(&348i32.to_le_bytes());
        for (i, d) in [3i16, 1000, 1000, 1000].iter().enumerate() {
            header[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
        }
        header[70..72].copy_from_slice(&16i16.to_le_bytes()); // float32
        header[108..112].copy_from_slice(&352f32.to_le_bytes());
        header[344..348].copy_from_slice(b"n+1\0");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &header).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(claimed_voxels(Path::new("a.nii.gz"), &gz), Ok(Claim::Voxels(1_000_000_000)));
        assert_eq!(claimed_voxels(Path::new("a.nii"), &header), Ok(Claim::Voxels(1_000_000_000)));
        // a header the reader refuses is refused here with the reader's message
        header[344..348].copy_from_slice(b"ni1\0");
        let refused = claimed_voxels(Path::new("a.nii"), &header).unwrap_err();
        assert!(refused.message.starts_with("a.nii: not a single-file NIfTI-1 image"), "{refused}");
        let mha = "NDims = 3\nDimSize = 100000 100000 100000\nElementType = MET_DOUBLE\nElementDataFile = LOCAL\n";
        assert_eq!(claimed_voxels(Path::new("a.mha"), mha.as_bytes()), Ok(Claim::Voxels(1_000_000_000_000_000)));
        let components =
            "NDims = 2\nDimSize = 7 9\nElementNumberOfChannels = 3\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n";
        assert_eq!(claimed_voxels(Path::new("a.mha"), components.as_bytes()), Ok(Claim::Voxels(189)));
        let nrrd = b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 10 20 30\nencoding: raw\n\n";
        assert_eq!(claimed_voxels(Path::new("a.nrrd"), nrrd), Ok(Claim::Voxels(6000)));
        // PNG headers before a few bytes of data; one claiming more than the file can hold is refused, as
        // its reader refuses it
        let png = |side: u32| {
            let mut png = Vec::new();
            let mut encoder = png::Encoder::new(&mut png, side, side);
            encoder.set_color(png::ColorType::Rgb);
            let mut writer = encoder.write_header().unwrap();
            writer.write_chunk(png::chunk::IDAT, &[0; 16]).unwrap();
            drop(writer);
            png
        };
        assert_eq!(claimed_voxels(Path::new("a.png"), &png(100)), Ok(Claim::Voxels(3 * 100 * 100)));
        let refused = claimed_voxels(Path::new("a.png"), &png(60_000)).unwrap_err();
        assert!(refused.message.ends_with("limits are exceeded"), "{refused}");
        let overflow = "NDims = 4\nDimSize = 100000000 100000000 100000000 100000000\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n";
        assert!(claimed_voxels(Path::new("a.mha"), overflow.as_bytes()).unwrap_err().message.contains("overflow"));
    }

    #[test]
    fn a_data_file_a_header_names_is_its_claim() {
        let nrrd = b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 1 1 1\ndata file: /etc/shadow\n\n";
        assert_eq!(claimed_voxels(Path::new("a.nrrd"), nrrd), Ok(Claim::DetachedData("/etc/shadow".into())));
        let mha = "NDims = 2\nDimSize = 1 1\nElementType = MET_UCHAR\nElementDataFile = ../secret.raw\n";
        assert_eq!(claimed_voxels(Path::new("a.mha"), mha.as_bytes()), Ok(Claim::DetachedData("../secret.raw".into())));
        // past 64 KB of comments, within the reader's bound on headers: still found
        let long = format!("{}{mha}", "Comment = x\n".repeat(10_000));
        assert_eq!(
            claimed_voxels(Path::new("a.mha"), long.as_bytes()),
            Ok(Claim::DetachedData("../secret.raw".into()))
        );
        // key=value pairs are not fields; the reader reads an attached file
        let pairs = b"NRRD0004\ntype: uint8\ndimension: 1\nsizes: 2\ndata file:=x\n\n\x01\x02";
        assert_eq!(claimed_voxels(Path::new("a.nrrd"), pairs), Ok(Claim::Voxels(2)));
    }
}
