//! nnU-Net's image reader-writer classes (`nnunetv2/imageio`), chosen as nnU-Net chooses them and
//! reading what each of them reads: the class decides how a file's array becomes channels and which
//! geometry it has, the file's ending decides how it is decoded.

use crate::image::{Format, Image, Stored, from_raster};
use crate::{Error, Geometry, Result, gipl, metaimage, natural, nifti, nrrd, tiff};
use ndarray::Array3;
use std::path::{Path, PathBuf};

/// One of nnU-Net's reader-writer classes, in the order nnU-Net tries them
/// (`nnunetv2/imageio/reader_writer_registry.py: LIST_OF_IO_CLASSES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderWriter {
    /// `NaturalImage2DIO`: 2-D PNG, BMP and TIFF; an RGB(A) file holds 3 (4) channels; spacing (999, 1, 1).
    NaturalImage2d,
    /// `SimpleITKIO`: NIfTI, MetaImage, NRRD with spacing, origin and direction; 2-D files are one slice,
    /// 4-D files several channels.
    SimpleItk,
    /// `Tiff3DIO`: 3-D TIFF stacks, spacing from the `CASE.json` beside them.
    Tiff3d,
    /// `NibabelIO`: 3-D NIfTI.
    Nibabel,
    /// `NibabelIOWithReorient`: 3-D NIfTI reoriented to RAS.
    NibabelWithReorient,
}

impl ReaderWriter {
    pub const ALL: [Self; 5] =
        [Self::NaturalImage2d, Self::SimpleItk, Self::Tiff3d, Self::Nibabel, Self::NibabelWithReorient];

    /// nnU-Net's class name, as plans record it in `image_reader_writer`.
    pub fn name(self) -> &'static str {
        match self {
            Self::NaturalImage2d => "NaturalImage2DIO",
            Self::SimpleItk => "SimpleITKIO",
            Self::Tiff3d => "Tiff3DIO",
            Self::Nibabel => "NibabelIO",
            Self::NibabelWithReorient => "NibabelIOWithReorient",
        }
    }

    /// The class of a name as plans and dataset.json give it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|rw| rw.name() == name)
    }

    /// The endings the class claims (its `supported_file_endings`).
    pub fn supported_endings(self) -> &'static [&'static str] {
        match self {
            Self::NaturalImage2d => &[".png", ".bmp", ".tif"],
            Self::SimpleItk => &[".nii.gz", ".nrrd", ".mha", ".gipl"],
            Self::Tiff3d => &[".tif", ".tiff"],
            Self::Nibabel | Self::NibabelWithReorient => &[".nii", ".nii.gz"],
        }
    }

    /// The class for a dataset, as `determine_reader_writer_from_dataset_json` chooses it: the one
    /// dataset.json names in `overwrite_image_reader_writer`, else the first class claiming
    /// `file_ending` that reads `example` (the dataset's first image). `dataset_json` names the file in
    /// errors.
    pub fn for_dataset(
        dataset_json: &Path,
        overwrite: Option<&str>,
        file_ending: &str,
        example: Option<&Path>,
    ) -> Result<Self> {
        match overwrite.filter(|name| *name != "None") {
            Some(name) => Self::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|rw| rw.name()).collect();
                Error::bad_input(
                    dataset_json,
                    format!("overwrite_image_reader_writer names {name:?}, not one of {}", known.join(", ")),
                )
            }),
            None => Self::for_ending(file_ending, example).map_err(|e| match example {
                Some(_) => e,
                None => Error::bad_input(dataset_json, e.message),
            }),
        }
    }

    /// The first class claiming `ending` that reads `example`, as
    /// `determine_reader_writer_from_file_ending` tries them; without an example, the first claiming it.
    pub fn for_ending(ending: &str, example: Option<&Path>) -> Result<Self> {
        let lower = ending.to_lowercase();
        let mut last_failure = None;
        for rw in Self::ALL.into_iter().filter(|rw| rw.supported_endings().contains(&lower.as_str())) {
            let Some(example) = example else { return Ok(rw) };
            match rw.read_images(&[example.to_owned()]) {
                Ok(_) => return Ok(rw),
                Err(e) => last_failure = Some(e),
            }
        }
        Err(last_failure.unwrap_or_else(|| {
            let place = example.map_or_else(|| PathBuf::from(ending), Path::to_owned);
            Error::bad_input(place, format!("no image reader reads files ending in {ending:?}"))
        }))
    }

    /// The class nnU-Net would choose for this file by its own ending (a NIfTI-2 file, which SimpleITK
    /// cannot read, gets `NibabelIO`); MetaImage and NRRD files with detached headers (`.mhd`, `.nhdr`),
    /// which no class claims, are read as SimpleITK reads them.
    pub fn for_file(path: &Path) -> Result<Self> {
        match Format::of(path)? {
            Format::Nifti if nifti::is_nifti2(path)? => Ok(Self::Nibabel),
            Format::MetaImage | Format::Nrrd | Format::Nifti | Format::Gipl => Ok(Self::SimpleItk),
            Format::Png | Format::Bmp => Ok(Self::NaturalImage2d),
            Format::Tiff => Ok(if tiff::is_stack(path)? { Self::Tiff3d } else { Self::NaturalImage2d }),
        }
    }

    /// Reads a case's image files as its channels (`read_images`): one per file, or several for an
    /// RGB(A) or 4-D file; every file must give the same number of channels.
    pub fn read_images(self, paths: &[PathBuf]) -> Result<Vec<Image<f32>>> {
        self.read_case(paths, None).images
    }

    /// Reads a case: its image files as [`Self::read_images`] reads them and its label map, when given,
    /// as [`Self::read_seg`] does. The files are decoded at once, each on its own thread, so that a case
    /// is read in the time of its largest file when cores are free (nn-infer reads one case at a time;
    /// nn-resample's and nn-fingerprint's last cases). Plain threads rather than the rayon pool: a
    /// worker waiting for a file there could start another case meanwhile, and a case's files are held
    /// together anyway, so this holds no more memory than reading them one after another.
    pub fn read_case(self, paths: &[PathBuf], label: Option<&Path>) -> CaseImages {
        let Some(first) = paths.first() else {
            return CaseImages { images: Ok(Vec::new()), label: label.map(|path| self.read_seg(path)) };
        };
        let read_image = |path: &PathBuf| self.read_file(path, SidecarName::OfImage(first));
        let (read, label) = std::thread::scope(|scope| {
            let label = label.map(|path| scope.spawn(move || self.read_seg(path)));
            let others: Vec<_> = paths[1..].iter().map(|path| scope.spawn(move || read_image(path))).collect();
            let mut read = vec![read_image(first)];
            read.extend(others.into_iter().map(joined));
            (read, label.map(joined))
        });
        CaseImages { images: self.channels(paths, read), label }
    }

    /// The channels of a case's files, read in `read`; the first failure in file order is the error.
    fn channels(self, paths: &[PathBuf], read: Vec<Result<Vec<Image<f32>>>>) -> Result<Vec<Image<f32>>> {
        let mut channels = Vec::new();
        let mut per_file = None;
        for (path, images) in paths.iter().zip(read) {
            let mut images = images?;
            let count = images.len();
            if *per_file.get_or_insert(count) != count {
                return Err(Error::bad_input(
                    path,
                    format!(
                        "holds {count} channel(s) where {} holds {} (RGB and grey images cannot be mixed)",
                        paths[0].display(),
                        per_file.unwrap_or(count)
                    ),
                ));
            }
            channels.append(&mut images);
        }
        Ok(channels)
    }

    /// Reads a file that must hold one channel (a channel file of a case, a prediction).
    pub fn read_single(self, path: &Path) -> Result<Image<f32>> {
        let mut images = self.read_file(path, SidecarName::OfLabel)?;
        if images.len() != 1 {
            return Err(Error::bad_input(path, format!("holds {} channels where one is expected", images.len())));
        }
        Ok(images.pop().expect("one"))
    }

    /// Reads a label map (`read_seg`): one channel of finite integers.
    pub fn read_seg(self, path: &Path) -> Result<Image<i32>> {
        let images = self.read_file(path, SidecarName::OfLabel)?;
        let [image] = <[Image<f32>; 1]>::try_from(images).map_err(|images| {
            Error::bad_input(path, format!("a label map must hold one channel, this one holds {}", images.len()))
        })?;
        let data = to_labels(image.data)
            .map_err(|value| Error::bad_input(path, format!("label map holds a non-integer value ({value})")))?;
        Ok(Image { data, geometry: image.geometry, stored: image.stored })
    }

    /// The channels of one file as this class reads them.
    fn read_file(self, path: &Path, sidecar: SidecarName) -> Result<Vec<Image<f32>>> {
        let format = Format::of(path)?;
        let refuse = |what: &str| Err(Error::bad_input(path, format!("{} reads {what}", self.name())));
        match self {
            Self::SimpleItk => match format {
                Format::Nifti if nifti::is_nifti2(path)? => refuse("no NIfTI-2 (SimpleITK cannot; NibabelIO can)"),
                Format::Nifti => nifti::read_nifti(path),
                Format::MetaImage => from_raster(path, metaimage::read_metaimage(path)?),
                Format::Nrrd => from_raster(path, nrrd::read_nrrd(path)?),
                Format::Gipl => from_raster(path, gipl::read_gipl(path)?),
                Format::Png | Format::Bmp | Format::Tiff => from_raster(path, natural::read_natural(path, format)?),
            },
            Self::Nibabel | Self::NibabelWithReorient => {
                if format != Format::Nifti {
                    return refuse("NIfTI files only");
                }
                let images = nifti::read_nifti(path)?;
                if images.len() != 1 || images[0].stored.dimension != 3 {
                    return refuse("3-D NIfTI images only");
                }
                if self == Self::NibabelWithReorient {
                    return images.into_iter().map(|image| crate::reorient::reoriented_to_ras(path, image)).collect();
                }
                Ok(images)
            }
            Self::NaturalImage2d => {
                if !matches!(format, Format::Png | Format::Bmp | Format::Tiff) {
                    return refuse("PNG, BMP and TIFF files only");
                }
                let raster = natural::read_natural(path, format)?;
                let spatial = raster.data.ndim() - usize::from(raster.channel_axis);
                let channels = if raster.channel_axis { raster.data.shape()[0] } else { 1 };
                if spatial != 2 || !(channels == 1 || channels == 3 || channels == 4) {
                    return refuse(&format!(
                        "2-D grey, RGB or RGBA images only; this one has shape {:?}",
                        raster.data.shape()
                    ));
                }
                let pixel = raster.pixel;
                Ok(from_raster(path, raster)?
                    .into_iter()
                    .map(|image| Image {
                        geometry: Geometry::of_plane([1.0, 1.0], [0.0, 0.0], [1.0, 0.0, 0.0, 1.0]),
                        stored: Stored::new(2, pixel),
                        ..image
                    })
                    .collect())
            }
            Self::Tiff3d => {
                if format != Format::Tiff {
                    return refuse("TIFF files only");
                }
                let raster = tiff::read_tiff(path)?;
                if raster.channel_axis || raster.data.ndim() != 3 {
                    return refuse(&format!(
                        "3-D single-channel stacks only; this one has shape {:?}",
                        raster.data.shape()
                    ));
                }
                let spacing = tiff::sidecar_spacing(&sidecar.path(path))?;
                let pixel = raster.pixel;
                Ok(from_raster(path, raster)?
                    .into_iter()
                    .map(|image| Image {
                        geometry: Geometry { spacing, origin: [0.0; 3], direction: crate::geometry::IDENTITY },
                        stored: Stored::new(3, pixel),
                        ..image
                    })
                    .collect())
            }
        }
    }
}

/// A case as [`ReaderWriter::read_case`] reads it.
#[derive(Debug)]
pub struct CaseImages {
    /// Its channels, or the first failure in file order.
    pub images: Result<Vec<Image<f32>>>,
    /// Its label map, when one was asked for.
    pub label: Option<Result<Image<i32>>>,
}

/// What a reading thread returned; its panic goes on in the caller.
fn joined<T>(thread: std::thread::ScopedJoinHandle<'_, T>) -> T {
    thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Voxel values as integer labels, converted in the buffer they were read into (a label map is as large
/// as an image); the error is the first value that is not a finite integer.
fn to_labels(data: Array3<f32>) -> std::result::Result<Array3<i32>, f32> {
    let (shape, voxels) = (data.raw_dim(), data.len());
    // the values' bits, each replaced by its label below
    let mut labels: Vec<i32> = if data.is_standard_layout() {
        let (values, offset) = data.into_raw_vec_and_offset();
        let mut bits: Vec<i32> = bytemuck::allocation::cast_vec(values);
        bits.drain(..offset.unwrap_or(0));
        bits.truncate(voxels);
        bits
    } else {
        data.iter().map(|v| v.to_bits() as i32).collect()
    };
    for label in &mut labels {
        let value = f32::from_bits(*label as u32);
        *label = value as i32;
        if !value.is_finite() || *label as f32 != value {
            return Err(value);
        }
    }
    Ok(Array3::from_shape_vec(shape, labels).expect("one label per voxel"))
}

/// Where Tiff3DIO looks for a file's spacing sidecar: beside a case's first image without its channel
/// suffix (`CASE_0000.tif` -> `CASE.json`, `Tiff3DIO.read_images`), or beside a label map with its ending
/// replaced (`CASE.tif` -> `CASE.json`, `Tiff3DIO.read_seg`).
#[derive(Clone, Copy)]
enum SidecarName<'a> {
    OfImage(&'a Path),
    OfLabel,
}

impl SidecarName<'_> {
    fn path(self, file: &Path) -> PathBuf {
        let (file, suffix) = match self {
            Self::OfImage(first) => (first, "_0000".len()),
            Self::OfLabel => (file, 0),
        };
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let stem = crate::split_image_ending(&name).map_or(name.as_ref(), |(stem, _)| stem);
        let stem = stem.get(..stem.len().saturating_sub(suffix)).unwrap_or(stem);
        file.with_file_name(format!("{stem}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sitk_formats").join(name)
    }

    #[test]
    fn a_nifti2_dataset_gets_nibabel_as_in_nnunet() {
        let nifti2 = fixture("nifti2_i16.nii.gz");
        assert_eq!(ReaderWriter::for_ending(".nii.gz", Some(&nifti2)).unwrap(), ReaderWriter::Nibabel);
        assert_eq!(ReaderWriter::for_file(&nifti2).unwrap(), ReaderWriter::Nibabel);
        let refused = ReaderWriter::SimpleItk.read_images(std::slice::from_ref(&nifti2)).unwrap_err();
        assert!(
            refused.message.ends_with("SimpleITKIO reads no NIfTI-2 (SimpleITK cannot; NibabelIO can)"),
            "{refused}"
        );
        let nifti1 = fixture("nifti2_twin_i16.nii.gz");
        assert_eq!(ReaderWriter::for_ending(".nii.gz", Some(&nifti1)).unwrap(), ReaderWriter::SimpleItk);
    }

    #[test]
    fn labels_are_converted_in_place_or_from_any_layout() {
        let values = Array3::from_shape_fn((2, 3, 4), |(z, y, x)| (z * 12 + y * 4 + x) as f32 - 5.0);
        let expected = values.mapv(|v| v as i32);
        let copy = values.clone();
        let pointer = copy.as_ptr() as usize;
        let labels = to_labels(copy).unwrap();
        assert_eq!(labels, expected);
        assert_eq!(labels.as_ptr() as usize, pointer, "the buffer read into is reused");
        // a transposed array and one starting inside its buffer give the same labels
        assert_eq!(to_labels(values.clone().reversed_axes()).unwrap(), expected.clone().reversed_axes());
        let mut sliced = values.clone();
        sliced.slice_collapse(ndarray::s![1.., .., ..]);
        assert_eq!(to_labels(sliced).unwrap(), expected.slice(ndarray::s![1.., .., ..]));
        // the first value in array order that is not a finite integer
        let mut bad = values;
        bad[[1, 0, 2]] = f32::NAN;
        bad[[0, 2, 1]] = 2.5;
        assert_eq!(to_labels(bad.clone()).unwrap_err(), 2.5);
        bad[[0, 2, 1]] = 1e10;
        assert_eq!(to_labels(bad).unwrap_err(), 1e10);
    }

    #[test]
    fn a_case_is_its_channels_and_label_with_the_first_failure_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let geometry =
            crate::Geometry { spacing: [2.0, 1.0, 1.0], origin: [0.0; 3], direction: crate::geometry::IDENTITY };
        let channel = |c: usize| Array3::from_shape_fn((2, 3, 4), |(z, y, x)| (c * 100 + z * 12 + y * 4 + x) as f32);
        let paths: Vec<PathBuf> = (0..3).map(|c| dir.path().join(format!("case_{c:04}.nii.gz"))).collect();
        for (c, path) in paths.iter().enumerate() {
            crate::write_new(path, channel(c).view(), &geometry).unwrap();
        }
        let label = dir.path().join("case.nii.gz");
        crate::write_new(&label, channel(0).mapv(|v| (v as u8) % 3).view(), &geometry).unwrap();
        let CaseImages { images, label: seg } = ReaderWriter::SimpleItk.read_case(&paths, Some(&label));
        let images = images.unwrap();
        assert_eq!(images.iter().map(|i| i.data.clone()).collect::<Vec<_>>(), [channel(0), channel(1), channel(2)]);
        assert_eq!(seg.unwrap().unwrap().data, channel(0).mapv(|v| v as i32 % 3));
        assert!(ReaderWriter::SimpleItk.read_case(&paths, None).label.is_none());
        // channels 1 and 2 unreadable: channel 1 is named, the label is read regardless
        std::fs::write(&paths[1], b"not a nifti").unwrap();
        std::fs::write(&paths[2], b"not a nifti either").unwrap();
        let CaseImages { images, label: seg } = ReaderWriter::SimpleItk.read_case(&paths, Some(&label));
        let error = images.unwrap_err();
        assert!(error.message.starts_with(&paths[1].display().to_string()), "{error}");
        assert!(seg.unwrap().is_ok());
    }

    #[test]
    fn classes_by_name_and_ending() {
        for rw in ReaderWriter::ALL {
            assert_eq!(ReaderWriter::from_name(rw.name()), Some(rw));
        }
        assert_eq!(ReaderWriter::for_ending(".PNG", None).unwrap(), ReaderWriter::NaturalImage2d);
        assert_eq!(ReaderWriter::for_ending(".tiff", None).unwrap(), ReaderWriter::Tiff3d);
        assert_eq!(ReaderWriter::for_ending(".nii", None).unwrap(), ReaderWriter::Nibabel);
        assert_eq!(ReaderWriter::for_ending(".mha", None).unwrap(), ReaderWriter::SimpleItk);
        assert!(ReaderWriter::for_ending(".jpg", None).unwrap_err().message.contains("no image reader"));
        let json = Path::new("d/dataset.json");
        let unknown = ReaderWriter::for_dataset(json, Some("MyIO"), ".nii.gz", None).unwrap_err();
        assert!(unknown.message.starts_with("d/dataset.json: overwrite_image_reader_writer names \"MyIO\""));
        assert_eq!(ReaderWriter::for_dataset(json, Some("None"), ".mha", None).unwrap(), ReaderWriter::SimpleItk);
    }
}
