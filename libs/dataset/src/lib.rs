//! nnU-Net raw datasets: `dataset.json` in its v2 form (`channel_names`, `labels` name → int) or its
//! v1/MSD form (`modality`, `labels` int → name, `training` list), the label bookkeeping nnU-Net derives
//! from it, the training cases found on disk (`imagesTr/CASE_XXXX<ending>`, `labelsTr/CASE<ending>`), and the
//! integrity checks of one case's files ([`integrity`]) that the fingerprint and preprocessing share.

mod descriptor;
mod discovery;
mod fingerprint_file;
pub mod integrity;
mod labelling;
mod part;

pub use descriptor::{Descriptor, Label, check_labels, undeclared_labels};
pub use discovery::{
    Case, Dataset, channel_files_problem, channel_suffixes, group_image_files, list_image_cases, split_channel_suffix,
};
pub use fingerprint_file::{Fingerprint, IntensityStats};
pub use labelling::Labelling;
pub use part::Part;
