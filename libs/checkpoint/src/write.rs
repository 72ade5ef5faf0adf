//! Writing a `torch.save` zip archive (torch/serialization.py: `_save`), atomically.

use crate::Value;
use nntools_io::{Error, Result};
use std::io::Write;
use std::path::Path;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// torch/serialization.py: `_get_storage_alignment`, the default: caffe2/serialize/inline_container.cc:
/// `PyTorchStreamWriter` starts every record's data at a multiple of it (padding the local header's extra
/// field), so that `torch.load(mmap=True)` can map storages in place.
const STORAGE_ALIGNMENT: u16 = 64;

/// Writes `value` as `torch.save` would, so that `torch.load(path, weights_only=False)` returns it.
pub fn write_pth(path: &Path, value: &Value) -> Result<()> {
    // inline_container.cc: `PyTorchStreamWriter` names the archive's top folder after the file, extension dropped
    let archive = path.file_stem().map_or_else(|| "archive".into(), |stem| stem.to_string_lossy().into_owned());
    let pickled = crate::pickle::pickle(value);
    let mut records: Vec<(String, &[u8])> = vec![
        ("data.pkl".into(), &pickled.bytes),
        (".format_version".into(), b"1"),
        (".storage_alignment".into(), b"64"),
        ("byteorder".into(), b"little"),
    ];
    records.extend(pickled.storages.iter().enumerate().map(|(key, tensor)| (format!("data/{key}"), &tensor.data[..])));
    // inline_container.cc: `PyTorchStreamWriter::writeEndOfFile` adds the format version and an id of the records
    records.push(("version".into(), b"3\n"));
    let serialization_id = serialization_id(&records);
    records.push((".data/serialization_id".into(), serialization_id.as_bytes()));

    nntools_io::write_atomically(path, |tmp| {
        let file = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, &e))?;
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .with_alignment(STORAGE_ALIGNMENT);
        let mut zip = ZipWriter::new(std::io::BufWriter::new(file));
        let failed = |e: &dyn std::fmt::Display| Error::runtime(tmp, format!("cannot write the checkpoint: {e}"));
        for (name, data) in &records {
            let options = options.large_file(data.len() as u64 >= u64::from(u32::MAX));
            zip.start_file(format!("{archive}/{name}"), options).map_err(|e| failed(&e))?;
            zip.write_all(data).map_err(|e| failed(&e))?;
        }
        zip.finish().map_err(|e| failed(&e))?.flush().map_err(|e| Error::io(tmp, &e))
    })
}

/// inline_container.cc: `PyTorchStreamWriter::writeEndOfFile` writes 40 digits: a hash of the record names
/// and one of their contents, 20 digits each. Nothing reads it back; this one is FNV-1a of the same.
fn serialization_id(records: &[(String, &[u8])]) -> String {
    let fnv = |bytes: &mut dyn Iterator<Item = u8>| {
        bytes.fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
    };
    let names = fnv(&mut records.iter().flat_map(|(name, _)| name.bytes()));
    let contents = fnv(&mut records.iter().flat_map(|(_, data)| data.iter().copied()));
    format!("{names:020}{contents:020}")
}
