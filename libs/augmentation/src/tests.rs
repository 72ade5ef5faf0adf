use std::f64::consts::PI;
use std::sync::Mutex;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, IndexOp, Kind, Tensor};

use crate::recipe::{Mode, Recipe, SampleParameters};
use crate::{Augmenter, intensity, spatial};

const DRAWS: usize = 2000;

fn draws(recipe: &Recipe, seed: u64) -> Vec<SampleParameters> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..DRAWS).map(|_| recipe.draw(&mut rng)).collect()
}

fn assert_fraction(what: &str, hits: usize, p: f64) {
    let fraction = hits as f64 / DRAWS as f64;
    assert!((fraction - p).abs() < 0.03, "{what} fired in {fraction} of samples, expected {p}");
}

fn hippocampus() -> Recipe {
    Recipe::new(&[40, 56, 40], &[false], Mode::Nnunet, None)
}

fn nothing_fires(dims: usize) -> SampleParameters {
    SampleParameters { mirror: vec![false; dims], ..SampleParameters::default() }
}

/// Uniform image noise and labels -1..=2 in blocks of 2 voxels, so that interpolation has regions to
/// keep. Drawn from a ChaCha8Rng: torch's global generator belongs to `train`.
fn case(batch: i64, channels: i64, shape: &[usize]) -> (Tensor, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let voxels: usize = shape.iter().product();
    let values: Vec<f32> =
        (0..batch as usize * channels as usize * voxels).map(|_| rng.random_range(-2.0..2.0)).collect();
    let mut full = vec![batch, channels];
    full.extend(shape.iter().map(|&s| s as i64));
    let data = Tensor::from_slice(&values).view(full.as_slice());
    let mut coarse = vec![batch, 1];
    coarse.extend(shape.iter().map(|&s| s.div_ceil(2) as i64));
    let count = coarse.iter().product::<i64>() as usize;
    let labels: Vec<i64> = (0..count).map(|_| rng.random_range(-1..3)).collect();
    let mut seg = Tensor::from_slice(&labels).view(coarse.as_slice());
    for (a, &extent) in shape.iter().enumerate() {
        let axis = a as i64 + 2;
        seg = seg.repeat_interleave_self_int(2, axis, None).narrow(axis, 0, extent as i64);
    }
    (data, seg)
}

/// `Augmenter::training` seeds torch's global generator, which tests running in parallel share.
static TORCH_GENERATOR: Mutex<()> = Mutex::new(());

fn train(augmenter: &Augmenter, data: &Tensor, seg: &Tensor, rng: &mut ChaCha8Rng) -> (Tensor, Tensor) {
    let _only_user = TORCH_GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    augmenter.training(data, seg, rng)
}

fn equal(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && a.equal(b)
}

fn distinct(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.internal_unique(true, false).0).unwrap()
}

#[test]
fn spatial_parameters_follow_nnunet_probabilities_and_ranges() {
    let samples = draws(&hippocampus(), 1);
    assert_fraction("rotation", samples.iter().filter(|s| s.rotation.is_some()).count(), 0.2);
    assert_fraction("scaling", samples.iter().filter(|s| s.scale.is_some()).count(), 0.2);
    let max = 30.0 / 180.0 * PI;
    for angles in samples.iter().filter_map(|s| s.rotation.as_ref()) {
        assert_eq!(angles.len(), 3, "3d rotates about each axis");
        assert!(angles.iter().all(|a| a.abs() <= max));
    }
    let scales: Vec<f64> = samples.iter().filter_map(|s| s.scale).collect();
    assert!(scales.iter().all(|s| (0.7..1.4).contains(s)));
    assert!(scales.iter().any(|&s| s < 0.8) && scales.iter().any(|&s| s > 1.3), "the whole range is used");
    // 2d [56, 40] (aspect 1.4) and dummy 2d rotate in-plane by up to 180°
    for recipe in [
        Recipe::new(&[56, 40], &[false], Mode::Nnunet, None),
        Recipe::new(&[20, 320, 256], &[false], Mode::Nnunet, None),
    ] {
        let angles: Vec<f64> = draws(&recipe, 2).iter().filter_map(|s| s.rotation.clone()).flatten().collect();
        assert_fraction("in-plane rotation", angles.len(), 0.2);
        assert!(angles.iter().all(|a| a.abs() <= PI) && angles.iter().any(|a| a.abs() > PI / 2.0));
    }
    // 2d with an elongated patch: ±15°
    let elongated = draws(&Recipe::new(&[64, 32], &[false], Mode::Nnunet, None), 3);
    assert!(elongated.iter().filter_map(|s| s.rotation.as_ref()).all(|a| a[0].abs() <= 15.0 / 180.0 * PI));
}

#[test]
fn intensity_parameters_follow_nnunet_probabilities_and_ranges() {
    let recipe = Recipe::new(&[40, 56, 40], &[false, false], Mode::Nnunet, None);
    let samples = draws(&recipe, 4);
    let count = |f: &dyn Fn(&SampleParameters) -> bool| samples.iter().filter(|s| f(s)).count();
    assert_fraction("noise", count(&|s| s.noise_sigma.is_some()), 0.1);
    assert_fraction("blur", count(&|s| s.blur.is_some()), 0.2);
    assert_fraction("brightness", count(&|s| s.brightness.is_some()), 0.15);
    assert_fraction("contrast", count(&|s| s.contrast.is_some()), 0.15);
    assert_fraction("low resolution", count(&|s| s.low_resolution.is_some()), 0.25);
    assert_fraction("inverted gamma", count(&|s| s.inverted_gamma.is_some()), 0.1);
    assert_fraction("gamma", count(&|s| s.gamma.is_some()), 0.3);
    for axis in 0..3 {
        assert_fraction("mirror", count(&|s| s.mirror[axis]), 0.5);
    }
    assert!(samples.iter().filter_map(|s| s.noise_sigma).all(|v| (0.0..0.1).contains(&v)));
    // blur and low resolution pick each channel with p 0.5; blur sigmas are per axis
    let blurred: Vec<&Option<Vec<f64>>> = samples.iter().filter_map(|s| s.blur.as_ref()).flatten().collect();
    let per_channel = blurred.iter().filter(|b| b.is_some()).count() as f64 / blurred.len() as f64;
    assert!((per_channel - 0.5).abs() < 0.06, "blur per channel {per_channel}");
    for sigmas in blurred.iter().copied().flatten() {
        assert_eq!(sigmas.len(), 3);
        assert!(sigmas.iter().all(|s| (0.5..1.0).contains(s)));
    }
    let zooms: Vec<f64> = samples.iter().filter_map(|s| s.low_resolution.clone()).flatten().flatten().collect();
    assert!(zooms.iter().all(|z| (0.5..1.0).contains(z)));
    // BGContrast: half the factors below 1
    let factors: Vec<f64> = samples.iter().filter_map(|s| s.brightness.clone()).flatten().collect();
    assert!(factors.iter().all(|f| (0.75..1.25).contains(f)));
    let below = factors.iter().filter(|&&f| f < 1.0).count() as f64 / factors.len() as f64;
    assert!((below - 0.5).abs() < 0.1, "{below} of the brightness factors below 1");
    let gammas: Vec<f64> = samples.iter().filter_map(|s| s.gamma.clone()).flatten().collect();
    assert!(gammas.iter().all(|g| (0.7..1.5).contains(g)) && gammas.iter().any(|&g| g > 1.4));
}

#[test]
fn reduced_modes_draw_only_what_they_apply() {
    for (mode, mirrors) in [(Mode::MirrorOnly, true), (Mode::None, false)] {
        let recipe = Recipe::new(&[40, 56, 40], &[false], mode, Some(vec![1, 2]));
        assert_eq!(recipe.initial_patch(), [40, 56, 40]);
        let samples = draws(&recipe, 5);
        for s in &samples {
            assert_eq!(SampleParameters { mirror: s.mirror.clone(), ..SampleParameters::default() }, *s);
        }
        let mirrored = samples.iter().filter(|s| s.mirror[0]).count();
        if mirrors {
            assert_fraction("mirror", mirrored, 0.5);
        } else {
            assert_eq!(mirrored, 0);
            assert!(recipe.mirror_axes().is_empty());
        }
    }
}

#[test]
fn cascade_perturbations_follow_nnunet_probabilities() {
    let recipe = Recipe::new(&[40, 56, 40], &[false], Mode::Nnunet, Some(vec![1, 2, 3]));
    let samples = draws(&recipe, 6);
    assert_fraction("binary operator", samples.iter().filter(|s| s.binary_operators.is_some()).count(), 0.4);
    assert_fraction("component removal", samples.iter().filter(|s| s.component_removals.is_some()).count(), 0.2);
    let operations: Vec<_> = samples.iter().filter_map(|s| s.binary_operators.clone()).flatten().collect();
    // 3 labels with p 0.5 each
    let per_sample = operations.len() as f64 / samples.iter().filter(|s| s.binary_operators.is_some()).count() as f64;
    assert!((per_sample - 1.5).abs() < 0.15, "{per_sample} operations per sample");
    assert!(operations.iter().all(|o| (1.0..8.0).contains(&o.radius) && o.channel < 3));
}

#[test]
fn initial_patch_matches_nnunet() {
    // Hippocampus 3d_fullres [40, 56, 40], ±30° about each axis, v' = v R (batchgenerators' row vectors),
    // c = cos 30° = 0.8660, s = 0.5:
    //   about axis 0: (40, 56c + 40s, -56s + 40c) = (40, 68.50, 6.64)
    //   about axis 1: (40c - 40s, 56, 40s + 40c) = (14.64, 56, 54.64)
    //   about axis 2: (40c + 56s, -40s + 56c, 40) = (62.64, 28.50, 40)
    //   element-wise max with the patch: (62.64, 68.50, 54.64); / 0.85 = (73.69, 80.59, 64.28) -> (73, 80, 64)
    assert_eq!(hippocampus().initial_patch(), [73, 80, 64]);
    // 2d [56, 40]: aspect 1.4 <= 1.5, so ±180°, capped at 90°: (40, 56) rotated; max (56, 56) / 0.85 = 65.88
    assert_eq!(Recipe::new(&[56, 40], &[false], Mode::Nnunet, None).initial_patch(), [65, 65]);
    // what `nnunetv2/training/data_augmentation/compute_initial_patch_size.py: get_patch_size` gives for these
    // patches with nnU-Net's rotation ranges (±30°; dummy 2D ±180°)
    assert_eq!(Recipe::new(&[128, 128, 128], &[false], Mode::Nnunet, None).initial_patch(), [205, 205, 205]);
    assert_eq!(Recipe::new(&[80, 192, 160], &[false], Mode::Nnunet, None).initial_patch(), [194, 289, 210]);
    assert_eq!(Recipe::new(&[20, 320, 256], &[false], Mode::Nnunet, None).initial_patch(), [20, 376, 376]);
    assert_eq!(Recipe::new(&[512, 512], &[false], Mode::Nnunet, None).initial_patch(), [602, 602]);
    assert_eq!(hippocampus().mirror_axes(), [0, 1, 2]);
}

#[test]
fn nothing_firing_returns_the_centre_crop() {
    let recipe = hippocampus();
    let (data, seg) = case(3, 1, &recipe.initial_patch());
    let augmenter = Augmenter::new(recipe.clone());
    let (out, labels) = augmenter.training_with(&data, &seg, &vec![nothing_fires(3); 3]);
    // start floor(size / 2) - patch / 2 = (36 - 20, 40 - 28, 32 - 20)
    let crop = data.i((.., .., 16..56, 12..68, 12..52));
    assert!(equal(&out, &crop), "image is the exact centre crop");
    let expected = seg.i((.., .., 16..56, 12..68, 12..52)).clamp_min(0);
    assert!(equal(&labels, &expected), "labels are the centre crop with -1 -> 0");
    // Mode::None crops nothing and changes nothing but -1 -> 0
    let none = Augmenter::new(Recipe::new(&[40, 56, 40], &[false], Mode::None, None));
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (same, labels) = train(&none, &crop, &seg.i((.., .., 16..56, 12..68, 12..52)), &mut rng);
    assert!(equal(&same, &crop) && equal(&labels, &expected));
}

#[test]
fn identity_rotation_and_scale_equal_the_centre_crop() {
    // even size differences put the identity grid on voxel centres
    let mut recipe = Recipe::new(&[8, 10, 12], &[false], Mode::Nnunet, None);
    recipe.initial = vec![12, 14, 18];
    let (data, seg) = case(2, 2, &recipe.initial);
    let params = SampleParameters { rotation: Some(vec![0.0; 3]), scale: Some(1.0), ..nothing_fires(3) };
    let (out, labels) = spatial::transform(&recipe, &data, &seg, &[params.clone(), nothing_fires(3)]);
    let crop = spatial::centre_crop(&data, &recipe.patch);
    assert!(out.allclose(&crop, 1e-5, 1e-5, false), "interpolated identity equals the crop");
    assert!(equal(&out.i(1), &crop.i(1)), "sample 1 is the exact crop");
    assert!(equal(&labels, &spatial::centre_crop(&seg, &recipe.patch)), "labels keep their values exactly");
}

/// A box at y 1..3, x 2..7 of a 9 x 9 plane (all slices but the first in 3d), turned a quarter: offsets (y, x)
/// from the centre sample the input at (-x, y), i.e. R0 (3d) or R (2d, dummy 2d) applied to the offset.
fn assert_quarter_turn(patch: &[usize], rotation: Vec<f64>) {
    let mut recipe = Recipe::new(patch, &[false], Mode::Nnunet, None);
    recipe.initial = patch.to_vec();
    let mut shape = vec![1, 1];
    shape.extend(patch.iter().map(|&p| p as i64));
    let data = Tensor::zeros(shape.as_slice(), (Kind::Float, Device::Cpu));
    let planes = if patch.len() == 3 { data.i((0, 0, 1..)) } else { data.i((0, ..1)) };
    let _ = planes.i((.., 1..3, 2..7)).fill_(1.0);
    let seg = (&data * 2.0).to_kind(Kind::Int64);
    let dims = patch.len();
    let params = SampleParameters { rotation: Some(rotation), ..nothing_fires(dims) };
    let (out, labels) = spatial::transform(&recipe, &data, &seg, &[params]);
    let flat = |t: &Tensor| t.reshape([-1, 9, 9]);
    let (input, expected) = (flat(&data), flat(&data).zeros_like());
    for plane in 0..input.size()[0] {
        for y in 0..9i64 {
            for x in 0..9i64 {
                let _ = expected.i((plane, y, x)).fill_(input.double_value(&[plane, 4 - (x - 4), y]));
            }
        }
    }
    assert!(flat(&out).allclose(&expected, 1e-5, 1e-5, false), "image turned a quarter for {patch:?}");
    assert!(equal(&flat(&labels), &(&expected * 2.0).to_kind(Kind::Int64)), "labels turned the same way");
    // the box lies at y 2..7, x 6..8 after the turn
    let plane = flat(&out).i(if dims == 3 { 1 } else { 0 });
    assert_eq!((plane.double_value(&[2, 6]), plane.double_value(&[6, 2])), (1.0, 0.0));
}

#[test]
fn quarter_turn_rotates_an_asymmetric_box() {
    assert_quarter_turn(&[5, 9, 9], vec![PI / 2.0, 0.0, 0.0]);
    assert_quarter_turn(&[9, 9], vec![PI / 2.0]);
    // dummy 2d (9 / 2 > 3): every slice turns in-plane
    assert!(Recipe::new(&[2, 9, 9], &[false], Mode::Nnunet, None).dummy_2d);
    assert_quarter_turn(&[2, 9, 9], vec![PI / 2.0]);
}

#[test]
fn labels_stay_within_the_label_set() {
    let recipe = hippocampus();
    let augmenter = Augmenter::new(recipe.clone());
    let (data, seg) = case(4, 1, &recipe.initial_patch());
    let turned = SampleParameters { rotation: Some(vec![0.4, -0.3, 0.5]), scale: Some(1.4), ..nothing_fires(3) };
    let (_, resampled) = spatial::transform(&recipe, &data, &seg, &vec![turned.clone(); 4]);
    let found = distinct(&resampled);
    assert!(found.iter().all(|l| (-1..=2).contains(l)) && found.contains(&-1), "{found:?}: zoomed out, so -1 outside");
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for _ in 0..5 {
        let (_, labels) = train(&augmenter, &data, &seg, &mut rng);
        assert_eq!(labels.kind(), Kind::Int64);
        assert_eq!(labels.size(), [4, 1, 40, 56, 40]);
        assert!(distinct(&labels).iter().all(|l| (0..=2).contains(l)));
    }
    // 2d: (b, c, y, x)
    let planar = Augmenter::new(Recipe::new(&[56, 40], &[true], Mode::Nnunet, None));
    let (data, seg) = case(9, 1, &planar.recipe().initial_patch());
    for _ in 0..3 {
        let (out, labels) = train(&planar, &data, &seg, &mut rng);
        assert_eq!((out.size(), labels.size()), (vec![9, 1, 56, 40], vec![9, 1, 56, 40]));
        assert!(distinct(&labels).iter().all(|l| (0..=2).contains(l)));
    }
}

#[test]
fn contrast_keeps_each_channel_within_its_range() {
    let (data, _) = case(2, 2, &[6, 7, 8]);
    let strong = SampleParameters { contrast: Some(vec![1.25, 0.75]), ..nothing_fires(3) };
    let out = intensity::transform(&data, &[strong.clone(), strong], false);
    for (b, c) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        let (before, after) = (data.i((b, c)), out.i((b, c)));
        assert!(after.min().double_value(&[]) >= before.min().double_value(&[]));
        assert!(after.max().double_value(&[]) <= before.max().double_value(&[]));
        assert!(!equal(&before, &after), "the contrast changed");
    }
    // with 1.25 the extremes are clipped exactly to the old range
    assert_eq!(out.i((0, 0)).max().double_value(&[]), data.i((0, 0)).max().double_value(&[]));
}

#[test]
fn gamma_retains_mean_and_std_and_blur_keeps_constants() {
    let (data, _) = case(1, 2, &[6, 7, 8]);
    let data = data.exp();
    let params =
        SampleParameters { gamma: Some(vec![1.4, 0.7]), inverted_gamma: Some(vec![0.8, 1.2]), ..nothing_fires(3) };
    let out = intensity::transform(&data, &[params], false);
    for c in 0..2 {
        let (before, after) = (data.i((0, c)), out.i((0, c)));
        assert!((before.mean(Kind::Float) - after.mean(Kind::Float)).abs().double_value(&[]) < 1e-4);
        assert!((before.std(true) - after.std(true)).abs().double_value(&[]) < 1e-4);
        assert!(!after.allclose(&before, 1e-3, 1e-3, false));
    }
    let constant = Tensor::full([1, 1, 6, 7, 8], 3.0, (Kind::Float, Device::Cpu));
    let blur = SampleParameters { blur: Some(vec![Some(vec![0.5, 0.75, 1.0])]), ..nothing_fires(3) };
    let blurred = intensity::transform(&constant, &[blur], false);
    assert!(blurred.allclose(&constant, 1e-5, 1e-5, false));
}

#[test]
fn low_resolution_blurs_only_the_chosen_channel() {
    let (data, _) = case(1, 2, &[8, 16, 16]);
    let params = SampleParameters { low_resolution: Some(vec![None, Some(0.5)]), ..nothing_fires(3) };
    let out = intensity::transform(&data, std::slice::from_ref(&params), false);
    assert!(equal(&out.i((0, 0)), &data.i((0, 0))));
    assert!(out.i((0, 1)).std(true).double_value(&[]) < 0.8 * data.i((0, 1)).std(true).double_value(&[]));
    // dummy 2d keeps axis 0: slices stay independent
    let (data, _) = case(1, 1, &[8, 16, 16]);
    let one_slice = data.zeros_like();
    one_slice.i((.., .., 3)).copy_(&data.i((.., .., 3)));
    let params = SampleParameters { low_resolution: Some(vec![Some(0.5)]), ..nothing_fires(3) };
    let out = intensity::transform(&one_slice, &[params], true);
    assert_eq!(out.i((.., .., 2)).abs().max().double_value(&[]), 0.0);
}

#[test]
fn mirroring_flips_image_and_labels_together_and_masking_uses_the_outside() {
    let recipe = Recipe::new(&[4, 6, 8], &[true, false], Mode::Nnunet, None);
    let (data, seg) = case(2, 2, &recipe.initial_patch());
    let augmenter = Augmenter::new(recipe.clone());
    let flip = SampleParameters { mirror: vec![false, true, true], ..SampleParameters::default() };
    let (out, labels) = augmenter.training_with(&data, &seg, &[flip, nothing_fires(3)]);
    let crop_data = spatial::centre_crop(&data, &recipe.patch);
    let crop_seg = spatial::centre_crop(&seg, &recipe.patch);
    let outside = crop_seg.lt(0);
    let masked =
        crop_data.masked_fill(&outside.logical_and(&Tensor::from_slice(&[true, false]).view([1, 2, 1, 1, 1])), 0.0);
    assert!(equal(&out.i(1), &masked.i(1)));
    assert!(equal(&out.i(0), &masked.i(0).flip([2, 3])));
    assert!(equal(&labels.i(0), &crop_seg.clamp_min(0).i(0).flip([2, 3])));
    assert_eq!(out.i((1, 0)).masked_select(&outside.i((1, 0))).abs().sum(Kind::Float).double_value(&[]), 0.0);
    assert!(out.i((1, 1)).masked_select(&outside.i((1, 0))).abs().sum(Kind::Float).double_value(&[]) > 0.0);
}

#[test]
fn cascade_segmentation_becomes_one_hot_input() {
    let recipe = Recipe::new(&[4, 6, 8], &[false], Mode::Nnunet, Some(vec![1, 2]));
    let augmenter = Augmenter::new(recipe.clone());
    let (data, seg) = case(2, 1, &recipe.patch);
    let (_, previous) = case(2, 1, &recipe.patch);
    let seg2 = Tensor::cat(&[&seg, &previous], 1);
    let (out, labels) = augmenter.validation(&data, &seg2);
    assert_eq!(out.size(), [2, 3, 4, 6, 8]);
    assert!(equal(&out.i((.., 0)), &data.i((.., 0))));
    assert!(equal(&out.i((.., 1)), &previous.i((.., 0)).eq(1).to_kind(Kind::Float)));
    assert!(equal(&out.i((.., 2)), &previous.i((.., 0)).eq(2).to_kind(Kind::Float)));
    assert!(equal(&labels, &seg.clamp_min(0)));
    // training: the one-hot channels stay binary and mutually exclusive whatever the perturbations
    let big = Recipe::new(&[16, 16, 16], &[false], Mode::Nnunet, Some(vec![1, 2]));
    let (data, seg) = case(4, 1, &big.initial_patch());
    let (_, previous) = case(4, 1, &big.initial_patch());
    let augmenter = Augmenter::new(big);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for _ in 0..5 {
        let (out, _) = train(&augmenter, &data, &Tensor::cat(&[&seg, &previous], 1), &mut rng);
        let onehot = out.i((.., 1..));
        assert!(onehot.eq(0.0).logical_or(&onehot.eq(1.0)).all().int64_value(&[]) == 1);
        assert!(onehot.sum_dim_intlist(1, false, Kind::Float).max().double_value(&[]) <= 1.0);
    }
}

#[test]
fn declared_labels_resample_as_the_labels_read_from_the_batch() {
    // the batch holds -1..=2; the declaration adds labels it lacks (3, 5), which must never win
    let recipe = hippocampus();
    let declared = hippocampus().with_labels(&[0, 1, 2, 3, 5]);
    let (data, seg) = case(3, 1, &recipe.initial_patch());
    let turned = [
        SampleParameters { rotation: Some(vec![0.4, -0.3, 0.5]), scale: Some(1.4), ..nothing_fires(3) },
        SampleParameters { rotation: Some(vec![-1.1, 0.2, 0.0]), scale: Some(0.8), ..nothing_fires(3) },
        nothing_fires(3),
    ];
    let (read_data, read_seg) = spatial::transform(&recipe, &data, &seg, &turned);
    let (declared_data, declared_seg) = spatial::transform(&declared, &data, &seg, &turned);
    assert!(equal(&read_data, &declared_data));
    assert!(equal(&read_seg, &declared_seg));
    assert_eq!(distinct(&declared_seg), [-1, 0, 1, 2]);
}

#[test]
fn same_seed_same_batch() {
    let recipe = Recipe::new(&[16, 20, 16], &[false, true], Mode::Nnunet, None);
    let (data, seg) = case(6, 2, &recipe.initial_patch());
    let augmenter = Augmenter::new(recipe);
    let run = |seed: u64| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..4).map(|_| train(&augmenter, &data, &seg, &mut rng)).collect::<Vec<_>>()
    };
    let (first, again, other) = (run(9), run(9), run(10));
    for ((a, b), c) in first.iter().zip(&again).zip(&other) {
        assert!(equal(&a.0, &b.0) && equal(&a.1, &b.1));
        assert!(!equal(&a.0, &c.0));
    }
}

#[test]
fn mid_slice_png_has_a_panel_per_channel_and_one_for_labels() {
    let (data, seg) = case(1, 2, &[4, 6, 8]);
    let path = std::env::temp_dir().join(format!("nntools-augmentation-{}.png", std::process::id()));
    crate::write_mid_slice_png(&path, &data.i(0), &seg.i(0)).unwrap();
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
    let info = decoder.read_info().unwrap().info().clone();
    std::fs::remove_file(&path).unwrap();
    assert_eq!((info.width, info.height), (3 * 8, 6));
}

/// Prints the CPU time of Hippocampus 3d_fullres batches (`cargo test --release -p nntools-augmentation
/// -- --ignored --nocapture`).
#[test]
#[ignore]
fn hippocampus_batch_time() {
    let recipe = hippocampus();
    let (data, seg) = case(9, 1, &recipe.initial_patch());
    let augmenter = Augmenter::new(recipe);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let batches = 50;
    let start = std::time::Instant::now();
    for _ in 0..batches {
        let _ = train(&augmenter, &data, &seg, &mut rng);
    }
    let always = SampleParameters {
        rotation: Some(vec![0.3, 0.2, -0.4]),
        scale: Some(1.2),
        noise_sigma: Some(0.05),
        blur: Some(vec![Some(vec![1.0; 3])]),
        brightness: Some(vec![1.1]),
        contrast: Some(vec![0.9]),
        low_resolution: Some(vec![Some(0.6)]),
        inverted_gamma: Some(vec![1.2]),
        gamma: Some(vec![0.8]),
        mirror: vec![true; 3],
        ..SampleParameters::default()
    };
    let typical = start.elapsed().as_secs_f64() * 1000.0 / batches as f64;
    let start = std::time::Instant::now();
    for _ in 0..10 {
        let _ = augmenter.training_with(&data, &seg, &vec![always.clone(); 9]);
    }
    let worst = start.elapsed().as_secs_f64() * 1000.0 / 10.0;
    println!(
        "9 x 1 x 73 x 80 x 64 -> 40 x 56 x 40 on CPU ({} threads): {typical:.1} ms per batch drawn, {worst:.1} ms with everything firing",
        tch::get_num_threads()
    );
}
