//! Writing a raw dataset from source cases: the files under nnU-Net's names (copied, or converted to
//! the format asked for), the labels derived from the label maps when none are declared, dataset.json,
//! and the integrity check of the result.

use crate::{Images, Options, SourceCase};
use indexmap::IndexMap;
use nntools_dataset::{Dataset, split_channel_suffix};
use nntools_io::split_image_ending;
use nntools_io::{
    Error, ErrorKind, Image, ReaderWriter, Result, read_image, read_label_map, read_volumes, write_folder_atomically,
    write_image, write_json, write_label_map, write_volume,
};
use nntools_layout::DATASET_JSON;
use rayon::prelude::*;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Everything a raw dataset is made from.
pub(crate) struct Plan {
    pub channel_names: Vec<String>,
    /// Declared labels as (name, value), background included; derived from the label maps when absent.
    pub labels: Option<Vec<(String, i64)>>,
    pub training: Vec<SourceCase>,
    pub test: Vec<SourceCase>,
    /// Descriptive keys carried into dataset.json (name, description, licence, ...).
    pub extra: Map<String, Value>,
    /// Where the label maps came from, named when their values cannot be labels.
    pub labels_origin: PathBuf,
}

/// A written file and the source it came from, so that problems found in the staging folder can name
/// the file the user has to fix.
type Placed = (PathBuf, String);

#[derive(serde::Serialize)]
struct DatasetJson<'a> {
    channel_names: IndexMap<String, &'a str>,
    labels: IndexMap<&'a str, i64>,
    #[serde(rename = "numTraining")]
    num_training: usize,
    file_ending: &'a str,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

/// Writes the dataset to `out` and checks it; returns the warnings of the check (origin or direction
/// mismatches). On any problem nothing is left at `out`.
pub(crate) fn write_raw_dataset(plan: &Plan, out: &Path, options: Options) -> Result<Vec<String>> {
    let ending = match options.to {
        Some(ending) => ending.to_owned(),
        None => common_ending(plan)?,
    };
    let ending = ending.as_str();
    let mut warnings = Vec::new();
    let folder_name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !is_nnunet_dataset_name(&folder_name) {
        warnings.push(format!(
            "{}: nnU-Net finds datasets by folder names DatasetXXX_Name (XXX three digits)",
            out.display()
        ));
    }
    let labels = match &plan.labels {
        Some(labels) => labels.clone(),
        None => derive_labels(&plan.training, &plan.labels_origin)?,
    };
    write_folder_atomically(out, options.force, |staging| {
        let channels = plan.channel_names.len();
        let images_tr = staging.join("imagesTr");
        let labels_tr = staging.join("labelsTr");
        let images_ts = staging.join("imagesTs");
        let mut folders = vec![&images_tr, &labels_tr];
        folders.extend((!plan.test.is_empty()).then_some(&images_ts));
        for folder in folders {
            std::fs::create_dir_all(folder).map_err(|e| Error::runtime(folder, e))?;
        }
        let place = |cases: &[SourceCase], images: &Path| -> Result<Vec<Placed>> {
            let placed = collect_all(
                cases
                    .par_iter()
                    .map(|case| place_case(case, channels, Target { images, labels: &labels_tr, ending }, options.link))
                    .collect::<Vec<_>>(),
            )?;
            Ok(placed.into_iter().flatten().collect())
        };
        let mut placed = place(&plan.training, &images_tr)?;
        let test_placed = place(&plan.test, &images_ts)?;
        let descriptor = DatasetJson {
            channel_names: plan.channel_names.iter().enumerate().map(|(i, n)| (i.to_string(), n.as_str())).collect(),
            labels: labels.iter().map(|(name, value)| (name.as_str(), *value)).collect(),
            num_training: plan.training.len(),
            file_ending: ending,
            extra: &plan.extra,
        };
        write_json(&staging.join(DATASET_JSON), &descriptor)?;
        let test_problems: Vec<String> =
            test_placed.par_iter().filter_map(|(path, _)| read_image(path).err().map(|e| e.message)).collect();
        placed.extend(test_placed);
        let names = SourceNames { placed, staging, out };
        let dataset = Dataset::open(staging).map_err(|e| Error { message: names.translate(&e.message), ..e })?;
        let outcome = nntools_fingerprint::analyse(
            &dataset,
            &nntools_fingerprint::Options { verify_only: true, on_case_done: None },
        );
        let problems: Vec<String> =
            outcome.problems.iter().chain(&test_problems).map(|line| names.translate(line)).collect();
        if !problems.is_empty() {
            return Err(Error::bad_input_lines(problems));
        }
        warnings.extend(outcome.warnings.iter().map(|line| names.translate(line)));
        Ok(())
    })?;
    Ok(warnings)
}

/// Rewrites paths inside the staging folder as the sources they were made from.
struct SourceNames<'a> {
    placed: Vec<Placed>,
    staging: &'a Path,
    out: &'a Path,
}

impl SourceNames<'_> {
    fn translate(&self, line: &str) -> String {
        let mut line = line.to_owned();
        for (written, source) in &self.placed {
            line = line.replace(&*written.to_string_lossy(), source);
        }
        line.replace(&*self.staging.to_string_lossy(), &self.out.to_string_lossy())
    }
}

fn is_nnunet_dataset_name(name: &str) -> bool {
    name.strip_prefix("Dataset")
        .and_then(|rest| rest.split_once('_'))
        .is_some_and(|(id, label)| id.len() == 3 && id.bytes().all(|b| b.is_ascii_digit()) && !label.is_empty())
}

/// The one file ending of the new dataset (nnU-Net requires one) when the files are copied: the
/// sources' own, with plain `.nii` among `.nii.gz` files compressed.
fn common_ending(plan: &Plan) -> Result<String> {
    let files: Vec<&PathBuf> = plan
        .training
        .iter()
        .chain(&plan.test)
        .flat_map(|case| {
            let images = match &case.images {
                Images::Channels(paths) => paths.iter().collect::<Vec<_>>(),
                Images::Stacked(path) => vec![path],
            };
            images.into_iter().chain(&case.label)
        })
        .collect();
    let Some(&first) = files.first() else {
        return Err(Error::bad_input(&plan.labels_origin, "no cases to write"));
    };
    let mut endings: Vec<String> = files.iter().map(|p| ending_of(p)).collect();
    endings.sort();
    endings.dedup();
    let ending = match endings.as_slice() {
        [one] => one.clone(),
        [a, b] if a == ".nii" && b == ".nii.gz" => ".nii.gz".into(),
        _ => {
            // name a file of the second format, so that the line points at the odd ones out
            let odd = files.iter().find(|p| ending_of(p) != ending_of(first)).unwrap_or(&first);
            return Err(Error::bad_input(
                odd,
                format!(
                    "the sources mix image formats ({}); a dataset has one file ending: convert them with \
                     --to (e.g. --to .nii.gz)",
                    endings.join(" ")
                ),
            ));
        }
    };
    if !crate::dataset_endings().contains(&ending.as_str()) {
        return Err(Error::bad_input(
            first,
            format!(
                "no nnU-Net reader takes {ending} as a dataset's file ending: convert with --to (e.g. --to .nii.gz)"
            ),
        ));
    }
    Ok(ending)
}

/// A file's image ending in lower case (`.nrrd` for Slicer's `.seg.nrrd`).
pub(crate) fn ending_of(path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    split_image_ending(&name).map_or_else(String::new, |(_, ending)| ending.to_lowercase())
}

/// Where a case's files go: the dataset's image folder (imagesTr or imagesTs), labelsTr, and the ending.
#[derive(Clone, Copy)]
struct Target<'a> {
    images: &'a Path,
    labels: &'a Path,
    ending: &'a str,
}

impl Target<'_> {
    fn image(&self, id: &str, channel: usize) -> PathBuf {
        self.images.join(format!("{id}_{channel:04}{}", self.ending))
    }

    /// Tiff3DIO keeps a stack's spacing in a `CASE.json` beside it (`Tiff3DIO.read_images`, `read_seg`).
    fn has_sidecars(&self) -> bool {
        matches!(self.ending, ".tif" | ".tiff")
    }
}

/// Writes one case's files: copied (or linked) when the sources have the dataset's ending, else
/// converted. A 4-D NIfTI file of several channels is split into one file per channel; other files
/// holding several channels (RGB, 4-D MetaImage or NRRD) are copied whole, as nnU-Net reads them, or
/// split when converted.
fn place_case(case: &SourceCase, channels: usize, target: Target, link: bool) -> Result<Vec<Placed>> {
    let transferred = |source: &Path, to: PathBuf| -> Result<Placed> {
        transfer(source, &to, link)?;
        Ok((to, source.display().to_string()))
    };
    let sources = match &case.images {
        Images::Channels(paths) => paths.clone(),
        Images::Stacked(path) => vec![path.clone()],
    };
    let mut placed = if !sources.iter().all(|source| copies_as(source, target.ending)) {
        convert_images(case, channels, target)?
    } else if let Images::Stacked(source) = &case.images
        && channels > 1
        && target.ending.starts_with(".nii")
    {
        let volumes = read_volumes(source)?;
        if volumes.len() != channels {
            return Err(Error::bad_input(
                source,
                format!("holds {} volume(s) along the 4th axis but {channels} channels are declared", volumes.len()),
            ));
        }
        let mut placed = Vec::with_capacity(channels);
        for (channel, volume) in volumes.iter().enumerate() {
            let path = target.image(&case.id, channel);
            write_volume(&path, volume)?;
            placed.push((path, format!("{} (channel {channel})", source.display())));
        }
        placed
    } else {
        if target.has_sidecars() {
            let sidecar = sidecar_of(&sources[0], matches!(case.images, Images::Channels(_)));
            copy_sidecar(&sidecar, &target.images.join(format!("{}.json", case.id)))?;
        }
        sources
            .iter()
            .enumerate()
            .map(|(c, source)| transferred(source, target.image(&case.id, c)))
            .collect::<Result<_>>()?
    };
    if let Some(label) = &case.label {
        let to = target.labels.join(format!("{}{}", case.id, target.ending));
        if copies_as(label, target.ending) {
            if target.has_sidecars() {
                copy_sidecar(&sidecar_of(label, false), &target.labels.join(format!("{}.json", case.id)))?;
            }
            placed.push(transferred(label, to)?);
        } else {
            convert_label(label, &to, target.ending)?;
            placed.push((to, label.display().to_string()));
        }
    }
    Ok(placed)
}

/// Whether `source` reaches a dataset of `ending` as it is (a plain `.nii` is compressed on the way).
fn copies_as(source: &Path, ending: &str) -> bool {
    let own = ending_of(source);
    own == ending || (own == ".nii" && ending == ".nii.gz")
}

/// Where Tiff3DIO looks for a case file's spacing: `CASE.json` beside it, without the file's ending
/// (and channel suffix, for channel files).
fn sidecar_of(path: &Path, channel_file: bool) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let stem = split_image_ending(&name).map_or(name.as_ref(), |(stem, _)| stem);
    let stem = if channel_file { split_channel_suffix(stem).map_or(stem, |(id, _)| id) } else { stem };
    path.with_file_name(format!("{stem}.json"))
}

/// Copies a source's spacing file, where there is one (Tiff3DIO assumes spacing 1 without).
fn copy_sidecar(sidecar: &Path, to: &Path) -> Result<()> {
    if !sidecar.is_file() {
        return Ok(());
    }
    std::fs::copy(sidecar, to).map(drop).map_err(|e| Error::io(to, &e))
}

/// Reads a case's channels and writes each as one file of the dataset's format, with its geometry and
/// (where the format has it) its voxel type; 3-D TIFF stacks get one spacing file for the case.
fn convert_images(case: &SourceCase, channels: usize, target: Target) -> Result<Vec<Placed>> {
    let (files, images): (Vec<PathBuf>, Vec<Image<f32>>) = match &case.images {
        Images::Channels(paths) => (paths.clone(), ReaderWriter::for_file(&paths[0])?.read_images(paths)?),
        Images::Stacked(path) => {
            let images = match ReaderWriter::for_file(path)? {
                // a stack is one channel, with its spacing in CASE.json (`Tiff3DIO.read_seg`'s name)
                reader @ ReaderWriter::Tiff3d => vec![reader.read_single(path)?],
                reader => reader.read_images(std::slice::from_ref(path))?,
            };
            (vec![path.clone()], images)
        }
    };
    if images.len() != channels {
        return Err(Error::bad_input(
            &files[0],
            format!("holds {} channel(s) but {channels} channels are declared", images.len()),
        ));
    }
    let per_file = channels / files.len();
    let mut placed = Vec::with_capacity(channels);
    for (channel, image) in images.iter().enumerate() {
        let file = &files[channel / per_file];
        let source = match per_file {
            1 => file.display().to_string(),
            _ => format!("{} (channel {})", file.display(), channel % per_file),
        };
        let path = target.image(&case.id, channel);
        write_image(&path, image).map_err(|e| conversion_error(e, &path, file, target.ending))?;
        placed.push((path, source));
    }
    if target.has_sidecars() && images[0].stored.dimension == 3 {
        // the stack writer leaves CASE_XXXX.json beside each channel; Tiff3DIO reads one CASE.json
        for channel in 0..channels {
            let stray = target.images.join(format!("{}_{channel:04}.json", case.id));
            std::fs::remove_file(&stray).map_err(|e| Error::runtime(&stray, e))?;
        }
        let sidecar = target.images.join(format!("{}.json", case.id));
        write_json(&sidecar, &serde_json::json!({ "spacing": images[0].geometry.spacing }))?;
    }
    Ok(placed)
}

/// Writes a label map in the dataset's format as nnU-Net's `write_seg` does (uint8, or uint16 from 255).
fn convert_label(source: &Path, to: &Path, ending: &str) -> Result<()> {
    let map = read_label_map(source)?;
    if let Some(value) = map.data.iter().find(|&&v| u16::try_from(v).is_err()) {
        return Err(Error::bad_input(source, format!("label value {value} is not a label (0 to 65535)")));
    }
    let labels = map.data.mapv(|v| v as u16);
    write_label_map(to, labels.view(), &map.geometry, &map.stored).map_err(|e| conversion_error(e, to, source, ending))
}

/// A failed conversion told as a problem of the source file (the target lies in the staging folder).
fn conversion_error(error: Error, target: &Path, source: &Path, ending: &str) -> Error {
    if error.kind != ErrorKind::BadInput {
        return error;
    }
    let prefix = format!("{}: ", target.display());
    let problem = error.message.strip_prefix(&prefix).unwrap_or(&error.message);
    Error::bad_input(source, format!("cannot be written as {ending}: {problem}"))
}

/// Copies or links `source` to `target`, compressing a plain `.nii` source for a `.nii.gz` target.
fn transfer(source: &Path, target: &Path, link: bool) -> Result<()> {
    let compress = !source.to_string_lossy().ends_with(".gz") && target.to_string_lossy().ends_with(".gz");
    if compress {
        let mut input = std::fs::File::open(source).map_err(|e| Error::io(source, &e))?;
        let file = std::fs::File::create(target).map_err(|e| Error::io(target, &e))?;
        let mut encoder = flate2::write::GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::fast());
        std::io::copy(&mut input, &mut encoder).map_err(|e| Error::runtime(target, e))?;
        return encoder.finish().map(drop).map_err(|e| Error::runtime(target, e));
    }
    if !source.is_file() {
        return Err(Error::bad_input(source, "missing or not a file"));
    }
    if link {
        // A hard link cannot cross file systems; an absolute symbolic link can.
        let linked = std::fs::hard_link(source, target).or_else(|_| {
            let absolute = std::path::absolute(source)?;
            std::os::unix::fs::symlink(absolute, target)
        });
        return linked.map_err(|e| Error::runtime(target, e));
    }
    // the source was just found to be a file, so a failure is most likely the target's (a full disk)
    std::fs::copy(source, target)
        .map(drop)
        .map_err(|e| Error::io(target, &std::io::Error::new(e.kind(), format!("copying {}: {e}", source.display()))))
}

/// nnU-Net's labels for the values found in the label maps: `background` for 0 (always present),
/// `label_N` for N. The values must run from 0 without gaps, as nnU-Net requires.
fn derive_labels(cases: &[SourceCase], origin: &Path) -> Result<Vec<(String, i64)>> {
    let found = cases.par_iter().filter_map(|case| case.label.as_deref()).map(|path| {
        let map = read_label_map(path)?;
        let mut values = BTreeSet::new();
        let mut previous = None;
        // Label maps are long runs of one value; skipping repeats keeps this a single fast pass.
        for &value in &map.data {
            if previous != Some(value) {
                values.insert(i64::from(value));
                previous = Some(value);
            }
        }
        Ok(values)
    });
    let found = collect_all(found.collect::<Vec<_>>())?;
    let mut values: BTreeSet<i64> = found.into_iter().flatten().collect();
    values.insert(0);
    if !values.iter().copied().eq(0..values.len() as i64) {
        return Err(Error::bad_input(
            origin,
            format!(
                "the label maps hold the values {values:?}; nnU-Net needs consecutive values from 0 \
                 (relabel them, or declare every value with --label)"
            ),
        ));
    }
    Ok(values.into_iter().map(|v| (if v == 0 { "background".to_owned() } else { format!("label_{v}") }, v)).collect())
}

/// All the values, or every bad-input problem as one error (one line each); a runtime failure wins.
pub(crate) fn collect_all<T>(results: impl IntoIterator<Item = Result<T>>) -> Result<Vec<T>> {
    let mut values = Vec::new();
    let mut problems = Vec::new();
    for result in results {
        match result {
            Ok(value) => values.push(value),
            Err(e) if e.kind == ErrorKind::BadInput => problems.push(e.message),
            Err(e) => return Err(e),
        }
    }
    if problems.is_empty() { Ok(values) } else { Err(Error::bad_input_lines(problems)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_folder_names() {
        assert!(is_nnunet_dataset_name("Dataset004_Hippocampus"));
        assert!(!is_nnunet_dataset_name("Dataset04_Hippocampus"));
        assert!(!is_nnunet_dataset_name("Dataset004_"));
        assert!(!is_nnunet_dataset_name("Task04_Hippocampus"));
    }

    #[test]
    fn collects_every_bad_input_line() {
        let results = vec![Ok(1), Err(Error::bad_input("a.nii", "x")), Ok(2), Err(Error::bad_input("b.nii", "y"))];
        assert_eq!(collect_all(results).unwrap_err().message, "a.nii: x\nb.nii: y");
        let results: Vec<Result<()>> = vec![Err(Error::bad_input("a.nii", "x")), Err(Error::runtime("disk", "full"))];
        assert_eq!(collect_all(results).unwrap_err().kind, ErrorKind::Runtime);
        assert_eq!(collect_all(vec![Ok(1), Ok(2)]).unwrap(), [1, 2]);
    }
}
