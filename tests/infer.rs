//! nn-infer against nnU-Net v2.8.1's predictions in ../shared/reference/infer (the same nnU-Net-trained
//! weights and images, fp32 on CPU, with and without mirroring), and end to end on a two-channel
//! synthetic dataset trained by nn-train.

use ndarray::Array4;
use ndarray_npy::NpzReader;
use nntools_io::{NiftiHeader, read_image, read_label_map};
use nntools_tests::{SyntheticDataset, bf16_refused, run, shared, stderr};
use std::path::Path;

fn probabilities(path: &Path) -> Array4<f32> {
    NpzReader::new(std::fs::File::open(path).unwrap()).unwrap().by_name("probabilities").unwrap()
}

/// The header fields that place voxels in space.
fn placement(header: &NiftiHeader) -> Vec<f64> {
    let mut fields: Vec<f64> = header.pixdim[1..4].iter().map(|&v| f64::from(v)).collect();
    fields.extend([header.qform_code as f64, header.sform_code as f64]);
    fields.extend(
        [header.quatern_b, header.quatern_c, header.quatern_d, header.quatern_x, header.quatern_y, header.quatern_z]
            .map(f64::from),
    );
    fields.extend(header.srow_x.iter().chain(&header.srow_y).chain(&header.srow_z).map(|&v| f64::from(v)));
    fields
}

/// Every case's labels agree with nnU-Net's on at least 99.9% of voxels and carry its input's geometry;
/// probabilities (when both exist) within 1e-3.
fn assert_matches_nnunet(ours: &Path, reference: &Path, images: &Path) {
    let mut compared = 0;
    for entry in std::fs::read_dir(reference).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(case) = name.strip_suffix(".nii.gz") else { continue };
        let expected = read_label_map(&path).unwrap();
        let predicted = read_label_map(&ours.join(&name)).unwrap();
        assert_eq!(predicted.data.shape(), expected.data.shape(), "{case}");
        let agree = predicted.data.iter().zip(&expected.data).filter(|(a, b)| a == b).count() as f64
            / expected.data.len() as f64;
        assert!(agree >= 0.999, "{case}: labels agree on {agree}");
        let input = read_image(&images.join(format!("{case}_0000.nii.gz"))).unwrap();
        assert_eq!(
            placement(predicted.stored.nifti_header.as_ref().unwrap()),
            placement(input.stored.nifti_header.as_ref().unwrap()),
            "{case}: geometry"
        );
        assert_eq!(predicted.stored.nifti_header.as_ref().unwrap().datatype, 2, "{case}: labels are written as uint8");
        let reference_probabilities = reference.join(format!("{case}.npz"));
        if reference_probabilities.is_file() {
            let ours = probabilities(&ours.join(format!("{case}.npz")));
            let theirs = probabilities(&reference_probabilities);
            assert_eq!(ours.shape(), theirs.shape(), "{case}");
            let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst <= 1e-3, "{case}: probabilities differ by up to {worst}");
        }
        compared += 1;
    }
    assert_eq!(compared, 16);
}

/// The trainer folder nnU-Net wrote for the reference model, its `checkpoint_final.pth` as torch.save wrote it.
fn nnunet_trainer_folder(shared: &Path) -> std::path::PathBuf {
    shared.join("reference/infer/nnunet_results/Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres")
}

#[test]
fn predictions_match_nnunet_with_and_without_mirroring() {
    let Some(shared) = shared() else { return };
    let reference = shared.join("reference/infer");
    let (model, images) = (reference.join("model"), reference.join("images"));
    predict_as_nnunet(&model, &reference, &images);
}

#[test]
fn nnunet_trainer_folders_predict_from_their_pth_checkpoints() {
    let Some(shared) = shared() else { return };
    let reference = shared.join("reference/infer");
    predict_as_nnunet(&nnunet_trainer_folder(&shared), &reference, &reference.join("images"));
}

fn predict_as_nnunet(model: &Path, reference: &Path, images: &Path) {
    let out = tempfile::tempdir().unwrap();
    for (flags, expected) in [(&["--save-probabilities"][..], "pred_tta"), (&["--no-tta"][..], "pred_notta")] {
        let predictions = out.path().join(expected);
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"-m", &model, &"-i", &images, &"-o", &predictions, &"--device", &"cpu", &"-q"];
        args.extend(flags.iter().map(|f| f as &dyn AsRef<std::ffi::OsStr>));
        let output = run("nn-infer", &args);
        assert!(output.status.success(), "{}", stderr(&output));
        assert_matches_nnunet(&predictions, &reference.join(expected), images);
    }
}

/// Mean Dice over the cases and foreground labels of `predictions` against `reference` (both label folders).
fn mean_dice(predictions: &Path, reference: &Path, cases: &[String]) -> f64 {
    let mut dices = Vec::new();
    for case in cases {
        let name = format!("{case}.nii.gz");
        let (ours, theirs) =
            (read_label_map(&predictions.join(&name)).unwrap(), read_label_map(&reference.join(&name)).unwrap());
        for label in 1..=2 {
            let (mut both, mut total) = (0usize, 0usize);
            for (&a, &b) in ours.data.iter().zip(&theirs.data) {
                both += usize::from(a == label && b == label);
                total += usize::from(a == label) + usize::from(b == label);
            }
            dices.push(if total == 0 { 1.0 } else { 2.0 * both as f64 / total as f64 });
        }
    }
    dices.iter().sum::<f64>() / dices.len() as f64
}

#[test]
fn bf16_labels_agree_with_fp32_and_keep_the_dice_against_nnunet() {
    let Some(shared) = shared() else { return };
    let reference = shared.join("reference/infer");
    let (model, images) = (reference.join("model"), reference.join("images"));
    let out = tempfile::tempdir().unwrap();
    let predict = |precision: &str| {
        let predictions = out.path().join(precision);
        let output = run(
            "nn-infer",
            &[
                &"-m",
                &model,
                &"-i",
                &images,
                &"-o",
                &predictions,
                &"--device",
                &"cpu",
                &"--no-tta",
                &"-q",
                &"--precision",
                &precision,
            ],
        );
        (output, predictions)
    };
    let (output, bf16) = predict("bf16");
    if bf16_refused(&output) {
        return;
    }
    assert!(output.status.success(), "{}", stderr(&output));
    let (output, fp32) = predict("fp32");
    assert!(output.status.success(), "{}", stderr(&output));
    let mut cases = Vec::new();
    let (mut equal, mut voxels) = (0usize, 0usize);
    for entry in std::fs::read_dir(&fp32).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some(case) = name.strip_suffix(".nii.gz") else { continue };
        let (a, b) = (read_label_map(&fp32.join(&name)).unwrap(), read_label_map(&bf16.join(&name)).unwrap());
        let agree = a.data.iter().zip(&b.data).filter(|(x, y)| x == y).count();
        assert!(
            agree as f64 >= 0.995 * a.data.len() as f64,
            "{case}: bf16 labels agree with fp32 on {agree} of {}",
            a.data.len()
        );
        assert_eq!(a.geometry, b.geometry, "{case}");
        (equal, voxels) = (equal + agree, voxels + a.data.len());
        cases.push(case.to_owned());
    }
    assert_eq!(cases.len(), 16);
    assert!(equal as f64 >= 0.999 * voxels as f64, "bf16 labels agree with fp32 on {equal} of {voxels} voxels");
    let nnunet = reference.join("pred_notta");
    let (dice_fp32, dice_bf16) = (mean_dice(&fp32, &nnunet, &cases), mean_dice(&bf16, &nnunet, &cases));
    // this 5-epoch model segments a few hundred voxels per class, so each voxel that bf16 labels otherwise
    // moves a case's Dice by about 0.2%: measured 1.0000 (fp32) against 0.9965 (bf16), 0-10 voxels per case
    assert!(dice_fp32 > 0.999, "fp32 labels are nnU-Net's: mean Dice {dice_fp32}");
    assert!((dice_fp32 - dice_bf16).abs() <= 0.005, "mean Dice against nnU-Net: fp32 {dice_fp32}, bf16 {dice_bf16}");
}

#[test]
fn a_trained_two_channel_run_predicts_in_the_input_geometry() {
    let data = SyntheticDataset::with(4, 2, [20, 28]);
    let pre = data.dir.path().join("pre");
    let output = data.resample("3d_fullres", &pre, &["-q"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let run_dir = data.dir.path().join("run");
    let dataset_json = data.raw.join("dataset.json");
    let output = run(
        "nn-train",
        &[
            &"--plans",
            &data.plans,
            &"-c",
            &"3d_fullres",
            &"--data",
            &pre,
            &"--dataset",
            &dataset_json,
            &"--fold",
            &"all",
            &"-o",
            &run_dir,
            &"--epochs",
            &"1",
            &"--iters",
            &"2",
            &"--val-iters",
            &"1",
            &"--device",
            &"cpu",
            &"-q",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let predictions = data.dir.path().join("predictions");
    let images = data.raw.join("imagesTr");
    let output = run(
        "nn-infer",
        &[&"-m", &run_dir, &"-i", &images, &"-o", &predictions, &"--device", &"cpu", &"--save-probabilities", &"-q"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    for entry in std::fs::read_dir(data.raw.join("labelsTr")).unwrap() {
        let label_path = entry.unwrap().path();
        let name = label_path.file_name().unwrap().to_string_lossy().into_owned();
        let reference = read_label_map(&label_path).unwrap();
        let predicted = read_label_map(&predictions.join(&name)).unwrap();
        assert_eq!(predicted.data.shape(), reference.data.shape(), "{name}");
        assert_eq!(predicted.geometry, reference.geometry, "{name}");
        assert!(predicted.data.iter().all(|&l| (0..3).contains(&l)), "{name}: labels outside the dataset's");
        let p = probabilities(&predictions.join(name.replace(".nii.gz", ".npz")));
        assert_eq!(p.shape()[1..], *reference.data.shape());
        for lane in p.lanes(ndarray::Axis(0)) {
            assert!((lane.sum() - 1.0).abs() < 1e-4, "probabilities sum to one");
        }
    }
}

#[test]
fn bad_requests_name_the_problem() {
    let Some(shared) = shared() else { return };
    let reference = shared.join("reference/infer");
    let out = tempfile::tempdir().unwrap();
    let nowhere = out.path().join("missing");
    let (model, images) = (reference.join("model"), reference.join("images"));
    let trainer_folder = nnunet_trainer_folder(&shared);
    let [a, b, c, d, e, f, g, h] = ["a", "b", "c", "d", "e", "f", "g", "h"].map(|name| out.path().join(name));
    // an inference plan whose model folder is gone, and a JSON file that is no plan
    let stale_plan = out.path().join("stale_plan.json");
    std::fs::write(&stale_plan, format!(r#"{{"models": [{{"run": {:?}, "configuration": "3d_fullres"}}], "folds": [0], "postprocessing": [],
        "cross_validation": [], "foreground_dice_before_postprocessing": 0.5, "foreground_dice_after_postprocessing": 0.5,
        "class_dice_after_postprocessing": {{}}, "commands": []}}"#, nowhere)).unwrap();
    let not_a_plan = out.path().join("not_a_plan.json");
    std::fs::write(&not_a_plan, r#"{"models": "3d_fullres"}"#).unwrap();
    let cases: [(Vec<&dyn AsRef<std::ffi::OsStr>>, &str); 8] = [
        (vec![&"-m", &nowhere, &"-i", &images, &"-o", &a], "missing"),
        (vec![&"-m", &model, &"-i", &nowhere, &"-o", &b], "no such image"),
        (vec![&"-m", &model, &"--folds", &"3", &"-i", &images, &"-o", &c], "fold_3"),
        (vec![&"--plan", &stale_plan, &"-i", &images, &"-o", &d], "missing"),
        (vec![&"--plan", &not_a_plan, &"-i", &images, &"-o", &e], "not_a_plan.json"),
        (vec![&"-m", &trainer_folder, &"--checkpoint", &"latest", &"-i", &images, &"-o", &f], "checkpoint_latest.pth"),
        (vec![&"-m", &model, &"--checkpoint", &"final.ckpt", &"-i", &images, &"-o", &g], "--checkpoint"),
        (vec![&"-m", &model, &"--precision", &"half", &"-i", &images, &"-o", &h], "--precision"),
    ];
    for (args, expected) in cases {
        let output = run("nn-infer", &args);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{message}");
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(message.contains(expected), "{message}");
    }
    assert!([&a, &b, &c, &d, &e, &f, &g, &h].iter().all(|dir| !dir.exists()), "no output folder on bad input");
    // a CPU without native bfloat16, as oneDNN's instruction-set cap makes one of this one
    let output = std::process::Command::new(nntools_tests::binary("nn-infer"))
        .args(nntools_tests::os_args(&[
            &"-m",
            &model,
            &"-i",
            &images,
            &"-o",
            &h,
            &"--device",
            &"cpu",
            &"--precision",
            &"bf16",
        ]))
        .env("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
        .output()
        .unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("--precision") && message.contains("no native bfloat16"), "{message}");
    assert!(!h.exists());
}

#[test]
fn a_killed_run_reruns_to_the_same_files() {
    let Some(shared) = shared() else { return };
    let reference = shared.join("reference/infer");
    let (model, images) = (reference.join("model"), reference.join("images"));
    let out = tempfile::tempdir().unwrap();
    let [whole, killed] = ["whole", "killed"].map(|name| out.path().join(name));
    let args = |dir: &Path| -> Vec<std::ffi::OsString> {
        [
            "-m".as_ref(),
            model.as_os_str(),
            "-i".as_ref(),
            images.as_os_str(),
            "-o".as_ref(),
            dir.as_os_str(),
            "--no-tta".as_ref(),
            "--device".as_ref(),
            "cpu".as_ref(),
            "-q".as_ref(),
        ]
        .map(std::ffi::OsString::from)
        .to_vec()
    };
    let status = std::process::Command::new(nntools_tests::binary("nn-infer")).args(args(&whole)).status().unwrap();
    assert!(status.success());
    // killed first once a case is written, then twice more at seeded moments of the reruns
    let delays = nntools_tests::kill_moments(11, 2, 300..3300);
    for kill in 0..3 {
        let mut child =
            std::process::Command::new(nntools_tests::binary("nn-infer")).args(args(&killed)).spawn().unwrap();
        let start = std::time::Instant::now();
        if kill == 0 {
            while !killed.join("hippocampus_017.nii.gz").exists() && start.elapsed().as_secs() < 60 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        } else {
            std::thread::sleep(std::time::Duration::from_millis(delays[kill - 1]));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // a temporary of a process that is gone, as a kill during a write leaves it
    std::fs::write(killed.join(".nntmp-999999999-hippocampus_019.nii.gz"), b"partial").unwrap();
    // and the previous stage's folder that a killed cascade prediction leaves
    let scratch = killed.join(".nntmp-999999999-previous-stage");
    std::fs::create_dir(&scratch).unwrap();
    std::fs::write(scratch.join("hippocampus_017.nii.gz"), b"done").unwrap();
    let status = std::process::Command::new(nntools_tests::binary("nn-infer")).args(args(&killed)).status().unwrap();
    assert!(status.success());
    let mut names: Vec<String> =
        std::fs::read_dir(&whole).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let mut rerun: Vec<String> =
        std::fs::read_dir(&killed).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    rerun.sort();
    assert_eq!(rerun, names, "same files, no temporaries left");
    for name in names {
        assert!(
            std::fs::read(whole.join(&name)).unwrap() == std::fs::read(killed.join(&name)).unwrap(),
            "{name} differs"
        );
    }
}

/// A real two-channel case (Dataset005, 240x240x155) through nn-infer end to end, with a 2d model that
/// nn-train saved untrained (`--epochs 0`): the point is the path (two channels, slice-wise windows,
/// export in the input geometry), not the segmentation.
#[test]
fn a_two_channel_brats_case_runs_end_to_end() {
    let Some(shared) = shared() else { return };
    let (raw, plans) = (
        shared.join("data/Dataset005_BraTS2013mini"),
        shared.join("reference/Dataset005_BraTS2013mini/nnUNetPlans.json"),
    );
    let dir = tempfile::tempdir().unwrap();
    let [pre, run_dir, images, out] = ["pre", "run", "images", "out"].map(|n| dir.path().join(n));
    let output = run("nn-resample", &[&"--plans", &plans, &"-c", &"2d", &"-i", &raw, &"-o", &pre, &"-q"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = run(
        "nn-train",
        &[
            &"--plans",
            &plans,
            &"-c",
            &"2d",
            &"--data",
            &pre,
            &"--dataset",
            &raw.join("dataset.json"),
            &"--fold",
            &"all",
            &"-o",
            &run_dir,
            &"--epochs",
            &"0",
            &"--device",
            &"cpu",
            &"-q",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    std::fs::create_dir_all(&images).unwrap();
    for channel in 0..2 {
        let name = format!("brats_2013_pat0001_1_{channel:04}.nii.gz");
        std::fs::copy(raw.join("imagesTr").join(&name), images.join(&name)).unwrap();
    }
    let output =
        run("nn-infer", &[&"-m", &run_dir, &"-i", &images, &"-o", &out, &"--no-tta", &"--device", &"cpu", &"-q"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let predicted = read_label_map(&out.join("brats_2013_pat0001_1.nii.gz")).unwrap();
    let input = read_image(&images.join("brats_2013_pat0001_1_0000.nii.gz")).unwrap();
    assert_eq!(predicted.data.shape(), input.data.shape());
    assert_eq!(
        placement(predicted.stored.nifti_header.as_ref().unwrap()),
        placement(input.stored.nifti_header.as_ref().unwrap())
    );
    let labels = nntools_dataset::Descriptor::read(&raw.join("dataset.json")).unwrap().all_labels();
    assert!(predicted.data.iter().all(|&l| labels.contains(&i64::from(l))), "labels outside the dataset's");
}

/// One 0.4 mm slice at the model's 1 mm: nnU-Net's `compute_new_shape` rounds that axis to 0 voxels
/// (and fails); nn-resample keeps 1 and nn-infer predicts the slice in its own shape.
#[test]
fn a_slice_thinner_than_half_the_target_spacing_keeps_one_voxel() {
    let Some(shared) = shared() else { return };
    let model = shared.join("reference/infer/model");
    let raw = shared.join("data/Dataset004_Hippocampus");
    let dir = tempfile::tempdir().unwrap();
    let [dataset, pre, out] = ["Dataset999_Slice", "pre", "out"].map(|n| dir.path().join(n));
    for folder in ["imagesTr", "labelsTr"] {
        std::fs::create_dir_all(dataset.join(folder)).unwrap();
    }
    let descriptor = std::fs::read_to_string(raw.join("dataset.json"))
        .unwrap()
        .replace("\"numTraining\": 260", "\"numTraining\": 1");
    std::fs::write(dataset.join("dataset.json"), descriptor).unwrap();
    // slice 17 of the first axis (nnU-Net's order, as Geometry's spacing), 0.4 mm thick
    let image = read_image(&raw.join("imagesTr/hippocampus_001_0000.nii.gz")).unwrap();
    let label = read_label_map(&raw.join("labelsTr/hippocampus_001.nii.gz")).unwrap();
    let mut geometry = image.geometry;
    geometry.spacing[0] = 0.4;
    let input = dataset.join("imagesTr/slice_001_0000.nii.gz");
    nntools_io::write_new(&input, image.data.slice(ndarray::s![17..18, .., ..]), &geometry).unwrap();
    let slice_label = label.data.slice(ndarray::s![17..18, .., ..]).mapv(|l| l as u8);
    nntools_io::write_new(&dataset.join("labelsTr/slice_001.nii.gz"), slice_label.view(), &geometry).unwrap();

    let output = run(
        "nn-resample",
        &[&"--plans", &model.join("plans.json"), &"-c", &"3d_fullres", &"-i", &dataset, &"-o", &pre, &"-q"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let file = std::fs::File::open(pre.join("slice_001.npy")).unwrap();
    let data: ndarray::ArrayD<f32> = ndarray_npy::ReadNpyExt::read_npy(file).unwrap();
    // 1 x 51 x 35 voxels at 0.4 x 1 x 1 mm, cropped to the nonzero region in-plane
    assert_eq!(data.shape()[..2], [1, 1], "{:?}", data.shape());
    assert!(data.shape().iter().all(|&n| n > 0), "{:?}", data.shape());

    let output = run(
        "nn-infer",
        &[&"-m", &model, &"-i", &dataset.join("imagesTr"), &"-o", &out, &"--no-tta", &"--device", &"cpu", &"-q"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let predicted = read_label_map(&out.join("slice_001.nii.gz")).unwrap();
    assert_eq!(predicted.data.shape(), [1, image.data.shape()[1], image.data.shape()[2]]);
    assert_eq!(
        placement(predicted.stored.nifti_header.as_ref().unwrap()),
        placement(read_image(&input).unwrap().stored.nifti_header.as_ref().unwrap())
    );
}
