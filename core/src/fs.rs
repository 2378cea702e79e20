//! Reading user files: only regular files, and never more than a cap, so a FIFO does not block
//! forever and `/dev/zero` or a huge file does not read until memory runs out (issue 16). Every
//! read of a file a user names goes through [`read_regular`] with one of the caps below.

use std::io::Read;
use std::path::Path;

use crate::{EgaError, Result};

/// Largest image file (PNG, JPEG, SVG): 64 MiB.
pub const MAX_IMAGE: u64 = 64 << 20;
/// Largest JSON / text file (configs, tokenizers, index.json, run.json, CSV): 64 MiB.
pub const MAX_JSON: u64 = 64 << 20;
/// Largest JSONL dataset file: 1 GiB.
pub const MAX_DATASET: u64 = 1 << 30;
/// Largest weights file (safetensors, GGUF, optimizer state, index.bin): 16 GiB (a 2.2 B
/// parameter model in f32 is about 9 GB).
pub const MAX_WEIGHTS: u64 = 16 << 30;

/// The bytes of `path`, which must be a regular file (symlinks to one are followed) of at most
/// `cap` bytes; the message names the file and the cap.
pub fn read_regular(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|err| EgaError::io(path, err))?;
    if !meta.is_file() {
        return Err(EgaError::Data(format!(
            "{}: not a regular file (a folder, FIFO or device); only regular files are read",
            path.display()
        )));
    }
    let too_big = |len: String| {
        EgaError::Data(format!("{}: {len} bytes, more than the {cap}-byte limit for this kind of file", path.display()))
    };
    if meta.len() > cap {
        return Err(too_big(meta.len().to_string()));
    }
    let file = std::fs::File::open(path).map_err(|err| EgaError::io(path, err))?;
    // The file may grow between the size check and the read: read at most one byte past the cap.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(cap + 1).read_to_end(&mut bytes).map_err(|err| EgaError::io(path, err))?;
    if bytes.len() as u64 > cap {
        return Err(too_big(format!("more than {cap}")));
    }
    Ok(bytes)
}

/// [`read_regular`] as UTF-8 text.
pub fn read_text(path: &Path, cap: u64) -> Result<String> {
    String::from_utf8(read_regular(path, cap)?).map_err(|_| EgaError::format(path.display(), "not UTF-8 text"))
}

/// `bytes` without a leading UTF-8 byte-order mark: editors on Windows write one, and serde_json
/// reads it as "expected value at line 1 column 1" (issue 16).
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}
