//! Writing a raw dataset from source cases: the files under nnU-Net's names, the labels derived from
//! the label maps when none are declared, dataset.json, and the integrity check of the result.

use crate::{Images, Options, SourceCase};
use indexmap::IndexMap;
use nntools_dataset::Dataset;
use nntools_io::split_image_ending;
use nntools_io::{
    Error, ErrorKind, Result, read_image, read_label_map, read_volumes, write_folder_atomically, write_json,
    write_volume,
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
    let ending = common_ending(plan)?;
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
                    .map(|case| place_case(case, channels, images, &labels_tr, ending, options.link))
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

/// The dataset's one file ending: the sources' when they all share it, else `.nii.gz` (plain `.nii`
/// sources are then compressed).
/// The one file ending of the new dataset (nnU-Net requires one): the sources' own, with plain `.nii`
/// among `.nii.gz` files compressed.
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
    let ending_of = |path: &PathBuf| {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        split_image_ending(&name).map_or_else(String::new, |(_, e)| e.to_lowercase())
    };
    let mut endings: Vec<String> = files.iter().map(|p| ending_of(p)).collect();
    endings.sort();
    endings.dedup();
    match endings.as_slice() {
        [one] => Ok(one.clone()),
        [a, b] if a == ".nii" && b == ".nii.gz" => Ok(".nii.gz".into()),
        _ => Err(Error::bad_input(
            files.first().map_or(Path::new("."), |p| p.as_path()),
            format!("the sources mix image formats ({}); a dataset has one file ending", endings.join(" ")),
        )),
    }
}

/// Writes one case's files; 4-D images of several channels are split into one file per channel.
fn place_case(
    case: &SourceCase,
    channels: usize,
    images_dir: &Path,
    labels_dir: &Path,
    ending: &str,
    link: bool,
) -> Result<Vec<Placed>> {
    let image_path = |channel: usize| images_dir.join(format!("{}_{channel:04}{ending}", case.id));
    let transferred = |source: &Path, target: PathBuf| -> Result<Placed> {
        transfer(source, &target, link)?;
        Ok((target, source.display().to_string()))
    };
    let mut placed = match &case.images {
        Images::Channels(paths) => {
            paths.iter().enumerate().map(|(c, source)| transferred(source, image_path(c))).collect::<Result<_>>()?
        }
        Images::Stacked(source) if channels == 1 => vec![transferred(source, image_path(0))?],
        Images::Stacked(source) => {
            let volumes = read_volumes(source)?;
            if volumes.len() != channels {
                return Err(Error::bad_input(
                    source,
                    format!(
                        "holds {} volume(s) along the 4th axis but {channels} channels are declared",
                        volumes.len()
                    ),
                ));
            }
            let mut placed = Vec::with_capacity(channels);
            for (channel, volume) in volumes.iter().enumerate() {
                write_volume(&image_path(channel), volume)?;
                placed.push((image_path(channel), format!("{} (channel {channel})", source.display())));
            }
            placed
        }
    };
    if let Some(label) = &case.label {
        placed.push(transferred(label, labels_dir.join(format!("{}{ending}", case.id)))?);
    }
    Ok(placed)
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
