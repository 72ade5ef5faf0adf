//! nnU-Net's preprocessing steps, shared by fingerprinting, `nn-resample` and inference.

pub mod cropping;
