//! Search indexes: unit-norm image embeddings on disk, with what each row is.
//!
//! ```text
//! <index>/index.bin    header + rows (little-endian)
//! <index>/index.json   IndexMeta: model id, count, dim, dtype, and one entry per row
//! <index>/thumbs/      small PNG thumbnails, one per row (for contact sheets and the web page)
//! ```
//!
//! `index.bin` header (64 bytes): magic `EGAINDEX`, format version (u32), dtype (u32: 0 = f32,
//! 1 = f16), count (u64), dim (u32), 4 zero bytes, the model id (16 ASCII hex digits), 16 zero
//! bytes. Rows follow, `count × dim` values. A file whose length is not exactly header + rows is
//! refused as truncated (or padded); an index made by another model is refused by its id.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::store::StoredDtype;
use crate::{EgaError, Result};

/// First bytes of `index.bin`.
pub const MAGIC: &[u8; 8] = b"EGAINDEX";
/// Version of the index files written here.
pub const INDEX_FORMAT_VERSION: u32 = 1;
/// Bytes before the rows.
pub const HEADER_BYTES: usize = 64;

/// What one row of the index is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Identifier (file name, dataset id).
    pub id: String,
    /// The caption, when the source has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// The image file, when the row came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The thumbnail, relative to the index folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<String>,
}

/// `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// [`INDEX_FORMAT_VERSION`].
    pub format_version: u32,
    /// Id of the model whose embeddings these are.
    pub model_id: String,
    /// Where that model was loaded from when the index was made (informative).
    pub model: String,
    /// What was indexed (`shapes`, a folder, a JSONL file).
    pub source: String,
    /// The split of a dataset source (its first `count` samples, in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<crate::data::Split>,
    /// Rows.
    pub count: usize,
    /// Embedding dimension.
    pub dim: usize,
    /// Row storage.
    pub dtype: StoredDtype,
    /// One entry per row, in row order.
    pub entries: Vec<IndexEntry>,
}

/// An index in memory, rows as f32 (`count × dim`, row-major).
#[derive(Debug, Clone)]
pub struct Index {
    /// `index.json`.
    pub meta: IndexMeta,
    /// The rows.
    pub rows: Vec<f32>,
}

/// `index.bin`'s bytes for `rows` (`count × dim`) stored as `dtype`.
pub fn encode_bin(rows: &[f32], count: usize, dim: usize, dtype: StoredDtype, model_id: &str) -> Result<Vec<u8>> {
    if rows.len() != count * dim {
        return Err(EgaError::Data(format!("{} values for {count} rows of {dim}", rows.len())));
    }
    if model_id.len() != 16 || !model_id.is_ascii() {
        return Err(EgaError::Data(format!("model id {model_id:?} is not 16 hex digits")));
    }
    let mut out = Vec::with_capacity(HEADER_BYTES + rows.len() * dtype.bytes());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&INDEX_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&dtype.code().to_le_bytes());
    out.extend_from_slice(&(count as u64).to_le_bytes());
    out.extend_from_slice(&(dim as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(model_id.as_bytes());
    out.resize(HEADER_BYTES, 0);
    match dtype {
        StoredDtype::F32 => rows.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        StoredDtype::F16 => rows.iter().for_each(|v| out.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes())),
    }
    Ok(out)
}

/// The header fields of `index.bin`: (dtype, count, dim, model id).
pub fn decode_header(bytes: &[u8], name: &str) -> Result<(StoredDtype, usize, usize, String)> {
    if bytes.len() < HEADER_BYTES {
        return Err(EgaError::format(
            &name,
            format!("{} bytes, shorter than the {HEADER_BYTES}-byte header: truncated or not an index", bytes.len()),
        ));
    }
    if &bytes[0..8] != MAGIC {
        return Err(EgaError::format(&name, "not an EGA index (no EGAINDEX magic)"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4]));
    let version = u32_at(8);
    if version != INDEX_FORMAT_VERSION {
        return Err(EgaError::format(
            &name,
            format!("index format version {version}; this build reads version {INDEX_FORMAT_VERSION}"),
        ));
    }
    let dtype = match StoredDtype::from_code(u32_at(12)) {
        Some(dtype) => dtype,
        None => return Err(EgaError::format(&name, format!("unknown row type code {}", u32_at(12)))),
    };
    let count = u64::from_le_bytes(bytes[16..24].try_into().unwrap_or([0; 8]));
    let dim = u32_at(24) as usize;
    let model_id = String::from_utf8_lossy(&bytes[32..48]).to_string();
    let expected = (count as u128) * (dim as u128) * dtype.bytes() as u128 + HEADER_BYTES as u128;
    if expected != bytes.len() as u128 {
        return Err(EgaError::format(&name, format!(
            "the header says {count} rows of {dim} {dtype:?} values ({expected} bytes in all) but the file has {} bytes: {}",
            bytes.len(),
            if (bytes.len() as u128) < expected { "truncated" } else { "trailing data" }
        )));
    }
    Ok((dtype, count as usize, dim, model_id))
}

/// The rows of `index.bin` as f32, after checking the header.
pub fn decode_bin(bytes: &[u8], name: &str) -> Result<(StoredDtype, usize, usize, String, Vec<f32>)> {
    let (dtype, count, dim, model_id) = decode_header(bytes, name)?;
    let data = &bytes[HEADER_BYTES..];
    let rows: Vec<f32> = match dtype {
        StoredDtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        StoredDtype::F16 => data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
    };
    check_finite_rows(&rows, dim, name)?;
    Ok((dtype, count, dim, model_id, rows))
}

/// Refuses rows holding NaN or ±Inf: such a row would rank first (or nowhere) for every query.
fn check_finite_rows(rows: &[f32], dim: usize, name: &str) -> Result<()> {
    if let Some(at) = rows.iter().position(|v| !v.is_finite()) {
        let (row, column) = (at / dim.max(1), at % dim.max(1));
        return Err(EgaError::format(
            &name,
            format!(
            "row {row} holds a non-finite value ({} at column {column}); embeddings must be finite: rebuild the index",
            rows[at]
        ),
        ));
    }
    Ok(())
}

impl Index {
    /// An index from its two files' contents; `name` names it in messages.
    pub fn from_bytes(bin: &[u8], json: &[u8], name: &str) -> Result<Self> {
        let meta: IndexMeta = serde_json::from_slice(crate::fs::strip_bom(json))
            .map_err(|err| EgaError::format(format_args!("{name}/index.json"), format!("unreadable: {err}")))?;
        if meta.format_version != INDEX_FORMAT_VERSION {
            return Err(EgaError::format(
                format_args!("{name}/index.json"),
                format!("format version {}; this build reads {INDEX_FORMAT_VERSION}", meta.format_version),
            ));
        }
        let (dtype, count, dim, model_id, rows) = decode_bin(bin, &format!("{name}/index.bin"))?;
        if (dtype, count, dim, model_id.as_str()) != (meta.dtype, meta.count, meta.dim, meta.model_id.as_str())
            || meta.entries.len() != count
        {
            return Err(EgaError::format(&name, format!(
                "index.bin ({count} rows of {dim} {dtype:?}, model {model_id}) and index.json ({} rows, {} entries, of {} {:?}, model {}) disagree",
                meta.count,
                meta.entries.len(),
                meta.dim,
                meta.dtype,
                meta.model_id
            )));
        }
        Ok(Index { meta, rows })
    }

    /// Reads an index folder.
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |file: &str, cap| crate::fs::read_regular(&dir.join(file), cap);
        Self::from_bytes(
            &read("index.bin", crate::fs::MAX_WEIGHTS)?,
            &read("index.json", crate::fs::MAX_JSON)?,
            &dir.display().to_string(),
        )
    }

    /// Writes `index.bin` and `index.json` into `dir` (atomically each; thumbnails are the caller's).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|err| EgaError::io(dir, err))?;
        let bin = encode_bin(&self.rows, self.meta.count, self.meta.dim, self.meta.dtype, &self.meta.model_id)?;
        let json = serde_json::to_string_pretty(&self.meta)?;
        crate::store::write_atomic(&dir.join("index.bin"), &bin)?;
        crate::store::write_atomic(&dir.join("index.json"), json.as_bytes())
    }

    /// Refuses an index made by another model than `model_id`, or of another dimension.
    pub fn check_model(&self, model_id: &str, dim: usize, model_name: &str) -> Result<()> {
        if self.meta.dim != dim {
            return Err(EgaError::Data(format!(
                "the index holds {}-dimensional embeddings but {model_name} makes {dim}-dimensional ones",
                self.meta.dim
            )));
        }
        if self.meta.model_id != model_id {
            return Err(EgaError::Data(format!(
                "the index was made by model {} ({}), not by {model_name} (model {model_id}); rebuild it with `native index --model {model_name}`",
                self.meta.model_id, self.meta.model
            )));
        }
        Ok(())
    }
}

/// `values` rounded to the nearest f16 (what an f16 index stores), as f32.
pub fn round_to_f16(values: &[f32]) -> Vec<f32> {
    values.iter().map(|v| half::f16::from_f32(*v).to_f32()).collect()
}

/// One search hit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Hit {
    /// Row in the index.
    pub row: usize,
    /// Cosine similarity.
    pub score: f32,
}

/// Exact top-`k` by dot product on the host, ties broken by the lower row (the reference the
/// device search is held to).
pub fn search_host(rows: &[f32], dim: usize, query: &[f32], k: usize) -> Vec<Hit> {
    let mut hits: Vec<Hit> = rows
        .chunks_exact(dim.max(1))
        .enumerate()
        .map(|(row, values)| Hit { row, score: values.iter().zip(query).map(|(a, b)| a * b).sum() })
        .collect();
    let k = k.min(hits.len());
    let order = |a: &Hit, b: &Hit| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row));
    if k < hits.len() && k > 0 {
        hits.select_nth_unstable_by(k - 1, order);
    }
    hits.truncate(k);
    hits.sort_by(order);
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_round_trips_and_refuses_damage() {
        let rows: Vec<f32> = (0..12).map(|v| v as f32 / 16.0 - 0.3).collect();
        for dtype in [StoredDtype::F32, StoredDtype::F16] {
            let bin = encode_bin(&rows, 3, 4, dtype, "0123456789abcdef").unwrap();
            assert_eq!(bin.len(), HEADER_BYTES + 12 * dtype.bytes());
            let (d, count, dim, id, back) = decode_bin(&bin, "x").unwrap();
            assert_eq!((d, count, dim, id.as_str()), (dtype, 3, 4, "0123456789abcdef"));
            for (a, b) in rows.iter().zip(&back) {
                assert!((a - b).abs() <= if dtype == StoredDtype::F32 { 0.0 } else { 1e-3 }, "{a} vs {b}");
            }
            let err = decode_bin(&bin[..bin.len() - 1], "cut.bin").unwrap_err().to_string();
            assert!(err.contains("cut.bin") && err.contains("truncated"), "{err}");
        }
        assert!(decode_bin(b"EGAINDEX", "short").unwrap_err().to_string().contains("header"));
        assert!(decode_bin(&[7u8; 80], "junk").unwrap_err().to_string().contains("magic"));
    }

    #[test]
    fn an_index_refuses_another_model_or_dimension() {
        let meta = IndexMeta {
            format_version: INDEX_FORMAT_VERSION,
            model_id: "00000000000000aa".into(),
            model: "runs/a".into(),
            source: "shapes".into(),
            split: None,
            count: 1,
            dim: 2,
            dtype: StoredDtype::F32,
            entries: vec![IndexEntry { id: "x".into(), caption: None, image: None, thumbnail: None }],
        };
        let index = Index { meta: meta.clone(), rows: vec![1.0, 0.0] };
        assert!(index.check_model("00000000000000aa", 2, "runs/a").is_ok());
        let err = index.check_model("00000000000000aa", 64, "runs/b").unwrap_err().to_string();
        assert!(err.contains("2-dimensional") && err.contains("64-dimensional"), "{err}");
        let err = index.check_model("00000000000000bb", 2, "runs/b").unwrap_err().to_string();
        assert!(err.contains("rebuild"), "{err}");
        // index.bin and index.json must agree.
        let bin = encode_bin(&[1.0, 0.0], 1, 2, StoredDtype::F32, "00000000000000aa").unwrap();
        let json = serde_json::to_vec(&IndexMeta { count: 2, ..meta }).unwrap();
        assert!(Index::from_bytes(&bin, &json, "idx").unwrap_err().to_string().contains("disagree"));
    }

    #[test]
    fn host_search_ranks_by_score_then_row() {
        let rows = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.6, 0.8];
        let hits = search_host(&rows, 2, &[1.0, 0.0], 3);
        assert_eq!(hits.iter().map(|h| h.row).collect::<Vec<_>>(), vec![0, 2, 3]);
        assert_eq!(search_host(&rows, 2, &[1.0, 0.0], 10).len(), 4);
    }
}
