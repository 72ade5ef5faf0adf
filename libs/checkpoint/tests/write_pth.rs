//! write_pth against what Python writes: the pickle bytes of CPython's pickler and torch.save's records
//! (fixtures/write/generate_pickles.py).

use nntools_checkpoint::{Dtype, Tensor, Value, read_pth, write_pth};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

fn fixture() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/write/pickles.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hex(text: &serde_json::Value) -> Vec<u8> {
    let text = text.as_str().unwrap();
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

fn str(s: &str) -> Value {
    Value::Str(s.into())
}

fn ints(values: &[i64]) -> Vec<Value> {
    values.iter().map(|&v| Value::Int(v)).collect()
}

/// generate_pickles.py's `plain`.
fn plain() -> Value {
    let big = [0, 255, 256, 65535, 65536, -1, -129, (1 << 31) - 1, -(1 << 31), 1 << 31, -(1 << 31) - 1, 1 << 62];
    let mut big = ints(&big);
    big.extend([Value::Int(i64::MIN), Value::Int(i64::MAX)]);
    Value::Dict(vec![
        (str("a"), Value::List(vec![Value::Int(1), Value::Float(2.5), Value::None, Value::Bool(true)])),
        (str("b"), Value::Tuple(vec![Value::Int(1)])),
        (str("ints"), Value::List(big)),
        (str("floats"), Value::List([-0.0, 1e-300, 3e-05, f64::INFINITY].into_iter().map(Value::Float).collect())),
        (str("text"), str("çà ü 日本")),
        (
            str("tuples"),
            Value::List(vec![
                Value::Tuple(vec![]),
                Value::Tuple(ints(&[1, 2])),
                Value::Tuple(ints(&[1, 2, 3])),
                Value::Tuple(ints(&[1, 2, 3, 4])),
                Value::Bool(false),
            ]),
        ),
        (
            str("nested"),
            Value::Dict(vec![
                (
                    Value::Int(7),
                    Value::Dict(vec![(str("x"), Value::List(vec![Value::List(vec![]), Value::Dict(vec![])]))]),
                ),
                (str("o"), Value::OrderedDict(vec![(str("k"), Value::Int(1)), (str("l"), str("m"))])),
            ]),
        ),
        (str("bytes"), Value::Bytes(b"\x00\xff ok".to_vec())),
        (str("cuda"), Value::Device("cuda:1".into())),
        (str("cpu"), Value::Device("cpu".into())),
        (str("long"), Value::List((0..2001).map(|i| Value::Int(i % 7)).collect())),
        (str("wide"), Value::Dict((0..1000).map(|i| (Value::Int(i), Value::List(vec![]))).collect())),
        (str("ordered"), Value::OrderedDict((0..1001).map(|i| (Value::Int(i), Value::Int(0))).collect())),
    ])
}

/// generate_pickles.py's `tensors`: the first two entries one tensor, as a state_dict's alias keys.
fn tensors() -> Value {
    let weight = Arc::new(Tensor::from_f32(vec![2, 3], &[0.0, 0.25, 0.5, 0.75, 1.0, 1.25]));
    let scalar = Tensor { dtype: Dtype::F64, shape: vec![], data: 1.5f64.to_le_bytes().to_vec() };
    let steps = Tensor {
        dtype: Dtype::I64,
        shape: vec![1, 1, 2],
        data: [-3i64, 4].iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    Value::OrderedDict(vec![
        (str("conv.weight"), Value::Tensor(Arc::clone(&weight))),
        (str("all_modules.0.weight"), Value::Tensor(weight)),
        (str("scalar"), Value::Tensor(Arc::new(scalar))),
        (str("steps"), Value::Tensor(Arc::new(steps))),
    ])
}

/// The records of the zip at `path` in order, with their contents and where each one's data starts.
fn records(path: &Path) -> Vec<(String, Vec<u8>, u64)> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut file = zip.by_index(i).unwrap();
            assert_eq!(file.compression(), zip::CompressionMethod::Stored, "{}", file.name());
            let mut data = Vec::new();
            file.read_to_end(&mut data).unwrap();
            (file.name().to_owned(), data, file.data_start())
        })
        .collect()
}

#[test]
fn plain_values_pickle_as_python_pickles_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.pth");
    write_pth(&path, &plain()).unwrap();
    let records = records(&path);
    assert_eq!(records[0].0, "plain/data.pkl", "the archive is named after the file");
    assert_eq!(records[0].1, hex(&fixture()["plain"]), "pickle.dumps(plain, protocol=2)");
}

#[test]
fn tensors_write_as_torch_save_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.pth");
    write_pth(&path, &tensors()).unwrap();
    let records = records(&path);
    let expected = &fixture()["tensors"];
    let names: Vec<&str> = records.iter().map(|(name, ..)| name.as_str()).collect();
    let expected_names: Vec<&str> =
        expected["records"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert_eq!(names, expected_names, "one storage for the two keys of one tensor");
    assert_eq!(records[0].1, hex(&expected["data.pkl"]), "torch.save's data.pkl");
    let contents = |name: &str| records.iter().find(|(n, ..)| n == name).map(|(_, data, _)| data.clone()).unwrap();
    assert_eq!(contents("archive/.format_version"), b"1");
    assert_eq!(contents("archive/.storage_alignment"), b"64");
    assert_eq!(contents("archive/byteorder"), b"little");
    assert_eq!(contents("archive/version"), b"3\n");
    assert_eq!(contents("archive/.data/serialization_id").len(), 40);
    assert_eq!(contents("archive/data/0"), [0.0f32, 0.25, 0.5, 0.75, 1.0, 1.25].map(f32::to_le_bytes).concat());
    assert_eq!(contents("archive/data/1"), 1.5f64.to_le_bytes());
    assert_eq!(contents("archive/data/2"), [(-3i64).to_le_bytes(), 4i64.to_le_bytes()].concat());
    for (name, _, start) in &records {
        assert_eq!(start % 64, 0, "{name} starts at {start}, not 64-byte aligned as torch aligns records");
    }
}

#[test]
fn what_is_written_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    for value in [plain(), tensors()] {
        let path = dir.path().join("checkpoint_final.pth");
        write_pth(&path, &value).unwrap();
        assert_eq!(read_pth(&path).unwrap(), value);
    }
}
