#![no_main]
//! See `wschat::fuzzing::extensions` for the invariants this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wschat::fuzzing::extensions(data));
