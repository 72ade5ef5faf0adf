//! Preprocessed cases as nn-resample writes them (`CASE.npy`, `CASE_seg.npy`, `CASE_locations.npy`,
//! `CASE.json`), and patches cropped from them as nnU-Net's data loader crops (nnunet-spec 6.4).

use ndarray::{s, Array2, Array4, ArrayD, Axis};
use ndarray_npy::ReadNpyExt;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// Share of each batch forced to contain foreground (its last samples).
const OVERSAMPLE_FOREGROUND: f64 = 0.33;

/// A preprocessed, labelled case held in memory.
pub struct TrainingCase {
    /// `(c, z, y, x)`.
    pub data: Array4<f32>,
    /// `(z, y, x)`, -1 outside the nonzero region.
    pub seg: ndarray::Array3<i16>,
    /// Per class, its sampled `[z, y, x]` locations.
    pub class_locations: Vec<Vec<[usize; 3]>>,
}

fn read<T: ndarray_npy::ReadableElement>(path: &Path) -> Result<ArrayD<T>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    ArrayD::<T>::read_npy(file).map_err(|e| format!("{}: {e}", path.display()))
}

impl TrainingCase {
    /// Loads case `id` from a preprocessed folder.
    pub fn load(dir: &Path, id: &str) -> Result<Self, String> {
        let data = read::<f32>(&dir.join(format!("{id}.npy")))?
            .into_dimensionality()
            .map_err(|e| format!("{id}.npy: {e}"))?;
        let seg_path = dir.join(format!("{id}_seg.npy"));
        let seg = match read::<i8>(&seg_path) {
            Ok(seg) => seg.mapv(i16::from),
            Err(_) => read::<i16>(&seg_path)?,
        };
        let seg = seg.index_axis_move(Axis(0), 0).into_dimensionality().map_err(|e| format!("{id}_seg.npy: {e}"))?;
        let table: Array2<i32> =
            read::<i32>(&dir.join(format!("{id}_locations.npy")))?.into_dimensionality().map_err(|e| format!("{id}_locations.npy: {e}"))?;
        let classes = table.column(0).iter().map(|&c| c as usize + 1).max().unwrap_or(0);
        let mut class_locations = vec![Vec::new(); classes];
        for row in table.rows() {
            class_locations[row[0] as usize].push([row[1] as usize, row[2] as usize, row[3] as usize]);
        }
        if data.shape()[1..] != *seg.shape() {
            return Err(format!("{id}: image {:?} and labels {:?} differ in shape", data.shape(), seg.shape()));
        }
        Ok(Self { data, seg, class_locations })
    }
}

/// Crops patches as nnU-Net's loader does: random position, or centred on a stored foreground
/// location; regions outside the image are padded (image 0, labels -1).
pub struct PatchSampler {
    /// Patch per axis of the volume; 2d configurations use `(1, y, x)`.
    pub patch: [usize; 3],
}

impl PatchSampler {
    /// Whether sample `index` of a batch of `batch` must contain foreground (the last 33%).
    pub fn forces_foreground(index: usize, batch: usize) -> bool {
        index as f64 >= (batch as f64 * (1.0 - OVERSAMPLE_FOREGROUND)).round_ties_even()
    }

    /// The lower corner of a patch in `case`.
    pub fn corner(&self, case: &TrainingCase, foreground: bool, rng: &mut ChaCha8Rng) -> [i64; 3] {
        let shape = case.seg.shape();
        let need = [0, 1, 2].map(|a| (self.patch[a] as i64 - shape[a] as i64).max(0));
        let lower = need.map(|n| -(n / 2));
        let upper = [0, 1, 2].map(|a| shape[a] as i64 + need[a] / 2 + need[a] % 2 - self.patch[a] as i64);
        let present: Vec<&Vec<[usize; 3]>> = case.class_locations.iter().filter(|l| !l.is_empty()).collect();
        if foreground && !present.is_empty() {
            let class = present[rng.random_range(0..present.len())];
            let location = class[rng.random_range(0..class.len())];
            return [0, 1, 2].map(|a| lower[a].max(location[a] as i64 - self.patch[a] as i64 / 2));
        }
        [0, 1, 2].map(|a| rng.random_range(lower[a]..=upper[a].max(lower[a])))
    }

    /// The patch of `case` at `corner`: image `(c, pz, py, px)` and labels `(pz, py, px)`.
    pub fn crop(&self, case: &TrainingCase, corner: [i64; 3]) -> (Array4<f32>, ndarray::Array3<i16>) {
        let channels = case.data.shape()[0];
        let [pz, py, px] = self.patch;
        let mut data = Array4::<f32>::zeros((channels, pz, py, px));
        let mut seg = ndarray::Array3::<i16>::from_elem((pz, py, px), -1);
        let shape = case.seg.shape();
        // overlap of the patch with the image, in image and in patch coordinates
        let from = [0, 1, 2].map(|a| corner[a].max(0) as usize);
        let to = [0, 1, 2].map(|a| ((corner[a] + self.patch[a] as i64).min(shape[a] as i64)).max(0) as usize);
        if (0..3).any(|a| from[a] >= to[a]) {
            return (data, seg);
        }
        let at = [0, 1, 2].map(|a| (from[a] as i64 - corner[a]) as usize);
        let len = [0, 1, 2].map(|a| to[a] - from[a]);
        seg.slice_mut(s![at[0]..at[0] + len[0], at[1]..at[1] + len[1], at[2]..at[2] + len[2]])
            .assign(&case.seg.slice(s![from[0]..to[0], from[1]..to[1], from[2]..to[2]]));
        data.slice_mut(s![.., at[0]..at[0] + len[0], at[1]..at[1] + len[1], at[2]..at[2] + len[2]])
            .assign(&case.data.slice(s![.., from[0]..to[0], from[1]..to[1], from[2]..to[2]]));
        (data, seg)
    }
}

/// Stacks patches into `(b, c, ...)` and `(b, 1, ...)` arrays, dropping the singleton axis of 2d patches.
pub fn stack(patches: Vec<(Array4<f32>, ndarray::Array3<i16>)>, two_d: bool) -> (ArrayD<f32>, ArrayD<i16>) {
    let views_data: Vec<_> = patches.iter().map(|(d, _)| d.view().insert_axis(Axis(0))).collect();
    let views_seg: Vec<_> = patches.iter().map(|(_, s)| s.view().insert_axis(Axis(0)).insert_axis(Axis(0))).collect();
    let mut data = ndarray::concatenate(Axis(0), &views_data).expect("equal patch shapes").into_dyn();
    let mut seg = ndarray::concatenate(Axis(0), &views_seg).expect("equal patch shapes").into_dyn();
    if two_d {
        data = data.index_axis_move(Axis(2), 0);
        seg = seg.index_axis_move(Axis(2), 0);
    }
    (data, seg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn case() -> TrainingCase {
        let mut seg = ndarray::Array3::<i16>::zeros((10, 12, 14));
        seg[[5, 6, 7]] = 1;
        TrainingCase {
            data: Array4::from_shape_fn((1, 10, 12, 14), |(_, z, y, x)| (z * 1000 + y * 10 + x) as f32),
            seg,
            class_locations: vec![vec![[5, 6, 7]]],
        }
    }

    #[test]
    fn oversampling_positions_as_nnunet() {
        let forced = |b: usize| (0..b).filter(|&i| PatchSampler::forces_foreground(i, b)).collect::<Vec<_>>();
        assert_eq!(forced(2), [1]);
        assert_eq!(forced(9), [6, 7, 8]);
        assert_eq!(forced(12).len(), 4);
    }

    #[test]
    fn foreground_patches_contain_the_location_and_pad_outside() {
        let sampler = PatchSampler { patch: [8, 16, 16] };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let c = case();
        for _ in 0..20 {
            let corner = sampler.corner(&c, true, &mut rng);
            let (data, seg) = sampler.crop(&c, corner);
            assert!(seg.iter().any(|&v| v == 1), "corner {corner:?}");
            assert_eq!(data.shape(), [1, 8, 16, 16]);
            // the image is 12 x 14 in-plane: a 16-wide patch must be padded with -1 labels and 0 data
            assert!(seg.iter().any(|&v| v == -1));
        }
        let (data, _) = sampler.crop(&c, [1, -2, 0]);
        assert_eq!(data[[0, 0, 2, 3]], 1003.0, "patch (0, 2, 3) is image (1, 0, 3)");
        assert_eq!(data[[0, 0, 0, 0]], 0.0, "padding");
    }
}
