//! Surface distances between two masks (HD95 and normalised surface Dice), from an exact Euclidean
//! distance transform that honours anisotropic spacing.
//!
//! Conventions, stated because the field has several: a mask's surface is its voxels with a
//! 6-neighbour outside the mask (outside the volume counts as outside); distances are between voxel
//! centres in mm. HD95 is the larger of the two directed 95th percentiles (numpy's linear
//! interpolation), as MONAI computes it. NSD at tolerance τ counts surface voxels of each mask within τ
//! of the other's surface, over all surface voxels (voxel counts, not surface-area weights as in
//! DeepMind's surface-distance). Both masks empty: both metrics NaN. One empty: HD95 NaN (infinite), NSD 0.

use ndarray::{Array3, ArrayView3, Axis, Zip};
use nntools_numpy::stats::{Interpolation, percentile};
use rayon::prelude::*;

/// Squared distance along one line (Felzenszwalb & Huttenlocher's lower envelope of parabolas), with
/// voxel positions `i * spacing`; `f` holds the squared distances so far (infinity where unknown).
fn transform_line(f: &mut [f64], spacing: f64, scratch: &mut (Vec<usize>, Vec<f64>, Vec<f64>)) {
    let (v, z, out) = scratch;
    let position = |i: usize| i as f64 * spacing;
    let Some(first) = f.iter().position(|d| d.is_finite()) else { return };
    // parabola roots v and the boundaries z between them; z[0] = -inf ends every backtrack
    v.clear();
    z.clear();
    v.push(first);
    z.extend([f64::NEG_INFINITY, f64::INFINITY]);
    for q in first + 1..f.len() {
        if f[q].is_infinite() {
            continue;
        }
        let intersection = |p: usize| {
            ((f[q] + position(q).powi(2)) - (f[p] + position(p).powi(2))) / (2.0 * (position(q) - position(p)))
        };
        let mut s = intersection(v[v.len() - 1]);
        while s <= z[v.len() - 1] {
            v.pop();
            z.pop();
            s = intersection(v[v.len() - 1]);
        }
        let k = v.len();
        v.push(q);
        z[k] = s;
        z.push(f64::INFINITY);
    }
    out.clear();
    let mut k = 0;
    for q in 0..f.len() {
        while z[k + 1] < position(q) {
            k += 1;
        }
        out.push((position(q) - position(v[k])).powi(2) + f[v[k]]);
    }
    f.copy_from_slice(out);
}

/// Euclidean distance (mm) from every voxel to the nearest voxel of `target`; infinite when `target` is
/// empty. `spacing` per axis of the array.
pub fn distance_to(target: ArrayView3<bool>, spacing: [f64; 3]) -> Array3<f64> {
    let mut d = target.mapv(|t| if t { 0.0 } else { f64::INFINITY });
    for (axis, &step) in spacing.iter().enumerate() {
        let mut lanes: Vec<Vec<f64>> = d.lanes(Axis(axis)).into_iter().map(|l| l.to_vec()).collect();
        lanes.par_iter_mut().for_each_init(
            || (Vec::new(), Vec::new(), Vec::new()),
            |scratch, lane| transform_line(lane, step, scratch),
        );
        for (mut lane, values) in d.lanes_mut(Axis(axis)).into_iter().zip(lanes) {
            lane.iter_mut().zip(values).for_each(|(a, b)| *a = b);
        }
    }
    d.mapv_inplace(f64::sqrt);
    d
}

/// The voxels of `mask` with a 6-neighbour outside it.
pub fn surface(mask: ArrayView3<bool>) -> Array3<bool> {
    let shape = mask.shape();
    let mut out = Array3::from_elem(mask.raw_dim(), false);
    Zip::indexed(&mut out).for_each(|(z, y, x), s| {
        if !mask[[z, y, x]] {
            return;
        }
        let index = [z, y, x];
        *s = (0..3).any(|a| {
            let at = |i: usize| {
                let mut j = index;
                j[a] = i;
                mask[j]
            };
            index[a] == 0 || index[a] + 1 == shape[a] || !at(index[a] - 1) || !at(index[a] + 1)
        });
    });
    out
}

/// The bounding box of the voxels set in either mask, one voxel wider on every side (within the
/// volume); `None` when both are empty.
fn joint_bounding_box(a: ArrayView3<bool>, b: ArrayView3<bool>) -> Option<[std::ops::Range<usize>; 3]> {
    let mut low = [usize::MAX; 3];
    let mut high = [0; 3];
    Zip::indexed(a).and(b).for_each(|(z, y, x), &p, &q| {
        if p || q {
            for (axis, i) in [z, y, x].into_iter().enumerate() {
                low[axis] = low[axis].min(i);
                high[axis] = high[axis].max(i);
            }
        }
    });
    (low[0] != usize::MAX)
        .then(|| [0, 1, 2].map(|axis| low[axis].saturating_sub(1)..(high[axis] + 2).min(a.shape()[axis])))
}

/// HD95 and NSD (at `tolerance` mm) between a reference and a predicted mask.
///
/// Every distance that counts runs between the two surfaces, which lie inside the masks' joint
/// bounding box, so the work (and the distance maps' memory) is confined to that box; one voxel of
/// margin keeps every surface voxel a surface voxel, so the result is exactly the whole volume's.
pub fn surface_metrics(
    reference: ArrayView3<bool>,
    prediction: ArrayView3<bool>,
    spacing: [f64; 3],
    tolerance: f64,
) -> (f64, f64) {
    let Some([z, y, x]) = joint_bounding_box(reference, prediction) else { return (f64::NAN, f64::NAN) };
    let region = ndarray::s![z, y, x];
    surface_metrics_in_box(reference.slice_move(region), prediction.slice_move(region), spacing, tolerance)
}

fn surface_metrics_in_box(
    reference: ArrayView3<bool>,
    prediction: ArrayView3<bool>,
    spacing: [f64; 3],
    tolerance: f64,
) -> (f64, f64) {
    let (surface_ref, surface_pred) = (surface(reference), surface(prediction));
    let (n_ref, n_pred) = (surface_ref.iter().filter(|&&s| s).count(), surface_pred.iter().filter(|&&s| s).count());
    match (n_ref, n_pred) {
        (0, 0) => return (f64::NAN, f64::NAN),
        (0, _) | (_, 0) => return (f64::NAN, 0.0),
        _ => {}
    }
    let directed = |from: &Array3<bool>, to: &Array3<bool>| -> Vec<f64> {
        let distance = distance_to(to.view(), spacing);
        from.iter().zip(distance.iter()).filter(|(s, _)| **s).map(|(_, &d)| d).collect()
    };
    let pred_to_ref = directed(&surface_pred, &surface_ref);
    let ref_to_pred = directed(&surface_ref, &surface_pred);
    let within = pred_to_ref.iter().chain(&ref_to_pred).filter(|&&d| d <= tolerance).count();
    let nsd = within as f64 / (n_ref + n_pred) as f64;
    let percentile_95 = |distances: &[f64]| percentile(distances, 95.0, Interpolation::Linear);
    let hd95 = percentile_95(&pred_to_ref).max(percentile_95(&ref_to_pred));
    (hd95, nsd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Brute force over all target voxels.
    fn brute(target: &Array3<bool>, spacing: [f64; 3]) -> Array3<f64> {
        let points: Vec<[usize; 3]> =
            target.indexed_iter().filter(|&(_, &t)| t).map(|((z, y, x), _)| [z, y, x]).collect();
        Array3::from_shape_fn(target.raw_dim(), |(z, y, x)| {
            points
                .iter()
                .map(|p| {
                    let d = [z as f64 - p[0] as f64, y as f64 - p[1] as f64, x as f64 - p[2] as f64];
                    ((d[0] * spacing[0]).powi(2) + (d[1] * spacing[1]).powi(2) + (d[2] * spacing[2]).powi(2)).sqrt()
                })
                .fold(f64::INFINITY, f64::min)
        })
    }

    #[test]
    fn distance_transform_equals_brute_force_on_random_masks() {
        let mut rng = ChaCha8Rng::seed_from_u64(12345);
        let mut next = || rng.random_range(0.0..1.0);
        for (density, spacing) in [(0.05, [1.0, 1.0, 1.0]), (0.01, [3.0, 0.7, 1.2]), (0.3, [0.5, 2.0, 1.0])] {
            let mask = Array3::from_shape_fn((9, 11, 8), |_| next() < density);
            let fast = distance_to(mask.view(), spacing);
            let slow = brute(&mask, spacing);
            for (a, b) in fast.iter().zip(&slow) {
                assert!((a - b).abs() < 1e-9, "{a} vs {b} (spacing {spacing:?})");
            }
        }
    }

    #[test]
    fn the_bounding_box_gives_the_whole_volume_result() {
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        for _ in 0..20 {
            // two random boxes somewhere in a 14 x 12 x 10 volume, some touching its border
            let mut random_cube = || {
                let from = [rng.random_range(0..14), rng.random_range(0..12), rng.random_range(0..10)];
                let to = from.map(|f| f + rng.random_range(1..7));
                cube([14, 12, 10], from, to)
            };
            let (a, b) = (random_cube(), random_cube());
            let boxed = surface_metrics(a.view(), b.view(), [1.5, 1.0, 0.7], 1.0);
            let whole = surface_metrics_in_box(a.view(), b.view(), [1.5, 1.0, 0.7], 1.0);
            assert!(boxed.0 == whole.0 && boxed.1 == whole.1, "{boxed:?} vs {whole:?}");
        }
    }

    fn cube(shape: [usize; 3], from: [usize; 3], to: [usize; 3]) -> Array3<bool> {
        Array3::from_shape_fn(shape, |(z, y, x)| {
            (from[0]..to[0]).contains(&z) && (from[1]..to[1]).contains(&y) && (from[2]..to[2]).contains(&x)
        })
    }

    #[test]
    fn shifted_cubes_have_the_shift_as_hd95() {
        let reference = cube([20, 20, 20], [5, 5, 5], [15, 15, 15]);
        let prediction = cube([20, 20, 20], [5, 5, 8], [15, 15, 18]);
        // shifted by 3 voxels along x of 2 mm: faces perpendicular to x are 6 mm apart, and every other
        // surface voxel lies on the other cube's surface or within 6 mm
        let (hd95, nsd) = surface_metrics(reference.view(), prediction.view(), [1.0, 1.0, 2.0], 1.0);
        assert!((hd95 - 6.0).abs() < 1e-9, "{hd95}");
        assert!(nsd > 0.0 && nsd < 1.0);
        let (same_hd, same_nsd) = surface_metrics(reference.view(), reference.view(), [1.0, 1.0, 2.0], 1.0);
        assert_eq!((same_hd, same_nsd), (0.0, 1.0));
        let empty = Array3::from_elem((20, 20, 20), false);
        let (hd, nsd) = surface_metrics(reference.view(), empty.view(), [1.0; 3], 1.0);
        assert!(hd.is_nan() && nsd == 0.0);
        let (hd, nsd) = surface_metrics(empty.view(), empty.view(), [1.0; 3], 1.0);
        assert!(hd.is_nan() && nsd.is_nan());
    }

    #[test]
    fn surface_of_a_cube_is_its_shell() {
        let c = cube([5, 5, 5], [1, 1, 1], [4, 4, 4]);
        assert_eq!(surface(c.view()).iter().filter(|&&s| s).count(), 27 - 1);
    }
}
