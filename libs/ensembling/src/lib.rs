//! nnU-Net's ensembling and model selection (nnunet-spec 9): predictions of several models averaged in
//! probability space, postprocessing that keeps the largest connected component, and the choice of the
//! best configuration (or pair of configurations) and of its postprocessing from cross-validation.

mod average;
mod components;
mod select;

pub use average::{average_folders, folder_descriptor};
pub use components::{Step, keep_largest_component, postprocess_folder};
pub use select::{InferencePlan, Model, SelectRequest, select};
