//! Seeded synthetic datasets in nnU-Net's raw format: smooth organ-like label blobs inside a body, with
//! per-label intensities, texture, a multiplicative bias field and noise (MRI-like, zero outside the
//! body so that crop-to-nonzero has work to do) or Hounsfield-like values (CT, air outside). Shapes and
//! spacings vary per case, optionally anisotropic. The same seed gives the same files, byte for byte.

use ndarray::Array3;
use nntools_io::{
    Error, Geometry, Image, PixelType, Result, Stored, write_image, write_json, write_label_map, write_rgb,
};
use nntools_layout::DATASET_JSON;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde_json::json;
use std::path::Path;

/// Image intensities to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    /// Arbitrary positive units, 0 outside the body, stored as float32.
    Mri,
    /// Hounsfield units, air (-1000) outside the body, stored as int16.
    Ct,
}

/// Which cases have thick slices along the slowest axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slices {
    /// Every case (the default: thin in-plane voxels, thick slices).
    Thick,
    /// No case: near-isotropic voxels throughout.
    Isotropic,
    /// Near-isotropic except every Nth case (indices N-1, 2N-1, ...), as real collections mix
    /// 3-D acquisitions with a few 2-D multi-slice ones.
    ThickEvery(usize),
}

impl Slices {
    fn thick(self, index: usize) -> bool {
        match self {
            Slices::Thick => true,
            Slices::Isotropic => false,
            Slices::ThickEvery(n) => (index + 1).is_multiple_of(n),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    pub training_cases: usize,
    /// Unlabelled cases written to `imagesTs`.
    pub test_cases: usize,
    pub channels: usize,
    /// Foreground labels (background excluded).
    pub labels: usize,
    pub seed: u64,
    pub modality: Modality,
    /// Which cases have thick slices (2.5–4 mm) along the slowest axis instead of near-isotropic voxels.
    pub slices: Slices,
    /// Smallest and largest number of voxels along an axis.
    pub shape_range: [usize; 2],
    /// The image format: `.nii.gz`, `.nii`, `.mha`, `.nrrd`, `.gipl`, or `.png` for 2-D images (each
    /// case's middle slice, 8 bits; 3 or 4 channels make one RGB or RGBA file, as nnU-Net's 2-D example).
    pub file_ending: String,
}

/// The endings nn-synth writes; the last is 2-D.
const FILE_ENDINGS: [&str; 6] = [".nii.gz", ".nii", ".mha", ".nrrd", ".gipl", ".png"];

impl Default for Spec {
    fn default() -> Self {
        Self {
            training_cases: 8,
            test_cases: 0,
            channels: 1,
            labels: 2,
            seed: 0,
            modality: Modality::Mri,
            slices: Slices::Thick,
            shape_range: [24, 40],
            file_ending: ".nii.gz".into(),
        }
    }
}

/// Dataset-wide appearance: what each label looks like in each channel, shared by all cases so that
/// there is something to learn.
struct Appearance {
    /// `[channel][label]` mean intensity, label 0 being the body's background tissue.
    means: Vec<Vec<f64>>,
    /// Typical blob radius per foreground label, as a fraction of the half field of view.
    radii: Vec<f64>,
}

impl Spec {
    fn validate(&self, out: &Path) -> Result<()> {
        let [lo, hi] = self.shape_range;
        let problem = if self.training_cases == 0 {
            Some("at least one training case is needed".to_owned())
        } else if self.channels == 0 || self.labels == 0 {
            Some("at least one channel and one foreground label are needed".to_owned())
        } else if self.labels > 200 {
            Some("at most 200 labels".to_owned())
        } else if self.slices == Slices::ThickEvery(0) {
            Some("thick slices every 0th case: give a period of at least 1".to_owned())
        } else if lo < 8 || hi < lo || hi > 512 {
            Some(format!("shape range {lo}-{hi} must satisfy 8 <= min <= max <= 512"))
        } else if !FILE_ENDINGS.contains(&self.file_ending.as_str()) {
            Some(format!("file ending {:?} is not one of {}", self.file_ending, FILE_ENDINGS.join(" ")))
        } else if self.planar() && ![1, 3, 4].contains(&self.channels) {
            Some("2-D images have 1 (grey), 3 (RGB) or 4 (RGBA) channels".to_owned())
        } else {
            None
        };
        problem.map_or(Ok(()), |p| Err(Error::bad_input(out, p)))
    }

    fn planar(&self) -> bool {
        self.file_ending == ".png"
    }

    fn channel_names(&self) -> Vec<&'static str> {
        const MRI: [&str; 4] = ["T2", "ADC", "T1", "FLAIR"];
        if self.planar() && self.channels > 1 {
            return ["R", "G", "B", "A"][..self.channels].to_vec();
        }
        (0..self.channels)
            .map(|c| match self.modality {
                Modality::Ct => "CT",
                Modality::Mri if self.channels == 1 => "MRI",
                Modality::Mri => MRI[c % MRI.len()],
            })
            .collect()
    }

    fn appearance(&self) -> Appearance {
        let mut rng = self.rng(u64::MAX);
        let means = (0..self.channels)
            .map(|_| {
                (0..=self.labels)
                    .map(|label| match (self.modality, label) {
                        (Modality::Mri, 0) => rng.random_range(80.0..150.0),
                        (Modality::Mri, _) => rng.random_range(160.0..450.0),
                        (Modality::Ct, 0) => rng.random_range(-20.0..30.0),
                        (Modality::Ct, _) => rng.random_range(40.0..250.0),
                    })
                    .collect()
            })
            .collect();
        let radii = (0..self.labels).map(|_| rng.random_range(0.18..0.32)).collect();
        Appearance { means, radii }
    }

    /// One random stream per case (and one for the dataset-wide appearance).
    fn rng(&self, stream: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        rng
    }
}

/// A generated case: one array per channel and its label map.
pub struct SynthCase {
    pub images: Vec<Array3<f32>>,
    pub labels: Array3<u8>,
    pub geometry: Geometry,
}

/// Writes the dataset to `out` (which must not exist, unless `force`): dataset.json, imagesTr,
/// labelsTr and, with test cases, imagesTs. The folder appears only once complete.
pub fn write_dataset(spec: &Spec, out: &Path, force: bool) -> Result<()> {
    spec.validate(out)?;
    nntools_io::write_folder_atomically(out, force, |staging| write_into(spec, staging))
}

fn write_into(spec: &Spec, root: &Path) -> Result<()> {
    for dir in ["imagesTr", "labelsTr"].into_iter().chain((spec.test_cases > 0).then_some("imagesTs")) {
        std::fs::create_dir_all(root.join(dir)).map_err(|e| Error::runtime(root.join(dir), e))?;
    }
    let appearance = spec.appearance();
    let total = spec.training_cases + spec.test_cases;
    (0..total).into_par_iter().try_for_each(|index| {
        let case = generate_case(spec, &appearance, index);
        let training = index < spec.training_cases;
        let id = format!("synth_{index:03}");
        let images_dir = root.join(if training { "imagesTr" } else { "imagesTs" });
        let label_path = training.then(|| root.join("labelsTr").join(format!("{id}{}", spec.file_ending)));
        let channel_path = |channel: usize| images_dir.join(format!("{id}_{channel:04}{}", spec.file_ending));
        if spec.planar() {
            return write_planar(spec, &case, channel_path, label_path.as_deref());
        }
        for (channel, image) in case.images.into_iter().enumerate() {
            let (data, pixel) = match spec.modality {
                Modality::Mri => (image, PixelType::F32),
                Modality::Ct => (image.mapv(|v| f32::from(v as i16)), PixelType::I16),
            };
            write_image(
                &channel_path(channel),
                &Image { data, geometry: case.geometry, stored: Stored::new(3, pixel) },
            )?;
        }
        if let Some(path) = label_path {
            write_label_map(&path, case.labels.mapv(u16::from).view(), &case.geometry, &Stored::new(3, PixelType::U8))?;
        }
        Ok(())
    })?;
    let channel_names: serde_json::Map<_, _> =
        spec.channel_names().iter().enumerate().map(|(i, name)| (i.to_string(), json!(name))).collect();
    let mut labels = serde_json::Map::new();
    labels.insert("background".into(), json!(0));
    for label in 1..=spec.labels {
        labels.insert(format!("organ_{label}"), json!(label));
    }
    let descriptor = json!({
        "channel_names": channel_names,
        "labels": labels,
        "numTraining": spec.training_cases,
        "file_ending": spec.file_ending,
        "name": "Synthetic",
        "description": format!("nn-synth, seed {}, {:?}", spec.seed, spec.modality),
        "licence": "CC0-1.0 (synthetic)",
    });
    write_json(&root.join(DATASET_JSON), &descriptor)
}

/// Writes a case as 2-D images: its middle slice, each channel scaled to 0..255 (one RGB(A) file for 3
/// or 4 channels), and the label map's middle slice.
fn write_planar(
    spec: &Spec,
    case: &SynthCase,
    channel_path: impl Fn(usize) -> std::path::PathBuf,
    label_path: Option<&Path>,
) -> Result<()> {
    let middle = case.labels.shape()[0] / 2;
    let slice = |a: &Array3<f32>| a.slice(ndarray::s![middle..=middle, .., ..]).to_owned();
    let geometry = Geometry::of_plane([1.0, 1.0], [0.0, 0.0], [1.0, 0.0, 0.0, 1.0]);
    let channels: Vec<Image<f32>> = case
        .images
        .iter()
        .map(|image| {
            let plane = slice(image);
            let (lo, hi) = plane.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            let data = plane.mapv(|v| ((v - lo) / (hi - lo).max(f32::EPSILON) * 255.0).round());
            Image { data, geometry, stored: Stored::new(2, PixelType::U8) }
        })
        .collect();
    if spec.channels > 1 {
        write_rgb(&channel_path(0), &channels)?;
    } else {
        write_image(&channel_path(0), &channels[0])?;
    }
    if let Some(path) = label_path {
        let labels = case.labels.slice(ndarray::s![middle..=middle, .., ..]).mapv(u16::from);
        write_label_map(path, labels.view(), &geometry, &Stored::new(2, PixelType::U8))?;
    }
    Ok(())
}

/// Generates case `index` of the dataset described by `spec`.
pub fn generate(spec: &Spec, index: usize) -> SynthCase {
    generate_case(spec, &spec.appearance(), index)
}

/// A smooth random function on the unit sphere or in space: a few low-frequency plane waves.
struct Waves(Vec<([f64; 3], f64, f64)>);

impl Waves {
    fn new(rng: &mut ChaCha8Rng, count: usize, frequency: f64, amplitude: f64) -> Self {
        Self(
            (0..count)
                .map(|_| {
                    let k = [0; 3].map(|_| rng.random_range(-frequency..frequency));
                    (k, rng.random_range(0.0..std::f64::consts::TAU), amplitude / count as f64)
                })
                .collect(),
        )
    }

    fn at(&self, p: [f64; 3]) -> f64 {
        self.0.iter().map(|(k, phase, a)| a * (k[0] * p[0] + k[1] * p[1] + k[2] * p[2] + phase).sin()).sum()
    }
}

struct Blob {
    centre: [f64; 3],
    radii: [f64; 3],
    wobble: Waves,
}

impl Blob {
    fn contains(&self, p: [f64; 3]) -> bool {
        let d = [0, 1, 2].map(|a| (p[a] - self.centre[a]) / self.radii[a]);
        let r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
        if r2 == 0.0 {
            return true;
        }
        let r = r2.sqrt();
        let limit = 1.0 + self.wobble.at(d.map(|v| v / r));
        r < limit
    }
}

fn generate_case(spec: &Spec, appearance: &Appearance, index: usize) -> SynthCase {
    let mut rng = spec.rng(index as u64);
    let [lo, hi] = spec.shape_range;
    let thick = spec.slices.thick(index);
    let in_plane = rng.random_range(0.7..1.3);
    let slow_axis = if thick { rng.random_range(2.5..4.0) } else { rng.random_range(0.8..1.2) };
    let spacing = [slow_axis, in_plane * rng.random_range(0.95..1.05), in_plane];
    let mut shape = [0; 3].map(|_| rng.random_range(lo..=hi));
    if thick {
        // thick slices cover the same field of view with fewer voxels
        shape[0] = ((shape[0] as f64 * in_plane / slow_axis * 2.0).round() as usize).clamp(lo.clamp(4, 8), hi);
    }
    let origin = [0; 3].map(|_| rng.random_range(-60.0..60.0));
    let geometry = Geometry { spacing, origin, direction: [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0] };

    let body = Blob {
        centre: [0; 3].map(|_| rng.random_range(-0.05..0.05)),
        radii: [0; 3].map(|_| rng.random_range(0.8..0.92)),
        wobble: Waves::new(&mut rng, 3, 3.0, 0.06),
    };
    let blobs: Vec<Blob> = appearance
        .radii
        .iter()
        .map(|&radius| Blob {
            centre: [0; 3].map(|_| rng.random_range(-0.4..0.4)),
            radii: [0; 3].map(|_| radius * rng.random_range(0.75..1.25)),
            wobble: Waves::new(&mut rng, 4, 4.0, 0.3),
        })
        .collect();
    let textures: Vec<Waves> = (0..spec.channels).map(|_| Waves::new(&mut rng, 6, 12.0, 0.12)).collect();
    let bias: Vec<[f64; 3]> = (0..spec.channels).map(|_| [0; 3].map(|_| rng.random_range(-0.15..0.15))).collect();
    let noise_seed: u64 = rng.random();

    let [nz, ny, nx] = shape;
    let position = |z: usize, y: usize, x: usize| {
        [(z, nz), (y, ny), (x, nx)].map(|(i, n)| 2.0 * (i as f64 + 0.5) / n as f64 - 1.0)
    };
    let mut inside_body = Array3::from_elem((nz, ny, nx), false);
    let labels = Array3::from_shape_fn((nz, ny, nx), |(z, y, x)| {
        let p = position(z, y, x);
        if !body.contains(p) {
            return 0u8;
        }
        inside_body[[z, y, x]] = true;
        // later organs lie on top of earlier ones
        blobs.iter().enumerate().rev().find(|(_, b)| b.contains(p)).map_or(0, |(k, _)| (k + 1) as u8)
    });

    let mut noise_rng = ChaCha8Rng::seed_from_u64(noise_seed);
    let images = (0..spec.channels)
        .map(|c| {
            let means = &appearance.means[c];
            let (noise_sd, outside) = match spec.modality {
                Modality::Mri => (0.05 * means[0], 0.0),
                Modality::Ct => (12.0, -1000.0),
            };
            let noise = Normal::new(0.0, noise_sd).expect("positive standard deviation");
            Array3::from_shape_fn((nz, ny, nx), |(z, y, x)| {
                let n = noise.sample(&mut noise_rng);
                if !inside_body[[z, y, x]] {
                    return match spec.modality {
                        Modality::Mri => outside as f32,
                        Modality::Ct => (outside + n) as f32,
                    };
                }
                let p = position(z, y, x);
                let mean = means[labels[[z, y, x]] as usize];
                let value = match spec.modality {
                    Modality::Mri => {
                        let field = 1.0 + bias[c][0] * p[0] + bias[c][1] * p[1] + bias[c][2] * p[2];
                        (mean * (1.0 + textures[c].at(p)) * field + n).max(1.0)
                    }
                    Modality::Ct => mean + 40.0 * textures[c].at(p) + n,
                };
                value as f32
            })
        })
        .collect();
    SynthCase { images, labels, geometry }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_have_every_label_and_zero_outside_the_body() {
        let spec = Spec { labels: 3, ..Spec::default() };
        for index in 0..4 {
            let case = generate(&spec, index);
            for label in 0..=3u8 {
                assert!(case.labels.iter().any(|&l| l == label), "case {index} lacks label {label}");
            }
            let image = &case.images[0];
            assert_eq!(image.shape(), case.labels.shape());
            // MRI: zero exactly outside the body, positive inside; corners are outside
            assert_eq!(image[[0, 0, 0]], 0.0);
            assert!(image.iter().zip(&case.labels).all(|(&v, &l)| l == 0 || v >= 1.0));
            assert!(case.geometry.spacing[0] >= 2.5, "anisotropic slow axis");
        }
    }

    #[test]
    fn thick_every_third_case_mixes_thick_and_near_isotropic_slices() {
        let spec = Spec { slices: Slices::ThickEvery(3), shape_range: [16, 24], ..Spec::default() };
        let slow: Vec<f64> = (0..7).map(|index| generate(&spec, index).geometry.spacing[0]).collect();
        for (index, s) in slow.iter().enumerate() {
            if index % 3 == 2 {
                assert!((2.5..4.0).contains(s), "case {index} should have thick slices: {s}");
            } else {
                assert!((0.8..1.2).contains(s), "case {index} should be near-isotropic: {s}");
            }
        }
        // a thick-slice case is the same case as in an all-thick dataset, an isotropic one the same as in
        // an all-isotropic dataset: the mix changes nothing else
        let thick = generate(&Spec { slices: Slices::Thick, ..spec.clone() }, 2);
        let isotropic = generate(&Spec { slices: Slices::Isotropic, ..spec.clone() }, 1);
        assert_eq!(generate(&spec, 2).labels, thick.labels);
        assert_eq!(generate(&spec, 1).labels, isotropic.labels);
        let err = write_dataset(&Spec { slices: Slices::ThickEvery(0), ..spec }, Path::new("unused"), false);
        assert!(err.unwrap_err().to_string().contains("period"));
    }

    #[test]
    fn same_seed_same_case_other_seed_other_case() {
        let spec = Spec { channels: 2, ..Spec::default() };
        let a = generate(&spec, 1);
        let b = generate(&spec, 1);
        assert_eq!(a.images, b.images);
        assert_eq!(a.labels, b.labels);
        let c = generate(&Spec { seed: 7, ..spec }, 1);
        assert_ne!(a.labels.shape(), c.labels.shape());
    }

    #[test]
    fn ct_cases_are_air_outside_and_tissue_inside() {
        let spec = Spec { modality: Modality::Ct, slices: Slices::Isotropic, ..Spec::default() };
        let case = generate(&spec, 0);
        let corner = case.images[0][[0, 0, 0]];
        assert!((-1080.0..-920.0).contains(&corner), "air, got {corner}");
        let organ_mean = {
            let v: Vec<f32> =
                case.images[0].iter().zip(&case.labels).filter(|(_, l)| **l > 0).map(|(v, _)| *v).collect();
            v.iter().sum::<f32>() / v.len() as f32
        };
        assert!((0.0..300.0).contains(&organ_mean), "organ mean {organ_mean}");
    }
}
