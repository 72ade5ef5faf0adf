//! Writes an nnU-Net training checkpoint for the network of a generate_keys.py fixture, with deterministic
//! weights and momentum, for tests/fixtures/write/check_loads.py to load into nnU-Net:
//!
//! cargo run --release -p nntools-checkpoint --example write_training_checkpoint -- \
//!     KEYS.json PLANS.json DATASET.json CONFIGURATION OUT.pth

use nntools_checkpoint::{Tensor, TrainingCheckpoint, TrainingLog, Value, nnunet_parameter_order};
use std::path::Path;
use std::sync::Arc;

fn json(path: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect(path)).expect(path)
}

/// `sin` of the element's position, offset per tensor, so that every value differs and a misplaced
/// tensor or a transposed one shows.
fn pattern(shape: &[usize], offset: f64) -> Arc<Tensor> {
    let values: Vec<f32> =
        (0..shape.iter().product()).map(|i: usize| (i as f64 * 0.37 + offset).sin() as f32).collect();
    Arc::new(Tensor::from_f32(shape.to_vec(), &values))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [keys, plans, dataset, configuration, out] = &args[..] else {
        panic!("usage: write_training_checkpoint KEYS.json PLANS.json DATASET.json CONFIGURATION OUT.pth")
    };
    let keys = json(keys);
    let shapes: Vec<(String, Vec<usize>)> = keys["parameter_names"]
        .as_array()
        .unwrap()
        .iter()
        .zip(keys["parameter_shapes"].as_array().unwrap())
        .map(|(name, shape)| {
            let shape = shape.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            (name.as_str().unwrap().to_owned(), shape)
        })
        .collect();
    // as nn-train has them: names sorted alphabetically, then put into nnU-Net's order
    let mut names: Vec<String> = shapes.iter().map(|(name, _)| name.clone()).collect();
    names.sort();
    nnunet_parameter_order(&mut names);
    let shape_of = |name: &String| &shapes.iter().find(|(n, _)| n == name).unwrap().1;
    let weights = names.iter().enumerate().map(|(i, name)| (name.clone(), pattern(shape_of(name), i as f64))).collect();
    let momentum = names.iter().enumerate().map(|(i, name)| pattern(shape_of(name), -(i as f64) - 0.5)).collect();
    let checkpoint = TrainingCheckpoint {
        weights,
        momentum: Some(momentum),
        learning_rate: 0.00812,
        initial_learning_rate: 0.01,
        grad_scaler: Some((32768.0, 3)),
        log: TrainingLog {
            mean_fg_dice: vec![0.3, 0.4],
            ema_fg_dice: vec![0.3, 0.31],
            dice_per_class_or_region: vec![vec![0.25, 0.35], vec![0.35, 0.45]],
            train_losses: vec![-0.2, -0.3],
            val_losses: vec![-0.22, -0.32],
            lrs: vec![0.01, 0.00812],
            epoch_start_timestamps: vec![1764000000.0, 1764000060.0],
            epoch_end_timestamps: vec![1764000055.5, 1764000115.5],
        },
        best_ema: Some(0.31),
        current_epoch: 2,
        plans: json(plans),
        configuration: configuration.clone(),
        fold: Value::Int(0),
        dataset_json: json(dataset),
        device: "cuda:0".into(),
        trainer_name: "nnUNetTrainer".into(),
        inference_allowed_mirroring_axes: vec![0, 1, 2],
    };
    if let Err(e) = checkpoint.write(Path::new(out)) {
        eprintln!("{e}");
        std::process::exit(e.exit_code().into());
    }
}
