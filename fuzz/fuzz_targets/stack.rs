#![no_main]
//! See `wschat::fuzzing::stack` for the invariants this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wschat::fuzzing::stack(data));
