//! Runar procedural macros (see the `runar` crate).
