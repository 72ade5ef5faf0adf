//! batchgeneratorsv2's SpatialTransform as nnU-Net configures it
//! (`batchgeneratorsv2/transforms/spatial/spatial.py: SpatialTransform`, set up in
//! `nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py: nnUNetTrainer.get_training_transforms`), and mirroring
//! (`transforms/spatial/mirroring.py: MirrorTransform`).

use tch::{Device, Kind, Tensor};

use crate::recipe::{Recipe, SampleParameters};
use crate::upload;

/// Value of segmentation voxels sampled from outside the input patch.
const OUTSIDE: i64 = -1;
/// One-hot label maps are scaled before interpolation and compared in half precision, as batchgeneratorsv2
/// does: the fp16 rounding decides ties, and on ties the lower label wins.
const ONE_HOT_SCALE: f64 = 1000.0;

/// Rotates, scales and crops `data` (b, c, *initial) and `seg` (b, s, *initial) to the recipe's patch.
/// Samples whose parameters neither rotate nor scale are centre-cropped without interpolation, exactly
/// as nnU-Net does.
pub(crate) fn transform(recipe: &Recipe, data: &Tensor, seg: &Tensor, params: &[SampleParameters]) -> (Tensor, Tensor) {
    let dims = recipe.patch.len();
    assert_eq!(data.dim(), dims + 2, "data must be (b, c, {:?})", recipe.initial);
    let input: Vec<usize> = data.size()[2..].iter().map(|&s| s as usize).collect();
    assert_eq!(input, recipe.initial, "data must be cropped to the initial patch");
    // dummy 2d: axis 0 joins the channels and every slice gets the same in-plane transform
    let planar = |t: &Tensor| {
        if recipe.dummy_2d {
            let size = t.size();
            t.reshape([size[0], size[1] * size[2], size[3], size[4]])
        } else {
            t.shallow_clone()
        }
    };
    let (data_in, seg_in) = (planar(data), planar(seg));
    let patch = &recipe.patch[dims - recipe.spatial_transform_dims()..];
    let mut data_out = centre_crop(&data_in, patch);
    let mut seg_out = centre_crop(&seg_in, patch);
    let resampled: Vec<i64> = (0..params.len()).filter(|&i| params[i].resamples()).map(|i| i as i64).collect();
    if !resampled.is_empty() {
        let device = data.device();
        let index = upload(Tensor::from_slice(&resampled), device);
        let affines: Vec<Vec<f64>> = resampled.iter().map(|&i| affine(&params[i as usize], patch.len())).collect();
        let input_shape = &data_in.size()[2..];
        let grid = sampling_grid(&affines, patch, input_shape, device);
        let seg_in = seg_in.index_select(0, &index);
        let labels = recipe.label_values.clone().unwrap_or_else(|| present_labels(&seg_in));
        let (images, labels) = resample(&data_in.index_select(0, &index), &seg_in, &grid, &labels);
        data_out = data_out.index_copy(0, &index, &images);
        seg_out = seg_out.index_copy(0, &index, &labels);
    }
    let volumetric = |t: Tensor, like: &Tensor| {
        if recipe.dummy_2d {
            let size = like.size();
            let patch: Vec<i64> = recipe.patch.iter().map(|&p| p as i64).collect();
            t.reshape([size[0], size[1], patch[0], patch[1], patch[2]])
        } else {
            t
        }
    };
    (volumetric(data_out, data), volumetric(seg_out, seg))
}

/// The centre crop of the trailing spatial axes: start `floor(size / 2) - patch / 2` per axis.
pub(crate) fn centre_crop(t: &Tensor, patch: &[usize]) -> Tensor {
    let first = t.dim() - patch.len();
    patch.iter().enumerate().fold(t.shallow_clone(), |t, (a, &p)| {
        let axis = (first + a) as i64;
        let size = t.size()[first + a];
        assert!(size >= p as i64, "input extent {size} smaller than the patch {p}");
        t.narrow(axis, size / 2 - p as i64 / 2, p as i64)
    })
}

/// The sample's matrix (row-major, `dims` x `dims`) mapping output offsets to input offsets: `R2 R1 R0 S`
/// in 3d with `Ri` the rotation about axis i, `R S` in 2d.
fn affine(params: &SampleParameters, dims: usize) -> Vec<f64> {
    let scale = params.scale.unwrap_or(1.0);
    let angles = params.rotation.clone().unwrap_or_else(|| vec![0.0; if dims == 3 { 3 } else { 1 }]);
    let rotation = if dims == 3 {
        let [a0, a1, a2] = [angles[0], angles[1], angles[2]];
        let r0 = [1.0, 0.0, 0.0, 0.0, a0.cos(), -a0.sin(), 0.0, a0.sin(), a0.cos()];
        let r1 = [a1.cos(), 0.0, a1.sin(), 0.0, 1.0, 0.0, -a1.sin(), 0.0, a1.cos()];
        let r2 = [a2.cos(), -a2.sin(), 0.0, a2.sin(), a2.cos(), 0.0, 0.0, 0.0, 1.0];
        matmul(&matmul(&r2, &r1, 3), &r0, 3)
    } else {
        let a = angles[0];
        vec![a.cos(), -a.sin(), a.sin(), a.cos()]
    };
    rotation.iter().map(|r| r * scale).collect()
}

fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    (0..n * n).map(|ij| (0..n).map(|k| a[ij / n * n + k] * b[k * n + ij % n]).sum()).collect()
}

/// `grid_sample` grids (n, *patch, dims) for the given affines: voxel-centre offsets from the patch
/// centre, transformed, normalised by half the input extent (align_corners=False) and with the axis order
/// reversed to grid_sample's (x, y, z).
fn sampling_grid(affines: &[Vec<f64>], patch: &[usize], input: &[i64], device: Device) -> Tensor {
    let dims = patch.len() as i64;
    let axes: Vec<Tensor> = patch
        .iter()
        .map(|&p| Tensor::linspace((1.0 - p as f64) / 2.0, (p as f64 - 1.0) / 2.0, p as i64, (Kind::Float, device)))
        .collect();
    let offsets = Tensor::stack(&Tensor::meshgrid_indexing(&axes, "ij"), -1).view([1, -1, dims]);
    let transposed: Vec<f32> = affines
        .iter()
        .flat_map(|a| (0..a.len()).map(move |k| a[k % dims as usize * dims as usize + k / dims as usize] as f32))
        .collect();
    let transposed = upload(Tensor::from_slice(&transposed).view([-1, dims, dims]), device);
    let half: Vec<f32> = input.iter().map(|&s| s as f32 / 2.0).collect();
    let half = upload(Tensor::from_slice(&half), device);
    let mut shape: Vec<i64> = vec![affines.len() as i64];
    shape.extend(patch.iter().map(|&p| p as i64));
    shape.push(dims);
    (offsets.matmul(&transposed) / half).flip([-1]).view(shape.as_slice())
}

/// Image and labels sampled at `grid` in one `grid_sample` call. Labels follow nnU-Net's rule: each
/// label's scaled one-hot map is interpolated like the image and each voxel takes the label with the
/// largest value (compared in fp16, the lowest label winning ties, as batchgeneratorsv2's running
/// argmax); voxels sampled outside the input become `OUTSIDE`. Labels absent from a sample interpolate
/// to 0 and never win inside the input, so one ascending label list for the whole batch (or the whole
/// dataset) gives each sample the result of its own list.
fn resample(data: &Tensor, seg: &Tensor, grid: &Tensor, label_list: &[i64]) -> (Tensor, Tensor) {
    let onehot: Vec<Tensor> = label_list.iter().map(|&l| seg.eq(l).to_kind(Kind::Float) * ONE_HOT_SCALE).collect();
    let mut inputs = vec![data.shallow_clone()];
    inputs.extend(onehot);
    let sampled = Tensor::cat(&inputs, 1).grid_sampler(grid, 0, 0, false);
    let channels = data.size()[1];
    let images = sampled.narrow(1, 0, channels);
    // running maximum over the labels in ascending order: a strict `>` keeps the lower label on ties
    let segs = seg.size()[1];
    let mut best: Option<(Tensor, Tensor)> = None;
    for (i, &label) in label_list.iter().enumerate() {
        // fp16 values as batchgeneratorsv2 compares them (fp16 arithmetic itself is slow on CPU)
        let value = sampled.narrow(1, channels + i as i64 * segs, segs).to_kind(Kind::Half).to_kind(Kind::Float);
        best = Some(match best {
            None => (Tensor::full(value.size(), label, (Kind::Int64, value.device())), value),
            Some((result, top)) => (result.masked_fill(&value.gt_tensor(&top), label), top.maximum(&value)),
        });
    }
    let (result, _) = best.expect("a segmentation has at least one label");
    // out of bounds: beyond the outermost voxel centre along any axis (grid axes are reversed)
    let input = &seg.size()[2..];
    let dims = input.len();
    let outside = (0..dims)
        .map(|j| grid.select(-1, j as i64).abs().gt((1.0 - 1.0 / input[dims - 1 - j] as f32) as f64))
        .reduce(|a, b| a.logical_or(&b))
        .expect("at least one axis")
        .unsqueeze(1);
    (images, result.masked_fill(&outside, OUTSIDE))
}

/// The distinct values of an int64 tensor in ascending order, counted rather than sorted (much faster).
fn present_labels(seg: &Tensor) -> Vec<i64> {
    let lowest = seg.min().int64_value(&[]);
    let counts = Vec::<i64>::try_from((seg - lowest).flatten(0, -1).bincount(None::<Tensor>, 0)).expect("counts");
    (0..counts.len()).filter(|&i| counts[i] > 0).map(|i| lowest + i as i64).collect()
}

/// Flips each sample along its mirrored axes.
pub(crate) fn mirror(t: &Tensor, params: &[SampleParameters]) -> Tensor {
    if params.iter().all(|p| !p.mirror.contains(&true)) {
        return t.shallow_clone();
    }
    let samples: Vec<Tensor> = params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let axes: Vec<i64> = (0..p.mirror.len()).filter(|&a| p.mirror[a]).map(|a| a as i64 + 1).collect();
            let sample = t.get(i as i64);
            if axes.is_empty() { sample } else { sample.flip(axes) }
        })
        .collect();
    Tensor::stack(&samples, 0)
}
