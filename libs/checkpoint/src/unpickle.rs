//! The restricted unpickler: pickle opcodes to [`crate::Value`], with an allow-list of globals.
