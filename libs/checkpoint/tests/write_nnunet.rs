//! nnU-Net's parameter order, state_dict keys and checkpoint dict against what nnU-Net's networks list
//! (fixtures/write/generate_keys.py).

use nntools_checkpoint::{
    NnunetCheckpoint, Tensor, TrainingCheckpoint, TrainingLog, Value, nnunet_parameter_order, read_pth, state_dict_keys,
};
use std::path::Path;
use std::sync::Arc;

const NETWORKS: [&str; 3] = ["hippocampus_3d_fullres", "hippocampus_2d", "resenc_3d"];

fn network(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/write/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn strings(list: &serde_json::Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

/// The canonical name an alias key stands for: `decoder.encoder.X` is `encoder.X`, `P.all_modules.0.p`
/// is `P.conv.p` and `P.all_modules.1.p` is `P.norm.p`.
fn canonical(key: &str) -> String {
    let key = key.strip_prefix("decoder.").filter(|rest| rest.starts_with("encoder.")).unwrap_or(key);
    key.replace(".all_modules.0.", ".conv.").replace(".all_modules.1.", ".norm.")
}

#[test]
fn parameter_order_is_torchs_named_parameters_order() {
    for name in NETWORKS {
        let expected = strings(&network(name)["parameter_names"]);
        let mut names = expected.clone();
        names.sort();
        assert_ne!(names, expected, "{name}: alphabetical order differs from torch's, or the test proves nothing");
        nnunet_parameter_order(&mut names);
        assert_eq!(names, expected, "{name}");
    }
}

#[test]
fn state_dict_keys_are_nnunets_with_aliases_naming_their_parameter() {
    for name in NETWORKS {
        let network = network(name);
        let parameters = strings(&network["parameter_names"]);
        let expected = strings(&network["state_dict_keys"]);
        let keys = state_dict_keys(&parameters);
        let names: Vec<&str> = keys.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(names, expected, "{name}");
        for (key, index) in &keys {
            assert_eq!(canonical(key), parameters[*index], "{name}: {key}");
        }
        // the canonical names are exactly the state_dict keys that are no alias
        let unaliased: Vec<&String> = expected.iter().filter(|key| canonical(key) == **key).collect();
        assert_eq!(unaliased.len(), parameters.len(), "{name}");
    }
}

fn hippocampus_checkpoint(momentum: bool) -> TrainingCheckpoint {
    let network = network("hippocampus_3d_fullres");
    let names = strings(&network["parameter_names"]);
    let shapes = network["parameter_shapes"].as_array().unwrap();
    let tensor = |shape: &serde_json::Value, fill: f32| {
        let shape: Vec<usize> = shape.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        Arc::new(Tensor::from_f32(shape.clone(), &vec![fill; shape.iter().product()]))
    };
    let weights: Vec<(String, Arc<Tensor>)> = names
        .iter()
        .zip(shapes)
        .enumerate()
        .map(|(i, (name, shape))| (name.clone(), tensor(shape, i as f32)))
        .collect();
    TrainingCheckpoint {
        momentum: momentum.then(|| shapes.iter().map(|shape| tensor(shape, -1.0)).collect()),
        weights,
        learning_rate: 0.005,
        initial_learning_rate: 0.01,
        grad_scaler: Some((32768.0, 7)),
        log: TrainingLog {
            mean_fg_dice: vec![0.5],
            ema_fg_dice: vec![0.5],
            dice_per_class_or_region: vec![vec![0.4, 0.6]],
            train_losses: vec![-0.2],
            val_losses: vec![-0.1],
            lrs: vec![0.01],
            epoch_start_timestamps: vec![1.0],
            epoch_end_timestamps: vec![2.0],
        },
        best_ema: Some(0.5),
        current_epoch: 1,
        plans: serde_json::json!({"plans_name": "nnUNetPlans"}),
        configuration: "3d_fullres".into(),
        fold: Value::Int(0),
        dataset_json: serde_json::json!({"labels": {"background": 0}}),
        device: "cuda:0".into(),
        trainer_name: "nnUNetTrainer".into(),
        inference_allowed_mirroring_axes: vec![0, 1, 2],
    }
}

#[test]
fn training_checkpoint_is_nnunets_dict() {
    let checkpoint = hippocampus_checkpoint(true);
    let value = checkpoint.to_value();
    let keys: Vec<&str> = value.entries().unwrap().iter().map(|(k, _)| k.as_str().unwrap()).collect();
    let expected = [
        "network_weights",
        "optimizer_state",
        "grad_scaler_state",
        "logging",
        "_best_ema",
        "current_epoch",
        "init_args",
        "trainer_name",
        "inference_allowed_mirroring_axes",
    ];
    assert_eq!(keys, expected, "nnUNetTrainer.save_checkpoint's keys in its order");

    let Some(Value::OrderedDict(weights)) = value.get("network_weights") else { panic!("no OrderedDict") };
    assert_eq!(weights.len(), 188, "the reference checkpoint's key count");
    let tensor = |key: &str| match weights.iter().find(|(k, _)| k.as_str() == Some(key)) {
        Some((_, Value::Tensor(t))) => Arc::clone(t),
        other => panic!("{key}: {other:?}"),
    };
    let conv = tensor("encoder.stages.0.0.convs.0.conv.weight");
    assert!(Arc::ptr_eq(&conv, &tensor("decoder.encoder.stages.0.0.convs.0.all_modules.0.weight")), "aliases share");
    assert_eq!(conv.shape, [32, 1, 3, 3, 3]);

    let optimizer = value.get("optimizer_state").unwrap();
    let state = optimizer.get("state").and_then(Value::entries).unwrap();
    assert_eq!(state.len(), 68);
    assert_eq!(state[67].0, Value::Int(67));
    let group = &optimizer.get("param_groups").and_then(Value::items).unwrap()[0];
    let group_keys: Vec<&str> = group.entries().unwrap().iter().map(|(k, _)| k.as_str().unwrap()).collect();
    let torch_keys = [
        "lr",
        "momentum",
        "dampening",
        "weight_decay",
        "nesterov",
        "maximize",
        "foreach",
        "differentiable",
        "fused",
        "initial_lr",
        "params",
    ];
    assert_eq!(group_keys, torch_keys, "the reference checkpoint's param_group");
    assert_eq!(group.get("lr"), Some(&Value::Float(0.005)));
    assert_eq!(group.get("params").and_then(Value::items).map(<[Value]>::len), Some(68));
    assert_eq!(value.get("grad_scaler_state").and_then(|s| s.get("_growth_tracker")), Some(&Value::Int(7)));
    assert_eq!(value.get("init_args").and_then(|a| a.get("device")), Some(&Value::Device("cuda:0".into())));
    let axes = Value::Tuple(vec![Value::Int(0), Value::Int(1), Value::Int(2)]);
    assert_eq!(value.get("inference_allowed_mirroring_axes"), Some(&axes));

    let without_momentum = hippocampus_checkpoint(false).to_value();
    let state = without_momentum.get("optimizer_state").and_then(|o| o.get("state"));
    assert_eq!(state, Some(&Value::Dict(vec![])), "no momentum before the first step, as torch's empty state");
}

#[test]
fn training_checkpoint_writes_one_storage_per_tensor_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint_final.pth");
    let checkpoint = hippocampus_checkpoint(true);
    checkpoint.write(&path).unwrap();
    let archive = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
    let storages = archive.file_names().filter(|name| name.starts_with("checkpoint_final/data/")).count();
    assert_eq!(storages, 2 * 68, "68 parameters and 68 momentum buffers, aliases sharing their parameter's");
    assert_eq!(read_pth(&path).unwrap(), checkpoint.to_value());
    let read = NnunetCheckpoint::read(&path).unwrap();
    assert_eq!((read.trainer_name.as_str(), read.configuration.as_str()), ("nnUNetTrainer", "3d_fullres"));
    assert_eq!((read.inference_allowed_mirroring_axes, read.current_epoch), (vec![0, 1, 2], 1));
    assert_eq!(read.network_weights.len(), 188);
}
