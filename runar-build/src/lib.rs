//! Build-time code generation for Runar (see the `runar` crate).
