//! The checks nnU-Net makes on one case once its files are read
//! (nnunetv2/experiment_planning/verify_dataset_integrity.py: check_cases; its reader refuses the same,
//! nnunetv2/imageio/simpleitk_reader_writer.py: SimpleITKIO.read_images): every image and the label map
//! have the first image's shape and spacing (`np.allclose`), the images hold only finite voxels, and the
//! label map only values dataset.json declares. A different origin or direction is only a warning, as
//! there. The fingerprint reports every finding; preprocessing stops at the first problem.

use crate::undeclared_labels;
use nntools_io::{Error, Image};
use nntools_numpy::stats::{DEFAULT_ATOL, DEFAULT_RTOL, allclose};
use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub path: PathBuf,
    pub problem: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

impl From<Finding> for Error {
    fn from(finding: Finding) -> Self {
        Error::bad_input(finding.path, finding.problem)
    }
}

/// What the checks of one case found.
#[derive(Debug, Default)]
pub struct Findings {
    /// What nnU-Net refuses the case for.
    pub problems: Vec<Finding>,
    /// What nnU-Net only warns about: origin and direction mismatches.
    pub warnings: Vec<Finding>,
}

/// `np.allclose` with its default tolerances, as nnU-Net calls it.
fn close<const N: usize>(a: &[f64; N], b: &[f64; N]) -> bool {
    allclose(a, b, DEFAULT_RTOL, DEFAULT_ATOL)
}

/// Checks a case's images (`image_paths[i]` read into `images[i]`; the first is the reference) and its
/// label map, if it has one. `declared_labels` are the values the label map may hold; empty: unchecked.
pub fn check_case(
    image_paths: &[PathBuf],
    images: &[Image<f32>],
    label: Option<(&Path, &Image<i32>)>,
    declared_labels: &[i64],
) -> Findings {
    assert_eq!(image_paths.len(), images.len(), "one path per image");
    let mut findings = Findings::default();
    for (path, image) in image_paths.iter().zip(images) {
        let bad = image.data.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            findings
                .problems
                .push(Finding { path: path.clone(), problem: format!("{bad} voxel(s) are NaN or infinite") });
        }
    }
    let (Some(reference_path), Some(reference)) = (image_paths.first(), images.first()) else { return findings };
    let others = image_paths.iter().zip(images).skip(1).map(|(p, i)| (p.as_path(), i.data.shape(), &i.geometry));
    let label_entry = label.map(|(path, label)| (path, label.data.shape(), &label.geometry));
    for (path, shape, geometry) in others.chain(label_entry) {
        let differs = |what: &str, value: &dyn fmt::Debug, reference_value: &dyn fmt::Debug| Finding {
            path: path.into(),
            problem: format!("{what} {value:?} differs from {} ({reference_value:?})", reference_path.display()),
        };
        if shape != reference.data.shape() {
            findings.problems.push(differs("shape", &shape, &reference.data.shape()));
        }
        if !close(&geometry.spacing, &reference.geometry.spacing) {
            findings.problems.push(differs("spacing", &geometry.spacing, &reference.geometry.spacing));
        }
        if !close(&geometry.origin, &reference.geometry.origin) {
            findings.warnings.push(differs("origin", &geometry.origin, &reference.geometry.origin));
        }
        if !close(&geometry.direction, &reference.geometry.direction) {
            findings.warnings.push(differs("direction", &geometry.direction, &reference.geometry.direction));
        }
    }
    if let Some((path, label)) = label
        && !declared_labels.is_empty()
    {
        let undeclared = undeclared_labels(&label.data, declared_labels);
        if !undeclared.is_empty() {
            findings.problems.push(Finding {
                path: path.into(),
                problem: format!(
                    "label values {undeclared:?} are not declared in dataset.json (declared: {declared_labels:?})"
                ),
            });
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;
    use nntools_io::{Geometry, PixelType, Stored};

    const IDENTITY: [f64; 9] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];

    fn image<T: Clone>(shape: [usize; 3], value: T, spacing: [f64; 3]) -> Image<T> {
        let geometry = Geometry { spacing, origin: [0.0; 3], direction: IDENTITY };
        Image { data: Array3::from_elem(shape, value), geometry, stored: Stored::new(3, PixelType::F32) }
    }

    fn lines(findings: &[Finding]) -> Vec<String> {
        findings.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_consistent_case_has_no_findings() {
        let paths = [PathBuf::from("a_0000.nii.gz"), PathBuf::from("a_0001.nii.gz")];
        // within np.allclose's tolerance: 1e-5 relative
        let images = [image([2, 3, 4], 1.0, [1.0, 0.5, 2.0]), image([2, 3, 4], 2.0, [1.000_005, 0.5, 2.0])];
        let label = image([2, 3, 4], 1, [1.0, 0.5, 2.0]);
        let findings = check_case(&paths, &images, Some((Path::new("a.nii.gz"), &label)), &[0, 1]);
        assert!(findings.problems.is_empty() && findings.warnings.is_empty(), "{findings:?}");
    }

    #[test]
    fn every_problem_names_its_file() {
        let paths = [PathBuf::from("a_0000.nii.gz"), PathBuf::from("a_0001.nii.gz")];
        let mut second = image([2, 3, 4], 2.0, [1.0, 0.5, 2.1]);
        second.data[[0, 0, 0]] = f32::NAN;
        second.data[[1, 0, 0]] = f32::NEG_INFINITY;
        let images = [image([2, 3, 4], 1.0, [1.0, 0.5, 2.0]), second];
        let mut label = image([2, 3, 5], 3, [1.0, 0.5, 2.0]);
        label.geometry.origin = [0.0, 0.0, 7.0];
        let findings = check_case(&paths, &images, Some((Path::new("a.nii.gz"), &label)), &[0, 1]);
        assert_eq!(
            lines(&findings.problems),
            [
                "a_0001.nii.gz: 2 voxel(s) are NaN or infinite",
                "a_0001.nii.gz: spacing [1.0, 0.5, 2.1] differs from a_0000.nii.gz ([1.0, 0.5, 2.0])",
                "a.nii.gz: shape [2, 3, 5] differs from a_0000.nii.gz ([2, 3, 4])",
                "a.nii.gz: label values [3] are not declared in dataset.json (declared: [0, 1])",
            ]
        );
        assert_eq!(
            lines(&findings.warnings),
            ["a.nii.gz: origin [0.0, 0.0, 7.0] differs from a_0000.nii.gz ([0.0, 0.0, 0.0])"]
        );
        let error: Error = findings.problems[0].clone().into();
        assert_eq!((error.exit_code(), error.to_string()), (2, "a_0001.nii.gz: 2 voxel(s) are NaN or infinite".into()));
    }

    #[test]
    fn labels_are_unchecked_without_declared_values() {
        let paths = [PathBuf::from("a_0000.nii.gz")];
        let label = image([1, 1, 1], 9, [1.0; 3]);
        let findings =
            check_case(&paths, &[image([1, 1, 1], 0.0, [1.0; 3])], Some((Path::new("a.nii.gz"), &label)), &[]);
        assert!(findings.problems.is_empty(), "{findings:?}");
    }
}
