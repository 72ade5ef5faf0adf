//! numpy, reproduced where nnU-Net's numbers depend on it: the legacy `RandomState` draws it samples
//! with ([`RandomState`]), and the statistics it computes with (`median`, `percentile`, `allclose`,
//! in [`stats`]), so derived numbers agree with nnU-Net's to float rounding.

mod random;
pub mod stats;

pub use random::RandomState;
