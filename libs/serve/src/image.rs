//! What a request's image bytes are, found from their first bytes alone: the format (the `format=` query
//! option, or sniffed from the magic bytes) and the number of voxels the header claims, so that a request
//! is refused before any file is written or any voxel buffer allocated. Decoding itself is left to the
//! hardened readers of `nntools_io`, which the model's prediction reads the files with.

use nntools_io::{Claim, claimed_voxels};
use std::path::Path;

/// The single-file formats a request may carry, with the file ending each is saved under (which
/// chooses the reader, as for nn-infer's inputs).
pub const FORMATS: [(&str, &str); 7] = [
    ("nii", ".nii"),
    ("nii.gz", ".nii.gz"),
    ("mha", ".mha"),
    ("nrrd", ".nrrd"),
    ("png", ".png"),
    ("bmp", ".bmp"),
    ("tif", ".tif"),
];

/// The file ending of a `format=` value.
pub fn ending_of(format: &str) -> Result<&'static str, String> {
    let known = || FORMATS.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ");
    match format {
        "mhd" | "nhdr" => {
            Err(format!("format={format}: multi-file formats are refused (send a single-file .mha or .nrrd)"))
        }
        _ => FORMATS
            .iter()
            .find(|(name, _)| *name == format)
            .map(|(_, ending)| *ending)
            .ok_or_else(|| format!("format={format}: not one of {}", known())),
    }
}

/// The ending of an image told by its first bytes: gzip (a `.nii.gz`), a NIfTI-1 or -2 header size, the
/// NRRD magic, a MetaImage's first key, the PNG, BMP and TIFF signatures.
pub fn sniff(bytes: &[u8]) -> Result<&'static str, String> {
    let header_size = |at: &[u8]| {
        let le = at.get(..4).map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")));
        let be = at.get(..4).map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")));
        [le, be].into_iter().flatten().any(|size| size == 348 || size == 540)
    };
    let text_start = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).trim_start().to_owned();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        Ok(".nii.gz")
    } else if header_size(bytes) {
        Ok(".nii")
    } else if bytes.starts_with(b"NRRD") {
        Ok(".nrrd")
    } else if ["ObjectType", "NDims"].iter().any(|key| text_start.starts_with(key)) {
        Ok(".mha")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Ok(".png")
    } else if bytes.starts_with(b"BM") {
        Ok(".bmp")
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        Ok(".tif")
    } else {
        Err("not an image nn-serve reads (NIfTI, .nii.gz, .mha, .nrrd, PNG, BMP, TIFF); give format= if it is one"
            .into())
    }
}

/// Checks what the header of an image of ending `ending` claims ([`nntools_io::claimed_voxels`]), before
/// anything is decoded: a MetaImage or NRRD whose voxels live in another file (`.mhd`, `.nhdr` style) is
/// refused, since a file name in a request must never reach the server's disk, and the voxels the header
/// claims must not exceed `max_voxels` (`Err((too_large, problem))`). A header that cannot be read is left
/// to the reader, which refuses it with its own message.
pub fn check_header(bytes: &[u8], ending: &str, max_voxels: u64) -> Result<(), (bool, String)> {
    match claimed_voxels(Path::new(ending), bytes) {
        Ok(Claim::DetachedData(_)) => {
            Err((false, "the header names a separate data file: multi-file images (.mhd, .nhdr) are refused".into()))
        }
        Ok(Claim::Voxels(voxels)) if voxels > max_voxels => {
            Err((true, format!("the image has {voxels} voxels, more than this server's limit of {max_voxels}")))
        }
        Ok(Claim::Voxels(_)) | Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nifti_header(dims: &[i16]) -> Vec<u8> {
        let mut header = vec![0u8; 352];
        header[..4].copy_from_slice(&348i32.to_le_bytes());
        header[40..42].copy_from_slice(&(dims.len() as i16).to_le_bytes());
        for (i, d) in dims.iter().enumerate() {
            header[42 + 2 * i..44 + 2 * i].copy_from_slice(&d.to_le_bytes());
        }
        header
    }

    #[test]
    fn formats_are_sniffed_from_their_magic_bytes() {
        assert_eq!(sniff(&nifti_header(&[2, 3, 4])), Ok(".nii"));
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Ok(".nii.gz"));
        assert_eq!(sniff(b"NRRD0004\n"), Ok(".nrrd"));
        assert_eq!(sniff(b"ObjectType = Image\n"), Ok(".mha"));
        assert_eq!(sniff(b"NDims = 3\n"), Ok(".mha"));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Ok(".png"));
        assert_eq!(sniff(b"BM...."), Ok(".bmp"));
        assert_eq!(sniff(b"II*\0...."), Ok(".tif"));
        assert!(sniff(b"<html>").is_err());
        assert!(sniff(b"").is_err());
        assert_eq!(ending_of("nii.gz"), Ok(".nii.gz"));
        assert!(ending_of("mhd").unwrap_err().contains("multi-file"));
        assert!(ending_of("jpg").is_err());
    }

    #[test]
    fn headers_claiming_too_many_voxels_or_a_data_file_are_refused() {
        let mut header = nifti_header(&[2, 3, 4]);
        header[70..72].copy_from_slice(&2i16.to_le_bytes()); // uint8
        header[108..112].copy_from_slice(&352f32.to_le_bytes()); // vox_offset
        header[344..348].copy_from_slice(b"n+1\0");
        assert!(check_header(&header, ".nii", 24).is_ok());
        let (too_large, problem) = check_header(&header, ".nii", 23).unwrap_err();
        assert!(too_large && problem.contains("the image has 24 voxels, more than this server's limit of 23"));
        let nrrd = b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 1 1 1\ndata file: /etc/shadow\n\n";
        let (too_large, problem) = check_header(nrrd, ".nrrd", 100).unwrap_err();
        assert!(!too_large && problem.contains("multi-file"), "{problem}");
        // a header the reader refuses (no magic) is left to it
        assert!(check_header(&nifti_header(&[2, 3, 4]), ".nii", 23).is_ok());
    }
}
