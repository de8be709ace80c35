#![no_main]
//! See `wschat::fuzzing::handshake` for the invariants this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wschat::fuzzing::handshake(data));
