//! 3D Slicer segmentations (`CASE.seg.nrrd`): NRRD label maps whose header names the segments as
//! key/value pairs, `SegmentN_Name:=liver`, `SegmentN_LabelValue:=1`, `SegmentN_Layer:=0` (Slicer's
//! "Segmentation labelmap file format (.seg.nrrd)"). Overlapping segments are stored in several layers
//! along a 4th axis, which no nnU-Net label map can hold.

use crate::layout::collect_all;
use nntools_io::{Error, Result, nrrd_key_values};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Whether a label file is a Slicer segmentation, by its name (`CASE.seg.nrrd`).
pub(crate) fn is_segmentation(name: &str) -> bool {
    name.to_lowercase().ends_with(".seg.nrrd")
}

/// One segment as its file declares it.
struct Segment {
    name: String,
    value: i64,
}

/// A segment's fields as found in the header, by segment index.
#[derive(Default)]
struct Fields {
    name: Option<String>,
    value: Option<String>,
    layer: Option<String>,
}

/// Refuses segmentations whose segments lie in several layers.
pub(crate) fn check_single_layer(files: &[&Path]) -> Result<()> {
    collect_all(files.iter().map(|path| segment_fields(path))).map(drop)
}

/// The segments' fields of a Slicer segmentation, refusing files with several layers.
fn segment_fields(path: &Path) -> Result<BTreeMap<usize, Fields>> {
    let mut found: BTreeMap<usize, Fields> = BTreeMap::new();
    for (key, value) in nrrd_key_values(path)? {
        let Some((index, field)) = key.strip_prefix("Segment").and_then(|rest| rest.split_once('_')) else {
            continue;
        };
        let Ok(index) = index.parse::<usize>() else { continue };
        let fields = found.entry(index).or_default();
        match field {
            "Name" => fields.name = Some(value),
            "LabelValue" => fields.value = Some(value),
            "Layer" => fields.layer = Some(value),
            _ => {}
        }
    }
    let layers: BTreeSet<&str> = found.values().map(|f| f.layer.as_deref().unwrap_or("0").trim()).collect();
    if layers.len() > 1 {
        return Err(Error::bad_input(
            path,
            format!(
                "its segments overlap (stored in {} layers); nnU-Net needs one label per voxel: export the \
                 segments as one labelmap from Slicer's Segmentations module",
                layers.len()
            ),
        ));
    }
    Ok(found)
}

/// The segments of a Slicer segmentation, refusing files with several layers or segments without a
/// name or label value.
fn segments(path: &Path) -> Result<Vec<Segment>> {
    segment_fields(path)?
        .into_iter()
        .map(|(index, fields)| {
            let name = fields
                .name
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .ok_or_else(|| Error::bad_input(path, format!("segment {index} has no Segment{index}_Name")))?;
            let value = fields.value.ok_or_else(|| {
                Error::bad_input(
                    path,
                    format!("segment {name:?} has no Segment{index}_LabelValue; declare the labels with --label"),
                )
            })?;
            let value: i64 = value.trim().parse().map_err(|_| {
                Error::bad_input(path, format!("segment {name:?}: label value {value:?} is not an integer"))
            })?;
            if value < 1 || name == "background" {
                return Err(Error::bad_input(
                    path,
                    format!(
                        "segment {name:?} has label value {value}; 0 and the name \"background\" are the background's"
                    ),
                ));
            }
            Ok(Segment { name, value })
        })
        .collect()
}

/// The labels the segmentations `files` declare, as nnU-Net's dataset.json has them: `background` 0 and
/// every segment's name with its label value. A name must have one value, and a value one name, in
/// every file; the values must run from 0 without gaps (nnU-Net's rule). `origin` names the folder.
pub(crate) fn segment_labels(files: &[&Path], origin: &Path) -> Result<Vec<(String, i64)>> {
    let per_file = collect_all(files.iter().map(|path| segments(path).map(|s| (*path, s))))?;
    let mut by_name: BTreeMap<&str, (i64, &Path)> = BTreeMap::new();
    let mut by_value: BTreeMap<i64, (&str, &Path)> = BTreeMap::new();
    let mut problems = Vec::new();
    for (path, segments) in &per_file {
        for Segment { name, value } in segments {
            let (known_value, first) = *by_name.entry(name).or_insert((*value, path));
            let (known_name, named) = *by_value.entry(*value).or_insert((name, path));
            if known_value != *value {
                problems.push(format!(
                    "{}: segment {name:?} has label value {value}, but {known_value} in {}",
                    path.display(),
                    first.display()
                ));
            } else if known_name != name {
                problems.push(format!(
                    "{}: label value {value} is segment {name:?}, but {known_name:?} in {}",
                    path.display(),
                    named.display()
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::bad_input_lines(problems));
    }
    let mut labels = vec![("background".to_owned(), 0)];
    labels.extend(by_value.into_iter().map(|(value, (name, _))| (name.to_owned(), value)));
    if labels.iter().enumerate().any(|(i, (_, value))| *value != i as i64) {
        let values: Vec<i64> = labels.iter().map(|(_, v)| *v).collect();
        return Err(Error::bad_input(
            origin,
            format!(
                "the segments' label values are {values:?}; nnU-Net needs consecutive values from 0 \
                 (declare every value with --label)"
            ),
        ));
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segmentation(dir: &Path, name: &str, keys: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        let header = format!("NRRD0004\ntype: unsigned char\ndimension: 3\nsizes: 1 1 1\nencoding: raw\n{keys}\n");
        std::fs::write(&path, [header.as_bytes(), &[0]].concat()).unwrap();
        path
    }

    #[test]
    fn labels_come_from_the_segments_of_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = segmentation(
            dir.path(),
            "a.seg.nrrd",
            "Segment0_ID:=Segment_1\nSegment0_Name:=liver\nSegment0_LabelValue:=1\nSegment0_Layer:=0\n",
        );
        let b = segmentation(
            dir.path(),
            "b.seg.nrrd",
            "Segment1_Name:=tumour\nSegment1_LabelValue:=2\nSegment1_Layer:=0\nSegment0_Name:=liver\n\
             Segment0_LabelValue:=1\nSegment0_Layer:=0\n",
        );
        assert_eq!(
            segment_labels(&[&a, &b], dir.path()).unwrap(),
            [("background".to_owned(), 0), ("liver".to_owned(), 1), ("tumour".to_owned(), 2)]
        );
        let gap = segmentation(dir.path(), "c.seg.nrrd", "Segment0_Name:=vessel\nSegment0_LabelValue:=4\n");
        let message = segment_labels(&[&a, &gap], dir.path()).unwrap_err().message;
        assert!(message.contains("label values are [0, 1, 4]"), "{message}");
        let swapped = segmentation(dir.path(), "d.seg.nrrd", "Segment0_Name:=liver\nSegment0_LabelValue:=2\n");
        let message = segment_labels(&[&b, &swapped], dir.path()).unwrap_err().message;
        assert_eq!(
            message,
            format!("{}: segment \"liver\" has label value 2, but 1 in {}", swapped.display(), b.display())
        );
    }

    #[test]
    fn layers_and_incomplete_segments_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let layered = segmentation(
            dir.path(),
            "a.seg.nrrd",
            "Segment0_Name:=a\nSegment0_LabelValue:=1\nSegment0_Layer:=0\nSegment1_Name:=b\n\
             Segment1_LabelValue:=1\nSegment1_Layer:=1\n",
        );
        let message = segment_labels(&[&layered], dir.path()).unwrap_err().message;
        assert!(message.starts_with(&format!("{}: its segments overlap (stored in 2 layers)", layered.display())));
        let unvalued = segmentation(dir.path(), "b.seg.nrrd", "Segment0_Name:=a\n");
        let message = segment_labels(&[&unvalued], dir.path()).unwrap_err().message;
        assert!(message.contains("segment \"a\" has no Segment0_LabelValue"), "{message}");
        let background = segmentation(dir.path(), "c.seg.nrrd", "Segment0_Name:=background\nSegment0_LabelValue:=1\n");
        assert!(segment_labels(&[&background], dir.path()).unwrap_err().message.contains("background's"));
    }
}
