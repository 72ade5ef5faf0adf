//! Crop to nonzero, as nnU-Net's `crop_to_nonzero`: the nonzero mask is the OR over channels of
//! `image != 0` with holes filled (`scipy.ndimage.binary_fill_holes`, 6-connected background); the crop
//! is its tight bounding box, or the whole image when the mask is empty.

use ndarray::{Array3, ArrayView3, Ix3, SliceInfo, SliceInfoElem, s};

/// Half-open bounding box `[[lo, hi), ...]` per axis, nnU-Net's (acvl_utils) convention.
pub type BoundingBox = [[usize; 2]; 3];

/// The bounding box of the voxels that are nonzero in any channel; the whole image when there are none.
///
/// Filling holes cannot move this box (a background voxel outside it reaches the border in a straight
/// line through background), so it is computed without building the mask.
pub fn nonzero_bounding_box(channels: &[ArrayView3<f32>]) -> BoundingBox {
    let (nz, ny, nx) = channels[0].dim();
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    for channel in channels {
        for ((z, y), row) in channel.rows().into_iter().enumerate().map(|(i, row)| ((i / ny, i % ny), row)) {
            let Some(first) = row.iter().position(|&v| v != 0.0) else { continue };
            let last = row.iter().rposition(|&v| v != 0.0).expect("a nonzero value exists");
            lo = [lo[0].min(z), lo[1].min(y), lo[2].min(first)];
            hi = [hi[0].max(z + 1), hi[1].max(y + 1), hi[2].max(last + 1)];
        }
    }
    if lo[0] == usize::MAX {
        return [[0, nz], [0, ny], [0, nx]];
    }
    [[lo[0], hi[0]], [lo[1], hi[1]], [lo[2], hi[2]]]
}

/// The nonzero mask over all channels within `bbox`, their nonzero bounding box, with enclosed holes
/// filled. Filling within the box gives the box's part of the whole image's filled mask: a background
/// voxel outside the box reaches the border in a straight line, so every background voxel on the
/// box's faces is reached from outside, and a path from inside the box to the border leaves it
/// through one of them.
pub fn nonzero_mask(channels: &[ArrayView3<f32>], bbox: &BoundingBox) -> Array3<bool> {
    let mut grid = Grid::new(box_shape(bbox));
    for channel in channels {
        grid.mark_nonzero(channel.slice(box_slice(bbox)));
    }
    grid.fill_holes();
    grid.mask()
}

const BACKGROUND: u8 = 0;
const FOREGROUND: u8 = 1;
const REACHED: u8 = 2;

/// Voxel states for filling holes, on a grid padded by one voxel on every side. The padding counts as
/// reached, so that runs and neighbours are found without bounds checks.
struct Grid {
    states: Vec<u8>,
    shape: [usize; 3],
}

impl Grid {
    /// All background.
    fn new(shape: [usize; 3]) -> Self {
        let [nz, ny, nx] = shape;
        let mut states = vec![REACHED; (nz + 2) * (ny + 2) * (nx + 2)];
        for z in 0..nz {
            for y in 0..ny {
                let start = Self::row_start(shape, z, y);
                states[start..start + nx].fill(BACKGROUND);
            }
        }
        Self { states, shape }
    }

    /// Where row `(z, y)` starts in `states`.
    fn row_start([_, ny, nx]: [usize; 3], z: usize, y: usize) -> usize {
        ((z + 1) * (ny + 2) + y + 1) * (nx + 2) + 1
    }

    /// Marks the nonzero voxels of `channel` as foreground.
    fn mark_nonzero(&mut self, channel: ArrayView3<f32>) {
        let [_, ny, nx] = self.shape;
        for (i, row) in channel.rows().into_iter().enumerate() {
            let start = Self::row_start(self.shape, i / ny, i % ny);
            for (state, &v) in self.states[start..start + nx].iter_mut().zip(row) {
                // BACKGROUND is 0: a voxel foreground in any channel stays so
                *state |= if v != 0.0 { FOREGROUND } else { BACKGROUND };
            }
        }
    }

    /// Marks the background reached from the border: a scanline flood fill from the border's background
    /// voxels, where a popped voxel's run along x is reached at once and one voxel of each background
    /// run beside it (along y and z) is pushed.
    fn fill_holes(&mut self) {
        let [nz, ny, nx] = self.shape;
        let (px, plane) = (nx + 2, (nx + 2) * (ny + 2));
        let states = &mut self.states;
        let mut seeds: Vec<usize> = Vec::new();
        for z in 0..nz {
            for y in 0..ny {
                let start = Self::row_start(self.shape, z, y);
                if z == 0 || y == 0 || z + 1 == nz || y + 1 == ny {
                    seeds.extend(start..start + nx);
                } else {
                    seeds.extend([start, start + nx - 1]);
                }
            }
        }
        seeds.retain(|&i| states[i] == BACKGROUND);
        while let Some(seed) = seeds.pop() {
            if states[seed] != BACKGROUND {
                continue;
            }
            let (mut lo, mut hi) = (seed, seed);
            while states[lo - 1] == BACKGROUND {
                lo -= 1;
            }
            while states[hi + 1] == BACKGROUND {
                hi += 1;
            }
            states[lo..=hi].fill(REACHED);
            for neighbour in [lo - px, lo + px, lo - plane, lo + plane] {
                let mut in_run = false;
                for (i, &state) in states[neighbour..=neighbour + hi - lo].iter().enumerate() {
                    let background = state == BACKGROUND;
                    if background && !in_run {
                        seeds.push(neighbour + i);
                    }
                    in_run = background;
                }
            }
        }
    }

    /// Foreground and the background not reached.
    fn mask(&self) -> Array3<bool> {
        let [nz, ny, nx] = self.shape;
        let mut mask = Vec::with_capacity(nz * ny * nx);
        for z in 0..nz {
            for y in 0..ny {
                let start = Self::row_start(self.shape, z, y);
                mask.extend(self.states[start..start + nx].iter().map(|&state| state != REACHED));
            }
        }
        Array3::from_shape_vec(self.shape, mask).expect("one value per voxel")
    }
}

/// The slice of an array that a bounding box selects.
pub fn box_slice(bbox: &BoundingBox) -> SliceInfo<[SliceInfoElem; 3], Ix3, Ix3> {
    s![bbox[0][0]..bbox[0][1], bbox[1][0]..bbox[1][1], bbox[2][0]..bbox[2][1]]
}

/// The shape of a bounding box.
pub fn box_shape(bbox: &BoundingBox) -> [usize; 3] {
    bbox.map(|[lo, hi]| hi - lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(image: &Array3<f32>) -> BoundingBox {
        let (nz, ny, nx) = image.dim();
        [[0, nz], [0, ny], [0, nx]]
    }

    #[test]
    fn box_spans_nonzero_voxels_of_all_channels() {
        let mut a = Array3::<f32>::zeros((5, 6, 7));
        let mut b = Array3::<f32>::zeros((5, 6, 7));
        a[[1, 2, 3]] = 1.0;
        b[[3, 4, 1]] = -2.0;
        let bbox = nonzero_bounding_box(&[a.view(), b.view()]);
        assert_eq!(bbox, [[1, 4], [2, 5], [1, 4]]);
        assert_eq!(box_shape(&bbox), [3, 3, 3]);
    }

    #[test]
    fn empty_image_keeps_whole_extent() {
        let a = Array3::<f32>::zeros((2, 3, 4));
        assert_eq!(nonzero_bounding_box(&[a.view()]), [[0, 2], [0, 3], [0, 4]]);
    }

    #[test]
    fn fills_enclosed_holes_only() {
        // A hollow cube (shell of ones) encloses a 1-voxel hole; a notch open to the border stays empty.
        let mut image = Array3::<f32>::zeros((5, 5, 5));
        image.slice_mut(s![1..4, 1..4, 1..4]).fill(1.0);
        image[[2, 2, 2]] = 0.0;
        image[[0, 0, 0]] = 0.0;
        let mut with_notch = image.clone();
        with_notch[[1, 2, 2]] = 0.0; // opens the hole towards z = 0, which is background
        let mask = nonzero_mask(&[image.view()], &whole(&image));
        assert!(mask[[2, 2, 2]], "enclosed hole must be filled");
        assert_eq!(mask.iter().filter(|&&m| m).count(), 27);
        let mask = nonzero_mask(&[with_notch.view()], &whole(&with_notch));
        assert!(!mask[[2, 2, 2]] && !mask[[1, 2, 2]], "a hole open to the outside stays background");
        assert_eq!(mask.iter().filter(|&&m| m).count(), 25);
    }

    #[test]
    fn diagonal_gaps_do_not_connect_background() {
        // 6-connectivity: background touching the outside only through an edge is still a hole.
        let mut image = Array3::<f32>::ones((3, 4, 4));
        image[[1, 1, 1]] = 0.0;
        image[[1, 2, 2]] = 0.0;
        image[[0, 0, 0]] = 0.0;
        let mask = nonzero_mask(&[image.view()], &whole(&image));
        assert!(mask[[1, 1, 1]] && mask[[1, 2, 2]]);
        assert!(!mask[[0, 0, 0]]);
    }

    #[test]
    fn filling_within_the_bounding_box_is_the_box_of_filling_the_whole_image() {
        // shells with holes, open and enclosed, that touch the box's faces, inside a zero margin
        let mut image = Array3::<f32>::zeros((9, 10, 11));
        image.slice_mut(s![2..7, 1..8, 3..10]).fill(1.0);
        image.slice_mut(s![3..6, 2..7, 4..9]).fill(0.0); // an enclosed cavity
        image[[2, 1, 5]] = 0.0; // a dent open to the box's face at y = 1, apart from the cavity
        image[[3, 4, 3]] = 0.0; // a dent open at x = 3, leading into the cavity
        image[[5, 5, 6]] = 2.0; // an island inside the cavity
        let bbox = nonzero_bounding_box(&[image.view()]);
        assert_eq!(bbox, [[2, 7], [1, 8], [3, 10]]);
        let mut filled_whole = nonzero_mask(&[image.view()], &whole(&image));
        let in_box = nonzero_mask(&[image.view()], &bbox);
        assert_eq!(in_box, filled_whole.slice(box_slice(&bbox)));
        // the cavity is open through the dent at x = 3: nothing is filled; closing it fills the cavity
        assert!(!in_box[[2, 3, 2]]);
        image[[3, 4, 3]] = 1.0;
        filled_whole = nonzero_mask(&[image.view()], &whole(&image));
        let in_box = nonzero_mask(&[image.view()], &bbox);
        assert_eq!(in_box, filled_whole.slice(box_slice(&bbox)));
        assert!(in_box[[2, 3, 2]] && !in_box[[0, 0, 2]]);
    }

    #[test]
    fn random_masks_fill_as_a_plain_relaxation_does() {
        // the reference: background reached from the border, grown one neighbour at a time until stable
        fn relaxation(mask: &Array3<bool>) -> Array3<bool> {
            let dims = mask.shape().to_vec();
            let on_border = |p: [usize; 3]| (0..3).any(|a| p[a] == 0 || p[a] + 1 == dims[a]);
            let mut reached = Array3::from_shape_fn(mask.dim(), |(z, y, x)| !mask[[z, y, x]] && on_border([z, y, x]));
            loop {
                let before = reached.clone();
                for ((z, y, x), &m) in mask.indexed_iter() {
                    let p = [z, y, x];
                    let touches = (0..3).any(|a| {
                        let mut q = p;
                        (p[a] > 0 && {
                            q[a] = p[a] - 1;
                            before[q]
                        }) || (p[a] + 1 < dims[a] && {
                            q[a] = p[a] + 1;
                            before[q]
                        })
                    });
                    if !m && touches {
                        reached[p] = true;
                    }
                }
                if reached == before {
                    return reached.mapv(|r| !r);
                }
            }
        }
        let (mut state, mut with_holes) = (12345u64, 0);
        for (case, shape) in [(7, 8, 9), (1, 6, 5), (10, 3, 12), (6, 6, 6)].into_iter().enumerate() {
            for density in [0.5, 0.65, 0.8] {
                let mask = Array3::from_shape_fn(shape, |_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((state >> 33) as f64 / (1u64 << 31) as f64) < density
                });
                let image = mask.mapv(|m| f32::from(u8::from(m)));
                let filled = nonzero_mask(&[image.view()], &whole(&image));
                assert_eq!(filled, relaxation(&mask), "case {case}, density {density}");
                with_holes += usize::from(filled != mask);
            }
        }
        assert!(with_holes >= 4, "only {with_holes} masks had holes to fill");
    }
}
