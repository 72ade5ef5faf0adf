//! The corrupted inputs: each a function that spoils one file of a copied, valid dataset in a known
//! way. NIfTI headers are edited byte by byte (the offsets are NIfTI-1's), voxel contents through
//! nntools-io.

use flate2::{Compression, read::GzDecoder, write::GzEncoder};
use nntools_io::{read_image, read_label_map, write_like};
use std::io::{Read, Write};
use std::path::Path;

const DIM: usize = 40;
const PIXDIM: usize = 76;
const MAGIC: usize = 344;

fn gunzip(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut bytes).unwrap();
    bytes
}

fn gzip(path: &Path, bytes: &[u8]) {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).unwrap();
    std::fs::write(path, encoder.finish().unwrap()).unwrap();
}

/// Rewrites the uncompressed header of a `.nii.gz` with `edit`.
fn edit_header(path: &Path, edit: impl FnOnce(&mut [u8])) {
    let mut bytes = gunzip(path);
    edit(&mut bytes);
    gzip(path, &bytes);
}

fn get_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn set_i16(bytes: &mut [u8], at: usize, value: i16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn dim(bytes: &[u8], axis: usize) -> i16 {
    get_i16(bytes, DIM + 2 * axis)
}

pub fn truncated_gzip(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

pub fn wrong_magic(path: &Path) {
    edit_header(path, |h| h[MAGIC..MAGIC + 4].copy_from_slice(b"xyz\0"));
}

pub fn not_gzip_at_all(path: &Path) {
    std::fs::write(path, "this is not an image\n").unwrap();
}

/// The header says twice as many slices as the file holds.
pub fn more_voxels_than_data(path: &Path) {
    edit_header(path, |h| {
        let slices = dim(h, 3);
        set_i16(h, DIM + 6, slices * 2);
    });
}

/// A 2-D image: dim[0] = 2, the third axis folded into the second.
pub fn two_dimensional(path: &Path) {
    edit_header(path, |h| {
        let (y, z) = (dim(h, 2), dim(h, 3));
        set_i16(h, DIM, 2);
        set_i16(h, DIM + 4, y * z);
        set_i16(h, DIM + 6, 1);
    });
}

/// A 4-D image with two volumes of half the slices (needs an even slice count; sizes are made so).
pub fn four_dimensional(path: &Path) {
    edit_header(path, |h| {
        let z = dim(h, 3);
        assert_eq!(z % 2, 0, "four_dimensional needs an even number of slices");
        set_i16(h, DIM, 4);
        set_i16(h, DIM + 6, z / 2);
        set_i16(h, DIM + 8, 2);
    });
}

fn set_voxel(path: &Path, value: f32) {
    let image = read_image(path).unwrap();
    let mut data = image.data;
    let shape = data.shape().to_vec();
    data[[shape[0] / 2, shape[1] / 2, shape[2] / 2]] = value;
    write_like(path, data.view(), image.stored.nifti_header.as_ref().unwrap()).unwrap();
}

pub fn nan_voxel(path: &Path) {
    set_voxel(path, f32::NAN);
}

pub fn infinite_voxel(path: &Path) {
    set_voxel(path, f32::INFINITY);
}

/// One slice fewer than the images.
pub fn one_slice_short(path: &Path) {
    let label = read_label_map(path).unwrap();
    let data = label.data.slice(ndarray::s![1.., .., ..]).mapv(|v| v as u8);
    let mut header = label.stored.nifti_header.as_ref().unwrap().clone();
    header.dim[3] -= 1;
    write_like(path, data.view(), &header).unwrap();
}

/// pixdim[1] (the spacing along x) 1.5 times the image's.
pub fn other_spacing(path: &Path) {
    edit_header(path, |h| {
        let at = PIXDIM + 4;
        let value = f32::from_le_bytes(h[at..at + 4].try_into().unwrap()) * 1.5;
        h[at..at + 4].copy_from_slice(&value.to_le_bytes());
    });
}

/// The same voxels in a frame rotated by 90 degrees about z.
pub fn other_direction(path: &Path) {
    let label = read_label_map(path).unwrap();
    let mut geometry = label.geometry;
    geometry.direction = [0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
    let shape = label.data.shape();
    let header = nntools_io::new_header(&geometry, [shape[0], shape[1], shape[2]]);
    write_like(path, label.data.mapv(|v| v as u8).view(), &header).unwrap();
}

fn map_labels(path: &Path, f: impl Fn(i32) -> f32) {
    let label = read_label_map(path).unwrap();
    write_like(path, label.data.mapv(f).view(), label.stored.nifti_header.as_ref().unwrap()).unwrap();
}

/// A voxel of label 7, which dataset.json does not declare.
pub fn undeclared_label(path: &Path) {
    let label = read_label_map(path).unwrap();
    let mut data = label.data.mapv(|v| v as u8);
    data[[0, 0, 0]] = 7;
    write_like(path, data.view(), label.stored.nifti_header.as_ref().unwrap()).unwrap();
}

/// Float labels, 1.5 where there was foreground.
pub fn fractional_labels(path: &Path) {
    map_labels(path, |v| if v > 0 { 1.5 } else { 0.0 });
}

/// No foreground at all (nnU-Net accepts such cases).
pub fn empty_labels(path: &Path) {
    map_labels(path, |_| 0.0);
}

pub fn remove(path: &Path) {
    std::fs::remove_file(path).unwrap();
}

pub fn truncated_json(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, &text[..text.len() / 2]).unwrap();
}

/// Removes `key` from the top level of a JSON file.
pub fn without_key(path: &Path, key: &str) {
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove(key).unwrap_or_else(|| panic!("{} has no {key}", path.display()));
    std::fs::write(path, json.to_string()).unwrap();
}

/// Applies `edit` to the JSON document in `path`.
pub fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(path, json.to_string()).unwrap();
}
