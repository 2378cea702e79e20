#![no_main]
//! `cargo +nightly fuzz run jsonl`: see ega_core::fuzzing::jsonl.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ega_core::fuzzing::jsonl(data));
