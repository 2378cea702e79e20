#![no_main]
//! `cargo +nightly fuzz run index`: see ega_core::fuzzing::index.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ega_core::fuzzing::index(data));
