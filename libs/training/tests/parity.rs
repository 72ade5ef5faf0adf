//! Loss and optimiser against nnU-Net v2.8.1 (../shared/reference/train): the deep-supervision loss of
//! the reference outputs and targets, and two SGD steps from the reference weights and gradients.

use nntools_network::Model;
use nntools_planning::Plans;
use nntools_tests::{read_json, shared};
use nntools_training::{
    DiceCeLoss, GRADIENT_CLIP_NORM, INITIAL_LEARNING_RATE, Objective, Sgd, deep_supervision_weights,
};
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap().into_iter().collect()
}

fn loss_matches(configuration: &str) {
    let Some(shared) = shared() else { return };
    let dir = shared.join("reference/train").join(configuration);
    let summary = read_json(&shared.join("reference/train/summary.json"));
    let expected = summary[configuration]["loss_at_init_train_mode"].as_f64().unwrap();
    let batch_dice = summary[configuration]["batch_dice"].as_bool().unwrap();
    let io = tensors(&dir.join("io.safetensors"));
    let outputs: Vec<Tensor> = (0..3).map(|k| io[&format!("output_ds{k}")].shallow_clone()).collect();
    let targets: Vec<Tensor> = (0..3).map(|k| io[&format!("target_ds{k}")].shallow_clone()).collect();
    let weights = deep_supervision_weights(3);
    let reference_weights: Vec<f64> = serde_json::from_value(summary[configuration]["ds_weights"].clone()).unwrap();
    assert!(weights.iter().zip(&reference_weights).all(|(a, b)| (a - b).abs() < 1e-12));
    let loss = Objective::Labels(DiceCeLoss { batch_dice, ignore_label: None })
        .deep_supervision(&outputs, &targets, &weights)
        .double_value(&[]);
    assert!((loss - expected).abs() <= 1e-5, "{configuration}: loss {loss} vs nnU-Net {expected}");
}

#[test]
fn loss_3d_matches_nnunet() {
    loss_matches("3d_fullres");
}

#[test]
fn loss_2d_with_batch_dice_matches_nnunet() {
    loss_matches("2d");
}

/// Sets every variable's gradient to the given tensors by backpropagating `sum(var * grad)`.
fn set_gradients(model: &Model, gradients: &HashMap<String, Tensor>) {
    let loss = model
        .vs
        .variables()
        .iter()
        .map(|(name, var)| (var * &gradients[name]).sum(Kind::Float))
        .reduce(|a, b| a + b)
        .unwrap();
    loss.backward();
}

#[test]
fn two_sgd_steps_match_nnunet() {
    let Some(shared) = shared() else { return };
    let dir = shared.join("reference/train/2d");
    let plans: Plans =
        serde_json::from_value(read_json(&shared.join("reference/Dataset004_Hippocampus/nnUNetPlans.json"))).unwrap();
    let config = plans.configuration("2d").unwrap();
    let mut model =
        Model::new(Device::Cpu, &config.architecture.network_class_name, &config.architecture.arch_kwargs, 1, 3)
            .unwrap();
    model.load_weights(&dir.join("weights_init.safetensors")).unwrap();
    let mut optimizer = Sgd::new(model.vs.trainable_variables());
    let summary = read_json(&shared.join("reference/train/summary.json"));
    for step in 1..=2 {
        optimizer.zero_grad();
        set_gradients(&model, &tensors(&dir.join(format!("grads_step{step}_raw.safetensors"))));
        let norm = optimizer.clip_grad_norm(GRADIENT_CLIP_NORM).double_value(&[]);
        let expected_norm = summary["2d"][format!("grad_norm_step{step}_before_clip")].as_f64().unwrap();
        assert!(
            (norm - expected_norm).abs() <= 1e-4 * expected_norm,
            "step {step}: gradient norm {norm} vs {expected_norm}"
        );
        optimizer.step(INITIAL_LEARNING_RATE);
        let expected = tensors(&dir.join(format!("weights_after_step{step}.safetensors")));
        for (name, var) in model.vs.variables() {
            let max = (&var - &expected[&name]).abs().max().double_value(&[]);
            assert!(max <= 1e-6, "step {step}, {name}: max |diff| {max}");
        }
    }
}

#[test]
fn splits_match_nnunet_splits_final() {
    let Some(shared) = shared() else { return };
    let reference: Vec<nntools_training::Split> =
        serde_json::from_value(read_json(&shared.join("reference/Dataset004_Hippocampus/splits_final.json"))).unwrap();
    let mut ids: Vec<String> = reference[0].train.iter().chain(&reference[0].val).cloned().collect();
    ids.reverse(); // order of the input does not matter: nnU-Net sorts
    let ours = nntools_training::crossval_splits(&ids, 5, nntools_training::SPLIT_SEED);
    assert_eq!(ours, reference);
}
