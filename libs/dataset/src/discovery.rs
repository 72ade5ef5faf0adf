//! Finding the training cases of a raw dataset folder.

use crate::Descriptor;
use nntools_io::{Error, ReaderWriter, Result, split_image_ending};
use nntools_layout::DATASET_JSON;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One training case: where its channel images and label map are expected (they may be missing;
/// the integrity check reports that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub id: String,
    /// One path per declared channel, in channel order.
    pub images: Vec<PathBuf>,
    pub label: PathBuf,
}

impl Case {
    /// The image files that hold the case's channels: the leading ones that exist. nnU-Net reads the
    /// `CASE_XXXX` files it finds, and one RGB file holds three channels, so whether a missing file is
    /// missing shows only once the present ones are read.
    pub fn present_images(&self) -> &[PathBuf] {
        let present = self.images.iter().take_while(|p| p.is_file()).count();
        &self.images[..present.max(1).min(self.images.len())]
    }
}

/// A raw dataset folder: its descriptor, its cases, and the naming problems found while listing them.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    pub descriptor: Descriptor,
    pub cases: Vec<Case>,
    /// Files that do not fit the layout (wrong names, undeclared channels), one line each.
    pub layout_problems: Vec<String>,
}

impl Dataset {
    /// nnU-Net's reader-writer class for the dataset (`determine_reader_writer_from_dataset_json` with
    /// the first case's first image as the example to try).
    pub fn reader_writer(&self) -> Result<ReaderWriter> {
        let example = self.cases.first().and_then(|c| c.images.first()).filter(|p| p.is_file());
        ReaderWriter::for_dataset(
            &self.root.join(DATASET_JSON),
            self.descriptor.overwrite_image_reader_writer.as_deref(),
            &self.descriptor.file_ending,
            example.map(PathBuf::as_path),
        )
    }

    /// Opens `root` (a folder holding `dataset.json`) and lists its training cases.
    pub fn open(root: &Path) -> Result<Self> {
        let json_path = root.join(DATASET_JSON);
        if !root.is_dir() {
            return Err(Error::bad_input(root, "not a folder (expected an nnU-Net raw dataset)"));
        }
        if !json_path.is_file() {
            return Err(Error::bad_input(&json_path, "missing (expected an nnU-Net raw dataset folder)"));
        }
        let descriptor = Descriptor::read(&json_path)?;
        let mut layout_problems = Vec::new();
        let cases = if let Some(explicit) = &descriptor.explicit_cases {
            explicit
                .iter()
                .map(|(id, images, label)| Case {
                    id: id.clone(),
                    images: images.iter().map(|p| root.join(p)).collect(),
                    label: root.join(label),
                })
                .collect()
        } else {
            let ids = match &descriptor.v1_training_images {
                Some(images) => v1_case_ids(&json_path, images, &descriptor.file_ending)?,
                None => list_case_ids(root, &descriptor, &mut layout_problems)?,
            };
            ids.into_iter().map(|id| standard_case(root, &descriptor, id)).collect()
        };
        Ok(Self { root: root.to_owned(), descriptor, cases, layout_problems })
    }
}

fn parse_image_path(path: &Path) -> Option<(String, usize, String)> {
    let name = path.file_name()?.to_string_lossy();
    let (stem, ending) = split_image_ending(&name)?;
    split_channel_suffix(stem).map(|(id, c)| (id.to_owned(), c, ending.to_lowercase()))
}

/// Unlabelled cases in a folder of `CASE_XXXX<ending>` images (test or inference images) in any image
/// format nn-tools reads; a case has at most `channels` files. Other files are ignored.
pub fn list_image_cases(dir: &Path, channels: usize) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, &e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, &e))?.path();
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden && parse_image_path(&path).is_some() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(Error::bad_input(dir, "no CASE_XXXX<ending> images found (e.g. CASE_0000.nii.gz)"));
    }
    group_image_files(&files, channels)
}

/// Groups `CASE_XXXX<ending>` image files into cases (sorted by id), each with its images in channel
/// order: `_0000` to `_000K` without gaps, at most `channels` of them (an RGB file holds three channels,
/// so the channel count is checked once they are read), all of one ending. Errors name the file at
/// fault.
pub fn group_image_files(files: &[PathBuf], channels: usize) -> Result<Vec<(String, Vec<PathBuf>)>> {
    type Files = Vec<(usize, String, PathBuf)>;
    let mut found: std::collections::BTreeMap<String, Files> = std::collections::BTreeMap::new();
    for path in files {
        let (id, channel, ending) = parse_image_path(path).ok_or_else(|| {
            Error::bad_input(path, "image name does not follow CASE_XXXX<ending> (e.g. CASE_0000.nii.gz)")
        })?;
        found.entry(id).or_default().push((channel, ending, path.clone()));
    }
    let mut cases = Vec::with_capacity(found.len());
    for (id, mut files) in found {
        files.sort();
        // one channel twice: the same file given twice (`-i a_0000.nii.gz a_0000.nii.gz`), or two files
        if let Some(pair) = files.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            let (first, second) = (&pair[0].2, &pair[1].2);
            let same = first == second
                || std::fs::canonicalize(first).ok().is_some_and(|f| std::fs::canonicalize(second).ok() == Some(f));
            return Err(match same {
                true => Error::bad_input(first, "is given twice"),
                false => Error::bad_input(
                    second,
                    format!("holds channel _{:04} of case {id}, as does {}", pair[0].0, first.display()),
                ),
            });
        }
        let indices: Vec<usize> = files.iter().map(|(c, _, _)| *c).collect();
        // the first file out of place: after a gap, or one too many
        if let Some((_, _, misplaced)) =
            files.iter().enumerate().find(|(i, _)| indices[*i] != *i || *i >= channels).map(|(_, f)| f)
        {
            return Err(Error::bad_input(misplaced, channel_files_problem(&id, channels, &indices)));
        }
        if files.iter().any(|(_, ending, _)| *ending != files[0].1) {
            return Err(Error::bad_input(
                &files[0].2,
                format!("the channel files of case {id} have different endings"),
            ));
        }
        cases.push((id, files.into_iter().map(|(_, _, p)| p).collect()));
    }
    Ok(cases)
}

/// The one wording for a case whose channel files are not `_0000` to `_000K`: "case a: expected 2
/// channels (_0000, _0001), found _0000 and _0002" (`found`: the channel indices of its files, sorted).
pub fn channel_files_problem(id: &str, expected: usize, found: &[usize]) -> String {
    let expected_list = match expected {
        0..=3 => (0..expected).map(channel_suffix).collect::<Vec<_>>().join(", "),
        _ => format!("_0000 to {}", channel_suffix(expected - 1)),
    };
    let noun = if expected == 1 { "channel" } else { "channels" };
    format!("case {id}: expected {expected} {noun} ({expected_list}), found {}", channel_suffixes(found))
}

/// Channel indices as their file suffixes, `_0000, _0001 and _0003` (`none` for no index).
pub fn channel_suffixes(channels: &[usize]) -> String {
    match channels {
        [] => "none".to_owned(),
        [one] => channel_suffix(*one),
        [rest @ .., last] => {
            let rest: Vec<String> = rest.iter().copied().map(channel_suffix).collect();
            format!("{} and {}", rest.join(", "), channel_suffix(*last))
        }
    }
}

fn channel_suffix(channel: usize) -> String {
    format!("_{channel:04}")
}

fn standard_case(root: &Path, descriptor: &Descriptor, id: String) -> Case {
    let ending = &descriptor.file_ending;
    let images = (0..descriptor.channel_names.len())
        .map(|c| root.join("imagesTr").join(format!("{id}_{c:04}{ending}")))
        .collect();
    let label = root.join("labelsTr").join(format!("{id}{ending}"));
    Case { id, images, label }
}

/// Splits `CASE_XXXX<ending>` into the case id and channel index.
fn split_image_name<'a>(name: &'a str, ending: &str) -> Option<(&'a str, usize)> {
    split_channel_suffix(name.strip_suffix(ending)?)
}

/// Splits a file stem `CASE_XXXX` into the case id and channel index.
pub fn split_channel_suffix(stem: &str) -> Option<(&str, usize)> {
    let (id, channel) = stem.rsplit_once('_')?;
    (channel.len() == 4 && channel.bytes().all(|b| b.is_ascii_digit()) && !id.is_empty())
        .then(|| (id, channel.parse().expect("four digits")))
}

fn list_case_ids(root: &Path, descriptor: &Descriptor, problems: &mut Vec<String>) -> Result<Vec<String>> {
    let images_dir = root.join("imagesTr");
    let entries = std::fs::read_dir(&images_dir).map_err(|e| Error::io(&images_dir, &e))?;
    let mut ids = BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&images_dir, &e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(&descriptor.file_ending) {
            continue;
        }
        match split_image_name(&name, &descriptor.file_ending) {
            Some((id, channel)) if channel < descriptor.channel_names.len() => {
                ids.insert(id.to_owned());
            }
            Some((_, channel)) => problems.push(format!(
                "{}: channel {channel:04} is not declared in dataset.json ({} channel(s))",
                entry.path().display(),
                descriptor.channel_names.len()
            )),
            None => problems.push(format!(
                "{}: image name does not follow CASE_XXXX{}",
                entry.path().display(),
                descriptor.file_ending
            )),
        }
    }
    Ok(ids.into_iter().collect())
}

fn v1_case_ids(json_path: &Path, images: &[String], ending: &str) -> Result<Vec<String>> {
    let mut ids: Vec<String> = images
        .iter()
        .map(|image| {
            let name = Path::new(image).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name.strip_suffix(ending).map(str::to_owned).ok_or_else(|| {
                Error::bad_input(json_path, format!("training image {image:?} does not end with {ending}"))
            })
        })
        .collect::<Result<_>>()?;
    ids.sort();
    ids.dedup();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_channel_suffix() {
        assert_eq!(split_image_name("la_007_0001.nii.gz", ".nii.gz"), Some(("la_007", 1)));
        assert_eq!(split_image_name("la_007.nii.gz", ".nii.gz"), None);
        assert_eq!(split_image_name("la_007_01.nii.gz", ".nii.gz"), None);
        assert_eq!(split_image_name("la_007_0000.nii", ".nii.gz"), None);
        assert_eq!(parse_image_path(Path::new("d/la_007_0001.MHA")), Some(("la_007".into(), 1, ".mha".into())));
        assert_eq!(parse_image_path(Path::new("la_007.png")), None);
    }

    #[test]
    fn channel_file_problems_name_the_file_at_fault_and_the_channels() {
        let group = |names: &[&str], channels| {
            let files: Vec<PathBuf> = names.iter().map(|n| Path::new("in").join(n)).collect();
            group_image_files(&files, channels).map_err(|e| e.message)
        };
        assert_eq!(
            group(&["a_0000.nii.gz", "a_0001.nii.gz"], 2),
            Ok(vec![("a".into(), vec![PathBuf::from("in/a_0000.nii.gz"), PathBuf::from("in/a_0001.nii.gz")])])
        );
        assert_eq!(
            group(&["a_0001.nii.gz", "a_0000.nii.gz"], 1),
            Err("in/a_0001.nii.gz: case a: expected 1 channel (_0000), found _0000 and _0001".into())
        );
        assert_eq!(
            group(&["a_0000.nii.gz", "a_0002.nii.gz"], 2),
            Err("in/a_0002.nii.gz: case a: expected 2 channels (_0000, _0001), found _0000 and _0002".into())
        );
        assert_eq!(
            group(&["a_0001.nii.gz", "a_0002.nii.gz", "a_0003.nii.gz"], 3),
            Err("in/a_0001.nii.gz: case a: expected 3 channels (_0000, _0001, _0002), found _0001, _0002 and _0003"
                .into())
        );
        assert_eq!(group(&["a_0000.nii.gz", "a_0000.nii.gz"], 1), Err("in/a_0000.nii.gz: is given twice".into()));
        assert_eq!(
            group(&["a_0000.nii.gz", "a_0000.nrrd"], 1),
            Err("in/a_0000.nrrd: holds channel _0000 of case a, as does in/a_0000.nii.gz".into())
        );
        assert_eq!(channel_files_problem("b", 4, &[]), "case b: expected 4 channels (_0000 to _0003), found none");
    }

    #[test]
    fn lists_cases_and_layout_problems() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("imagesTr")).unwrap();
        std::fs::write(
            root.join("dataset.json"),
            r#"{"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "a": 1},
                "numTraining": 2, "file_ending": ".nii.gz"}"#,
        )
        .unwrap();
        for name in ["b_0000.nii.gz", "a_0001.nii.gz", "a_0000.nii.gz", "a_0002.nii.gz", "notes.txt", "c.nii.gz"] {
            std::fs::write(root.join("imagesTr").join(name), b"").unwrap();
        }
        let dataset = Dataset::open(root).unwrap();
        let ids: Vec<_> = dataset.cases.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(dataset.cases[1].images[1], root.join("imagesTr/b_0001.nii.gz"));
        assert_eq!(dataset.cases[0].label, root.join("labelsTr/a.nii.gz"));
        assert_eq!(dataset.layout_problems.len(), 2, "{:?}", dataset.layout_problems);
        assert!(dataset.layout_problems.iter().any(|p| p.contains("a_0002") && p.contains("not declared")));
        assert!(dataset.layout_problems.iter().any(|p| p.contains("c.nii.gz") && p.contains("CASE_XXXX")));
    }
}
