//! nnU-Net's ensembling and model selection (`nnunetv2/ensembling/ensemble.py`,
//! `nnunetv2/postprocessing/remove_connected_components.py`, `nnunetv2/evaluation/find_best_configuration.py`):
//! predictions of several models averaged in probability space, postprocessing that keeps the largest connected
//! component, and the choice of the best configuration (or pair of configurations) and of its postprocessing from
//! cross-validation.

mod average;
mod components;
mod select;

pub use average::{average_folders, folder_descriptor};
pub use components::{Step, keep_largest_component, postprocess_folder};
pub use select::{InferencePlan, Model, SelectRequest, select};
