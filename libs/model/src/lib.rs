//! nnU-Net model folders as they are shared: what a model folder holds ([`model_info`]), export to
//! nnU-Net's zip layout ([`export_zip`]), and install from zips with safe extraction ([`install_zip`]).

mod export;
mod folder;
mod info;
mod install;
mod layout;

pub use export::export_zip;
pub use info::{ModelInfo, model_info};
pub use install::install_zip;
