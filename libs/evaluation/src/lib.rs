//! nnU-Net's evaluation (`nnunetv2/evaluation/evaluate_predictions.py: compute_metrics_on_folder`): every predicted
//! label map against its reference, per case and per class (or region), Dice, IoU and the confusion counts, averaged
//! over cases ignoring NaN, and written as nnU-Net's `summary.json`; optionally surface metrics (HD95, normalised
//! surface Dice).

mod metrics;
mod overlay;
mod summary;
mod surface;

pub use metrics::{ClassMetrics, class_metrics};
pub use overlay::write_overlay;
pub use summary::{CaseResult, Options, Summary, case_metrics, classes, evaluate_folders, summarize};
pub use surface::{distance_to, surface_metrics};
