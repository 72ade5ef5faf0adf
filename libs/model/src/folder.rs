//! What a model folder holds: nn-train's run folder or nnU-Net's trainer folder
//! (`nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIG`), both read as nnU-Net's predictor reads them
//! (nnunetv2/inference/predict_from_raw_data.py: `nnUNetPredictor.initialize_from_trained_model_folder`:
//! `dataset.json`, `plans.json`, `fold_F/CHECKPOINT`).

use nntools_checkpoint::{NnunetCheckpoint, Value};
use nntools_io::{Error, Result, read_json};
use nntools_layout::run::{CheckpointName, Fold, RunDir, WeightsFile};
use std::path::{Path, PathBuf};

/// A model folder: its plans and dataset.json, and the folds that hold the chosen checkpoint, in
/// nnU-Net's order (`fold_0` … `fold_N`, then `fold_all`).
#[derive(Debug)]
pub struct ModelFolder {
    pub run: RunDir,
    pub plans: serde_json::Value,
    pub dataset_json: serde_json::Value,
    pub folds: Vec<(Fold, WeightsFile)>,
}

impl ModelFolder {
    /// Reads `path`'s plans.json and dataset.json and finds the folds holding `checkpoint`; a folder
    /// without any is refused, naming the file looked for.
    pub fn open(path: &Path, checkpoint: &CheckpointName) -> Result<Self> {
        let run = RunDir::new(path);
        if !path.is_dir() {
            return Err(Error::bad_input(path, "not a folder (expected a run or trainer folder)"));
        }
        let plans = read_json(&run.plans())?;
        let dataset_json = read_json(&run.dataset_json())?;
        let entries = std::fs::read_dir(path).map_err(|e| Error::io(path, &e))?;
        let mut folds = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(path, &e))?;
            let Some(fold) = Fold::of_folder_name(&entry.file_name().to_string_lossy()) else { continue };
            if let Some(file) = run.fold(fold).weights_file(checkpoint) {
                folds.push((fold, file));
            }
        }
        folds.sort_by_key(|(fold, _)| fold_order(*fold));
        if folds.is_empty() {
            let missing = format!("no fold_F/{checkpoint} (nor .safetensors) in any fold folder");
            return Err(Error::bad_input(path, missing));
        }
        Ok(Self { run, plans, dataset_json, folds })
    }
}

/// nnU-Net's fold order: numbered folds ascending, `fold_all` last.
pub(crate) fn fold_order(fold: Fold) -> (bool, usize) {
    match fold {
        Fold::Index(i) => (false, i),
        Fold::All => (true, 0),
    }
}

/// The fold as nnU-Net writes it in JSON and its `init_args`: a number, or `"all"`.
pub(crate) fn fold_json(fold: Fold) -> serde_json::Value {
    match fold {
        Fold::Index(i) => i.into(),
        Fold::All => "all".into(),
    }
}

/// What one checkpoint file says about its model.
#[derive(Debug, Clone)]
pub struct CheckpointSummary {
    pub path: PathBuf,
    /// nnU-Net's trainer class; None for nn-train's safetensors without a `.pth` beside them.
    pub trainer_name: Option<String>,
    pub configuration: String,
    /// The fold it was trained on, as nnU-Net's `init_args` hold it (a number or `"all"`): the `.pth`'s,
    /// or that of the fold folder a safetensors file lies in.
    pub fold: Option<serde_json::Value>,
    /// The network's parameters: canonical names (nnU-Net's alias keys left out) and shapes, by name.
    pub parameters: Vec<(String, Vec<usize>)>,
    /// The plans and dataset.json a `.pth` carries in `init_args`; None for safetensors.
    pub plans: Option<serde_json::Value>,
    pub dataset_json: Option<serde_json::Value>,
}

impl CheckpointSummary {
    pub fn read(file: &WeightsFile) -> Result<Self> {
        match file {
            WeightsFile::Pth(path) => Self::read_pth(path),
            WeightsFile::Safetensors { weights, sidecar } => Self::read_safetensors(weights, sidecar),
        }
    }

    /// The number of network parameters (elements of every canonical tensor).
    pub fn parameter_count(&self) -> usize {
        self.parameters.iter().map(|(_, shape)| shape.iter().product::<usize>()).sum()
    }

    /// The network's input channels: the second axis of its first convolution's weight (the first
    /// parameter in nnU-Net's `network.parameters()` order).
    pub fn input_channels(&self) -> Option<usize> {
        let mut names: Vec<String> = self.parameters.iter().map(|(name, _)| name.clone()).collect();
        nntools_checkpoint::nnunet_parameter_order(&mut names);
        let first = names.first()?;
        self.parameters.iter().find(|(name, _)| name == first).and_then(|(_, shape)| shape.get(1).copied())
    }

    fn read_pth(path: &Path) -> Result<Self> {
        let checkpoint = NnunetCheckpoint::read(path)?;
        let parameters =
            parameters(checkpoint.network_weights.iter().map(|(name, tensor)| (name.clone(), tensor.shape.clone())));
        let init_args = checkpoint.value.get("init_args");
        let json_arg = |key: &str| init_args.and_then(|args| args.get(key)).and_then(Value::to_json);
        Ok(Self {
            path: path.to_owned(),
            plans: json_arg("plans"),
            dataset_json: json_arg("dataset_json"),
            fold: json_arg("fold"),
            trainer_name: Some(checkpoint.trainer_name),
            configuration: checkpoint.configuration,
            parameters,
        })
    }

    /// Reads the safetensors header only (nothing of the tensors' data) and nn-train's sidecar. The
    /// trainer is the sidecar's `trainer_name` where it has one (a converted nnU-Net checkpoint), else
    /// that of the `.pth` nn-train writes beside the safetensors, else unknown.
    fn read_safetensors(weights: &Path, sidecar: &Path) -> Result<Self> {
        let parameters = parameters(safetensors_shapes(weights)?.into_iter());
        let sidecar_json: serde_json::Value = read_json(sidecar)?;
        let text = |key: &str| sidecar_json.get(key).and_then(serde_json::Value::as_str).map(str::to_owned);
        let configuration = text("configuration").ok_or_else(|| {
            Error::bad_input(sidecar, "no \"configuration\" (expected nn-train's checkpoint sidecar)")
        })?;
        let pth = weights.with_extension("pth");
        let trainer_name = match text("trainer_name") {
            Some(name) => Some(name),
            None if pth.is_file() => Some(NnunetCheckpoint::read(&pth)?.trainer_name),
            None => None,
        };
        let fold_folder = weights.parent().and_then(Path::file_name).map(|name| name.to_string_lossy());
        Ok(Self {
            path: weights.to_owned(),
            trainer_name,
            configuration,
            fold: fold_folder.and_then(|name| Fold::of_folder_name(&name)).map(fold_json),
            parameters,
            plans: None,
            dataset_json: None,
        })
    }
}

/// The parameters among a state_dict's tensors, sorted by name (so that files listing them in other
/// orders compare equal).
fn parameters(tensors: impl Iterator<Item = (String, Vec<usize>)>) -> Vec<(String, Vec<usize>)> {
    let mut parameters: Vec<_> = tensors.filter(|(name, _)| nntools_checkpoint::is_parameter_key(name)).collect();
    parameters.sort();
    parameters
}

/// The safetensors file's tensor names and shapes, from its header; the header must account for the
/// file's length exactly.
fn safetensors_shapes(path: &Path) -> Result<Vec<(String, Vec<usize>)>> {
    use std::io::Read;
    let bad = |problem: String| Error::bad_input(path, problem);
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, &e))?;
    let length = file.metadata().map_err(|e| Error::io(path, &e))?.len();
    let mut size = [0u8; 8];
    file.read_exact(&mut size).map_err(|e| Error::io(path, &e))?;
    let header_length = u64::from_le_bytes(size);
    if header_length > length - 8 {
        return Err(bad(format!("header of {header_length} bytes in a file of {length}")));
    }
    let mut header = vec![0u8; header_length as usize];
    file.read_exact(&mut header).map_err(|e| Error::io(path, &e))?;
    let entries: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("invalid safetensors header: {e}")))?;
    let mut tensors = Vec::new();
    for (name, entry) in entries.into_iter().filter(|(name, _)| name != "__metadata__") {
        let info: safetensors::tensor::TensorInfo =
            serde_json::from_value(entry).map_err(|e| bad(format!("tensor {name}: {e}")))?;
        tensors.push((name, info));
    }
    tensors.sort_by_key(|(_, info)| info.data_offsets);
    let shapes = tensors.iter().map(|(name, info)| (name.clone(), info.shape.clone())).collect();
    let metadata = safetensors::tensor::Metadata::new(None, tensors)
        .map_err(|e| bad(format!("invalid safetensors header: {e}")))?;
    if 8 + header_length + metadata.data_len() as u64 != length {
        let expected = 8 + header_length + metadata.data_len() as u64;
        return Err(bad(format!("holds {length} bytes, its header describes {expected}")));
    }
    Ok(shapes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_header_must_match_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let header = br#"{"b":{"dtype":"F32","shape":[2,3],"data_offsets":[8,32]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0; 32]);
        std::fs::write(&path, &bytes).unwrap();
        let shapes = safetensors_shapes(&path).unwrap();
        assert_eq!(shapes, vec![("a".to_owned(), vec![2]), ("b".to_owned(), vec![2, 3])]);
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let error = safetensors_shapes(&path).unwrap_err();
        let expected = format!("holds {} bytes, its header describes {}", bytes.len() - 1, bytes.len());
        assert!(error.message.ends_with(&expected), "{error}");
        std::fs::write(&path, [0xff; 12]).unwrap();
        assert!(safetensors_shapes(&path).unwrap_err().message.contains("header of"));
    }
}
