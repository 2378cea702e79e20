//! The storage floor under every file format of ega-core (`checkpoint`, `bundle`, `index` stand
//! on it side by side): atomic writes, the dtypes rows and weights are stored as, the hash the
//! formats record, safetensors bytes. It uses nothing of ega-core above it (no model, no format);
//! a model's weights as bytes and its id are `weights`, above the architectures.
//!
//! - [`write_atomic`]: a file replaced in one rename, flushed to the disk first ([`write_synced`]);
//!   its temporary files are the names [`is_temp_name`] recognises.
//! - [`HostTensor`]: a tensor's `f32` values on the host, in PyTorch layout, and
//!   [`TensorSource`]: named host tensors (what the formats read and write, what the
//!   architectures are built from).
//! - [`StoredDtype`]: f32 or f16 on disk (not burn's in-memory `DType`).
//! - [`fnv_hex`]: 64-bit FNV-1a, the one hash of the files.
//! - [`safetensors`]: reading a safetensors header, writing host tensors, F32 ↔ F16, checks.

pub mod safetensors;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{EgaError, Result};

/// A tensor read from a checkpoint: `f32` values, row-major, in PyTorch / Hugging Face layout.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first (a linear weight: `[out, in]`).
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// Number of values the shape holds.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// What a checkpoint stores a tensor as (for `native info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTensor {
    /// Hugging Face name.
    pub name: String,
    /// Dimensions in PyTorch order.
    pub shape: Vec<usize>,
    /// Stored type as the file names it: `F32`, `F16`, `BF16`, `Q8_0`, `Q4_1`, …
    pub dtype: String,
}

/// A checkpoint's tensors, by Hugging Face name.
pub trait TensorSource {
    /// The checkpoint, as messages should name it (a path).
    fn name(&self) -> &str;
    /// Every tensor the checkpoint holds, with its stored type.
    fn stored(&self) -> Vec<StoredTensor>;
    /// The tensor stored as `key`, converted to `f32` (dequantized, permuted back where the format
    /// requires); `None` when the checkpoint has no such tensor. A source may free a tensor's bytes
    /// once it has been handed out.
    fn take(&mut self, key: &str) -> Result<Option<HostTensor>>;
}

/// How values (index rows, a bundle's weights) are stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoredDtype {
    /// 4-byte floats.
    #[default]
    F32,
    /// 2-byte IEEE half floats (half the size; embeddings in [−1, 1] keep ~3 decimal digits).
    F16,
}

impl StoredDtype {
    /// The code `index.bin`'s header stores (0 = f32, 1 = f16).
    pub fn code(self) -> u32 {
        match self {
            StoredDtype::F32 => 0,
            StoredDtype::F16 => 1,
        }
    }

    /// The dtype of a header code, if it is one.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(StoredDtype::F32),
            1 => Some(StoredDtype::F16),
            _ => None,
        }
    }

    /// Bytes per value.
    pub fn bytes(self) -> usize {
        match self {
            StoredDtype::F32 => 4,
            StoredDtype::F16 => 2,
        }
    }
}

impl std::str::FromStr for StoredDtype {
    type Err = EgaError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(StoredDtype::F32),
            "f16" => Ok(StoredDtype::F16),
            other => Err(EgaError::config("dtype", other, "expected f32 or f16")),
        }
    }
}

/// 64-bit FNV-1a of `parts` in order (the same on every machine and build, unlike `std`'s
/// randomly seeded hasher).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    parts
        .iter()
        .flat_map(|part| part.iter())
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, &byte| (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3))
}

/// [`fnv1a`] as 16 hex digits (what the files record).
pub fn fnv_hex(parts: &[&[u8]]) -> String {
    format!("{:016x}", fnv1a(parts))
}

/// Writes `bytes` to `path` and flushes them to the disk before returning: a file or folder
/// renamed into place must not hold empty files after a power loss.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path).map_err(|err| EgaError::io(path, err))?;
    file.write_all(bytes).and_then(|_| file.sync_all()).map_err(|err| EgaError::io(path, err))
}

/// The name of a temporary file or folder of [`write_atomic`] and of a checkpoint being written
/// (`*.tmp-<PID>`).
pub fn is_temp_name(name: &str) -> bool {
    name.rsplit_once(".tmp-").is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Replaces `path` atomically with `bytes` (temp file in the same folder + rename). A failed
/// write (a full disk) removes its temp file, so nothing is left taking the space.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let written =
        write_synced(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path).map_err(|err| EgaError::io(path, err)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_is_the_reference_hash() {
        // FNV-1a 64 test vectors (the empty input is the offset basis).
        assert_eq!(fnv_hex(&[]), "cbf29ce484222325");
        assert_eq!(fnv_hex(&[b"a"]), "af63dc4c8601ec8c");
        assert_eq!(fnv_hex(&[b"foo", b"bar"]), fnv_hex(&[b"foobar"]));
    }

    #[test]
    fn temp_names_are_recognised() {
        assert!(is_temp_name("model.tmp-123") && is_temp_name("step-000300.tmp-9"));
        assert!(!is_temp_name("model.tmp-") && !is_temp_name("model.tmp-12a") && !is_temp_name("model.safetensors"));
    }

    #[test]
    fn stored_dtypes_round_trip_their_codes() {
        for dtype in [StoredDtype::F32, StoredDtype::F16] {
            assert_eq!(StoredDtype::from_code(dtype.code()), Some(dtype));
        }
        assert_eq!(StoredDtype::from_code(2), None);
        assert_eq!("f16".parse::<StoredDtype>().unwrap(), StoredDtype::F16);
        assert!("bf16".parse::<StoredDtype>().is_err());
    }
}
