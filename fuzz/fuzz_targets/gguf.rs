#![no_main]
//! `cargo +nightly fuzz run gguf`: see ega_core::fuzzing::gguf.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ega_core::fuzzing::gguf(data));
