//! Writing a `torch.save` zip archive (torch/serialization.py: `_save`), atomically.

use crate::Value;
use nntools_io::Result;
use std::path::Path;

/// Writes `value` as `torch.save` would, so that `torch.load(path, weights_only=False)` returns it.
pub fn write_pth(path: &Path, value: &Value) -> Result<()> {
    todo!("{} {value:?}", path.display())
}
