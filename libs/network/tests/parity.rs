//! The network against nnU-Net v2.8.1's own forward pass (../shared/reference/train): the same weights
//! and input must give every deep-supervision output to 1e-4.

use nntools_network::Model;
use nntools_planning::Plans;
use nntools_tests::{read_json, shared};
use tch::{Device, Tensor};

fn forward_matches_nnunet(configuration: &str) {
    let Some(shared) = shared() else { return };
    let plans: Plans =
        serde_json::from_value(read_json(&shared.join("reference/Dataset004_Hippocampus/nnUNetPlans.json"))).unwrap();
    let config = plans.configuration(configuration).unwrap();
    let mut model =
        Model::new(Device::Cpu, &config.architecture.network_class_name, &config.architecture.arch_kwargs, 1, 3)
            .unwrap();
    let dir = shared.join("reference/train").join(configuration);
    model.load_weights(&dir.join("weights_init.safetensors")).unwrap();
    let io: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("io.safetensors")).unwrap().into_iter().collect();
    let outputs = tch::no_grad(|| model.net.forward_deep_supervision(&io["input"]));
    assert_eq!(outputs.len(), 3);
    for (k, output) in outputs.iter().enumerate() {
        let expected = &io[&format!("output_ds{k}")];
        assert_eq!(output.size(), expected.size(), "{configuration} output {k}");
        let max = (output - expected).abs().max().double_value(&[]);
        assert!(max <= 1e-4, "{configuration} output {k}: max |diff| {max}");
    }
    let full = tch::no_grad(|| model.net.forward(&io["input"]));
    assert_eq!(full.size(), outputs[0].size());
}

#[test]
fn plain_unet_3d_forward_matches_nnunet() {
    forward_matches_nnunet("3d_fullres");
}

#[test]
fn plain_unet_2d_forward_matches_nnunet() {
    forward_matches_nnunet("2d");
}
