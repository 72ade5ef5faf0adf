//! What a request's image bytes are, found from their first bytes alone: the format (the `format=` query
//! option, or sniffed from the magic bytes) and the number of voxels the header claims, so that a request
//! is refused before any file is written or any voxel buffer allocated. Decoding itself is left to the
//! hardened readers of `nntools_io`, which the model's prediction reads the files with.

use flate2::read::GzDecoder;
use std::io::Read;

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

/// Checks what the header of an image of ending `ending` claims, before anything is decoded: a
/// MetaImage or NRRD whose voxels live in another file (`.mhd`, `.nhdr` style) is refused, since a file
/// name in a request must never reach the server's disk, and the voxels the header claims must not
/// exceed `max_voxels` (`Err((too_large, problem))`). A header this cannot read is left to the reader,
/// which refuses it with its own message.
pub fn check_header(bytes: &[u8], ending: &str, max_voxels: u64) -> Result<(), (bool, String)> {
    let voxels = match ending {
        ".nii" => nifti_voxels(bytes),
        ".nii.gz" => {
            // the header only: at most a NIfTI-2 header's 540 bytes are inflated here
            let mut header = Vec::with_capacity(540);
            let _ = GzDecoder::new(bytes).take(540).read_to_end(&mut header);
            nifti_voxels(&header)
        }
        ".mha" | ".nrrd" => {
            let lines = text_header(bytes, ending == ".nrrd");
            let value = |keys: &[&str]| {
                lines.iter().find(|(key, _)| keys.iter().any(|k| key.eq_ignore_ascii_case(k))).map(|(_, v)| v.trim())
            };
            let detached = match ending {
                ".mha" => value(&["ElementDataFile"]).is_some_and(|file| !file.eq_ignore_ascii_case("LOCAL")),
                _ => value(&["data file", "datafile"]).is_some(),
            };
            if detached {
                return Err((
                    false,
                    "the header names a separate data file: multi-file images (.mhd, .nhdr) are refused".into(),
                ));
            }
            value(&["DimSize", "sizes"]).and_then(|sizes| {
                sizes.split_whitespace().map(|s| s.parse::<u64>().ok()).try_fold(1u64, |n, s| n.checked_mul(s?))
            })
        }
        ".png" if bytes.len() >= 24 => {
            let be = |at: usize| u64::from(u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")));
            Some(be(16) * be(20))
        }
        ".bmp" if bytes.len() >= 26 => {
            let le = |at: usize| i32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")).unsigned_abs();
            Some(u64::from(le(18)) * u64::from(le(22)))
        }
        ".tif" => tiff_voxels(bytes, max_voxels),
        _ => None,
    };
    match voxels {
        Some(voxels) if voxels > max_voxels => {
            Err((true, format!("the image has {voxels} voxels, more than this server's limit of {max_voxels}")))
        }
        _ => Ok(()),
    }
}

/// The voxels of a NIfTI-1 or -2 header (`dim[1..=dim[0]]`), in either byte order.
fn nifti_voxels(header: &[u8]) -> Option<u64> {
    let size_le = i32::from_le_bytes(header.get(..4)?.try_into().ok()?);
    let size_be = i32::from_be_bytes(header.get(..4)?.try_into().ok()?);
    let little = size_le == 348 || size_le == 540;
    let (two, at, width) = match if little { size_le } else { size_be } {
        348 => (false, 40, 2),
        540 => (true, 16, 8),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> {
        let b = header.get(at + i * width..at + (i + 1) * width)?;
        Some(match (two, little) {
            (false, true) => i64::from(i16::from_le_bytes(b.try_into().ok()?)),
            (false, false) => i64::from(i16::from_be_bytes(b.try_into().ok()?)),
            (true, true) => i64::from_le_bytes(b.try_into().ok()?),
            (true, false) => i64::from_be_bytes(b.try_into().ok()?),
        })
    };
    let dims = usize::try_from(field(0)?).ok().filter(|d| (1..=7).contains(d))?;
    (1..=dims).try_fold(1u64, |n, i| n.checked_mul(u64::try_from(field(i)?).ok()?))
}

/// The `key: value` (NRRD) or `key = value` (MetaImage) lines of a text header, up to its end (NRRD's
/// blank line, MetaImage's `ElementDataFile` line) or its first 64 KB.
fn text_header(bytes: &[u8], nrrd: bool) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(1 << 16)]);
    let mut lines = Vec::new();
    for line in text.lines().skip(usize::from(nrrd)) {
        if nrrd && line.trim().is_empty() {
            break;
        }
        let pair = if nrrd { line.split_once(':') } else { line.split_once('=') };
        if let Some((key, value)) = pair {
            let (key, value) = (key.trim().to_owned(), value.trim_start_matches('=').to_owned());
            let last = key.eq_ignore_ascii_case("ElementDataFile");
            lines.push((key, value));
            if last {
                break;
            }
        }
    }
    lines
}

/// The voxels of a TIFF's pages (width x height each), counted from the page directories without
/// decoding a strip; stops once past `max_voxels`.
fn tiff_voxels(bytes: &[u8], max_voxels: u64) -> Option<u64> {
    let mut decoder = tiff::decoder::Decoder::new(std::io::Cursor::new(bytes)).ok()?;
    let mut voxels = 0u64;
    loop {
        let (width, height) = decoder.dimensions().ok()?;
        voxels = voxels.saturating_add(u64::from(width) * u64::from(height));
        if voxels > max_voxels || !decoder.more_images() {
            return Some(voxels);
        }
        decoder.next_image().ok()?;
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
    fn voxels_claimed_by_headers_are_bounded() {
        // 2 * 3 * 4 = 24 voxels
        assert_eq!(nifti_voxels(&nifti_header(&[2, 3, 4])), Some(24));
        assert!(check_header(&nifti_header(&[2, 3, 4]), ".nii", 24).is_ok());
        let (too_large, problem) = check_header(&nifti_header(&[2, 3, 4]), ".nii", 23).unwrap_err();
        assert!(too_large && problem.contains("24 voxels"), "{problem}");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &nifti_header(&[1000, 1000, 1000])).unwrap();
        assert!(check_header(&gz.finish().unwrap(), ".nii.gz", 999_999_999).unwrap_err().0);
        let nrrd = b"NRRD0004\ntype: uint8\nsizes: 10 20 30\nencoding: raw\n\n";
        assert!(check_header(nrrd, ".nrrd", 6000).is_ok());
        assert!(check_header(nrrd, ".nrrd", 5999).unwrap_err().0);
        let mha = b"ObjectType = Image\nNDims = 2\nDimSize = 7 9\nElementDataFile = LOCAL\n";
        assert!(check_header(mha, ".mha", 62).unwrap_err().0);
        assert!(check_header(mha, ".mha", 63).is_ok());
    }

    #[test]
    fn detached_data_files_are_refused() {
        let nrrd = b"NRRD0004\ntype: uint8\nsizes: 1 1 1\ndata file: /etc/shadow\n\n";
        let (too_large, problem) = check_header(nrrd, ".nrrd", 100).unwrap_err();
        assert!(!too_large && problem.contains("multi-file"), "{problem}");
        let mha = b"ObjectType = Image\nDimSize = 1 1\nElementDataFile = ../secret.raw\n";
        assert!(!check_header(mha, ".mha", 100).unwrap_err().0);
    }
}
