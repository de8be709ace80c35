#![no_main]
//! See `wschat::fuzzing::utf8` for the invariants this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wschat::fuzzing::utf8(data));
