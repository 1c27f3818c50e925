//! The README's code blocks, compiled and run as doc tests of this package, which has the
//! `shop` package of the README's `.proto` example (see `build.rs` and `proto/shop.proto`).

/// Every Rust block of the repository's README.md, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
