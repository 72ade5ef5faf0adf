//! Preprocessed cases as nn-resample writes them (`CASE.npy`, `CASE_seg.npy`, `CASE_locations.npy`), patches cropped
//! from them as nnU-Net's data loader crops
//! (`nnunetv2/training/dataloading/data_loader.py: nnUNetDataLoader.get_bbox` and `generate_train_batch`), and the
//! background threads that assemble batches ahead of the training step.
//!
//! Cases are memory-mapped rather than read, so a dataset larger than RAM trains and start-up is
//! instant; the page cache keeps hot cases in memory. Every batch has its own random stream (the
//! run's seed and the batch's index), so which batch a worker thread makes, and when, does not change
//! the run, and a resumed run draws exactly the batches the uninterrupted one would have.

use memmap2::Mmap;
use ndarray::{Array2, Array4, Array5, ArrayD, ArrayView, ArrayView3, ArrayView4, ArrayViewMut4, Axis, Dimension, s};
use ndarray_npy::{ReadNpyExt, ViewElement, ViewNpyExt};
use nntools_io::{Error, Result};
use nntools_layout::preprocessed::PreprocessedDir;
use nntools_layout::run::next_stage_labels;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

/// Share of each batch forced to contain foreground (its last samples).
const OVERSAMPLE_FOREGROUND: f64 = 0.33;
/// Finished batches each loader thread may queue ahead of the training step, besides the one it holds
/// while the queue is full. Training batches are cropped at the enlarged initial patch (205³ voxels
/// for a 128³ patch: about 100 MB at batch 2), so every queued one counts in peak memory; one per
/// thread still leaves a batch ready while the next is cropped.
const PREFETCH_PER_WORKER: usize = 1;

/// A memory-mapped label map `(1, z, y, x)` by element type: nn-resample writes int8, and int16 past
/// 127 labels.
enum Labels {
    I8(Mmap),
    I16(Mmap),
}

impl Labels {
    /// Maps a label map file; returns its spatial shape too.
    fn map(path: &Path) -> Result<(Vec<usize>, Self)> {
        let bytes = map(path)?;
        match view::<i8, ndarray::Ix4>(&bytes, path) {
            Ok(v) => Ok((v.shape()[1..].to_vec(), Labels::I8(bytes))),
            Err(_) => Ok((view::<i16, ndarray::Ix4>(&bytes, path)?.shape()[1..].to_vec(), Labels::I16(bytes))),
        }
    }

    /// Copies the labels of `from..to` into `into`, widened to i16.
    fn copy_region(&self, from: [usize; 3], to: [usize; 3], mut into: ndarray::ArrayViewMut3<i16>) {
        fn region<T: ViewElement + Copy + Into<i16>>(
            bytes: &[u8],
            from: [usize; 3],
            to: [usize; 3],
            into: &mut ndarray::ArrayViewMut3<i16>,
        ) {
            let all: ArrayView4<T> = view(bytes, Path::new("")).expect("checked when mapped");
            let part: ArrayView3<T> = all.slice_move(s![0, from[0]..to[0], from[1]..to[1], from[2]..to[2]]);
            into.zip_mut_with(&part, |d, &v| *d = v.into());
        }
        match self {
            Labels::I8(bytes) => region::<i8>(bytes, from, to, &mut into),
            Labels::I16(bytes) => region::<i16>(bytes, from, to, &mut into),
        }
    }
}

/// A preprocessed, labelled case, memory-mapped.
pub struct TrainingCase {
    /// `CASE.npy`: float32 `(c, z, y, x)`.
    data: Mmap,
    /// `CASE_seg.npy`: `(1, z, y, x)`, -1 outside the nonzero region; then, for 3d_cascade_fullres, the
    /// previous stage's predicted labels on the same grid.
    labels: Vec<Labels>,
    /// Per class, its sampled `[z, y, x]` locations.
    pub class_locations: Vec<Vec<[usize; 3]>>,
}

/// Spatial shape `(z, y, x)` of preprocessed case `id` in `dir`, from its array's header.
pub fn preprocessed_shape(dir: &Path, id: &str) -> Result<[usize; 3]> {
    let path = PreprocessedDir::new(dir).data(id);
    let data = map(&path)?;
    let shape = view::<f32, ndarray::Ix4>(&data, &path)?.shape()[1..].to_vec();
    Ok([shape[0], shape[1], shape[2]])
}

fn map(path: &Path) -> Result<Mmap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, &e))?;
    // SAFETY: preprocessed files are written once (atomically renamed into place) and never modified
    // while a run reads them.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, &e))
}

fn view<'a, A: ViewElement, D: Dimension>(bytes: &'a [u8], path: &Path) -> Result<ArrayView<'a, A, D>> {
    ArrayView::<A, ndarray::IxDyn>::view_npy(bytes)
        .map_err(|e| Error::bad_input(path, e))?
        .into_dimensionality()
        .map_err(|e| Error::bad_input(path, e))
}

impl TrainingCase {
    /// Maps case `id` of a preprocessed folder, with the previous stage's labels (`CASE.npy`) from
    /// `previous_stage` for the cascade, checking that its arrays are readable and agree.
    pub fn load(dir: &Path, id: &str, previous_stage: Option<&Path>) -> Result<Self> {
        // nn-resample writes CASE.json last: without it the case was never finished
        let case = PreprocessedDir::new(dir);
        let properties = case.properties(id);
        if !properties.is_file() {
            return Err(Error::bad_input(
                &properties,
                format!("missing, so case {id} is incomplete (rerun nn-resample)"),
            ));
        }
        let data_path = case.data(id);
        let data = map(&data_path)?;
        let image_shape = view::<f32, ndarray::Ix4>(&data, &data_path)?.shape()[1..].to_vec();
        // an empty axis leaves no patch to crop (nn-resample before it kept one voxel per axis wrote these)
        if image_shape.contains(&0) {
            return Err(Error::bad_input(
                &data_path,
                format!("case {id} is empty ({image_shape:?} voxels); rerun nn-resample"),
            ));
        }
        let seg_path = case.seg(id);
        let (label_shape, seg) = Labels::map(&seg_path)?;
        if image_shape != label_shape {
            return Err(Error::bad_input(
                &seg_path,
                format!("labels {label_shape:?} and image {image_shape:?} of case {id} differ in shape"),
            ));
        }
        let mut labels = vec![seg];
        if let Some(previous_stage) = previous_stage {
            let path = next_stage_labels(previous_stage, id);
            if !path.is_file() {
                return Err(Error::bad_input(
                    &path,
                    "missing; every fold of the previous stage writes its validation cases' labels when trained (or validated) with --next-stage-data",
                ));
            }
            let (shape, previous) = Labels::map(&path)?;
            if shape != image_shape {
                return Err(Error::bad_input(
                    &path,
                    format!("shape {shape:?}, but case {id} is {image_shape:?} on this configuration's grid"),
                ));
            }
            labels.push(previous);
        }
        let locations_path = case.locations(id);
        let file = std::fs::File::open(&locations_path).map_err(|e| Error::io(&locations_path, &e))?;
        let table: Array2<i32> = ArrayD::<i32>::read_npy(file)
            .map_err(|e| Error::bad_input(&locations_path, e))?
            .into_dimensionality()
            .map_err(|e| Error::bad_input(&locations_path, e))?;
        let classes = table.column(0).iter().map(|&c| c as usize + 1).max().unwrap_or(0);
        let mut class_locations = vec![Vec::new(); classes];
        for row in table.rows() {
            class_locations[row[0] as usize].push([row[1] as usize, row[2] as usize, row[3] as usize]);
        }
        Ok(Self { data, labels, class_locations })
    }

    /// The image, `(c, z, y, x)`.
    pub fn data(&self) -> ArrayView4<'_, f32> {
        view(&self.data, Path::new("")).expect("checked when mapped")
    }

    /// Spatial shape `(z, y, x)`.
    pub fn shape(&self) -> [usize; 3] {
        let data = self.data();
        [data.shape()[1], data.shape()[2], data.shape()[3]]
    }
}

/// Crops patches as nnU-Net's loader does: random position, or centred on a stored foreground
/// location; regions outside the image are padded (image 0, labels -1).
pub struct PatchSampler {
    /// Patch per axis of the volume; 2d configurations use `(1, y, x)`.
    pub patch: [usize; 3],
    /// With an ignore label, the class of the stored locations that holds annotated voxels: patches
    /// that need no foreground are centred on one of them, so that they hold something to learn from.
    pub annotated_class: Option<usize>,
}

impl PatchSampler {
    /// Whether sample `index` of a batch of `batch` must contain foreground (the last 33%).
    pub fn forces_foreground(index: usize, batch: usize) -> bool {
        index as f64 >= (batch as f64 * (1.0 - OVERSAMPLE_FOREGROUND)).round_ties_even()
    }

    /// The lower corner of a patch in `case`.
    pub fn corner(&self, case: &TrainingCase, foreground: bool, rng: &mut ChaCha8Rng) -> [i64; 3] {
        let shape = case.shape();
        let need = [0, 1, 2].map(|a| (self.patch[a] as i64 - shape[a] as i64).max(0));
        let lower = need.map(|n| -(n / 2));
        let upper = [0, 1, 2].map(|a| shape[a] as i64 + need[a] / 2 + need[a] % 2 - self.patch[a] as i64);
        let mut present: Vec<(usize, &Vec<[usize; 3]>)> =
            case.class_locations.iter().enumerate().filter(|(_, l)| !l.is_empty()).collect();
        // the annotated voxels are a foreground choice only when nothing else is present
        if present.len() > 1 {
            present.retain(|(class, _)| Some(*class) != self.annotated_class);
        }
        let annotated =
            self.annotated_class.and_then(|class| case.class_locations.get(class)).filter(|l| !l.is_empty());
        let centre_from = match (foreground, self.annotated_class) {
            (true, _) if !present.is_empty() => Some(present[rng.random_range(0..present.len())].1),
            (false, Some(_)) => annotated,
            _ => None,
        };
        match centre_from {
            Some(locations) => {
                let location = locations[rng.random_range(0..locations.len())];
                [0, 1, 2].map(|a| lower[a].max(location[a] as i64 - self.patch[a] as i64 / 2))
            }
            None => [0, 1, 2].map(|a| rng.random_range(lower[a]..=upper[a].max(lower[a]))),
        }
    }

    /// The patch of `case` at `corner`: image `(c, pz, py, px)` and labels `(1, pz, py, px)`, or
    /// `(2, ...)` with the previous stage's labels.
    pub fn crop(&self, case: &TrainingCase, corner: [i64; 3]) -> (Array4<f32>, Array4<i16>) {
        let [pz, py, px] = self.patch;
        let mut data = Array4::<f32>::zeros((case.data().shape()[0], pz, py, px));
        let mut seg = Array4::<i16>::from_elem((case.labels.len(), pz, py, px), -1);
        self.crop_into(case, corner, data.view_mut(), seg.view_mut());
        (data, seg)
    }

    /// [`Self::crop`] into a batch's slots, which hold the padding values (image 0, labels -1), so
    /// that a batch is cropped in place rather than stacked from copies of its patches.
    fn crop_into(
        &self,
        case: &TrainingCase,
        corner: [i64; 3],
        mut data: ArrayViewMut4<f32>,
        mut seg: ArrayViewMut4<i16>,
    ) {
        let image = case.data();
        let shape = case.shape();
        // overlap of the patch with the image, in image and in patch coordinates
        let from = [0, 1, 2].map(|a| corner[a].max(0) as usize);
        let to = [0, 1, 2].map(|a| ((corner[a] + self.patch[a] as i64).min(shape[a] as i64)).max(0) as usize);
        if (0..3).any(|a| from[a] >= to[a]) {
            return;
        }
        let at = [0, 1, 2].map(|a| (from[a] as i64 - corner[a]) as usize);
        let len = [0, 1, 2].map(|a| to[a] - from[a]);
        for (labels, into) in case.labels.iter().zip(seg.outer_iter_mut()) {
            labels.copy_region(
                from,
                to,
                into.slice_move(s![at[0]..at[0] + len[0], at[1]..at[1] + len[1], at[2]..at[2] + len[2]]),
            );
        }
        data.slice_mut(s![.., at[0]..at[0] + len[0], at[1]..at[1] + len[1], at[2]..at[2] + len[2]])
            .assign(&image.slice(s![.., from[0]..to[0], from[1]..to[1], from[2]..to[2]]));
    }
}

/// A batch as the loader hands it to the training step.
pub struct Batch {
    /// `(b, c, z, y, x)`, or `(b, c, y, x)` for 2d.
    pub data: ArrayD<f32>,
    /// `(b, 1, ...)`, -1 outside the image; `(b, 2, ...)` with the previous stage's labels.
    pub seg: ArrayD<i16>,
    /// The batch's random stream after sampling, for the augmentation that follows on the device.
    pub rng: ChaCha8Rng,
}

/// How the batches of one kind (training or validation) are drawn.
pub struct BatchPlan {
    pub cases: Vec<Arc<TrainingCase>>,
    pub sampler: PatchSampler,
    pub batch_size: usize,
    pub two_d: bool,
    pub seed: u64,
}

impl BatchPlan {
    /// Batch number `index` of this plan: random cases, the last third forced to contain foreground.
    pub fn batch(&self, index: u64) -> Batch {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(index);
        let [pz, py, px] = self.sampler.patch;
        let (channels, seg_channels) = (self.cases[0].data().shape()[0], self.cases[0].labels.len());
        let mut data = Array5::<f32>::zeros((self.batch_size, channels, pz, py, px));
        let mut seg = Array5::<i16>::from_elem((self.batch_size, seg_channels, pz, py, px), -1);
        for (i, (data, seg)) in data.outer_iter_mut().zip(seg.outer_iter_mut()).enumerate() {
            let case = &self.cases[rng.random_range(0..self.cases.len())];
            let foreground = PatchSampler::forces_foreground(i, self.batch_size);
            let corner = self.sampler.corner(case, foreground, &mut rng);
            self.sampler.crop_into(case, corner, data, seg);
        }
        let (mut data, mut seg) = (data.into_dyn(), seg.into_dyn());
        // 2d patches are (1, y, x): the singleton axis goes
        if self.two_d {
            data = data.index_axis_move(Axis(2), 0);
            seg = seg.index_axis_move(Axis(2), 0);
        }
        Batch { data, seg, rng }
    }
}

/// Batches `first..first + count` of a plan, made by background threads and yielded in order; each
/// thread runs at most a few batches ahead. Dropping it stops the threads.
pub struct Prefetcher<T = Batch> {
    queues: Vec<Receiver<T>>,
    workers: Vec<JoinHandle<()>>,
    next: usize,
    count: usize,
}

impl Prefetcher {
    pub fn start(plan: Arc<BatchPlan>, first: u64, count: usize, threads: usize) -> Self {
        Self::start_staged(plan, first, count, threads, |batch| batch)
    }
}

impl<T: Send + 'static> Prefetcher<T> {
    /// As `start`, each batch passed through `stage` on its thread (to put it where the device reads
    /// it fastest).
    pub fn start_staged(
        plan: Arc<BatchPlan>,
        first: u64,
        count: usize,
        threads: usize,
        stage: impl Fn(Batch) -> T + Send + Sync + 'static,
    ) -> Self {
        let threads = threads.clamp(1, count.max(1));
        let stage = Arc::new(stage);
        let (queues, workers) = (0..threads)
            .map(|worker| {
                let (sender, receiver) = sync_channel(PREFETCH_PER_WORKER);
                let (plan, stage) = (plan.clone(), stage.clone());
                let handle = std::thread::spawn(move || {
                    for index in (worker..count).step_by(threads) {
                        // a closed queue means the consumer stopped early
                        if sender.send(stage(plan.batch(first + index as u64))).is_err() {
                            return;
                        }
                    }
                });
                (receiver, handle)
            })
            .unzip();
        Self { queues, workers, next: 0, count }
    }
}

impl<T> Iterator for Prefetcher<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.next == self.count {
            return None;
        }
        let batch = self.queues[self.next % self.queues.len()].recv().expect("loader thread panicked");
        self.next += 1;
        Some(batch)
    }
}

impl<T> Drop for Prefetcher<T> {
    fn drop(&mut self) {
        self.queues.clear();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray_npy::write_npy;

    fn case(dir: &Path) -> Arc<TrainingCase> {
        let mut seg = Array4::<i8>::zeros((1, 10, 12, 14));
        seg[[0, 5, 6, 7]] = 1;
        let data = Array4::from_shape_fn((1, 10, 12, 14), |(_, z, y, x)| (z * 1000 + y * 10 + x) as f32);
        let files = PreprocessedDir::new(dir);
        write_npy(files.data("c"), &data).unwrap();
        write_npy(files.seg("c"), &seg).unwrap();
        write_npy(files.locations("c"), &ndarray::arr2(&[[0i32, 5, 6, 7]])).unwrap();
        std::fs::write(files.properties("c"), "{}").unwrap();
        Arc::new(TrainingCase::load(dir, "c", None).unwrap())
    }

    #[test]
    fn an_empty_case_is_refused_naming_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = PreprocessedDir::new(dir.path());
        write_npy(files.data("e"), &Array4::<f32>::zeros((1, 0, 48, 35))).unwrap();
        write_npy(files.seg("e"), &Array4::<i8>::zeros((1, 0, 48, 35))).unwrap();
        std::fs::write(files.properties("e"), "{}").unwrap();
        let empty = TrainingCase::load(dir.path(), "e", None).err().unwrap();
        assert_eq!(empty.kind, nntools_io::ErrorKind::BadInput);
        assert!(empty.message.contains("e.npy: case e is empty ([0, 48, 35] voxels)"), "{empty}");
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
        let dir = tempfile::tempdir().unwrap();
        let c = case(dir.path());
        let sampler = PatchSampler { patch: [8, 16, 16], annotated_class: None };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
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

    #[test]
    fn with_an_ignore_label_random_patches_centre_on_annotated_voxels() {
        let dir = tempfile::tempdir().unwrap();
        let c = case(dir.path());
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        // the case's only stored class (index 0, at (5, 6, 7)) taken as the annotated voxels
        let annotated = PatchSampler { patch: [4, 6, 6], annotated_class: Some(0) };
        for foreground in [false, true] {
            assert_eq!(annotated.corner(&c, foreground, &mut rng), [3, 3, 4], "foreground {foreground}");
        }
        let plain = PatchSampler { patch: [4, 6, 6], annotated_class: None };
        let corners: std::collections::HashSet<_> = (0..20).map(|_| plain.corner(&c, false, &mut rng)).collect();
        assert!(corners.len() > 5, "without an ignore label random patches are anywhere: {corners:?}");
    }

    #[test]
    fn cascade_patches_carry_the_previous_stage_labels() {
        let dir = tempfile::tempdir().unwrap();
        case(dir.path());
        let previous = dir.path().join("previous");
        std::fs::create_dir(&previous).unwrap();
        let missing = TrainingCase::load(dir.path(), "c", Some(&previous)).err().unwrap();
        assert!(missing.message.contains("previous/c.npy: missing"), "{missing}");
        assert_eq!(missing.kind, nntools_io::ErrorKind::BadInput);
        write_npy(next_stage_labels(&previous, "c"), &Array4::<i8>::zeros((1, 10, 12, 13))).unwrap();
        let wrong = TrainingCase::load(dir.path(), "c", Some(&previous)).err().unwrap();
        assert!(wrong.message.contains("previous/c.npy: shape [10, 12, 13]"), "{wrong}");
        let labels = Array4::from_shape_fn((1, 10, 12, 14), |(_, z, y, x)| ((z + y + x) % 3) as i16 + 200);
        write_npy(next_stage_labels(&previous, "c"), &labels).unwrap();
        let c = TrainingCase::load(dir.path(), "c", Some(&previous)).unwrap();
        // patch (z, y, x) is image (z + 5, y + 6, x - 2)
        let (data, seg) = PatchSampler { patch: [4, 6, 10], annotated_class: None }.crop(&c, [5, 6, -2]);
        assert_eq!((data.shape(), seg.shape()), ([1, 4, 6, 10].as_slice(), [2, 4, 6, 10].as_slice()));
        assert_eq!(seg[[0, 0, 0, 9]], 1, "channel 0: the case's labels, 1 at image (5, 6, 7)");
        assert_eq!(seg[[1, 1, 2, 4]], labels[[0, 6, 8, 2]], "channel 1: the previous stage's, int16 kept");
        assert_eq!((seg[[0, 0, 0, 0]], seg[[1, 0, 0, 1]]), (-1, -1), "both padded with -1 left of x = 0");
    }

    #[test]
    fn prefetched_batches_do_not_depend_on_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Arc::new(BatchPlan {
            cases: vec![case(dir.path())],
            sampler: PatchSampler { patch: [4, 6, 6], annotated_class: None },
            batch_size: 3,
            two_d: false,
            seed: 7,
        });
        let collect =
            |threads| Prefetcher::start(plan.clone(), 10, 7, threads).map(|b| (b.data, b.seg)).collect::<Vec<_>>();
        let one = collect(1);
        assert_eq!(one.len(), 7);
        assert_eq!(one, collect(3));
        assert_ne!(one[0], one[1], "batches differ from each other");
        let later = Prefetcher::start(plan.clone(), 12, 1, 2).next().unwrap();
        assert_eq!((later.data, later.seg), one[2], "batch 12 is the same whichever range it is drawn in");
        // stopping early must not hang on the threads still producing
        assert_eq!(Prefetcher::start(plan, 0, 100, 2).take(1).count(), 1);
    }
}
