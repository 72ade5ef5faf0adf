//! Both network classes against dynamic_network_architectures (nnU-Net v2.8.1's) on small seeded
//! networks with anisotropic kernels and strides (tests/fixtures, made by make_fixtures.py): the
//! weights load from a real state_dict (alias keys included), and every deep-supervision output
//! matches. Needs no ../shared.

use nntools_network::Model;
use nntools_planning::ArchKwargs;
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Device, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn model_of(name: &str) -> (Model, HashMap<String, Tensor>) {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(&format!("{name}.json"))).unwrap()).unwrap();
    let arch: ArchKwargs = serde_json::from_value(meta["arch_kwargs"].clone()).unwrap();
    let class = meta["network_class_name"].as_str().unwrap();
    let inputs = meta["input_channels"].as_u64().unwrap() as usize;
    let classes = meta["num_classes"].as_u64().unwrap() as usize;
    let mut model = Model::new(Device::Cpu, class, &arch, inputs, classes).unwrap();
    let path = fixture(&format!("{name}.safetensors"));
    model.load_weights(&path).unwrap();
    let tensors = Tensor::read_safetensors(&path).unwrap().into_iter().collect();
    (model, tensors)
}

fn assert_outputs_match(name: &str, model: &Model, tensors: &HashMap<String, Tensor>) {
    let outputs = tch::no_grad(|| model.net.forward_deep_supervision(&tensors["input"]));
    assert_eq!(outputs.len(), 3, "{name}");
    for (k, output) in outputs.iter().enumerate() {
        let expected = &tensors[&format!("output_ds{k}")];
        assert_eq!(output.size(), expected.size(), "{name} output {k}");
        let max = (output - expected).abs().max().double_value(&[]);
        assert!(max <= 1e-5, "{name} output {k}: max |diff| {max}");
    }
}

#[test]
fn residual_encoder_unet_matches_nnunet() {
    let (model, tensors) = model_of("resenc_small");
    assert_outputs_match("resenc_small", &model, &tensors);
}

#[test]
fn plain_unet_with_anisotropic_kernels_matches_nnunet() {
    let (model, tensors) = model_of("plain_aniso");
    assert_outputs_match("plain_aniso", &model, &tensors);
}

#[test]
fn saved_weights_use_nnunet_names_and_load_back() {
    let (model, tensors) = model_of("resenc_small");
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("weights.safetensors");
    model.save_safetensors(&saved).unwrap();
    let names: std::collections::BTreeSet<String> =
        Tensor::read_safetensors(&saved).unwrap().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains("encoder.stem.convs.0.conv.weight"));
    assert!(names.contains("encoder.stages.1.blocks.0.skip.1.conv.weight"));
    assert!(names.contains("decoder.seg_layers.2.bias"));
    assert!(names.iter().all(|n| tensors.contains_key(n)), "every saved name is one of nnU-Net's");
    let (mut fresh, _) = model_of("plain_aniso");
    assert!(fresh.load_weights(&saved).is_err(), "weights of another architecture are refused");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("resenc_small.json")).unwrap()).unwrap();
    let arch: ArchKwargs = serde_json::from_value(meta["arch_kwargs"].clone()).unwrap();
    let mut reloaded = Model::new(Device::Cpu, meta["network_class_name"].as_str().unwrap(), &arch, 2, 3).unwrap();
    reloaded.load_weights(&saved).unwrap();
    assert_outputs_match("reloaded", &reloaded, &tensors);
}

#[test]
fn fresh_weights_follow_he_initialisation() {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("plain_aniso.json")).unwrap()).unwrap();
    let arch: ArchKwargs = serde_json::from_value(meta["arch_kwargs"].clone()).unwrap();
    tch::manual_seed(0);
    let model = Model::new(Device::Cpu, meta["network_class_name"].as_str().unwrap(), &arch, 2, 3).unwrap();
    let variables = model.vs.variables();
    // decoder.stages.0.convs.0.conv: 32 -> 16 channels, 3x3x3: fan-in 864, std sqrt(2 / 1.0001) / sqrt(864)
    let weight = &variables["decoder.stages.0.convs.0.conv.weight"];
    let std = weight.std(true).double_value(&[]);
    let expected = (2.0f64 / 1.0001).sqrt() / 864f64.sqrt();
    assert!((std / expected - 1.0).abs() < 0.05, "std {std} vs {expected}");
    assert_eq!(variables["decoder.stages.0.convs.0.conv.bias"].abs().sum(tch::Kind::Float).double_value(&[]), 0.0);
    assert_eq!(variables["encoder.stages.0.0.convs.0.norm.weight"].mean(tch::Kind::Float).double_value(&[]), 1.0);
}

/// The shared reference model's nnU-Net checkpoint (`.pth`, read without Python) and its safetensors
/// export load the same weights, for inference and as pretrained weights (nn-train --pretrained).
#[test]
fn nnunet_pth_checkpoints_load_as_their_safetensors() {
    let Some(shared) = nntools_tests::shared() else { return };
    let reference = shared.join("reference/infer");
    let plans: nntools_planning::Plans =
        serde_json::from_str(&std::fs::read_to_string(reference.join("model/plans.json")).unwrap()).unwrap();
    let arch = plans.configuration("3d_fullres").unwrap().architecture;
    let build = || Model::new(Device::Cpu, &arch.network_class_name, &arch.arch_kwargs, 1, 3).unwrap();
    let pth = reference.join(
        "nnunet_results/Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth",
    );
    let safetensors = reference.join("model/fold_0/checkpoint_final.safetensors");
    let (mut from_pth, mut from_safetensors, mut pretrained) = (build(), build(), build());
    from_pth.load_weights(&pth).unwrap();
    from_safetensors.load_weights(&safetensors).unwrap();
    pretrained.load_pretrained(&pth).unwrap();
    let expected = from_safetensors.vs.variables();
    for (name, tensor) in from_pth.vs.variables() {
        assert!(tensor.equal(&expected[&name]), "{name} differs");
        let pretrained_equal = pretrained.vs.variables()[&name].equal(&expected[&name]);
        if name.contains(".seg_layers.") {
            // the heads keep their fresh weights (He-initialised; biases start at 0, as some trained ones are)
            assert!(!pretrained_equal || name.ends_with(".bias"), "{name}: pretrained loads all but the heads");
        } else {
            assert!(pretrained_equal, "{name}: pretrained loads all but the heads");
        }
    }
}

#[test]
fn bf16_autocast_runs_every_convolution_in_bf16_and_stays_close_to_fp32() {
    let Ok(mixed @ Some(_)) = nntools_network::Precision::Bf16.on(Device::Cpu) else {
        eprintln!("skipped: this CPU has no native bfloat16");
        return;
    };
    for name in ["resenc_small", "plain_aniso"] {
        let (model, tensors) = model_of(name);
        let outputs =
            nntools_network::autocast(mixed, || tch::no_grad(|| model.net.forward_deep_supervision(&tensors["input"])));
        for (k, output) in outputs.iter().enumerate() {
            // the segmentation heads are convolutions too: autocast reached them
            assert_eq!(output.kind(), tch::Kind::BFloat16, "{name} output {k}");
            let expected = &tensors[&format!("output_ds{k}")];
            let scale = expected.abs().max().double_value(&[]);
            let max = (output.to_kind(tch::Kind::Float) - expected).abs().max().double_value(&[]);
            assert!(max > 0.0 && max <= 0.05 * scale, "{name} output {k}: max |diff| {max} of {scale}");
        }
    }
}

/// nnU-Net plans one stage for images too small to pool, and its decoder then has no head; here the
/// stage's output gets one (a 1x1x1 convolution, `decoder.seg_layers.0`), for training and inference.
#[test]
fn a_one_stage_network_segments_with_a_single_head() {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("plain_aniso.json")).unwrap()).unwrap();
    let mut kwargs = meta["arch_kwargs"].clone();
    kwargs["n_stages"] = 1.into();
    for list in ["features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage"] {
        kwargs[list] = serde_json::Value::Array(vec![kwargs[list][0].clone()]);
    }
    kwargs["strides"] = serde_json::json!([[1, 1, 1]]);
    kwargs["n_conv_per_stage_decoder"] = serde_json::json!([]);
    let arch: ArchKwargs = serde_json::from_value(kwargs).unwrap();
    let features = arch.features_per_stage[0] as i64;
    let model = Model::new(Device::Cpu, meta["network_class_name"].as_str().unwrap(), &arch, 2, 3).unwrap();
    let variables = model.vs.variables();
    assert_eq!(variables["decoder.seg_layers.0.weight"].size(), [3, features, 1, 1, 1]);
    assert!(!variables.keys().any(|n| n.contains("transpconvs") || n.contains("decoder.stages")));
    let input = Tensor::randn([2, 2, 6, 6, 6], (tch::Kind::Float, Device::Cpu));
    let outputs = tch::no_grad(|| model.net.forward_deep_supervision(&input));
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].size(), [2, 3, 6, 6, 6]);
    assert!(tch::no_grad(|| model.net.forward(&input)).equal(&outputs[0]));
    // the head is the last operation: zero weights leave its bias everywhere
    let _guard = tch::no_grad_guard();
    let mut variables = model.vs.variables();
    let _ = variables.get_mut("decoder.seg_layers.0.weight").unwrap().zero_();
    variables.get_mut("decoder.seg_layers.0.bias").unwrap().copy_(&Tensor::from_slice(&[1f32, 2., 3.]));
    let constant = model.net.forward(&input);
    assert_eq!(constant.mean_dim(&[0i64, 2, 3, 4][..], false, tch::Kind::Float), Tensor::from_slice(&[1f32, 2., 3.]));
}
