//! The pickler: [`crate::Value`] to pickle protocol 2 as `torch.save` writes it.
