#![no_main]
//! See `wschat::fuzzing::connection_deflate` for the invariants this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wschat::fuzzing::connection_deflate(data));
