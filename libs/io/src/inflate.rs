//! Decompression of the gzip and zlib data images are stored in (`.nii.gz`, `.gipl.gz`, compressed
//! MetaImage and NRRD), with the bounds on allocation that untrusted files need.
//!
//! The size an image's data inflates to is known from its header before the data is decoded, so the
//! usual case is decoded by libdeflate in one call into a buffer of exactly that size, which on
//! Dataset005's `.nii.gz` files is about a third faster than zlib-rs's streaming inflate. Anything
//! else (several gzip members, trailing data, a corrupt or truncated stream) goes to flate2's
//! streaming decoder, which reads it as before: the fast path never decides what a file holds.

use libdeflater::{DecompressionError, Decompressor};
use std::io::Read;

/// deflate expands at most about 1032-fold, so a small file cannot claim a huge buffer.
pub(crate) const MAX_EXPANSION: usize = 1032;

/// Whether `data` starts with gzip's magic bytes (else it is zlib or uncompressed).
pub(crate) fn is_gzip(data: &[u8]) -> bool {
    data.starts_with(&[0x1f, 0x8b])
}

/// The most bytes `compressed` can inflate to.
pub(crate) fn most_inflated(compressed: &[u8]) -> usize {
    compressed.len().saturating_mul(MAX_EXPANSION)
}

/// The `len` bytes that `compressed` (gzip when it starts with gzip's magic, else zlib) inflates to,
/// decoded in one call, when its first member inflates to exactly `len` bytes; as elements of `E` so that
/// a caller can decode into the buffer it keeps (float32 voxels), the bytes first and any rest of the
/// last element zero. `None` when that cannot be: `len` more than the data could hold, a gzip member
/// whose recorded size (ISIZE, the uncompressed size mod 2^32) is not `len`, a member of another size,
/// or data libdeflate refuses. The recorded size only chooses this path, it sizes nothing: the buffer is
/// `len`, which the caller takes from the file's header and bounds, and libdeflate writes within it.
pub(crate) fn whole_member<E: bytemuck::Pod>(compressed: &[u8], len: usize) -> Option<Vec<E>> {
    if len > most_inflated(compressed) {
        return None;
    }
    let gzip = is_gzip(compressed);
    if gzip {
        let trailer = compressed.len().checked_sub(4).and_then(|at| compressed.get(at..))?;
        if u32::from_le_bytes(trailer.try_into().expect("4 bytes")) != len as u32 {
            return None;
        }
    }
    let mut buffer = vec![E::zeroed(); len.div_ceil(size_of::<E>())];
    let out = &mut bytemuck::cast_slice_mut::<E, u8>(&mut buffer)[..len];
    let mut decompressor = Decompressor::new();
    let inflated = if gzip {
        decompressor.gzip_decompress(compressed, out)
    } else {
        decompressor.zlib_decompress(compressed, out)
    };
    match inflated {
        Ok(n) if n == len => Some(buffer),
        Ok(_) | Err(DecompressionError::BadData | DecompressionError::InsufficientSpace) => None,
    }
}

/// The `len` bytes after the first `skip` of what `compressed` (gzip or zlib, as [`whole_member`] tells
/// them apart) inflates to, as elements of `E` whose first `len` bytes they are. The error is the
/// decoder's for corrupt data; `Ok(Err(n))` says that the data inflates to only `n` bytes past `skip`.
/// The buffer grows only as the data yields bytes past what the file could hold.
pub(crate) fn inflate_range<E: bytemuck::Pod>(
    compressed: &[u8],
    skip: usize,
    len: usize,
) -> std::io::Result<std::result::Result<Vec<E>, usize>> {
    let total = skip.saturating_add(len);
    if let Some(mut data) = whole_member::<E>(compressed, total) {
        bytemuck::cast_slice_mut::<E, u8>(&mut data).copy_within(skip..total, 0);
        data.truncate(len.div_ceil(size_of::<E>()));
        return Ok(Ok(data));
    }
    let mut stream: Box<dyn Read + '_> = if is_gzip(compressed) {
        Box::new(flate2::read::MultiGzDecoder::new(compressed))
    } else {
        Box::new(flate2::read::ZlibDecoder::new(compressed))
    };
    std::io::copy(&mut (&mut stream).take(skip as u64), &mut std::io::sink())?;
    let mut bytes = Vec::with_capacity(len.min(most_inflated(compressed)));
    stream.take(len as u64).read_to_end(&mut bytes)?;
    if bytes.len() < len {
        return Ok(Err(bytes.len()));
    }
    Ok(Ok(bytemuck::allocation::try_cast_vec(bytes).unwrap_or_else(|(_, bytes)| bytemuck::pod_collect_to_vec(&bytes))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn data() -> Vec<u8> {
        (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn decodes_a_member_of_exactly_the_expected_size() {
        let data = data();
        assert_eq!(whole_member::<u8>(&gzip(&data), data.len()), Some(data.clone()));
        assert_eq!(whole_member::<u8>(&zlib(&data), data.len()), Some(data.clone()));
        // as float32 elements: the bytes in order, the buffer as long as they need
        let floats = whole_member::<f32>(&gzip(&data[..9998]), 9998).unwrap();
        assert_eq!(floats.len(), 2500);
        assert_eq!(&bytemuck::cast_slice::<f32, u8>(&floats)[..9998], &data[..9998]);
        assert_eq!(&bytemuck::cast_slice::<f32, u8>(&floats)[9998..], [0, 0]);
    }

    #[test]
    fn a_range_is_the_same_by_either_decoder() {
        let data = data();
        let two = [gzip(&data[..4000]), gzip(&data[4000..])].concat();
        for (compressed, name) in [(gzip(&data), "one gzip member"), (two, "two members"), (zlib(&data), "zlib")] {
            let range = inflate_range::<u8>(&compressed, 300, 9700).unwrap();
            assert_eq!(range, Ok(data[300..].to_vec()), "{name}");
            // trailing data past the range: the streaming decoder stops at the range's end
            let range = inflate_range::<u8>(&compressed, 300, 5000).unwrap();
            assert_eq!(range, Ok(data[300..5300].to_vec()), "{name}");
            let floats = inflate_range::<f32>(&compressed, 4, 9996).unwrap().unwrap();
            assert_eq!(bytemuck::cast_slice::<f32, u8>(&floats), &data[4..], "{name}");
            assert_eq!(inflate_range::<u8>(&compressed, 300, 9701).unwrap(), Err(9700), "{name}");
        }
        let truncated = gzip(&data);
        assert!(inflate_range::<u8>(&truncated[..truncated.len() / 2], 0, 10_000).is_err());
        assert!(inflate_range::<u8>(b"not zlib", 0, 10).is_err());
    }

    #[test]
    fn anything_else_is_left_to_the_streaming_decoder() {
        let data = data();
        let member = gzip(&data);
        // a header that claims more or less than the member holds
        assert_eq!(whole_member::<u8>(&member, data.len() + 1), None);
        assert_eq!(whole_member::<u8>(&member, data.len() - 1), None);
        assert_eq!(whole_member::<u8>(&zlib(&data), data.len() + 1), None);
        assert_eq!(whole_member::<u8>(&zlib(&data), data.len() - 1), None);
        // an ISIZE that lies: it matches the claim, the member holds less (or more)
        for claim in [data.len() + 1, data.len() - 1] {
            let mut lying = member.clone();
            let at = lying.len() - 4;
            lying[at..].copy_from_slice(&(claim as u32).to_le_bytes());
            assert_eq!(whole_member::<u8>(&lying, claim), None, "claim {claim}");
        }
        // an ISIZE that agrees with a claim the file cannot hold allocates nothing: refused first
        let mut huge = member.clone();
        let at = huge.len() - 4;
        let claim = most_inflated(&member) + 1;
        huge[at..].copy_from_slice(&(claim as u32).to_le_bytes());
        assert_eq!(whole_member::<u8>(&huge, claim), None);
        // two members: the first is not the whole
        let two = [gzip(&data[..4000]), gzip(&data[4000..])].concat();
        assert_eq!(whole_member::<u8>(&two, data.len()), None);
        // a corrupt CRC, truncation, garbage, nothing
        let mut bad_crc = member.clone();
        let at = bad_crc.len() - 8;
        bad_crc[at] ^= 1;
        assert_eq!(whole_member::<u8>(&bad_crc, data.len()), None);
        assert_eq!(whole_member::<u8>(&member[..member.len() / 2], data.len()), None);
        assert_eq!(whole_member::<u8>(&[0x1f, 0x8b, 8, 0, 1, 2], 0), None);
        assert_eq!(whole_member::<u8>(&[], 0), None);
    }
}
