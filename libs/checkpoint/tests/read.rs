//! Reading `.pth` files: nnU-Net's reference checkpoint against its safetensors twin, the fixtures of
//! tests/fixtures/read (written by torch.save; generate.py there), and hostile or corrupt archives.

use nntools_checkpoint::{Dtype, NnunetCheckpoint, Tensor, Value, read_pth, read_pth_bytes};
use nntools_tests::shared;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/read").join(name)
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

/// The elements as float64 (every value in the fixtures is exact in float64).
fn elements(tensor: &Tensor) -> Vec<f64> {
    let size = tensor.dtype.size();
    tensor
        .data
        .chunks_exact(size)
        .map(|b| match tensor.dtype {
            Dtype::F64 => f64::from_le_bytes(b.try_into().unwrap()),
            Dtype::I64 => i64::from_le_bytes(b.try_into().unwrap()) as f64,
            _ => f64::from(Tensor { dtype: tensor.dtype, shape: vec![1], data: b.to_vec() }.to_f32().unwrap()[0]),
        })
        .collect()
}

fn dtype_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F64 => "float64",
        Dtype::F32 => "float32",
        Dtype::F16 => "float16",
        Dtype::BF16 => "bfloat16",
        Dtype::I64 => "int64",
        other => panic!("no fixture holds {other:?}"),
    }
}

/// Each tensor of `file` has the dtype, shape and values expected.json records under `fixture_name`.
fn assert_tensors_as_expected(file: &str, fixture_name: &str) {
    let value = read_pth(&fixture(file)).unwrap();
    let expected = expected();
    let expected = expected[fixture_name].as_object().unwrap();
    assert_eq!(value.entries().unwrap().len(), expected.len(), "{file}");
    for (key, want) in expected {
        let Some(Value::Tensor(tensor)) = value.get(key) else { panic!("{file}: {key} is not a tensor") };
        assert_eq!(dtype_name(tensor.dtype), want["dtype"], "{file} {key}");
        let shape: Vec<usize> =
            want["shape"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap() as usize).collect();
        assert_eq!(tensor.shape, shape, "{file} {key}");
        let values: Vec<f64> = want["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(elements(tensor), values, "{file} {key}");
    }
}

#[test]
fn half_double_and_integer_tensors_read_as_torch_saved_them() {
    assert_tensors_as_expected("dtypes.pth", "dtypes");
}

#[test]
fn transposed_sliced_and_storage_sharing_views_read_contiguous() {
    assert_tensors_as_expected("views.pth", "views");
    // torch.save wrote `transposed`, `row`, `column` and `strided` as views of one storage
    let value = read_pth(&fixture("views.pth")).unwrap();
    let Some(Value::Tensor(transposed)) = value.get("transposed") else { panic!() };
    assert_eq!(transposed.shape, vec![6, 4]);
    assert_eq!(elements(transposed)[..5], [0.0, 6.0, 12.0, 18.0, 1.0]);
}

#[test]
fn big_endian_archives_read_as_the_little_endian_ones() {
    assert_tensors_as_expected("dtypes_big_endian.pth", "dtypes");
    assert_tensors_as_expected("views_big_endian.pth", "views");
    assert_eq!(read_pth(&fixture("dtypes_big_endian.pth")), read_pth(&fixture("dtypes.pth")));
}

#[test]
fn numpy_scalars_of_numpy_1_and_2_and_pickle_protocol_4_read_as_numbers() {
    let expected = expected();
    for file in ["numpy_scalars.pth", "numpy1_scalars.pth", "numpy_scalars_protocol4.pth"] {
        let value = read_pth(&fixture(file)).unwrap();
        for (key, want) in expected["numpy_scalars"].as_object().unwrap() {
            let got = match value.get(key).unwrap() {
                Value::List(items) => serde_json::json!(items.iter().map(|v| v.as_f64().unwrap()).collect::<Vec<_>>()),
                Value::Float(f) => serde_json::json!(f),
                Value::Int(i) => serde_json::json!(i),
                Value::Bool(b) => serde_json::json!(b),
                other => panic!("{file} {key}: {other:?}"),
            };
            assert_eq!(&got, want, "{file} {key}");
        }
        assert_eq!(value.get("device"), Some(&Value::Device("cuda:0".into())), "{file}");
        assert_eq!(value.get("cpu"), Some(&Value::Device("cpu".into())), "{file}");
        assert_eq!(value.get("tuple"), Some(&Value::Tuple(vec![Value::Int(0), Value::Int(1), Value::Int(2)])));
        let nested = Value::List(vec![
            Value::None,
            Value::Bool(true),
            Value::Str("text".into()),
            Value::Float(2.5),
            Value::Int(1 << 40),
        ]);
        assert_eq!(value.get("nested").and_then(|n| n.get("a")), Some(&nested), "{file}");
    }
}

/// The one-line error reading `file` gives, which names it.
fn refusal(file: &str) -> String {
    let error = read_pth(&fixture(file)).unwrap_err();
    assert_eq!(error.exit_code(), 2, "{file}: {}", error.message);
    assert!(!error.message.contains('\n'), "{file}: {}", error.message);
    assert!(error.message.contains(file), "{file}: {}", error.message);
    error.message
}

#[test]
fn pickles_naming_os_system_are_refused_and_nothing_runs() {
    // generate.py's hostile pickles would `touch` this file
    let marker = Path::new("/tmp/nntools-checkpoint-hostile-pickle-ran");
    let _ = std::fs::remove_file(marker);
    for (file, global) in [("os_system.pth", "`os.system`"), ("posix_system.pth", "`posix.system`")] {
        let error = refusal(file);
        assert!(error.contains(global) && error.contains("refused"), "{error}");
        assert!(!marker.exists(), "{file} ran its command");
    }
}

#[test]
fn corrupt_archives_are_refused_in_one_line() {
    for (file, problem) in [
        (
            "shape_beyond_storage.pth",
            "a tensor of shape [3, 2] (stride [2, 1], offset 0) reaches element 5 of a storage of 4",
        ),
        ("offset_beyond_storage.pth", "reaches element 5 of a storage of 4"),
        ("negative_stride.pth", "a negative tensor stride (-1)"),
        ("missing_storage.pth", "storage missing_storage/data/0 is missing"),
        ("storage_size_mismatch.pth", "storage_size_mismatch/data/0: 12 bytes where the pickle's storage needs 16"),
        ("unknown_opcode.pth", "unsupported pickle opcode 0xff at byte 2"),
    ] {
        let error = refusal(file);
        assert!(error.contains(problem), "{file}: {error}");
    }
}

#[test]
fn truncated_and_foreign_files_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("dtypes.pth")).unwrap();
    let path = dir.path().join("cut.pth");
    for cut in [0, 10, bytes.len() / 2, bytes.len() - 30, bytes.len() - 1] {
        let error = read_pth_bytes(&path, &bytes[..cut]).unwrap_err();
        assert!(error.message.starts_with(&format!("{}: ", path.display())) && !error.message.contains('\n'));
        assert_eq!(error.exit_code(), 2);
    }
    let error = read_pth_bytes(&path, b"just some text, no zip").unwrap_err().message;
    assert!(error.contains("cut.pth: not a torch.save zip archive"), "{error}");
    // torch.save before torch 1.6 (`_legacy_save`): PROTO 2, LONG1 magic number, ...
    let legacy = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e];
    let error = read_pth_bytes(&path, &legacy).unwrap_err().message;
    assert!(error.contains("before torch 1.6"), "{error}");
    let error = read_pth(&dir.path().join("absent.pth")).unwrap_err().message;
    assert!(error.contains("absent.pth"), "{error}");
    let error = read_pth(Path::new("/dev/zero")).unwrap_err().message;
    assert_eq!(error, "/dev/zero: not a regular file");
}

#[test]
fn a_pth_without_nnunet_keys_is_not_a_checkpoint() {
    let error = NnunetCheckpoint::read(&fixture("dtypes.pth")).unwrap_err();
    assert_eq!(
        error.message,
        format!("{}: not an nnU-Net checkpoint: no `network_weights` key", fixture("dtypes.pth").display())
    );
}

#[test]
fn nesting_cycles_and_shared_references_are_bounded() {
    let path = Path::new("case.pth");
    for (regression, problem) in [
        ("deep-nesting", "containers nested deeper than 100"),
        ("list-holding-itself", "containers nested deeper than 100"),
        ("shared-references-doubling", "the pickle refers to its objects more than a checkpoint does"),
    ] {
        let pickle = std::fs::read(nntools_tests::workspace().join("fuzz/regressions/pth").join(regression)).unwrap();
        let error = read_pth_bytes(path, &nntools_tests::fuzzing::pth_archive(&pickle)).unwrap_err().message;
        assert_eq!(error, format!("case.pth: {problem}"), "{regression}");
    }
}

/// nnU-Net's state_dict alias keys and the canonical key each repeats.
fn canonical_key(key: &str) -> String {
    let key = key.strip_prefix("decoder.encoder.").map_or(key.to_string(), |rest| format!("encoder.{rest}"));
    key.replace(".all_modules.0.", ".conv.").replace(".all_modules.1.", ".norm.")
}

#[test]
fn the_reference_checkpoint_equals_its_safetensors_bit_for_bit() {
    let Some(shared) = shared() else { return };
    let pth = shared.join(
        "reference/infer/nnunet_results/Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth",
    );
    let checkpoint = NnunetCheckpoint::read(&pth).unwrap();
    let safetensors_bytes =
        std::fs::read(shared.join("reference/infer/model/fold_0/checkpoint_final.safetensors")).unwrap();
    let safetensors = safetensors::SafeTensors::deserialize(&safetensors_bytes).unwrap();

    let mut canonical = 0;
    for (key, tensor) in &checkpoint.network_weights {
        let view = safetensors.tensor(&canonical_key(key)).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{key}");
        assert_eq!((tensor.dtype, tensor.shape.as_slice()), (Dtype::F32, view.shape()), "{key}");
        assert!(tensor.data == view.data(), "{key} differs from the safetensors tensor");
        canonical += usize::from(canonical_key(key) == *key);
    }
    assert_eq!(canonical, safetensors.len(), "every safetensors tensor is in network_weights");
    assert_eq!(checkpoint.network_weights.len(), 188, "68 canonical keys and 120 aliases");
    assert_eq!(checkpoint.network_weights[0].0, "encoder.stages.0.0.convs.0.conv.weight", "file order");

    assert_eq!(checkpoint.trainer_name, "nnUNetTrainer");
    assert_eq!(checkpoint.configuration, "3d_fullres");
    assert_eq!(checkpoint.inference_allowed_mirroring_axes, vec![0, 1, 2]);
    assert_eq!(checkpoint.current_epoch, 5);
    let value = &checkpoint.value;
    assert_eq!(value.get("_best_ema"), Some(&Value::Float(0.5)));
    let init_args = value.get("init_args").unwrap();
    assert_eq!(init_args.get("device"), Some(&Value::Device("cuda:0".into())));
    assert_eq!(
        init_args.get("plans").and_then(|p| p.get("dataset_name")),
        Some(&Value::Str("Dataset004_Hippocampus".into()))
    );
    let logging = value.get("logging").unwrap().entries().unwrap();
    assert_eq!(logging.len(), 8);
    for (name, list) in logging {
        let items = list.items().unwrap_or_else(|| panic!("{name:?} is not a list"));
        assert_eq!(items.len(), 5, "{name:?}: one entry per epoch");
        let floats = |items: &[Value]| items.iter().all(|item| matches!(item, Value::Float(_)));
        let all_floats = floats(items) || items.iter().all(|item| item.items().is_some_and(floats));
        assert!(all_floats, "{name:?}: {items:?}");
    }
    let ema = value.get("logging").and_then(|l| l.get("ema_fg_dice")).and_then(Value::items).unwrap();
    assert_eq!(ema.iter().map(|v| v.as_f64().unwrap()).collect::<Vec<_>>(), [0.3, 0.35, 0.4, 0.45, 0.5]);
}
