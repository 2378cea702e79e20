#![no_main]
//! `cargo +nightly fuzz run safetensors`: see ega_core::fuzzing::safetensors.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ega_core::fuzzing::safetensors(data));
