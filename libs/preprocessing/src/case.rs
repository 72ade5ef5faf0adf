//! One case through nnU-Net's `run_case_npy`: transpose, crop to nonzero, normalise, resample, and
//! sample class locations.

use crate::class_locations::sample_class_locations;
use crate::cropping::{BoundingBox, box_shape, box_slice, nonzero_mask};
use crate::normalization::{Scheme, normalize};
use crate::resampling::{Resampling, resample_image, resample_labels, separate_z_axis};
use ndarray::{Array3, Array4, Axis, Zip};
use nntools_dataset::integrity::check_case;
use nntools_dataset::{Descriptor, IntensityStats};
use nntools_io::{Error, Geometry, ReaderWriter, Result, Stored};
use nntools_planning::{Configuration, Plans, ResamplingKwargs};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Everything a case needs from the plans, resolved once per run.
pub struct Recipe {
    /// The plans' `image_reader_writer`: how the case's files are read.
    pub reader_writer: ReaderWriter,
    pub transpose_forward: [usize; 3],
    pub configuration: Configuration,
    pub schemes: Vec<Scheme>,
    pub stats: Vec<IntensityStats>,
    /// Classes (labels, or the labels of a region) to sample locations for, with their JSON keys.
    pub classes: Vec<(String, Vec<i16>)>,
    /// The values a label map may hold (dataset.json's labels and ignore label); empty: unchecked.
    pub label_values: Vec<i64>,
}

impl Recipe {
    /// `descriptor` gives the classes for class locations; without it (unlabelled images) none are sampled.
    pub fn new(
        plans: &Plans,
        configuration_name: &str,
        descriptor: Option<&Descriptor>,
    ) -> std::result::Result<Self, String> {
        let configuration = plans.configuration(configuration_name)?;
        let reader_writer = ReaderWriter::from_name(&plans.image_reader_writer)
            .ok_or_else(|| format!("unknown image_reader_writer {:?}", plans.image_reader_writer))?;
        let transpose_forward: [usize; 3] = plans
            .transpose_forward
            .as_slice()
            .try_into()
            .map_err(|_| format!("transpose_forward must have 3 axes, has {}", plans.transpose_forward.len()))?;
        let schemes = configuration
            .normalization_schemes
            .iter()
            .map(|name| Scheme::from_class_name(name).ok_or_else(|| format!("unknown normalization scheme {name:?}")))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let channels = schemes.len();
        if configuration.use_mask_for_norm.len() != channels {
            return Err(format!(
                "use_mask_for_norm has {} entries for {channels} channels",
                configuration.use_mask_for_norm.len()
            ));
        }
        let stats = (0..channels)
            .map(|c| {
                plans
                    .foreground_intensity_properties_per_channel
                    .get(&c.to_string())
                    .copied()
                    .ok_or_else(|| format!("foreground_intensity_properties_per_channel has no channel {c}"))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let classes = descriptor.map(classes_for_locations).unwrap_or_default();
        let label_values = descriptor.map(Descriptor::allowed_label_values).unwrap_or_default();
        Ok(Self { reader_writer, transpose_forward, configuration, schemes, stats, classes, label_values })
    }

    pub fn channels(&self) -> usize {
        self.schemes.len()
    }

    fn is_2d(&self) -> bool {
        self.configuration.spacing.len() == 2
    }
}

/// nnU-Net's foreground labels, or foreground regions, plus the "annotated voxels" class
/// (-1 and all labels) when there is an ignore label. Keys as nnU-Net prints them.
fn classes_for_locations(descriptor: &Descriptor) -> Vec<(String, Vec<i16>)> {
    let to_i16 = |values: &[i64]| values.iter().map(|&v| v as i16).collect::<Vec<_>>();
    let mut classes: Vec<(String, Vec<i16>)> = if descriptor.is_region_based() {
        descriptor
            .foreground_entries()
            .map(|l| {
                let key = l.values.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
                (format!("({key})"), to_i16(&l.values))
            })
            .collect()
    } else {
        descriptor.foreground_labels().into_iter().map(|l| (l.to_string(), vec![l as i16])).collect()
    };
    if descriptor.ignore_label.is_some() {
        let mut annotated = vec![-1i64];
        annotated.extend(descriptor.all_labels());
        let key = annotated.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
        classes.push((format!("({key})"), to_i16(&annotated)));
    }
    classes
}

/// SimpleITK's geometry of the input, as nnU-Net records it: file axis order, as many axes as the file
/// has (2 for a 2-D image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SitkStuff {
    pub spacing: Vec<f64>,
    pub origin: Vec<f64>,
    pub direction: Vec<f64>,
}

impl SitkStuff {
    /// SimpleITK's view of an image of `dimension` axes read with `geometry`.
    pub fn new(geometry: &Geometry, dimension: usize) -> Self {
        let [_, sy, sx] = geometry.spacing;
        let [ox, oy, oz] = geometry.origin;
        let d = &geometry.direction;
        if dimension == 2 {
            Self { spacing: vec![sx, sy], origin: vec![ox, oy], direction: vec![d[0], d[1], d[3], d[4]] }
        } else {
            Self { spacing: vec![sx, sy, geometry.spacing[0]], origin: vec![ox, oy, oz], direction: d.to_vec() }
        }
    }

    /// The geometry and file dimension this describes, with nnU-Net's `spacing` from the properties.
    pub fn geometry(&self, spacing: [f64; 3]) -> std::result::Result<(Geometry, usize), String> {
        let (o, d) = (&self.origin, &self.direction);
        match (self.spacing.len(), o.len(), d.len()) {
            (2, 2, 4) => {
                Ok((Geometry { spacing, ..Geometry::of_plane([1.0, 1.0], [o[0], o[1]], [d[0], d[1], d[2], d[3]]) }, 2))
            }
            (3, 3, 9) => Ok((
                Geometry { spacing, origin: [o[0], o[1], o[2]], direction: d.as_slice().try_into().expect("9") },
                3,
            )),
            _ => Err("sitk_stuff must describe a 2-D or 3-D image".into()),
        }
    }
}

/// nnU-Net's case properties (its `.pkl`), with class locations as counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Properties {
    pub sitk_stuff: SitkStuff,
    /// Raw spacing, reader (untransposed) order.
    pub spacing: [f64; 3],
    pub shape_before_cropping: [usize; 3],
    pub bbox_used_for_cropping: BoundingBox,
    pub shape_after_cropping_and_before_resampling: [usize; 3],
    /// Locations stored per class, in the order of `CASE_locations.npy`'s class column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_locations_count: Option<indexmap::IndexMap<String, usize>>,
}

/// A preprocessed case.
pub struct Preprocessed {
    /// `(c, z, y, x)` in the transposed axis order.
    pub data: Array4<f32>,
    /// Labels with -1 outside the nonzero region; absent for unlabelled cases.
    pub seg: Option<Array3<i16>>,
    pub properties: Properties,
    /// Per class (in `Recipe::classes` order), sampled `[z, y, x]` locations.
    pub class_locations: Vec<Vec<[u32; 3]>>,
    /// Channel 0's geometry and storage, so that a prediction can be written like the input.
    pub geometry: Geometry,
    pub stored: Stored,
}

/// The input files of a case.
pub struct CaseFiles {
    pub id: String,
    pub images: Vec<PathBuf>,
    pub label: Option<PathBuf>,
    /// The reader for these files where it is not the plans' (inputs of another format than the
    /// model's), as nnU-Net would choose it for their ending.
    pub reader_writer: Option<ReaderWriter>,
}

fn transposed<T: Clone>(array: Array3<T>, order: [usize; 3]) -> Array3<T> {
    if order == [0, 1, 2] {
        return array;
    }
    array.permuted_axes(order).as_standard_layout().into_owned()
}

/// nnU-Net's `compute_new_shape`: Python-rounded (half to even) voxel counts at the new spacing,
/// at least 1 on a non-empty axis. nnU-Net rounds a thin axis (one 0.4 mm slice at a 1 mm target) to 0
/// (nnunetv2/preprocessing/resampling/default_resampling.py: `compute_new_shape`), and
/// `resample_data_or_seg` then makes an empty array; one voxel keeps the case. Inference resamples
/// back to the cropped input shape kept in the properties, so the output keeps the input's shape.
pub fn resampled_shape(shape: [usize; 3], spacing: &[f64], target: &[f64]) -> [usize; 3] {
    [0, 1, 2].map(|a| ((spacing[a] / target[a] * shape[a] as f64).round_ties_even() as usize).max(shape[a].min(1)))
}

fn crop<T: Clone>(array: Array3<T>, bbox: &BoundingBox) -> Array3<T> {
    if array.shape().iter().zip(bbox).all(|(&n, [lo, hi])| *lo == 0 && *hi == n) {
        return array;
    }
    array.slice(box_slice(bbox)).to_owned()
}

fn resampling(kwargs: &ResamplingKwargs) -> Resampling {
    Resampling { order: kwargs.order, order_z: kwargs.order_z, force_separate_z: kwargs.force_separate_z }
}

/// Reads and preprocesses one case.
pub fn preprocess_case(recipe: &Recipe, files: &CaseFiles) -> Result<Preprocessed> {
    let reader_writer = files.reader_writer.unwrap_or(recipe.reader_writer);
    let nntools_io::CaseImages { images, label } = reader_writer.read_case(&files.images, files.label.as_deref());
    let images = images?;
    if images.len() != recipe.channels() {
        let counts = format!("case {} has {} channel(s), the plans {}", files.id, images.len(), recipe.channels());
        let first = files.images.first().map_or(PathBuf::from(&files.id), PathBuf::clone);
        // too few channels: the file of the next channel is the one missing
        let name = first.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let next = nntools_io::split_image_ending(&name)
            .and_then(|(stem, ending)| {
                Some(format!("{}_{:04}{ending}", stem.strip_suffix("_0000")?, files.images.len()))
            })
            .filter(|_| images.len() < recipe.channels());
        return Err(match next {
            Some(next) => Error::bad_input(first.with_file_name(next), format!("missing ({counts})")),
            None => Error::bad_input(first, counts),
        });
    }
    // an RGB file is several channels
    let per_file = images.len() / files.images.len();
    let channel_paths: Vec<PathBuf> =
        files.images.iter().flat_map(|p| std::iter::repeat_n(p.clone(), per_file)).collect();
    let geometry: Geometry = images[0].geometry;
    let stored = images[0].stored.clone();
    let label = files.label.as_deref().zip(label).map(|(path, label)| label.map(|label| (path, label))).transpose()?;
    let findings = check_case(&channel_paths, &images, label.as_ref().map(|(p, l)| (*p, l)), &recipe.label_values);
    if let Some(problem) = findings.problems.into_iter().next() {
        return Err(problem.into());
    }
    let seg = match label {
        Some((path, label)) => {
            let mut fits = true;
            let seg = label.data.mapv(|v| {
                fits &= i16::try_from(v).is_ok();
                v as i16
            });
            if !fits {
                return Err(Error::bad_input(path, "label values must fit in 16 bits"));
            }
            Some(transposed(seg, recipe.transpose_forward))
        }
        None => None,
    };
    let tf = recipe.transpose_forward;
    let channels: Vec<Array3<f32>> = images.into_iter().map(|i| transposed(i.data, tf)).collect();
    let original_spacing: Vec<f64> = tf.iter().map(|&a| geometry.spacing[a]).collect();
    let shape_before = [channels[0].shape()[0], channels[0].shape()[1], channels[0].shape()[2]];

    let views: Vec<_> = channels.iter().map(|c| c.view()).collect();
    let bbox = crate::cropping::nonzero_bounding_box(&views);
    let mask = nonzero_mask(&views, &bbox);
    let labelled = seg.is_some();
    let mut cropped_seg = match seg {
        Some(seg) => crop(seg, &bbox),
        None => Array3::zeros(mask.raw_dim()),
    };
    Zip::from(&mut cropped_seg).and(&mask).for_each(|s, &inside| {
        if *s == 0 && !inside {
            *s = -1;
        }
    });
    let shape_after_crop = box_shape(&bbox);

    let mut target_spacing = recipe.configuration.spacing.clone();
    if recipe.is_2d() {
        target_spacing.insert(0, original_spacing[0]);
    }
    let new_shape = resampled_shape(shape_after_crop, &original_spacing, &target_spacing);
    // the resampled channels (f32) and labels (i16), before either is allocated
    let voxels: f64 = new_shape.iter().map(|&n| n as f64).product();
    let bytes_per_voxel = 4 * channels.len() + 2 * usize::from(labelled);
    nntools_io::memory::check(&files.images[0], voxels * bytes_per_voxel as f64, || {
        format!(
            "resampled from {original_spacing:?} to {target_spacing:?} mm, {shape_after_crop:?} voxels become {new_shape:?}, which"
        )
    })?;

    let inside = cropped_seg.mapv(|v| v >= 0);
    let mut data = Array4::<f32>::zeros((channels.len(), new_shape[0], new_shape[1], new_shape[2]));
    let config = &recipe.configuration;
    let data_resampling = resampling(&config.resampling_fn_data_kwargs);
    let separate = separate_z_axis(data_resampling.force_separate_z, &original_spacing, &target_spacing);
    for (c, channel) in channels.into_iter().enumerate() {
        let normalized = |mut image: ndarray::ArrayViewMut3<f32>| {
            normalize(&mut image, &inside.view(), recipe.schemes[c], config.use_mask_for_norm[c], &recipe.stats[c])
                .map_err(|problem| Error::bad_input(&files.images[c], problem))
        };
        let mut slot = data.index_axis_mut(Axis(0), c);
        if new_shape == shape_after_crop {
            // no resampling: cropped straight into the output and normalised there
            slot.assign(&channel.slice(box_slice(&bbox)));
            normalized(slot)?;
        } else {
            let mut cropped = crop(channel, &bbox);
            normalized(cropped.view_mut())?;
            slot.assign(&resample_image(cropped.view(), new_shape, separate, data_resampling));
        }
    }

    let (seg, class_locations) = if labelled {
        let seg_resampling = resampling(&config.resampling_fn_seg_kwargs);
        let separate = separate_z_axis(seg_resampling.force_separate_z, &original_spacing, &target_spacing);
        let resampled = resample_labels(cropped_seg, new_shape, separate, seg_resampling);
        let class_sets: Vec<Vec<i16>> = recipe.classes.iter().map(|(_, labels)| labels.clone()).collect();
        let locations = sample_class_locations(&resampled, &class_sets);
        (Some(resampled), locations)
    } else {
        (None, Vec::new())
    };
    let class_locations_count = seg
        .as_ref()
        .map(|_| recipe.classes.iter().zip(&class_locations).map(|((key, _), l)| (key.clone(), l.len())).collect());
    Ok(Preprocessed {
        data,
        seg,
        properties: Properties {
            sitk_stuff: SitkStuff::new(&geometry, stored.dimension),
            spacing: geometry.spacing,
            shape_before_cropping: shape_before,
            bbox_used_for_cropping: bbox,
            shape_after_cropping_and_before_resampling: shape_after_crop,
            class_locations_count,
        },
        class_locations,
        geometry,
        stored,
    })
}

#[cfg(test)]
mod tests {
    use super::resampled_shape;

    #[test]
    fn a_thin_axis_keeps_one_voxel_and_other_axes_round_half_to_even() {
        // one 0.4 mm slice at 1 mm: 0.4 voxels, which nnU-Net rounds to 0
        assert_eq!(resampled_shape([1, 48, 35], &[0.4, 1.0, 1.0], &[1.0, 1.0, 1.0]), [1, 48, 35]);
        // 5 * 0.5 = 2.5 -> 2, 7 * 0.5 = 3.5 -> 4, 9 * 0.5 = 4.5 -> 4, as Python's round
        assert_eq!(resampled_shape([5, 7, 9], &[1.0, 1.0, 1.0], &[2.0, 2.0, 2.0]), [2, 4, 4]);
        // 3 * 0.1 = 0.3 -> 1, an empty axis stays empty
        assert_eq!(resampled_shape([3, 0, 10], &[0.1, 1.0, 1.0], &[1.0, 1.0, 1.0]), [1, 0, 10]);
    }
}
