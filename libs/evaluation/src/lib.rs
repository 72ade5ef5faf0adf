//! nnU-Net's evaluation (nnunet-spec 10): every predicted label map against its reference, per case
//! and per class (or region), Dice, IoU and the confusion counts, averaged over cases ignoring NaN, and
//! written as nnU-Net's `summary.json`.

mod metrics;
mod summary;

pub use metrics::{class_metrics, ClassMetrics};
pub use summary::{evaluate_folders, summarize, CaseResult, Summary};
