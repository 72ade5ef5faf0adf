//! Crop to nonzero, as nnU-Net's `crop_to_nonzero`: the nonzero mask is the OR over channels of
//! `image != 0` with holes filled (`scipy.ndimage.binary_fill_holes`, 6-connected background); the crop
//! is its tight bounding box, or the whole image when the mask is empty.

use ndarray::{Array3, ArrayView3, Zip};

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

/// The nonzero mask over all channels with enclosed holes filled.
pub fn nonzero_mask(channels: &[ArrayView3<f32>]) -> Array3<bool> {
    let mut mask = Array3::from_elem(channels[0].raw_dim(), false);
    for channel in channels {
        Zip::from(&mut mask).and(channel).for_each(|m, &v| *m |= v != 0.0);
    }
    fill_holes(&mut mask);
    mask
}

/// Sets every background voxel that is not 6-connected to the image border to true.
pub fn fill_holes(mask: &mut Array3<bool>) {
    let (nz, ny, nx) = mask.dim();
    let mut outside = Array3::from_elem((nz, ny, nx), false);
    let mut stack: Vec<[usize; 3]> = Vec::new();
    let visit = |p: [usize; 3], outside: &mut Array3<bool>, stack: &mut Vec<[usize; 3]>| {
        if !mask[p] && !outside[p] {
            outside[p] = true;
            stack.push(p);
        }
    };
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let on_border = z == 0 || y == 0 || x == 0 || z + 1 == nz || y + 1 == ny || x + 1 == nx;
                if on_border {
                    visit([z, y, x], &mut outside, &mut stack);
                }
            }
        }
    }
    let dims = [nz, ny, nx];
    while let Some(p) = stack.pop() {
        for axis in 0..3 {
            if p[axis] > 0 {
                let mut q = p;
                q[axis] -= 1;
                visit(q, &mut outside, &mut stack);
            }
            if p[axis] + 1 < dims[axis] {
                let mut q = p;
                q[axis] += 1;
                visit(q, &mut outside, &mut stack);
            }
        }
    }
    Zip::from(mask).and(&outside).for_each(|m, &o| *m = !o);
}

/// The shape of a bounding box.
pub fn box_shape(bbox: &BoundingBox) -> [usize; 3] {
    bbox.map(|[lo, hi]| hi - lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::s;

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
        let mask = nonzero_mask(&[image.view()]);
        assert!(mask[[2, 2, 2]], "enclosed hole must be filled");
        assert_eq!(mask.iter().filter(|&&m| m).count(), 27);
        let mask = nonzero_mask(&[with_notch.view()]);
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
        let mask = nonzero_mask(&[image.view()]);
        assert!(mask[[1, 1, 1]] && mask[[1, 2, 2]]);
        assert!(!mask[[0, 0, 0]]);
    }
}
