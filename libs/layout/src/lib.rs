//! Every file and folder name nn-tools reads or writes, in one place (docs/formats.md describes them):
//! a change of layout is one edit here, and no crate spells a name of another's output.

pub mod work;
