//! nnU-Net's `.pth` checkpoints without Python.
//!
//! A `.pth` file written by `torch.save` is a zip archive: `ARCHIVE/data.pkl` (a pickle of the object)
//! and one `ARCHIVE/data/KEY` file per tensor storage. [`read_pth`] reads one through an unpickler that
//! knows exactly the globals nnU-Net's checkpoints use and executes nothing; [`write_pth`] writes the
//! layout `torch.load` reads. [`NnunetCheckpoint`] is nnU-Net's checkpoint dict
//! (`nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py: nnUNetTrainer.save_checkpoint`) as nn-tools reads
//! it, [`TrainingCheckpoint`] what nn-train writes.

mod checkpoint;
mod nnunet;
mod pickle;
mod read;
mod tensor;
mod unpickle;
mod value;
mod write;

pub use checkpoint::{NnunetCheckpoint, is_parameter_key};
pub use nnunet::{TrainingCheckpoint, TrainingLog, nnunet_parameter_order, state_dict_keys};
pub use read::{read_pth, read_pth_bytes};
pub use tensor::{Dtype, Tensor};
pub use value::Value;
pub use write::write_pth;
