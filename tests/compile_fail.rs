//! `#[runar::service]` diagnostics: each mistake is reported at the user's span, with what to do.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
