//! A raw dataset from plain folders: images paired with label maps by case name.
//!
//! Accepted names (any image ending nn-tools reads; `.nii.gz` here): a label map `CASE.nii.gz` names a
//! training case (3D Slicer's `CASE.seg.nrrd` too); its images are `CASE.nii.gz` (one file holding every
//! channel: 3-D for one channel, 4-D with one volume per channel, or RGB, for several) or
//! `CASE_0000.nii.gz`, `CASE_0001.nii.gz`, ... (one file per channel, or fewer files holding several
//! channels each, as an RGB `CASE_0000.png` holds three). Test images follow the same forms; there,
//! files are channel files when every name ends in `_XXXX` with XXXX below the channel count. Tiff3DIO's
//! spacing files (`CASE.json`) lie beside the images and labels.

use crate::layout::{Plan, ending_of, write_raw_dataset};
use crate::slicer::{check_single_layer, is_segmentation, segment_labels};
use crate::{Images, Options, SourceCase};
use nntools_dataset::{
    Label, channel_files_problem, channel_suffixes, check_labels, group_image_files, split_channel_suffix,
};
use nntools_io::split_image_ending;
use nntools_io::{Error, ReaderWriter, Result};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What `nn-dataset create` was asked for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// Folder of training images.
    pub images: PathBuf,
    /// Folder of label maps, `CASE.nii.gz` (or 3D Slicer's `CASE.seg.nrrd`).
    pub labels: PathBuf,
    /// Folder of unlabelled test images.
    pub test_images: Option<PathBuf>,
    /// `(index, name)` of every channel.
    pub channels: Vec<(i64, String)>,
    /// `(value, name)` of every label; empty: the segment names of Slicer segmentations, else derived
    /// from the label maps' values.
    pub label_names: Vec<(i64, String)>,
    /// dataset.json's `name` (default: the output folder's name).
    pub name: Option<String>,
}

/// Parses `INDEX=NAME` (`--channel 0=MRI`, `--label 1=tumour`).
pub fn parse_numbered(text: &str) -> std::result::Result<(i64, String), String> {
    let (index, name) = text.split_once('=').ok_or_else(|| format!("{text:?} is not INDEX=NAME (e.g. 0=MRI)"))?;
    let index = index.trim().parse().map_err(|_| format!("{index:?} in {text:?} is not an integer"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("{text:?} has no name after '='"));
    }
    Ok((index, name.to_owned()))
}

/// Makes the raw dataset `out` from `request`'s folders; returns warnings (ignored files, origin or
/// direction mismatches).
pub fn create(request: &CreateRequest, out: &Path, options: Options) -> Result<Vec<String>> {
    let channel_names = channel_names(&request.channels)?;
    let labels = (!request.label_names.is_empty()).then(|| declared_labels(&request.label_names)).transpose()?;
    let mut warnings = Vec::new();
    let label_files = list_image_files(&request.labels, true, &mut warnings)?;
    let image_files = list_image_files(&request.images, false, &mut warnings)?;
    let segmentations: Vec<&Path> = label_files
        .iter()
        .map(|(_, path)| path.as_path())
        .filter(|path| is_segmentation(&path.file_name().unwrap_or_default().to_string_lossy()))
        .collect();
    // Slicer's segment names become the labels when every label map has them and none are declared.
    let labels = match labels {
        None if !segmentations.is_empty() && segmentations.len() == label_files.len() => {
            Some(segment_labels(&segmentations, &request.labels)?)
        }
        labels => {
            check_single_layer(&segmentations)?;
            labels
        }
    };
    let training = training_cases(request, image_files, label_files, channel_names.len())?;
    let test = match &request.test_images {
        Some(dir) => test_cases(list_image_files(dir, false, &mut warnings)?, channel_names.len())?,
        None => Vec::new(),
    };
    let name = match &request.name {
        Some(name) => name.clone(),
        None => out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    let extra = Map::from_iter([("name".to_owned(), Value::from(name))]);
    let plan = Plan { channel_names, labels, training, test, extra, labels_origin: request.labels.clone() };
    warnings.extend(write_raw_dataset(&plan, out, options)?);
    Ok(warnings)
}

fn channel_names(channels: &[(i64, String)]) -> Result<Vec<String>> {
    let mut sorted = channels.to_vec();
    sorted.sort();
    if sorted.is_empty() || sorted.iter().enumerate().any(|(i, (index, _))| *index != i as i64) {
        let indices: Vec<i64> = sorted.iter().map(|(i, _)| *i).collect();
        return Err(Error::bad_input(
            "--channel",
            format!("channels must be numbered 0, 1, 2, ... once each, got {indices:?}"),
        ));
    }
    Ok(sorted.into_iter().map(|(_, name)| name).collect())
}

fn declared_labels(labels: &[(i64, String)]) -> Result<Vec<(String, i64)>> {
    let mut sorted = labels.to_vec();
    sorted.sort();
    let bad = |problem: String| Error::bad_input("--label", problem);
    for pair in sorted.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(bad(format!("value {} is declared twice", pair[0].0)));
        }
    }
    let mut names: Vec<&str> = sorted.iter().map(|(_, n)| n.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|p| p[0] == p[1]) {
        return Err(bad(format!("name {:?} is declared twice", pair[0])));
    }
    let checked: Vec<Label> = sorted.iter().map(|(v, n)| Label { name: n.clone(), values: vec![*v] }).collect();
    check_labels(&checked, None).map_err(bad)?;
    Ok(sorted.into_iter().map(|(value, name)| (name, value)).collect())
}

/// The image files of `dir` as (stem, path), sorted by name; hidden files and Tiff3DIO's spacing files
/// (`.json`) are skipped, other files ignored with a warning. In a folder of label maps, Slicer's
/// `CASE.seg.nrrd` has the stem `CASE`.
fn list_image_files(dir: &Path, labels: bool, warnings: &mut Vec<String>) -> Result<Vec<(String, PathBuf)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, &e))?;
    let mut files = BTreeMap::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, &e))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if name.starts_with('.') || path.is_dir() || name.to_lowercase().ends_with(".json") {
            continue;
        }
        let Some((stem, _)) = split_image_ending(&name) else {
            warnings.push(format!(
                "{}: not an image file (.nii.gz, .nii, .mha, .nrrd, .png, .tif, ...); ignored",
                path.display()
            ));
            continue;
        };
        let stem = match stem.len().checked_sub(".seg".len()) {
            Some(cut) if labels && is_segmentation(&name) => &stem[..cut],
            _ => stem,
        };
        if let Some(other) = files.insert(stem.to_owned(), path.clone()) {
            return Err(Error::bad_input(&path, format!("same case name as {}", other.display())));
        }
    }
    if files.is_empty() {
        return Err(Error::bad_input(dir, "no image files (.nii.gz, .nii, .mha, .nrrd, .png, .tif, ...) found"));
    }
    Ok(files.into_iter().collect())
}

/// A case's images as found: a file holding every channel, and channel files with their index.
type FoundImages = (Option<PathBuf>, Vec<(usize, PathBuf)>);

/// Pairs images with label maps: every image must belong to a label's case, every label must have
/// images; all mismatches are reported, one line each.
fn training_cases(
    request: &CreateRequest,
    images: Vec<(String, PathBuf)>,
    labels: Vec<(String, PathBuf)>,
    channels: usize,
) -> Result<Vec<SourceCase>> {
    let mut found: BTreeMap<&str, FoundImages> =
        labels.iter().map(|(id, _)| (id.as_str(), (None, Vec::new()))).collect();
    let mut problems = Vec::new();
    for (stem, path) in images {
        if let Some((stacked, _)) = found.get_mut(stem.as_str()) {
            *stacked = Some(path);
        } else if let Some((id, channel)) = split_channel_suffix(&stem).filter(|(id, _)| found.contains_key(id)) {
            found.get_mut(id).expect("checked").1.push((channel, path));
        } else {
            problems.push(format!(
                "{}: image without a label map (expected {}/{}{})",
                path.display(),
                request.labels.display(),
                split_channel_suffix(&stem).map_or(stem.as_str(), |(id, _)| id),
                ending_of(&path)
            ));
        }
    }
    let mut cases = Vec::with_capacity(labels.len());
    for (id, label) in &labels {
        let (stacked, mut channel_files) = found.remove(id.as_str()).expect("one entry per label");
        channel_files.sort();
        let indices: Vec<usize> = channel_files.iter().map(|(c, _)| *c).collect();
        let images = match stacked {
            None if channel_files.is_empty() => {
                let ending = ending_of(label);
                problems.push(format!(
                    "{}: label map without an image (expected {}/{id}{ending} or {id}_0000{ending})",
                    label.display(),
                    request.images.display()
                ));
                continue;
            }
            Some(path) if channel_files.is_empty() => Images::Stacked(path),
            Some(path) => {
                problems.push(format!(
                    "{}: case {id} has channel files ({}) too: give either the one image or its channel files",
                    path.display(),
                    channel_suffixes(&indices)
                ));
                continue;
            }
            None if indices != (0..channels).collect::<Vec<_>>() => {
                // Fewer files can hold every channel: CASE_0000.png holds R, G and B. (A file that
                // cannot be read is left to the integrity check; the missing files are the problem here.)
                let leading = indices == (0..indices.len()).collect::<Vec<_>>();
                if leading
                    && channels.is_multiple_of(indices.len())
                    && channels_in(&channel_files[0].1).is_ok_and(|held| held * indices.len() == channels)
                {
                    let images = Images::Channels(channel_files.into_iter().map(|(_, p)| p).collect());
                    cases.push(SourceCase { id: id.clone(), images, label: Some(label.clone()) });
                    continue;
                }
                // name the first missing channel file, or else the first one too many
                let ending = ending_of(&channel_files[0].1);
                let file = match (0..channels).find(|c| !indices.contains(c)) {
                    Some(c) => format!("{}: missing;", request.images.join(format!("{id}_{c:04}{ending}")).display()),
                    None => format!(
                        "{}:",
                        channel_files
                            .iter()
                            .find(|(c, _)| *c >= channels)
                            .map_or(&channel_files[0].1, |(_, p)| p)
                            .display()
                    ),
                };
                problems.push(format!("{file} {}", channel_files_problem(id, channels, &indices)));
                continue;
            }
            None => Images::Channels(channel_files.into_iter().map(|(_, p)| p).collect()),
        };
        cases.push(SourceCase { id: id.clone(), images, label: Some(label.clone()) });
    }
    if problems.is_empty() { Ok(cases) } else { Err(Error::bad_input_lines(problems)) }
}

/// How many channels an image file holds: three for RGB, one per volume for a 4-D file.
fn channels_in(path: &Path) -> Result<usize> {
    match ReaderWriter::for_file(path)? {
        // a stack is one channel; reading it would look for a spacing file under a channel's name
        ReaderWriter::Tiff3d => Ok(1),
        reader => Ok(reader.read_images(&[path.to_owned()])?.len()),
    }
}

fn test_cases(files: Vec<(String, PathBuf)>, channels: usize) -> Result<Vec<SourceCase>> {
    let all_channel_files =
        files.iter().all(|(stem, _)| split_channel_suffix(stem).is_some_and(|(_, channel)| channel < channels));
    if all_channel_files {
        let paths: Vec<PathBuf> = files.into_iter().map(|(_, p)| p).collect();
        let grouped = group_image_files(&paths, channels)?;
        return Ok(grouped
            .into_iter()
            .map(|(id, images)| SourceCase { id, images: Images::Channels(images), label: None })
            .collect());
    }
    Ok(files.into_iter().map(|(id, path)| SourceCase { id, images: Images::Stacked(path), label: None }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbered_names() {
        assert_eq!(parse_numbered("0=MRI").unwrap(), (0, "MRI".to_owned()));
        assert_eq!(parse_numbered(" 2 = left hippocampus ").unwrap(), (2, "left hippocampus".to_owned()));
        assert!(parse_numbered("MRI").unwrap_err().contains("INDEX=NAME"));
        assert!(parse_numbered("x=MRI").unwrap_err().contains("not an integer"));
        assert!(parse_numbered("1=").unwrap_err().contains("no name"));
    }

    #[test]
    fn checks_channels_and_labels() {
        let numbered = |pairs: &[(i64, &str)]| pairs.iter().map(|(i, n)| (*i, (*n).to_owned())).collect::<Vec<_>>();
        assert_eq!(channel_names(&numbered(&[(1, "ADC"), (0, "T2")])).unwrap(), ["T2", "ADC"]);
        assert!(channel_names(&numbered(&[(0, "T2"), (2, "ADC")])).unwrap_err().message.starts_with("--channel: "));
        assert!(channel_names(&numbered(&[(0, "T2"), (0, "ADC")])).is_err());
        assert_eq!(
            declared_labels(&numbered(&[(1, "tumour"), (0, "background")])).unwrap(),
            [("background".to_owned(), 0), ("tumour".to_owned(), 1)]
        );
        let err = |pairs| declared_labels(&numbered(pairs)).unwrap_err().message;
        assert!(err(&[(0, "background"), (2, "tumour")]).contains("consecutive"));
        assert!(err(&[(0, "bg"), (1, "tumour")]).contains("background"));
        assert!(err(&[(0, "background"), (1, "a"), (1, "b")]).contains("declared twice"));
        assert!(err(&[(0, "background"), (1, "a"), (2, "a")]).contains("declared twice"));
    }

    fn touch(dir: &Path, names: &[&str]) -> Vec<(String, PathBuf)> {
        std::fs::create_dir_all(dir).unwrap();
        for name in names {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        list_image_files(dir, false, &mut Vec::new()).unwrap()
    }

    #[test]
    fn pairs_images_with_labels_by_case_name() {
        let root = tempfile::tempdir().unwrap();
        let request =
            CreateRequest { images: root.path().join("img"), labels: root.path().join("lab"), ..Default::default() };
        let labels = touch(&request.labels, &["a.nii.gz", "b_0001.nii", "c.nii.gz"]);
        let images = touch(
            &request.images,
            &["a_0000.nii.gz", "a_0001.nii.gz", "b_0001_0000.nii", "b_0001_0001.nii", "c.nii.gz"],
        );
        let cases = training_cases(&request, images, labels, 2).unwrap();
        let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a", "b_0001", "c"]);
        assert_eq!(
            cases[0].images,
            Images::Channels(vec![request.images.join("a_0000.nii.gz"), request.images.join("a_0001.nii.gz")])
        );
        assert_eq!(cases[2].images, Images::Stacked(request.images.join("c.nii.gz")));
        assert_eq!(cases[1].label.as_deref(), Some(request.labels.join("b_0001.nii").as_path()));
    }

    #[test]
    fn reports_every_unpaired_file() {
        let root = tempfile::tempdir().unwrap();
        let request =
            CreateRequest { images: root.path().join("img"), labels: root.path().join("lab"), ..Default::default() };
        let labels = touch(&request.labels, &["a.nii.gz", "b.nii.gz", "d.nii.gz"]);
        let images = touch(&request.images, &["a_0000.nii.gz", "b_0000.nii.gz", "b_0002.nii.gz", "c_0000.nii.gz"]);
        let message = training_cases(&request, images, labels, 2).unwrap_err().message;
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(lines.len(), 4, "{message}");
        assert!(lines[0].contains("c_0000.nii.gz: image without a label map"), "{message}");
        assert!(
            lines[1].ends_with("a_0001.nii.gz: missing; case a: expected 2 channels (_0000, _0001), found _0000"),
            "{message}"
        );
        assert!(
            lines[2]
                .ends_with("b_0001.nii.gz: missing; case b: expected 2 channels (_0000, _0001), found _0000 and _0002"),
            "{message}"
        );
        assert!(lines[3].contains("d.nii.gz: label map without an image"), "{message}");
    }

    #[test]
    fn a_case_given_as_one_image_and_as_channel_files_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let request =
            CreateRequest { images: root.path().join("img"), labels: root.path().join("lab"), ..Default::default() };
        let labels = touch(&request.labels, &["a.png"]);
        let images = touch(&request.images, &["a.png", "a_0001.png", "a_0002.png"]);
        let message = training_cases(&request, images, labels, 3).unwrap_err().message;
        let expected = format!(
            "{}: case a has channel files (_0001 and _0002) too: give either the one image or its channel files",
            request.images.join("a.png").display()
        );
        assert!(message.ends_with(&expected), "{message}");
    }

    #[test]
    fn test_images_with_or_without_channel_suffix() {
        let root = tempfile::tempdir().unwrap();
        let suffixed = touch(&root.path().join("s"), &["x_0000.nii.gz", "x_0001.nii.gz"]);
        let cases = test_cases(suffixed, 2).unwrap();
        assert_eq!(cases.len(), 1);
        assert_eq!(cases[0].id, "x");
        // `_0001` cannot be a channel of a one-channel dataset: these are whole cases.
        let plain = touch(&root.path().join("p"), &["y_0000.nii", "y_0001.nii"]);
        let cases = test_cases(plain, 1).unwrap();
        let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["y_0000", "y_0001"]);
        let mut warnings = Vec::new();
        std::fs::write(root.path().join("p/notes.txt"), b"").unwrap();
        list_image_files(&root.path().join("p"), false, &mut warnings).unwrap();
        assert!(warnings[0].contains("notes.txt: not an image file"), "{warnings:?}");
    }
}
