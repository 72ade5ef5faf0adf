//! `NibabelIOWithReorient`'s reorientation of NIfTI images to the closest canonical (RAS) orientation
//! (`nnunetv2/imageio/nibabel_reader_writer.py: NibabelIOWithReorient.read_images`, with nibabel's
//! `io_orientation` and `as_reoriented`), and its undoing for label maps written like the original
//! (`NibabelIOWithReorient.write_seg`).

use crate::geometry::{qform, sform_columns};
use crate::image::{Image, Stored};
use crate::{Error, Geometry, NiftiHeader, Result};
use ndarray::{Array3, ArrayView3, Axis};
use std::path::Path;

/// How an array (nnU-Net axis order) was reoriented: axis `p` of the reoriented array is axis `order[p]`
/// of the file's array, reversed where `flip[p]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reorientation {
    pub order: [usize; 3],
    pub flip: [bool; 3],
}

impl Reorientation {
    fn apply<T: Clone>(&self, data: ArrayView3<T>) -> Array3<T> {
        let mut view = data.permuted_axes(self.order);
        for axis in (0..3).filter(|&p| self.flip[p]) {
            view.invert_axis(Axis(axis));
        }
        view.as_standard_layout().into_owned()
    }

    /// A reoriented array back in the file's orientation (`write_seg`'s `as_reoriented(from_canonical)`).
    pub fn undo<T: Clone>(&self, data: ArrayView3<T>) -> Array3<T> {
        let mut view = data;
        for axis in (0..3).filter(|&p| self.flip[p]) {
            view.invert_axis(Axis(axis));
        }
        let mut inverse = [0; 3];
        for (p, &axis) in self.order.iter().enumerate() {
            inverse[axis] = p;
        }
        view.permuted_axes(inverse).as_standard_layout().into_owned()
    }
}

/// The affine nibabel gives a NIfTI image (`Nifti1Header.get_best_affine`): the sform when its code is
/// set, else the qform, else the pixdim-based base affine; as columns (array axes i, j, k) and
/// translation, in RAS.
fn nibabel_affine(header: &NiftiHeader) -> ([[f64; 3]; 3], [f64; 3]) {
    let zooms = [1, 2, 3].map(|i| f64::from(header.pixdim[i]));
    if header.sform_code != 0 {
        let (translation, columns) = sform_columns(header);
        (columns, translation)
    } else if header.qform_code != 0 {
        let (translation, axes) = qform(header);
        (std::array::from_fn(|a| axes[a].map(|v| v * zooms[a])), translation)
    } else {
        // `get_base_affine`: x flipped, the array's centre at the world origin
        let signed = [-zooms[0], zooms[1], zooms[2]];
        let columns = std::array::from_fn(|a| std::array::from_fn(|row| if row == a { signed[a] } else { 0.0 }));
        let translation = std::array::from_fn(|a| -(f64::from(header.dim[a + 1]) - 1.0) / 2.0 * signed[a]);
        (columns, translation)
    }
}

/// nibabel's `io_orientation`: for each array axis (i, j, k), the RAS world axis it runs along most and
/// whether it runs against it. nibabel first replaces the normalised affine by its closest orthogonal
/// matrix (an SVD); the affines NIfTI files carry are orthogonal already, so the normalised columns are
/// used as they are. Axes are assigned greedily as nibabel does: the columns with the largest entry
/// first, each to the largest remaining world axis.
fn io_orientation(columns: &[[f64; 3]; 3]) -> std::result::Result<[(usize, bool); 3], String> {
    let mut r = [[0.0; 3]; 3]; // r[row][axis], as nibabel's R
    for (axis, column) in columns.iter().enumerate() {
        let norm = column.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return Err(format!("the affine's column {axis} has no length or direction: no orientation"));
        }
        for row in 0..3 {
            r[row][axis] = column[row] / norm;
        }
    }
    let strongest = |axis: usize| (0..3).map(|row| r[row][axis] * r[row][axis]).fold(0.0, f64::max);
    let mut axes = [0, 1, 2];
    axes.sort_by(|&a, &b| strongest(b).total_cmp(&strongest(a)));
    let mut orientation = [(0, false); 3];
    for axis in axes {
        let mut world = 0;
        for row in 1..3 {
            if r[row][axis].abs() > r[world][axis].abs() {
                world = row;
            }
        }
        if r[world][axis] == 0.0 {
            return Err(format!("array axis {axis} runs along no free world axis"));
        }
        orientation[axis] = (world, r[world][axis] < 0.0);
        r[world] = [0.0; 3];
    }
    Ok(orientation)
}

/// The image reoriented to RAS as `NibabelIOWithReorient.read_images` does: the array permuted and
/// flipped so its axes run along S, A, R (nnU-Net's order; nibabel's R, A, S transposed), and spacing
/// from the reoriented affine's column lengths in single precision, as nibabel's header stores them
/// (`reoriented_image.header.get_zooms()[::-1]`). Origin and direction, which nnU-Net's class does not
/// keep, are those of the reoriented affine in SimpleITK's convention (LPS). An image already closest to
/// RAS is returned unchanged, as `as_reoriented` returns it. [`Stored::reorientation`] keeps what
/// undoing it for an output takes.
pub(crate) fn reoriented_to_ras(path: &Path, image: Image<f32>) -> Result<Image<f32>> {
    let header = image.stored.nifti_header.as_ref().expect("NIfTI images carry their header");
    let (columns, mut translation) = nibabel_affine(header);
    let orientation = io_orientation(&columns).map_err(|problem| Error::bad_input(path, problem))?;
    // world axis j (R, A, S) is nibabel's array axis source[j]; nnU-Net's axis p is nibabel's axis 2 - p
    let source: [usize; 3] =
        std::array::from_fn(|world| orientation.iter().position(|&(w, _)| w == world).expect("a permutation"));
    let reorientation = Reorientation {
        order: std::array::from_fn(|p| 2 - source[2 - p]),
        flip: std::array::from_fn(|p| orientation[source[2 - p]].1),
    };
    if reorientation == (Reorientation { order: [0, 1, 2], flip: [false; 3] }) {
        return Ok(image);
    }
    let mut new_columns = [[0.0; 3]; 3];
    for (world, &axis) in source.iter().enumerate() {
        let flipped = orientation[axis].1;
        let sign = if flipped { -1.0 } else { 1.0 };
        new_columns[world] = columns[axis].map(|v| v * sign);
        if flipped {
            let last = f64::from(header.dim[axis + 1]) - 1.0;
            translation.iter_mut().zip(columns[axis]).for_each(|(t, v)| *t += v * last);
        }
    }
    let lengths = new_columns.map(|c| c.iter().map(|v| v * v).sum::<f64>().sqrt());
    let lps = |row: usize, v: f64| if row < 2 { -v } else { v };
    let geometry = Geometry {
        spacing: [2, 1, 0].map(|j| f64::from(lengths[j] as f32)),
        origin: std::array::from_fn(|row| lps(row, translation[row])),
        direction: std::array::from_fn(|i| lps(i / 3, new_columns[i % 3][i / 3] / lengths[i % 3])),
    };
    Ok(Image {
        data: reorientation.apply(image.data.view()),
        geometry,
        stored: Stored { reorientation: Some(reorientation), ..image.stored },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PixelType, nifti::new_header};

    fn image_with(header: NiftiHeader) -> Image<f32> {
        let data = Array3::from_shape_fn((3, 4, 5), |(z, y, x)| (z * 100 + y * 10 + x) as f32);
        Image {
            data,
            geometry: Geometry::from_header(&header).unwrap(),
            stored: Stored { nifti_header: Some(header), ..Stored::new(3, PixelType::I16) },
        }
    }

    #[test]
    fn permutes_and_flips_to_ras_and_undoes_it() {
        // array axes i, j, k run along L (x 1.5), P (y 0.5) and S (z 2): LPS, as ITK writes
        let geometry =
            Geometry { spacing: [2.0, 0.5, 1.5], origin: [1.0, 2.0, 3.0], direction: crate::geometry::IDENTITY };
        let mut header = new_header(&geometry, [3, 4, 5]);
        let image = image_with(header.clone());
        let reoriented = reoriented_to_ras(Path::new("x.nii"), image.clone()).unwrap();
        let reorientation = reoriented.stored.reorientation.unwrap();
        assert_eq!(reorientation, Reorientation { order: [0, 1, 2], flip: [false, true, true] });
        assert_eq!(reoriented.data[[0, 0, 0]], image.data[[0, 3, 4]]);
        assert_eq!(reoriented.geometry.spacing, [2.0, 0.5, 1.5]);
        // the first voxel is now the one at the far x and y ends (LPS origin 1 + 4 * 1.5 ... negated in RAS)
        assert_eq!(reoriented.geometry.origin, [1.0 + 6.0, 2.0 + 1.5, 3.0]);
        assert_eq!(reoriented.geometry.direction, [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(reorientation.undo(reoriented.data.view()), image.data);

        // a permutation: i along S, j along R, k along A (sform only)
        header.sform_code = 2;
        header.qform_code = 0;
        header.srow_x = [0.0, 1.5, 0.0, 0.0];
        header.srow_y = [0.0, 0.0, 2.0, 0.0];
        header.srow_z = [0.5, 0.0, 0.0, 0.0];
        let reoriented = reoriented_to_ras(Path::new("x.nii"), image_with(header.clone())).unwrap();
        let reorientation = reoriented.stored.reorientation.unwrap();
        // nnU-Net's axes S, A, R are nibabel's i, k, j, i.e. our axes 2, 0, 1
        assert_eq!(reorientation, Reorientation { order: [2, 0, 1], flip: [false; 3] });
        assert_eq!(reoriented.geometry.spacing, [0.5, 2.0, 1.5]);
        assert_eq!(reoriented.data.shape(), [5, 3, 4]);
        assert_eq!(reorientation.undo(reoriented.data.view()), image_with(header).data);
    }

    #[test]
    fn ras_images_are_unchanged_and_degenerate_affines_refused() {
        let geometry = Geometry {
            spacing: [2.0, 0.5, 1.5],
            origin: [1.0, 2.0, 3.0],
            direction: [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
        };
        let image = image_with(new_header(&geometry, [3, 4, 5]));
        assert_eq!(reoriented_to_ras(Path::new("x.nii"), image.clone()).unwrap(), image);
        // neither sform nor qform: nibabel's base affine flips x only
        let mut header = new_header(&geometry, [3, 4, 5]);
        (header.sform_code, header.qform_code) = (0, 0);
        let reoriented = reoriented_to_ras(Path::new("x.nii"), image_with(header.clone())).unwrap();
        assert_eq!(reoriented.stored.reorientation.unwrap().flip, [false, false, true]);
        (header.sform_code, header.qform_code) = (1, 1);
        header.srow_y = [0.0; 4];
        let error = reoriented_to_ras(Path::new("x.nii"), image_with(header)).unwrap_err();
        assert!(error.message.ends_with("the affine's column 1 has no length or direction: no orientation"), "{error}");
    }
}
