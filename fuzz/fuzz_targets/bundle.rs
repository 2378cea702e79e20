#![no_main]
//! `cargo +nightly fuzz run bundle`: see ega_core::fuzzing::bundle.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ega_core::fuzzing::bundle(data));
