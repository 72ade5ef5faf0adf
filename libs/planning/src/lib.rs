//! nnU-Net v2 experiment planning: from a dataset fingerprint and `dataset.json` to the plans
//! (`nnUNetPlans.json`) that every later stage reads: target spacing and transposition, the 2d,
//! 3d_fullres, 3d_lowres and cascade configurations, patch and batch sizes, network topology,
//! normalisation and resampling settings; and the pipeline's stage rules ([`stages`]) that follow from them.

pub mod feature_maps;
mod planner;
mod plans;
pub mod stages;
pub mod topology;

pub use planner::{PlanRequest, Preset, fullres_target_spacing, plan};
pub use plans::{ArchKwargs, Architecture, Configuration, NonlinKwargs, NormKwargs, Plans, ResamplingKwargs};
