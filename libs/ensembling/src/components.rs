//! Postprocessing by connected components
//! (`nnunetv2/postprocessing/remove_connected_components.py: remove_all_but_largest_component_from_segmentation`):
//! keep only the largest 26-connected component of a class (or of all foreground), the voxels of the others becoming
//! background.

use ndarray::Array3;
use nntools_io::{Error, Result, read_label_map, split_image_ending, write_label_map};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One postprocessing step: keep the largest component of the voxels labelled with any of `labels`
/// (all foreground labels for nnU-Net's "whole foreground" step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub keep_largest_component_of: Vec<i64>,
}

impl Step {
    pub fn apply(&self, labels: &mut Array3<u16>) {
        let mask = labels.mapv(|l| self.keep_largest_component_of.contains(&i64::from(l)));
        let kept = keep_largest_component(&mask);
        ndarray::Zip::from(labels).and(&mask).and(&kept).for_each(|l, &inside, &keep| {
            if inside && !keep {
                *l = 0;
            }
        });
    }
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// The largest 26-connected component(s) of `mask` (all of them when several tie, as nnU-Net keeps).
pub fn keep_largest_component(mask: &Array3<bool>) -> Array3<bool> {
    let shape = mask.shape().to_vec();
    let (ny, nx) = (shape[1], shape[2]);
    let flat = mask.as_standard_layout();
    let flat = flat.as_slice().expect("standard layout");
    let mut parent: Vec<usize> = (0..flat.len()).collect();
    // the 13 neighbours visited before a voxel in raster order
    let offsets: Vec<[i64; 3]> = (-1..=1)
        .flat_map(|z| (-1..=1).flat_map(move |y| (-1..=1).map(move |x| [z, y, x])))
        .filter(|&[z, y, x]| z < 0 || (z == 0 && (y < 0 || (y == 0 && x < 0))))
        .collect();
    for index in (0..flat.len()).filter(|&i| flat[i]) {
        let at = [(index / (ny * nx)) as i64, ((index / nx) % ny) as i64, (index % nx) as i64];
        for offset in &offsets {
            let n = [at[0] + offset[0], at[1] + offset[1], at[2] + offset[2]];
            if (0..3).any(|a| n[a] < 0 || n[a] >= shape[a] as i64) {
                continue;
            }
            let neighbour = (n[0] as usize * ny + n[1] as usize) * nx + n[2] as usize;
            if flat[neighbour] {
                let (a, b) = (find(&mut parent, index), find(&mut parent, neighbour));
                if a != b {
                    parent[a.max(b)] = a.min(b);
                }
            }
        }
    }
    let mut sizes = vec![0usize; flat.len()];
    let roots: Vec<usize> = (0..flat.len()).map(|i| if flat[i] { find(&mut parent, i) } else { usize::MAX }).collect();
    for &r in roots.iter().filter(|&&r| r != usize::MAX) {
        sizes[r] += 1;
    }
    let largest = sizes.iter().copied().max().unwrap_or(0);
    Array3::from_shape_vec(mask.raw_dim(), roots.iter().map(|&r| r != usize::MAX && sizes[r] == largest).collect())
        .expect("same size")
}

/// Applies `steps` to every label map of `input` (in any image format: nn-infer writes each prediction
/// in its input's format) and writes the results to `output` in the same format.
pub fn postprocess_folder(input: &Path, output: &Path, steps: &[Step]) -> Result<usize> {
    let mut names: Vec<String> = std::fs::read_dir(input)
        .map_err(|e| Error::io(input, &e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| split_image_ending(n).is_some() && !n.starts_with('.'))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(Error::bad_input(input, "no label maps (CASE.nii.gz, CASE.mha, CASE.png, ...)"));
    }
    nntools_io::create_output_folder(output)?;
    // what a killed run left half-written
    nntools_io::remove_stale_temporaries(output)?;
    names.par_iter().try_for_each(|name| {
        let path = input.join(name);
        let image = read_label_map(&path)?;
        let mut labels = image.data.mapv(|l| u16::try_from(l).unwrap_or(0));
        if image.data.iter().any(|&l| l < 0) {
            return Err(Error::bad_input(&path, "negative labels"));
        }
        for step in steps {
            step.apply(&mut labels);
        }
        write_label_map(&output.join(name), labels.view(), &image.geometry, &image.stored)
    })?;
    Ok(names.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonal_neighbours_connect_and_ties_keep_all() {
        let mut mask = Array3::from_elem((3, 4, 4), false);
        // a diagonal chain of 3 (26-connected) and a separate pair
        mask[[0, 0, 0]] = true;
        mask[[1, 1, 1]] = true;
        mask[[2, 2, 2]] = true;
        mask[[0, 3, 3]] = true;
        mask[[0, 2, 3]] = true;
        let kept = keep_largest_component(&mask);
        assert_eq!(kept.iter().filter(|&&k| k).count(), 3);
        assert!(kept[[2, 2, 2]] && !kept[[0, 3, 3]]);
        mask[[0, 3, 2]] = true;
        let tie = keep_largest_component(&mask);
        assert_eq!(tie.iter().filter(|&&k| k).count(), 6, "two components of 3 both stay");
    }

    #[test]
    fn a_step_clears_only_its_own_class() {
        let mut labels = Array3::<u16>::zeros((1, 5, 5));
        labels[[0, 0, 0]] = 1;
        labels[[0, 3, 3]] = 1;
        labels[[0, 3, 4]] = 1;
        labels[[0, 0, 4]] = 2;
        Step { keep_largest_component_of: vec![1] }.apply(&mut labels);
        assert_eq!(labels[[0, 0, 0]], 0);
        assert_eq!((labels[[0, 3, 3]], labels[[0, 3, 4]], labels[[0, 0, 4]]), (1, 1, 2));
    }
}
