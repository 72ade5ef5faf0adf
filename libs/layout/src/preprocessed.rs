//! A preprocessed folder, as nn-resample writes it and nn-train reads it (nnU-Net's
//! nnunetv2/training/dataloading/nnunet_dataset.py: `nnUNetDatasetNumpy` names, plus a manifest).

use std::path::{Path, PathBuf};

/// Written last by nn-resample: the folder's cases, their files and provenance.
pub const MANIFEST: &str = "manifest.json";
/// nnU-Net's cross-validation split, kept beside the preprocessed cases it splits.
pub const SPLITS: &str = "splits_final.json";

/// A preprocessed folder: `DATA/CASE.npy`, `DATA/CASE_seg.npy`, `DATA/CASE_locations.npy`,
/// `DATA/CASE.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreprocessedDir(pub PathBuf);

impl PreprocessedDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn manifest(&self) -> PathBuf {
        self.0.join(MANIFEST)
    }

    pub fn splits(&self) -> PathBuf {
        self.0.join(SPLITS)
    }

    /// The case's normalised image channels, `(c, z, y, x)` float32.
    pub fn data(&self, id: &str) -> PathBuf {
        self.0.join(data_file(id))
    }

    /// The case's label map, `(1, z, y, x)` int8 or int16.
    pub fn seg(&self, id: &str) -> PathBuf {
        self.0.join(seg_file(id))
    }

    /// The case's sampled foreground locations, rows of (class, z, y, x).
    pub fn locations(&self, id: &str) -> PathBuf {
        self.0.join(locations_file(id))
    }

    /// The case's properties (nnU-Net's `CASE.pkl`), written last: the case is complete when it exists.
    pub fn properties(&self, id: &str) -> PathBuf {
        self.0.join(properties_file(id))
    }
}

impl AsRef<Path> for PreprocessedDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

pub fn data_file(id: &str) -> String {
    format!("{id}.npy")
}

pub fn seg_file(id: &str) -> String {
    format!("{id}_seg.npy")
}

pub fn locations_file(id: &str) -> String {
    format!("{id}_locations.npy")
}

pub fn properties_file(id: &str) -> String {
    format!("{id}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_files_as_nnunet_names_them() {
        let dir = PreprocessedDir::new("pre/nnUNetPlans_3d_fullres");
        assert_eq!(dir.data("hippocampus_001"), Path::new("pre/nnUNetPlans_3d_fullres/hippocampus_001.npy"));
        assert_eq!(dir.seg("hippocampus_001"), Path::new("pre/nnUNetPlans_3d_fullres/hippocampus_001_seg.npy"));
        assert_eq!(dir.locations("c"), Path::new("pre/nnUNetPlans_3d_fullres/c_locations.npy"));
        assert_eq!(dir.properties("c"), Path::new("pre/nnUNetPlans_3d_fullres/c.json"));
        assert_eq!(dir.manifest(), Path::new("pre/nnUNetPlans_3d_fullres/manifest.json"));
        assert_eq!(dir.splits(), Path::new("pre/nnUNetPlans_3d_fullres/splits_final.json"));
    }
}
