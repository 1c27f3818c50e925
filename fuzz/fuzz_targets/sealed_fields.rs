#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| runar_runtime::fuzzing::sealed_fields(data));
