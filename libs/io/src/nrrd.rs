//! NRRD (`.nrrd`, `.nhdr` + detached data), read and written as ITK's NrrdImageIO does (ITK 5.4, teem).
//!
//! The `nrrd` crates on crates.io are unmaintained or partial; the header is `field: value` text ending
//! at a blank line, and only the raw and gzip encodings matter here, so a small parser is simpler.

use crate::raster::{
    MAX_HEADER_BYTES, PixelType, RasterImage, check_geometry, claimed_values, data_bytes, encode_voxels, exact_prefix,
    identity, inflate, join, scalar_file_sizes, to_array, write_header_and_data,
};
use crate::{Claim, Error, Result};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

/// teem's type names and synonyms (nrrd/enumsNrrd.c: `_nrrdTypeStrEqv`).
fn pixel_type(name: &str) -> Option<PixelType> {
    Some(match name {
        "signed char" | "int8" | "int8_t" => PixelType::I8,
        "uchar" | "unsigned char" | "uint8" | "uint8_t" => PixelType::U8,
        "short" | "short int" | "signed short" | "signed short int" | "int16" | "int16_t" => PixelType::I16,
        "ushort" | "unsigned short" | "unsigned short int" | "uint16" | "uint16_t" => PixelType::U16,
        "int" | "signed int" | "int32" | "int32_t" => PixelType::I32,
        "uint" | "unsigned int" | "uint32" | "uint32_t" => PixelType::U32,
        "longlong"
        | "long long"
        | "long long int"
        | "signed long long"
        | "signed long long int"
        | "int64"
        | "int64_t" => PixelType::I64,
        "ulonglong" | "unsigned long long" | "unsigned long long int" | "uint64" | "uint64_t" => PixelType::U64,
        "float" => PixelType::F32,
        "double" => PixelType::F64,
        _ => return None,
    })
}

fn type_name(pixel: PixelType) -> &'static str {
    match pixel {
        PixelType::I8 => "signed char",
        PixelType::U8 => "unsigned char",
        PixelType::I16 => "short",
        PixelType::U16 => "unsigned short",
        PixelType::I32 => "int",
        PixelType::U32 => "unsigned int",
        PixelType::I64 => "long long",
        PixelType::U64 => "unsigned long long",
        PixelType::F32 => "float",
        PixelType::F64 => "double",
    }
}

/// Kinds teem counts as domain (spatial) axes (nrrd/axis.c: `nrrdDomainAxesGet`); any other kind
/// (list, vector, RGB-color, ...) is a range axis, which ITK reads as the pixel's components.
fn is_domain_kind(kind: &str) -> bool {
    matches!(kind, "domain" | "space" | "time" | "???" | "none")
}

/// Sign changes that take a space's coordinates to ITK's LPS (NrrdImageIO::ReadImageInformation).
fn to_lps(path: &Path, space: Option<&str>) -> Result<[f64; 3]> {
    Ok(match space {
        None | Some("left-posterior-superior" | "LPS") => [1.0, 1.0, 1.0],
        Some("right-anterior-superior" | "RAS") => [-1.0, -1.0, 1.0],
        Some("left-anterior-superior" | "LAS") => [1.0, -1.0, 1.0],
        Some(other) => return Err(Error::bad_input(path, format!("unsupported NRRD space {other:.60}"))),
    })
}

struct Header {
    fields: HashMap<String, String>,
    /// `key:=value` pairs, in file order (3D Slicer's segment names and label values).
    key_values: Vec<(String, String)>,
    data_offset: usize,
}

/// Reads the magic line and `field: value` lines up to the blank line (or the end of a detached header).
fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    if !bytes.starts_with(b"NRRD000") {
        return Err(Error::bad_input(path, "not a NRRD file (no NRRD000X magic)"));
    }
    let mut fields = HashMap::new();
    let mut key_values = Vec::new();
    let mut offset = bytes.iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| i + 1);
    loop {
        if offset > MAX_HEADER_BYTES {
            return Err(Error::bad_input(path, format!("NRRD header longer than {MAX_HEADER_BYTES} bytes")));
        }
        if offset >= bytes.len() {
            return Ok(Header { fields, key_values, data_offset: bytes.len() });
        }
        let end = bytes[offset..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| offset + i + 1);
        let line = String::from_utf8_lossy(&bytes[offset..end]);
        let line = line.trim_end_matches(['\n', '\r']);
        offset = end;
        if line.is_empty() {
            return Ok(Header { fields, key_values, data_offset: offset });
        }
        if line.starts_with('#') {
            continue;
        }
        if let Some((key, value)) = line.split_once(":=") {
            key_values.push((key.to_owned(), value.to_owned())); // they carry no geometry
            continue;
        }
        let Some((key, value)) = line.split_once(": ") else {
            return Err(Error::bad_input(path, format!("not a NRRD header line: {line:.60}")));
        };
        fields.insert(key.trim().to_string(), value.trim().to_string());
    }
}

impl Header {
    fn get(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|k| self.fields.get(*k)).map(String::as_str)
    }

    fn integer(&self, path: &Path, key: &str) -> Result<Option<i64>> {
        self.get(&[key])
            .map(|v| v.parse().map_err(|_| Error::bad_input(path, format!("{key} is not an integer: {v:.60}"))))
            .transpose()
    }
}

/// A `(a,b,c)` vector or `none`, one per axis, as in `space directions` and `space origin`.
fn vectors(path: &Path, key: &str, value: &str) -> Result<Vec<Option<Vec<f64>>>> {
    let bad = || Error::bad_input(path, format!("{key} is not a list of vectors: {value:.60}"));
    let mut rest = value.trim();
    let mut out = Vec::new();
    while !rest.is_empty() {
        if let Some(tail) = rest.strip_prefix("none") {
            out.push(None);
            rest = tail.trim_start();
        } else if let Some(tail) = rest.strip_prefix('(') {
            let (inside, tail) = tail.split_once(')').ok_or_else(bad)?;
            let numbers = inside.split(',').map(|v| v.trim().parse()).collect::<Result<Vec<f64>, _>>();
            out.push(Some(numbers.map_err(|_| bad())?));
            rest = tail.trim_start();
        } else {
            return Err(bad());
        }
    }
    Ok(out)
}

/// The `key:=value` pairs of a NRRD header (3D Slicer keeps segment names and label values there),
/// reading only the header.
pub fn nrrd_key_values(path: &Path) -> Result<Vec<(String, String)>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, &e))?;
    let mut bytes = Vec::new();
    file.take(MAX_HEADER_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, &e))?;
    Ok(parse_header(path, &bytes)?.key_values)
}

/// The data file a header names (`data file`, teem's `datafile`), which a `.nhdr` has.
fn data_file(header: &Header) -> Option<&str> {
    header.get(&["data file", "datafile"])
}

/// A header's `dimension`, voxel type and `sizes`.
fn shape(path: &Path, header: &Header) -> Result<(usize, PixelType, Vec<usize>)> {
    let dimension = match header.integer(path, "dimension")? {
        Some(n @ 1..=16) => n as usize,
        Some(n) => return Err(Error::bad_input(path, format!("dimension {n} is not supported"))),
        None => return Err(Error::bad_input(path, "no dimension field in the NRRD header")),
    };
    let type_field = header.get(&["type"]).unwrap_or("");
    let pixel = pixel_type(type_field)
        .ok_or_else(|| Error::bad_input(path, format!("unsupported NRRD type {type_field:.40}")))?;
    let sizes: Vec<usize> = header
        .get(&["sizes"])
        .ok_or_else(|| Error::bad_input(path, "no sizes field in the NRRD header"))?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| Error::bad_input(path, "sizes are not non-negative integers"))?;
    if sizes.len() != dimension {
        return Err(Error::bad_input(path, format!("{} sizes for dimension {dimension}", sizes.len())));
    }
    Ok((dimension, pixel, sizes))
}

/// What a `.nrrd` or `.nhdr` file's header claims, from the file's first bytes: the data file it names,
/// else the values [`read_nrrd`] sizes the data by.
pub(crate) fn claim(path: &Path, leading_bytes: &[u8]) -> Result<Claim> {
    let header = parse_header(path, leading_bytes)?;
    if let Some(name) = data_file(&header) {
        return Ok(Claim::DetachedData(name.to_owned()));
    }
    let (_, pixel, sizes) = shape(path, &header)?;
    claimed_values(path, &sizes, pixel).map(Claim::Voxels)
}

/// Reads a `.nrrd` or `.nhdr` file (raw or gzip data, attached or in one detached file).
pub fn read_nrrd(path: &Path) -> Result<RasterImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
    let header = parse_header(path, &bytes)?;
    let (dimension, pixel, sizes) = shape(path, &header)?;
    let kinds: Vec<&str> = match header.get(&["kinds"]) {
        Some(k) => {
            let kinds: Vec<&str> = k.split_whitespace().collect();
            if kinds.len() != dimension {
                return Err(Error::bad_input(path, format!("{} kinds for dimension {dimension}", kinds.len())));
            }
            kinds
        }
        None => vec!["domain"; dimension],
    };
    let range_axes: Vec<usize> = (0..dimension).filter(|&a| !is_domain_kind(kinds[a])).collect();
    if range_axes.len() > 1 {
        return Err(Error::bad_input(path, "more than one non-spatial axis is not supported"));
    }
    let channel_file_axis = range_axes.first().copied();
    let domain: Vec<usize> = (0..dimension).filter(|a| Some(*a) != channel_file_axis).collect();
    let n = domain.len();
    if !(2..=3).contains(&n) {
        return Err(Error::bad_input(path, format!("{n} spatial axes are not supported (2 or 3)")));
    }
    let (spacing, origin, direction) = geometry(path, &header, dimension, &domain)?;
    check_geometry(path, &spacing, &origin, &direction)?;

    let encoding = header.get(&["encoding"]).unwrap_or("");
    let gzip = match encoding {
        "raw" => false,
        "gzip" | "gz" => true,
        _ => return Err(Error::bad_input(path, format!("unsupported NRRD encoding {encoding:.40} (raw or gzip)"))),
    };
    let big_endian = match header.get(&["endian"]) {
        Some("big") => true,
        Some("little") | None => false,
        Some(other) => return Err(Error::bad_input(path, format!("unknown endian {other:.20}"))),
    };
    let expected = data_bytes(path, &sizes, pixel)?;
    let detached;
    let mut stored: &[u8] = match data_file(&header) {
        None => &bytes[header.data_offset..],
        Some(name) if name.starts_with("LIST") || name.contains(' ') => {
            return Err(Error::bad_input(path, format!("data file {name:.60} (file lists) is not supported")));
        }
        Some(name) => {
            let data_path = path.parent().unwrap_or(Path::new("")).join(name);
            detached = crate::raster::read_data_file(&data_path).map_err(|e| {
                Error::bad_input(path, format!("cannot read its data file {}: {e}", data_path.display()))
            })?;
            &detached
        }
    };
    for _ in 0..header.integer(path, "line skip")?.unwrap_or(0).max(0) {
        let end = stored
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| Error::bad_input(path, "truncated data: fewer lines than its line skip"))?;
        stored = &stored[end + 1..];
    }
    let byte_skip = header.integer(path, "byte skip")?.unwrap_or(0);
    let raw = if gzip {
        let skip = usize::try_from(byte_skip)
            .map_err(|_| Error::bad_input(path, "byte skip -1 is only valid with raw encoding"))?;
        std::borrow::Cow::Owned(inflate(path, stored, skip, expected)?)
    } else {
        let stored = if byte_skip == -1 {
            &stored[stored.len().saturating_sub(expected)..]
        } else {
            let skip = usize::try_from(byte_skip).unwrap_or(usize::MAX);
            stored.get(skip..).ok_or_else(|| Error::bad_input(path, "truncated data: shorter than its byte skip"))?
        };
        std::borrow::Cow::Borrowed(exact_prefix(path, stored, expected)?)
    };
    let data = to_array(&raw, pixel, big_endian, &sizes, channel_file_axis);
    Ok(RasterImage { data, pixel, channel_axis: channel_file_axis.is_some(), spacing, origin, direction })
}

type Geometry = (Vec<f64>, Vec<f64>, Vec<f64>);

/// Spacing, origin and direction of the domain axes, in LPS, as NrrdImageIO derives them: spacing is
/// each space direction's length and the direction its unit vector; without space directions,
/// `spacings` and the identity at the zero origin.
fn geometry(path: &Path, header: &Header, dimension: usize, domain: &[usize]) -> Result<Geometry> {
    let n = domain.len();
    let Some(directions) = header.get(&["space directions"]) else {
        if header.get(&["axis mins", "axismins"]).is_some() {
            return Err(Error::bad_input(path, "axis mins without space directions are not supported"));
        }
        // Per-axis spacing only: ITK reads teem's unknown (NaN) spacing as 1 and a negative one as its
        // length with the axis direction flipped.
        let spacings: Vec<f64> = match header.get(&["spacings"]) {
            Some(s) => {
                let all: Vec<f64> = s.split_whitespace().map(|v| v.parse().unwrap_or(f64::NAN)).collect();
                if all.len() != dimension {
                    return Err(Error::bad_input(path, "spacings do not match the dimension"));
                }
                domain.iter().map(|&a| if all[a].is_nan() { 1.0 } else { all[a] }).collect()
            }
            None => vec![1.0; n],
        };
        let mut direction = identity(n);
        for (axis, s) in spacings.iter().enumerate() {
            direction[axis * (n + 1)] = s.signum();
        }
        return Ok((spacings.iter().map(|s| s.abs()).collect(), vec![0.0; n], direction));
    };
    let sign = to_lps(path, header.get(&["space"]))?;
    let space_dimension = match header.get(&["space"]) {
        Some(_) => 3,
        None => header.integer(path, "space dimension")?.unwrap_or(n as i64) as usize,
    };
    if space_dimension != n {
        return Err(Error::bad_input(path, format!("{n} spatial axes in a {space_dimension}-D space")));
    }
    let columns = vectors(path, "space directions", directions)?;
    if columns.len() != dimension {
        return Err(Error::bad_input(path, "space directions do not match the dimension"));
    }
    let mut spacing = Vec::with_capacity(n);
    let mut direction = vec![0.0; n * n];
    for (column, &axis) in domain.iter().enumerate() {
        let Some(vector) = columns[axis].as_ref().filter(|v| v.len() == n) else {
            return Err(Error::bad_input(path, format!("axis {axis} has no {n}-D space direction")));
        };
        let length = vector.iter().map(|v| v * v).sum::<f64>().sqrt();
        spacing.push(length);
        for (row, v) in vector.iter().enumerate() {
            // Times the reciprocal, as ITK normalises: dividing differs from SimpleITK in the last bit.
            direction[row * n + column] = sign[row] * v * (1.0 / length);
        }
    }
    if let Some(axis) = (0..dimension).find(|a| !domain.contains(a) && columns[*a].is_some()) {
        return Err(Error::bad_input(path, format!("non-spatial axis {axis} has a space direction")));
    }
    let origin = match header.get(&["space origin"]) {
        Some(value) => match vectors(path, "space origin", value)?.as_slice() {
            [Some(o)] if o.len() == n => o.iter().zip(sign).map(|(v, s)| v * s).collect(),
            _ => return Err(Error::bad_input(path, format!("space origin is not one {n}-D vector"))),
        },
        None => vec![0.0; n],
    };
    Ok((spacing, origin, direction))
}

/// Writes a single-channel 2-D or 3-D image as a gzip-encoded attached `.nrrd` with the header
/// SimpleITK writes (`sitk.WriteImage(image, path, True)`): LPS space, direction columns scaled by spacing.
pub fn write_nrrd(path: &Path, image: &RasterImage, pixel: PixelType) -> Result<()> {
    let sizes = scalar_file_sizes(path, image)?;
    let n = sizes.len();
    let raw = encode_voxels(path, image, pixel)?;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let data = encoder.write_all(&raw).and_then(|()| encoder.finish()).map_err(|e| Error::runtime(path, e))?;
    let vector = |v: &[f64]| format!("({})", join(v, ","));
    let directions: Vec<String> = (0..n)
        .map(|axis| {
            vector(&(0..n).map(|row| image.direction[row * n + axis] * image.spacing[axis]).collect::<Vec<_>>())
        })
        .collect();
    let space = if n == 3 { "space: left-posterior-superior\n".to_string() } else { format!("space dimension: {n}\n") };
    let text = format!(
        "NRRD0004\n# Complete NRRD file format specification at:\n# http://teem.sourceforge.net/nrrd/format.html\n\
         type: {}\ndimension: {n}\n{space}sizes: {}\nspace directions: {}\nkinds: {}\nendian: little\n\
         encoding: gzip\nspace origin: {}\n\n",
        type_name(pixel),
        sizes.iter().map(usize::to_string).collect::<Vec<_>>().join(" "),
        directions.join(" "),
        vec!["domain"; n].join(" "),
        vector(&image.origin),
    );
    write_header_and_data(path, text, &data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    const SPACE_3D: &str = "dimension: 3\nsizes: 2 2 1\nspace: left-posterior-superior\n\
                            space directions: (1,0,0) (0,1,0) (0,0,1)\n";

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzEncoder::new(bytes, flate2::Compression::default()).read_to_end(&mut out).unwrap();
        out
    }

    /// `NRRD0004\n` + `fields` + blank line + `data`, read back.
    fn read(fields: &str, data: &[u8]) -> Result<RasterImage> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("case.nrrd");
        std::fs::write(&path, [format!("NRRD0004\n{fields}\n").as_bytes(), data].concat()).unwrap();
        read_nrrd(&path)
    }

    fn values(image: &RasterImage) -> Vec<f32> {
        image.data.iter().copied().collect()
    }

    fn problem(fields: &str, data: &[u8]) -> String {
        crate::raster::refusal(read(fields, data))
    }

    #[test]
    fn key_values_are_read_from_the_header_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("case.seg.nrrd");
        let header =
            format!("NRRD0004\n# Slicer\ntype: uchar\n{SPACE_3D}Segment0_Name:=left lung\nSegment0_LabelValue:=1\n\n");
        // the data after the header is not read: garbage there does not matter
        std::fs::write(&path, [header.as_bytes(), b"Segment1_Name:=not a key\n"].concat()).unwrap();
        assert_eq!(
            nrrd_key_values(&path).unwrap(),
            [("Segment0_Name".to_owned(), "left lung".to_owned()), ("Segment0_LabelValue".to_owned(), "1".to_owned())]
        );
    }

    #[test]
    fn write_then_read_keeps_voxels_and_geometry() {
        let dir = tempfile::tempdir().unwrap();
        let data = ArrayD::from_shape_fn(IxDyn(&[3, 4, 5]), |i| ((i[0] * 7 + i[1] * 3 + i[2]) % 5) as f32);
        let image = RasterImage {
            spacing: vec![0.5, 1.25, 3.0],
            origin: vec![-4.5, 2.0, 100.125],
            direction: vec![0.6, -0.8, 0.0, 0.8, 0.6, 0.0, 0.0, 0.0, -1.0],
            ..RasterImage::new(data)
        };
        for pixel in [PixelType::U8, PixelType::U16, PixelType::F64] {
            let path = dir.path().join(format!("{pixel:?}.nrrd"));
            write_nrrd(&path, &image, pixel).unwrap();
            let back = read_nrrd(&path).unwrap();
            assert_eq!((&back.data, &back.spacing, &back.origin), (&image.data, &image.spacing, &image.origin));
            for (got, want) in back.direction.iter().zip(&image.direction) {
                assert!((got - want).abs() < 1e-15, "{pixel:?}: {:?}", back.direction);
            }
            let text = std::fs::read(&path).unwrap();
            assert!(String::from_utf8_lossy(&text).contains("space directions: (0.3,0.4,0) (-1,0.75,0) (0,0,-3)"));
        }
        let flat = RasterImage::new(ArrayD::from_shape_fn(IxDyn(&[2, 3]), |i| (i[0] + 2 * i[1]) as f32));
        let path = dir.path().join("flat.nrrd");
        write_nrrd(&path, &flat, PixelType::I16).unwrap();
        assert_eq!(read_nrrd(&path).unwrap(), RasterImage { pixel: PixelType::I16, ..flat });
    }

    #[test]
    fn type_synonyms_encodings_and_endianness() {
        let le = |v: &[i16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        for name in ["short", "short int", "signed short", "signed short int", "int16", "int16_t"] {
            let image = read(&format!("type: {name}\n{SPACE_3D}encoding: raw\n"), &le(&[1, -2, 3, -4])).unwrap();
            assert_eq!(values(&image), [1.0, -2.0, 3.0, -4.0], "{name}");
        }
        let cases: [(&str, Vec<u8>); 7] = [
            ("uchar", vec![1, 2, 3, 255]),
            ("signed char", vec![1, 2, 3, 0xff]),
            ("unsigned short", [1u16, 2, 3, 255].iter().flat_map(|v| v.to_le_bytes()).collect()),
            ("int", [1i32, 2, 3, -1].iter().flat_map(|v| v.to_le_bytes()).collect()),
            ("uint32_t", [1u32, 2, 3, 255].iter().flat_map(|v| v.to_le_bytes()).collect()),
            ("float", [1f32, 2.0, 3.0, -1.0].iter().flat_map(|v| v.to_le_bytes()).collect()),
            ("double", [1f64, 2.0, 3.0, -1.0].iter().flat_map(|v| v.to_le_bytes()).collect()),
        ];
        for (name, bytes) in cases {
            let last = if name.contains("unsigned") || name.starts_with('u') { 255.0 } else { -1.0 };
            let raw = read(&format!("type: {name}\n{SPACE_3D}encoding: raw\n"), &bytes).unwrap();
            assert_eq!(values(&raw), [1.0, 2.0, 3.0, last], "{name} raw");
            let gz = read(&format!("type: {name}\n{SPACE_3D}encoding: gzip\n"), &gzip(&bytes)).unwrap();
            assert_eq!(values(&gz), [1.0, 2.0, 3.0, last], "{name} gzip");
        }
        let big: Vec<u8> = [1i16, -2, 3, -4].iter().flat_map(|v| v.to_be_bytes()).collect();
        let image = read(&format!("type: short\n{SPACE_3D}encoding: gz\nendian: big\n"), &gzip(&big)).unwrap();
        assert_eq!(values(&image), [1.0, -2.0, 3.0, -4.0]);
    }

    #[test]
    fn spaces_skips_and_plain_spacings() {
        let header = |space: &str| {
            format!(
                "type: uchar\ndimension: 3\nsizes: 2 2 1\nspace: {space}\nspace directions: (0,2,0) (3,0,0) (0,0,4)\n\
                 space origin: (1,2,3)\nencoding: raw\n"
            )
        };
        let ras = read(&header("RAS"), &[0; 4]).unwrap();
        assert_eq!((ras.spacing, ras.origin), (vec![2.0, 3.0, 4.0], vec![-1.0, -2.0, 3.0]));
        assert_eq!(ras.direction, [-0.0, -1.0, 0.0, -1.0, -0.0, 0.0, 0.0, 0.0, 1.0]);
        let las = read(&header("left-anterior-superior"), &[0; 4]).unwrap();
        assert_eq!(
            (las.origin, las.direction),
            (vec![1.0, -2.0, 3.0], vec![0.0, 1.0, 0.0, -1.0, -0.0, 0.0, 0.0, 0.0, 1.0])
        );
        assert!(problem(&header("scanner-xyz"), &[0; 4]).ends_with("unsupported NRRD space scanner-xyz"));

        let plain =
            "type: uchar\ndimension: 2\nsizes: 2 2\nspacings: 0.5 4\nencoding: raw\nline skip: 1\nbyte skip: 2\n";
        let image = read(plain, b"comment\n..\x01\x02\x03\x04").unwrap();
        assert_eq!((values(&image), image.spacing), (vec![1.0, 2.0, 3.0, 4.0], vec![0.5, 4.0]));
        let mins = "type: uchar\ndimension: 2\nsizes: 2 2\naxis mins: 3 4\nencoding: raw\n";
        assert!(problem(mins, &[0; 4]).ends_with("axis mins without space directions are not supported"));
        let at_end = "type: uchar\ndimension: 2\nsizes: 2 2\nencoding: raw\nbyte skip: -1\n";
        assert_eq!(values(&read(at_end, b"xyz\x01\x02\x03\x04").unwrap()), [1.0, 2.0, 3.0, 4.0]);
        let gz_skip = "type: uchar\ndimension: 2\nsizes: 2 2\nencoding: gzip\nbyte skip: 1\n";
        assert_eq!(values(&read(gz_skip, &gzip(b"x\x01\x02\x03\x04")).unwrap()), [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn hostile_headers_are_refused_in_one_line() {
        let fields = |extra: &str| format!("type: uchar\n{SPACE_3D}encoding: raw\n{extra}");
        assert!(
            problem(&fields(""), &[1, 2, 3]).ends_with("truncated data: the header promises 4 bytes, the file holds 3")
        );
        let gz = fields("").replace("raw", "gzip");
        assert!(problem(&gz, &gzip(&[1, 2])).ends_with("the header promises 4 bytes, the compressed stream holds 2"));
        assert!(problem(&gz, b"garbage").contains("corrupt compressed data"));
        let huge = "type: double\ndimension: 3\nsizes: 100000 100000 100000\nencoding: gzip\n";
        assert!(
            problem(huge, &gzip(&[0; 64]))
                .contains("the header promises 8000000000000000 bytes, the compressed stream holds 64")
        );
        let overflow = "type: uchar\ndimension: 4\nsizes: 100000000 100000000 100000000 100000000\nkinds: list domain domain domain\nencoding: raw\n";
        assert!(problem(overflow, &[]).contains("overflow"));
        for encoding in ["bzip2", "ascii", "hex", "zstd"] {
            let message = problem(&fields("").replace("raw", encoding), &[0; 4]);
            assert!(message.ends_with(&format!("unsupported NRRD encoding {encoding} (raw or gzip)")), "{message}");
        }
        assert!(problem(&fields("").replace("uchar", "block"), &[0; 4]).ends_with("unsupported NRRD type block"));
        let missing = fields("data file: absent.raw\n");
        assert!(problem(&missing, &[]).contains("cannot read its data file"));
        let flat = fields("").replace("(0,1,0)", "(0,0,0)");
        assert!(problem(&flat, &[0; 4]).ends_with("spacing 0 is not positive and finite"));
        let nan = fields("").replace("(0,1,0)", "(0,nan,0)");
        assert!(problem(&nan, &[0; 4]).contains("is not positive and finite"));
        assert!(
            problem(&fields("").replace("sizes: 2 2 1", "sizes: 2 2"), &[0; 4]).ends_with("2 sizes for dimension 3")
        );
        assert!(
            problem(&fields("").replace("(0,0,1)", "none"), &[0; 4]).ends_with("axis 2 has no 3-D space direction")
        );
        assert!(
            problem(&fields("").replace("(0,0,1)", "(0,0"), &[0; 4])
                .contains("space directions is not a list of vectors")
        );
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("image.nrrd");
        std::fs::write(&png, b"\x89PNG\r\n\x1a\n").unwrap();
        assert!(read_nrrd(&png).unwrap_err().message.ends_with("not a NRRD file (no NRRD000X magic)"));
        let endless = "# comment\n".repeat(MAX_HEADER_BYTES / 10 + 1);
        assert!(problem(&endless, &[]).contains("NRRD header longer than 1048576 bytes"));
    }
}
