#![no_main]
//! See `wschat::fuzzing::frame` for the invariants this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wschat::fuzzing::frame(data));
