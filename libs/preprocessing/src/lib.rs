//! nnU-Net's preprocessing
//! (`nnunetv2/preprocessing/preprocessors/default_preprocessor.py: DefaultPreprocessor.run_case_npy`): transpose,
//! crop to nonzero, normalise, resample to the configuration's spacing, sample class locations; and the preprocessed
//! dataset on disk, written case by case so that an interrupted run resumes where it stopped. Shared by
//! fingerprinting (cropping), `nn-resample`, and inference (the same steps forward, resampling back).

mod case;
pub mod class_locations;
pub mod cropping;
mod export;
pub mod normalization;
pub mod resampling;
mod store;

pub use case::{CaseFiles, Preprocessed, Properties, Recipe, SitkStuff, preprocess_case, resampled_shape};
pub use export::{LogitsResampling, to_input_geometry};
pub use store::{Stamp, Summary, preprocess_dataset, read_label_map_npy, write_label_map_npy};
