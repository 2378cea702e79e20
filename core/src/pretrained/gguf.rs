//! GGUF (llama.cpp) files of Llama-family decoders: the file format, dequantization to `f32`,
//! Hugging Face names and layout, the [`LlamaConfig`] from the metadata, and the embedded
//! tokenizer as a `tokenizers` tokenizer.
//!
//! A GGUF file is (all little-endian; format spec: ggml-org/ggml `docs/gguf.md`):
//!
//! ```text
//! "GGUF"  u32 version (2 or 3)  u64 tensor_count  u64 kv_count
//! kv_count × (string key, u32 value_type, value)
//! tensor_count × (string name, u32 n_dims, n_dims × u64 dim (innermost first), u32 ggml_type, u64 offset)
//! padding to `general.alignment` (32 by default), then the tensor data; `offset` counts from here
//! ```
//!
//! A string is a `u64` byte length and UTF-8 bytes; an array is a `u32` item type, a `u64` count
//! and the items. Every length, count and offset read from the file is checked against the bytes
//! that are left and against the limits below before anything is allocated, so a truncated or
//! hostile file is an [`EgaError::Format`] naming the file and the field, never a panic.
//!
//! Tensors come out under their Hugging Face names in PyTorch layout (outermost dimension first),
//! with llama.cpp's per-head row permutation of the query and key projections undone
//! ([`unpermute_heads`]), so Hugging Face's rotate-half RoPE applies to them.

use std::collections::{BTreeMap, HashMap, HashSet};

use half::{bf16, f16};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use super::{HostTensor, StoredTensor, TensorSource};
use crate::model::smolvlm::config::LlamaConfig;
use crate::{EgaError, Result};

/// The four bytes a GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Longest string (key, tensor name, string value) read, in bytes: a chat template is a few KiB.
pub const MAX_STRING_BYTES: u64 = 1 << 20;
/// Most items in one metadata array (a vocabulary has ~10⁵ tokens).
pub const MAX_ARRAY_ITEMS: u64 = 1 << 24;
/// Most tensors in one file.
pub const MAX_TENSORS: u64 = 1 << 20;
/// Most metadata key-values in one file.
pub const MAX_METADATA: u64 = 1 << 20;
/// Most dimensions of one tensor (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Deepest nesting of arrays inside arrays.
const MAX_ARRAY_DEPTH: usize = 3;
/// Largest `general.alignment` accepted.
const MAX_ALIGNMENT: u64 = 1 << 16;

/// A metadata value, as the file types it.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 6.
    F32(f32),
    /// Type 7 (one byte, 0 or 1).
    Bool(bool),
    /// Type 8.
    String(String),
    /// Type 9: items of one type.
    Array(Vec<GgufValue>),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

impl GgufValue {
    /// The value as a non-negative whole number (any integer type).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v as u64),
            GgufValue::U16(v) => Some(v as u64),
            GgufValue::U32(v) => Some(v as u64),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed whole number (any integer type that fits).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v as i64),
            GgufValue::I16(v) => Some(v as i64),
            GgufValue::I32(v) => Some(v as i64),
            GgufValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float (float types, and integers).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The items of an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(items) => Some(items),
            _ => None,
        }
    }

    /// A short rendering for summaries: arrays by their length.
    fn brief(&self) -> String {
        match self {
            GgufValue::String(s) if s.chars().count() > 60 => {
                format!("{:?}… ({} bytes)", s.chars().take(60).collect::<String>(), s.len())
            }
            GgufValue::String(s) => format!("{s:?}"),
            GgufValue::Array(items) => format!("[{} items]", items.len()),
            GgufValue::Bool(v) => v.to_string(),
            GgufValue::F32(v) => v.to_string(),
            GgufValue::F64(v) => v.to_string(),
            other => other
                .as_i64()
                .map(|v| v.to_string())
                .or_else(|| other.as_u64().map(|v| v.to_string()))
                .unwrap_or_default(),
        }
    }
}

/// A ggml tensor type: its id in the file, name, and block layout where known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType(pub u32);

/// The tensor types [`dequantize`] reads.
pub const SUPPORTED_TYPES: &str = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1";

impl GgmlType {
    /// `(name, values per block, bytes per block)`; `None` for ids ggml does not define.
    /// Sizes from ggml's `type_traits` (ggml.c); the IQ types are named but not sized here.
    fn traits(self) -> Option<(&'static str, usize, usize)> {
        Some(match self.0 {
            0 => ("F32", 1, 4),
            1 => ("F16", 1, 2),
            2 => ("Q4_0", 32, 18),
            3 => ("Q4_1", 32, 20),
            6 => ("Q5_0", 32, 22),
            7 => ("Q5_1", 32, 24),
            8 => ("Q8_0", 32, 34),
            9 => ("Q8_1", 32, 36),
            10 => ("Q2_K", 256, 84),
            11 => ("Q3_K", 256, 110),
            12 => ("Q4_K", 256, 144),
            13 => ("Q5_K", 256, 176),
            14 => ("Q6_K", 256, 210),
            15 => ("Q8_K", 256, 292),
            16 => ("IQ2_XXS", 0, 0),
            17 => ("IQ2_XS", 0, 0),
            18 => ("IQ3_XXS", 0, 0),
            19 => ("IQ1_S", 0, 0),
            20 => ("IQ4_NL", 32, 18),
            21 => ("IQ3_S", 0, 0),
            22 => ("IQ2_S", 0, 0),
            23 => ("IQ4_XS", 256, 136),
            24 => ("I8", 1, 1),
            25 => ("I16", 1, 2),
            26 => ("I32", 1, 4),
            27 => ("I64", 1, 8),
            28 => ("F64", 1, 8),
            29 => ("IQ1_M", 0, 0),
            30 => ("BF16", 1, 2),
            34 => ("TQ1_0", 0, 0),
            35 => ("TQ2_0", 0, 0),
            39 => ("MXFP4", 32, 17),
            _ => return None,
        })
    }

    /// The name llama.cpp gives the type (`Q4_1`), or `type 99` for an unknown id.
    pub fn name(self) -> String {
        match self.traits() {
            Some((name, _, _)) => name.to_string(),
            None => format!("type {}", self.0),
        }
    }

    /// `(values per block, bytes per block)` where known.
    pub fn block(self) -> Option<(usize, usize)> {
        self.traits().filter(|&(_, values, _)| values > 0).map(|(_, values, bytes)| (values, bytes))
    }
}

/// One tensor's entry in the file's tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// Name as stored (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions, **innermost first** (GGUF order; a linear weight is `[in, out]`).
    pub dims: Vec<usize>,
    /// Stored type.
    pub kind: GgmlType,
    /// Byte offset of the data from the start of the data section.
    pub offset: usize,
    /// Number of values (the product of `dims`, checked not to overflow).
    pub numel: usize,
    /// Bytes of data, where the type's block size is known (checked to lie inside the file).
    pub byte_len: Option<usize>,
}

impl GgufTensorInfo {
    /// Dimensions outermost first (PyTorch / Hugging Face order).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A parsed GGUF file: metadata, tensor table and the bytes of the tensor data.
#[derive(Debug, Clone)]
pub struct GgufFile {
    name: String,
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensorInfo>,
    alignment: usize,
    /// The whole file; the data section starts at `data_start`.
    bytes: Vec<u8>,
    data_start: usize,
}

/// Reads little-endian values off a byte slice, every read bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    file: &'a str,
}

impl<'a> Cursor<'a> {
    fn error(&self, message: impl std::fmt::Display) -> EgaError {
        EgaError::format(self.file, format!("GGUF: {message}"))
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &dyn std::fmt::Display) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.error(format_args!(
                "truncated: {what} needs {n} bytes at offset {}, but the file ends at {}",
                self.pos,
                self.bytes.len()
            )));
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &dyn std::fmt::Display) -> Result<[u8; N]> {
        let slice = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn std::fmt::Display) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn std::fmt::Display) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A `u64` count, checked against `limit` and against the bytes left when each item takes at
    /// least `min_item_bytes` (so nothing is allocated for items the file cannot hold).
    fn count(&mut self, what: &dyn std::fmt::Display, limit: u64, min_item_bytes: usize) -> Result<usize> {
        let count = self.u64(what)?;
        if count > limit {
            return Err(self.error(format_args!("{what} is {count}, over the limit of {limit}")));
        }
        let count = count as usize;
        if count.saturating_mul(min_item_bytes) > self.remaining() {
            return Err(self.error(format_args!(
                "truncated: {what} is {count} ({min_item_bytes}+ bytes each), but only {} bytes are left",
                self.remaining()
            )));
        }
        Ok(count)
    }

    fn string(&mut self, what: &dyn std::fmt::Display) -> Result<String> {
        let len = self.u64(&format_args!("the length of {what}"))?;
        if len > MAX_STRING_BYTES {
            return Err(self.error(format_args!("{what} is {len} bytes long, over the limit of {MAX_STRING_BYTES}")));
        }
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.error(format_args!("{what} is not UTF-8")))
    }

    /// A value of type `kind`; `depth` counts the arrays around it.
    fn value(&mut self, kind: u32, what: &dyn std::fmt::Display, depth: usize) -> Result<GgufValue> {
        Ok(match kind {
            0 => GgufValue::U8(self.array::<1>(what)?[0]),
            1 => GgufValue::I8(self.array::<1>(what)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => GgufValue::U32(self.u32(what)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                other => return Err(self.error(format_args!("{what}: a bool is 0 or 1, found {other}"))),
            },
            8 => GgufValue::String(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.error(format_args!("{what}: arrays nested over {MAX_ARRAY_DEPTH} deep")));
                }
                let item_kind = self.u32(&format_args!("the item type of {what}"))?;
                let min_item_bytes = match item_kind {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    other => return Err(self.error(format_args!("{what}: unknown array item type {other}"))),
                };
                let count = self.count(&format_args!("the item count of {what}"), MAX_ARRAY_ITEMS, min_item_bytes)?;
                let mut items = Vec::with_capacity(count);
                for index in 0..count {
                    items.push(self.value(item_kind, &format_args!("{what}[{index}]"), depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(what)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(self.error(format_args!("{what}: unknown value type {other}"))),
        })
    }
}

impl GgufFile {
    /// Parses a whole GGUF file held in memory; `name` names it in messages (a path).
    pub fn parse(bytes: Vec<u8>, name: &str) -> Result<Self> {
        let mut cursor = Cursor { bytes: &bytes, pos: 0, file: name };
        let magic: [u8; 4] = cursor.array(&"the magic number")?;
        if magic != GGUF_MAGIC {
            return Err(cursor.error(format_args!("not a GGUF file (starts with {magic:02x?}, not \"GGUF\")")));
        }
        let version = cursor.u32(&"the version")?;
        if version != 2 && version != 3 {
            let hint = if version.swap_bytes() <= 3 { " (a big-endian file? only little-endian is read)" } else { "" };
            return Err(cursor.error(format_args!("version {version} is not supported (2 or 3){hint}")));
        }
        // A tensor entry is at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes;
        // a key-value at least 8 (key length) + 4 (type) + 1 byte.
        let tensor_count = cursor.u64(&"the tensor count")?;
        if tensor_count > MAX_TENSORS {
            return Err(
                cursor.error(format_args!("the tensor count is {tensor_count}, over the limit of {MAX_TENSORS}"))
            );
        }
        let kv_count = cursor.count(&"the metadata count", MAX_METADATA, 13)?;
        let mut metadata = BTreeMap::new();
        for index in 0..kv_count {
            let key = cursor.string(&format_args!("metadata key #{index}"))?;
            let kind = cursor.u32(&format_args!("the type of {key}"))?;
            let value = cursor.value(kind, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(cursor.error(format_args!("metadata key {key} appears twice")));
            }
        }
        let tensor_count = tensor_count as usize;
        if tensor_count.saturating_mul(24) > cursor.remaining() {
            return Err(cursor.error(format_args!(
                "truncated: {tensor_count} tensor entries do not fit in the {} bytes left",
                cursor.remaining()
            )));
        }
        let mut tensors = Vec::with_capacity(tensor_count);
        let mut names = HashSet::with_capacity(tensor_count);
        for index in 0..tensor_count {
            let tensor_name = cursor.string(&format_args!("the name of tensor #{index}"))?;
            let n_dims = cursor.u32(&format_args!("the dimension count of {tensor_name}"))?;
            if n_dims > MAX_DIMS {
                return Err(
                    cursor.error(format_args!("{tensor_name} has {n_dims} dimensions, over the limit of {MAX_DIMS}"))
                );
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            let mut numel: usize = 1;
            for axis in 0..n_dims {
                let dim = cursor.u64(&format_args!("dimension {axis} of {tensor_name}"))?;
                numel = usize::try_from(dim).ok().and_then(|d| numel.checked_mul(d)).ok_or_else(|| {
                    cursor.error(format_args!("the dimensions of {tensor_name} overflow (dimension {axis} is {dim})"))
                })?;
                dims.push(dim as usize);
            }
            let kind = GgmlType(cursor.u32(&format_args!("the type of {tensor_name}"))?);
            let offset = cursor.u64(&format_args!("the data offset of {tensor_name}"))?;
            let offset = usize::try_from(offset).map_err(|_| {
                cursor.error(format_args!("the data offset of {tensor_name} is {offset}, past any file"))
            })?;
            let byte_len = match kind.block() {
                Some((block_values, block_bytes)) => {
                    let inner = dims.first().copied().unwrap_or(1);
                    if !inner.is_multiple_of(block_values) {
                        return Err(cursor.error(format_args!(
                            "{tensor_name}: the inner dimension {inner} is not a multiple of the {} block of {block_values}",
                            kind.name()
                        )));
                    }
                    Some(
                        (numel / block_values)
                            .checked_mul(block_bytes)
                            .ok_or_else(|| cursor.error(format_args!("the byte size of {tensor_name} overflows")))?,
                    )
                }
                None => None,
            };
            if !names.insert(tensor_name.clone()) {
                return Err(cursor.error(format_args!("tensor {tensor_name} appears twice")));
            }
            tensors.push(GgufTensorInfo { name: tensor_name, dims, kind, offset, numel, byte_len });
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(value) => match value.as_u64() {
                Some(a) if a.is_power_of_two() && a <= MAX_ALIGNMENT => a as usize,
                _ => {
                    return Err(cursor.error(format_args!(
                        "general.alignment is {}, not a power of two up to {MAX_ALIGNMENT}",
                        value.brief()
                    )))
                }
            },
        };
        let data_start = cursor.pos.div_ceil(alignment) * alignment;
        let data_len = bytes.len().saturating_sub(data_start);
        for tensor in &tensors {
            if !tensor.offset.is_multiple_of(alignment) {
                return Err(cursor.error(format_args!(
                    "the data offset {} of {} is not a multiple of the alignment {alignment}",
                    tensor.offset, tensor.name
                )));
            }
            if let Some(len) = tensor.byte_len {
                if tensor.offset.checked_add(len).is_none_or(|end| end > data_len) {
                    return Err(cursor.error(format_args!(
                        "truncated: {} needs bytes {}..{} of the data section, which has {data_len}",
                        tensor.name,
                        tensor.offset,
                        tensor.offset as u128 + len as u128
                    )));
                }
            }
        }
        Ok(Self { name: name.to_string(), version, metadata, tensors, alignment, bytes, data_start })
    }

    /// Reads and parses a GGUF file from disk (native builds only).
    #[cfg(not(target_family = "wasm"))]
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = crate::fs::read_regular(path, crate::fs::MAX_WEIGHTS)?;
        Self::parse(bytes, &path.display().to_string())
    }

    /// The file, as messages name it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data alignment in bytes.
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// All metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// The tensor table, in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// The tensor named `name` (GGUF name).
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    fn error(&self, message: impl std::fmt::Display) -> EgaError {
        EgaError::format(&self.name, message.to_string())
    }

    /// A string value, or an error naming the key.
    fn str_of(&self, key: &str) -> Result<&str> {
        self.get(key)
            .and_then(GgufValue::as_str)
            .ok_or_else(|| self.error(format_args!("{key} is missing or not a string")))
    }

    /// A whole-number value, or an error naming the key.
    fn usize_of(&self, key: &str) -> Result<usize> {
        self.get(key)
            .and_then(GgufValue::as_u64)
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| self.error(format_args!("{key} is missing or not a whole number")))
    }

    /// An array of strings, or an error naming the key.
    fn strings_of(&self, key: &str) -> Result<Vec<&str>> {
        let items = self
            .get(key)
            .and_then(GgufValue::as_array)
            .ok_or_else(|| self.error(format_args!("{key} is missing or not an array")))?;
        items
            .iter()
            .enumerate()
            .map(|(i, v)| v.as_str().ok_or_else(|| self.error(format_args!("{key}[{i}] is not a string"))))
            .collect()
    }

    /// The raw bytes of a tensor whose type has a known size.
    fn tensor_bytes(&self, info: &GgufTensorInfo) -> Result<&[u8]> {
        let len = info.byte_len.ok_or_else(|| self.unsupported(info))?;
        let start = self.data_start.saturating_add(info.offset);
        // Checked in `parse`; checked again so a logic error is an error, not a panic.
        self.bytes
            .get(start..start.saturating_add(len))
            .ok_or_else(|| self.error(format_args!("{} lies outside the file", info.name)))
    }

    fn unsupported(&self, info: &GgufTensorInfo) -> EgaError {
        self.error(format_args!(
            "{} is {}, which this loader does not read (supported: {SUPPORTED_TYPES})",
            info.name,
            info.kind.name()
        ))
    }

    /// The tensor `name` (GGUF name) dequantized to `f32`, in stored order (row-major with the
    /// innermost GGUF dimension fastest, i.e. PyTorch layout of [`GgufTensorInfo::shape`]).
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.tensor_info(name).ok_or_else(|| self.error(format_args!("no tensor {name}")))?;
        let bytes = self.tensor_bytes(info)?;
        dequantize(info.kind, bytes, info.numel).ok_or_else(|| self.unsupported(info))
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Dequantizes `numel` values of type `kind` from `bytes` (which must hold exactly that many,
/// as [`GgufTensorInfo::byte_len`] computes); `None` for a type this loader does not read.
///
/// Block layouts (ggml-quants.c), 32 values per block, `d` and `m` little-endian f16:
/// - Q8_0: `d`, 32 × i8 `q`; `x = d·q`.
/// - Q4_0: `d`, 16 bytes; value `j < 16` is the low nibble of byte `j`, value `j + 16` its high
///   nibble; `x = d·(q − 8)`.
/// - Q4_1: `d`, `m`, 16 bytes of nibbles as Q4_0; `x = d·q + m`.
/// - Q5_0: `d`, u32 `qh`, 16 bytes of nibbles as Q4_0; bit `j` of `qh` is the fifth bit of value
///   `j`; `x = d·(q − 16)`.
/// - Q5_1: `d`, `m`, u32 `qh`, nibbles as Q5_0; `x = d·q + m`.
pub fn dequantize(kind: GgmlType, bytes: &[u8], numel: usize) -> Option<Vec<f32>> {
    let (block_values, block_bytes) = kind.block()?;
    if !numel.is_multiple_of(block_values) || bytes.len() != numel / block_values * block_bytes {
        return None;
    }
    let mut out = Vec::with_capacity(numel);
    let blocks = bytes.chunks_exact(block_bytes);
    match kind.0 {
        0 => out.extend(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        1 => out.extend(blocks.map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())),
        30 => out.extend(blocks.map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        8 => {
            for block in blocks {
                let d = f16_at(block, 0);
                out.extend(block[2..34].iter().map(|&q| d * (q as i8) as f32));
            }
        }
        2 => {
            for block in blocks {
                let d = f16_at(block, 0);
                let nibbles = &block[2..18];
                out.extend(nibbles.iter().map(|&q| d * ((q & 0x0F) as f32 - 8.0)));
                out.extend(nibbles.iter().map(|&q| d * ((q >> 4) as f32 - 8.0)));
            }
        }
        3 => {
            for block in blocks {
                let (d, m) = (f16_at(block, 0), f16_at(block, 2));
                let nibbles = &block[4..20];
                out.extend(nibbles.iter().map(|&q| d * (q & 0x0F) as f32 + m));
                out.extend(nibbles.iter().map(|&q| d * (q >> 4) as f32 + m));
            }
        }
        6 | 7 => {
            let with_min = kind.0 == 7;
            let head = if with_min { 4 } else { 2 };
            for block in blocks {
                let d = f16_at(block, 0);
                let (m, offset) = if with_min { (f16_at(block, 2), 0.0) } else { (0.0, 16.0) };
                let qh = u32::from_le_bytes([block[head], block[head + 1], block[head + 2], block[head + 3]]);
                let nibbles = &block[head + 4..head + 20];
                let fifth = |j: usize| (((qh >> j) & 1) << 4) as u8;
                out.extend(nibbles.iter().enumerate().map(|(j, &q)| d * (((q & 0x0F) | fifth(j)) as f32 - offset) + m));
                out.extend(
                    nibbles.iter().enumerate().map(|(j, &q)| d * (((q >> 4) | fifth(j + 16)) as f32 - offset) + m),
                );
            }
        }
        _ => return None,
    }
    Some(out)
}

/// Undoes llama.cpp's per-head row permutation of a query or key projection.
///
/// `weight` is `[rows, cols]` row-major (PyTorch layout, `rows = n_head · head_dim`). llama.cpp's
/// converter (`convert_hf_to_gguf.py`, `LlamaModel.permute`) interleaves each head's two halves so
/// that its pairwise RoPE matches Hugging Face's rotate-half RoPE: GGUF row `h·hd + 2i + j` holds
/// Hugging Face row `h·hd + j·hd/2 + i` (`j ∈ {0, 1}`, `i < hd/2`). This maps the rows back.
pub fn unpermute_heads(weight: &[f32], rows: usize, cols: usize, n_head: usize) -> Option<Vec<f32>> {
    if n_head == 0 || !rows.is_multiple_of(2 * n_head) || weight.len() != rows * cols {
        return None;
    }
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut out = vec![0.0f32; weight.len()];
    for h in 0..n_head {
        for j in 0..2 {
            for i in 0..half {
                let hf_row = h * head_dim + j * half + i;
                let gguf_row = h * head_dim + 2 * i + j;
                out[hf_row * cols..(hf_row + 1) * cols]
                    .copy_from_slice(&weight[gguf_row * cols..(gguf_row + 1) * cols]);
            }
        }
    }
    Some(out)
}

/// Which query/key permutation a tensor carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Permuted {
    No,
    Query,
    Key,
}

/// The Hugging Face name of a Llama GGUF tensor, and whether its rows are permuted; `None` for a
/// name outside the Llama layout.
fn hf_name(gguf: &str) -> Option<(String, Permuted)> {
    let fixed = match gguf {
        "token_embd.weight" => Some("text_model.embed_tokens.weight"),
        "output_norm.weight" => Some("text_model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some((name.to_string(), Permuted::No));
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (hf_part, permuted) = match part {
        "attn_q.weight" => ("self_attn.q_proj.weight", Permuted::Query),
        "attn_k.weight" => ("self_attn.k_proj.weight", Permuted::Key),
        "attn_v.weight" => ("self_attn.v_proj.weight", Permuted::No),
        "attn_output.weight" => ("self_attn.o_proj.weight", Permuted::No),
        "ffn_gate.weight" => ("mlp.gate_proj.weight", Permuted::No),
        "ffn_up.weight" => ("mlp.up_proj.weight", Permuted::No),
        "ffn_down.weight" => ("mlp.down_proj.weight", Permuted::No),
        "attn_norm.weight" => ("input_layernorm.weight", Permuted::No),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", Permuted::No),
        _ => return None,
    };
    Some((format!("text_model.layers.{layer}.{hf_part}"), permuted))
}

/// One tensor as the checkpoint hands it out.
#[derive(Debug, Clone)]
struct Entry {
    /// Index into the file's tensor table.
    index: usize,
    permuted: Permuted,
    taken: bool,
}

/// What `native info` prints about a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufSummary {
    /// The file.
    pub file: String,
    /// GGUF version.
    pub version: u32,
    /// `general.architecture`.
    pub architecture: String,
    /// `general.name`, when stored.
    pub model_name: Option<String>,
    /// `general.file_type` as llama.cpp names it (`MOSTLY_Q4_1`), when stored.
    pub file_type: Option<String>,
    /// Number of tensors.
    pub tensor_count: usize,
    /// Number of values over all tensors.
    pub parameter_count: usize,
    /// How many tensors of each stored type (`Q4_1` → 210).
    pub tensor_types: BTreeMap<String, usize>,
    /// `tokenizer.ggml.model`, when stored.
    pub tokenizer_model: Option<String>,
    /// Every metadata key with a short rendering of its value (arrays by length).
    pub metadata: Vec<(String, String)>,
}

impl std::fmt::Display for GgufSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}: GGUF v{}, architecture {}", self.file, self.version, self.architecture)?;
        if let Some(name) = &self.model_name {
            writeln!(f, "  name: {name}")?;
        }
        if let Some(file_type) = &self.file_type {
            writeln!(f, "  file type: {file_type}")?;
        }
        let types: Vec<String> = self.tensor_types.iter().map(|(t, n)| format!("{n} × {t}")).collect();
        writeln!(f, "  tensors: {} ({}), {} values", self.tensor_count, types.join(", "), self.parameter_count)?;
        if let Some(model) = &self.tokenizer_model {
            writeln!(f, "  tokenizer: {model}")?;
        }
        Ok(())
    }
}

/// `general.file_type` names (llama.cpp's `llama_ftype`).
fn file_type_name(id: u64) -> String {
    let name = match id {
        0 => "ALL_F32",
        1 => "MOSTLY_F16",
        2 => "MOSTLY_Q4_0",
        3 => "MOSTLY_Q4_1",
        7 => "MOSTLY_Q8_0",
        8 => "MOSTLY_Q5_0",
        9 => "MOSTLY_Q5_1",
        10 => "MOSTLY_Q2_K",
        11 => "MOSTLY_Q3_K_S",
        12 => "MOSTLY_Q3_K_M",
        13 => "MOSTLY_Q3_K_L",
        14 => "MOSTLY_Q4_K_S",
        15 => "MOSTLY_Q4_K_M",
        16 => "MOSTLY_Q5_K_S",
        17 => "MOSTLY_Q5_K_M",
        18 => "MOSTLY_Q6_K",
        32 => "MOSTLY_BF16",
        _ => return format!("file type {id}"),
    };
    name.to_string()
}

/// A GGUF checkpoint of a Llama-family decoder (`general.architecture = llama`), handing out its
/// tensors under Hugging Face names (see [`TensorSource`]).
///
/// Tensors outside the Llama layout (none in SmolLM2) are handed out under their GGUF names.
/// [`TensorSource::take`] gives each tensor once; the file's bytes are freed when every tensor
/// has been taken.
#[derive(Debug, Clone)]
pub struct GgufCheckpoint {
    file: GgufFile,
    entries: BTreeMap<String, Entry>,
    left: usize,
    n_head: usize,
    n_head_kv: usize,
}

impl GgufCheckpoint {
    /// Reads a GGUF file from disk (native builds only).
    #[cfg(not(target_family = "wasm"))]
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::from_file(GgufFile::open(path)?)
    }

    /// A GGUF file held in memory; `name` names it in messages.
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<Self> {
        Self::from_file(GgufFile::parse(bytes, name)?)
    }

    /// A parsed file, checked to be a Llama decoder.
    pub fn from_file(file: GgufFile) -> Result<Self> {
        let architecture = file.str_of("general.architecture")?;
        if architecture != "llama" {
            return Err(file.error(format_args!(
                "general.architecture is {architecture:?}; this loader reads \"llama\" decoders only"
            )));
        }
        let n_head = file.usize_of("llama.attention.head_count")?;
        let n_head_kv = match file.get("llama.attention.head_count_kv") {
            Some(_) => file.usize_of("llama.attention.head_count_kv")?,
            None => n_head,
        };
        let mut entries = BTreeMap::new();
        for (index, info) in file.tensors.iter().enumerate() {
            let (name, permuted) = hf_name(&info.name).unwrap_or_else(|| (info.name.clone(), Permuted::No));
            if entries.insert(name.clone(), Entry { index, permuted, taken: false }).is_some() {
                return Err(file.error(format_args!("two tensors map to {name}")));
            }
        }
        let left = entries.len();
        Ok(Self { file, entries, left, n_head, n_head_kv })
    }

    /// The parsed file (metadata, tensor table).
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// The decoder's shape from the metadata (`llama.*` keys; vocabulary from `llama.vocab_size`,
    /// else the token list; tied embeddings when there is no `output.weight`).
    pub fn llama_config(&self) -> Result<LlamaConfig> {
        let file = &self.file;
        let f64_of = |key: &str, default: f64| -> Result<f64> {
            match file.get(key) {
                None => Ok(default),
                Some(v) => v.as_f64().ok_or_else(|| file.error(format_args!("{key} is not a number"))),
            }
        };
        if let Some(kind) = file.get("llama.rope.scaling.type") {
            if kind.as_str() != Some("none") {
                return Err(file.error(format_args!("llama.rope.scaling.type is {}, not supported", kind.brief())));
            }
        }
        if file.tensor_info("rope_freqs.weight").is_some() {
            return Err(file.error("rope_freqs.weight (RoPE frequency factors, Llama 3.1 scaling) is not supported"));
        }
        let vocab_size = match file.get("llama.vocab_size") {
            Some(_) => file.usize_of("llama.vocab_size")?,
            None => file
                .get("tokenizer.ggml.tokens")
                .and_then(GgufValue::as_array)
                .map(|tokens| tokens.len())
                .ok_or_else(|| file.error("neither llama.vocab_size nor tokenizer.ggml.tokens is stored"))?,
        };
        let hidden_size = file.usize_of("llama.embedding_length")?;
        if let Some(embedding) = file.tensor_info("token_embd.weight") {
            if embedding.dims != [hidden_size, vocab_size] {
                return Err(file.error(format_args!(
                    "token_embd.weight has dimensions {:?}, not [{hidden_size}, {vocab_size}] (embedding_length, vocabulary)",
                    embedding.dims
                )));
            }
        }
        let config = LlamaConfig {
            vocab_size,
            hidden_size,
            intermediate_size: file.usize_of("llama.feed_forward_length")?,
            num_hidden_layers: file.usize_of("llama.block_count")?,
            num_attention_heads: self.n_head,
            num_key_value_heads: self.n_head_kv,
            rms_norm_eps: f64_of("llama.attention.layer_norm_rms_epsilon", 1e-5)?,
            rope_theta: f64_of("llama.rope.freq_base", 10_000.0)?,
            max_position_embeddings: file.usize_of("llama.context_length")?,
            tie_word_embeddings: file.tensor_info("output.weight").is_none(),
        };
        config.validate()?;
        for key in ["llama.rope.dimension_count", "llama.attention.key_length", "llama.attention.value_length"] {
            if file.get(key).is_some() && file.usize_of(key)? != config.head_dim() {
                return Err(file.error(format_args!(
                    "{key} is {}, not the head size {} (not supported)",
                    file.usize_of(key)?,
                    config.head_dim()
                )));
            }
        }
        Ok(config)
    }

    /// What `native info` prints: architecture, name, file type, tensor counts.
    pub fn metadata_summary(&self) -> GgufSummary {
        let file = &self.file;
        let mut tensor_types = BTreeMap::new();
        for info in &file.tensors {
            *tensor_types.entry(info.kind.name()).or_insert(0) += 1;
        }
        GgufSummary {
            file: file.name.clone(),
            version: file.version,
            architecture: file.str_of("general.architecture").unwrap_or_default().to_string(),
            model_name: file.get("general.name").and_then(GgufValue::as_str).map(str::to_string),
            file_type: file.get("general.file_type").and_then(GgufValue::as_u64).map(file_type_name),
            tensor_count: file.tensors.len(),
            // Saturating: a tensor of a type without a known size is not checked against the file,
            // so its dimensions can be anything (the sum overflowed; found by fuzzing, issue 16).
            parameter_count: file.tensors.iter().fold(0usize, |sum, t| sum.saturating_add(t.numel)),
            tensor_types,
            tokenizer_model: file.get("tokenizer.ggml.model").and_then(GgufValue::as_str).map(str::to_string),
            metadata: file.metadata.iter().map(|(k, v)| (k.clone(), v.brief())).collect(),
        }
    }

    /// The tokenizer stored in the metadata, built as transformers builds it from the same file
    /// (`AutoTokenizer.from_pretrained(dir, gguf_file=…)`, transformers 5.24
    /// `integrations/gguf/gguf_tokenizer_mapping.py`), so both give the same ids:
    ///
    /// - a byte-level BPE over `tokenizer.ggml.tokens` (tokens with characters outside GPT-2's byte
    ///   alphabet respelled byte by byte) and `tokenizer.ggml.merges`, no unknown token;
    /// - GPT-2's byte-level pre-tokenizer (its split regex, no prefix space), or for
    ///   `tokenizer.ggml.pre` = `llama-bpe` (Llama 3) and its aliases Llama 3's split regex;
    /// - a byte-level decoder and a post-processor that adds nothing (`$A`, `$A:0 $B:1`);
    /// - control tokens (`token_type` 3) spelled in the byte alphabet as special added tokens,
    ///   user-defined ones (4) as plain added tokens.
    ///
    /// Only `tokenizer.ggml.model = "gpt2"` is read: any other (sentencepiece `llama`, …) is an
    /// error naming it.
    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer> {
        let file = &self.file;
        let model = file.str_of("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(file.error(format_args!(
                "tokenizer.ggml.model is {model:?}, which this loader does not build a tokenizer from (supported: \"gpt2\")"
            )));
        }
        let tokens = file.strings_of("tokenizer.ggml.tokens")?;
        let token_types: Vec<i64> = match file.get("tokenizer.ggml.token_type") {
            None => Vec::new(),
            Some(value) => {
                let items = value.as_array().ok_or_else(|| file.error("tokenizer.ggml.token_type is not an array"))?;
                let types: Option<Vec<i64>> = items.iter().map(GgufValue::as_i64).collect();
                let types = types.ok_or_else(|| file.error("tokenizer.ggml.token_type holds a non-integer"))?;
                if types.len() != tokens.len() {
                    return Err(file.error(format_args!(
                        "tokenizer.ggml.token_type has {} entries for {} tokens",
                        types.len(),
                        tokens.len()
                    )));
                }
                types
            }
        };
        let merges = file
            .strings_of("tokenizer.ggml.merges")?
            .into_iter()
            .enumerate()
            .map(|(i, merge)| match merge.split(' ').collect::<Vec<_>>()[..] {
                [left, right] => Ok((left.to_string(), right.to_string())),
                _ => Err(file.error(format_args!("tokenizer.ggml.merges[{i}] = {merge:?} is not two tokens"))),
            })
            .collect::<Result<Vec<_>>>()?;
        let spelling = byte_spelling();
        let alphabet: HashSet<char> = spelling.iter().copied().collect();
        let mut vocab = Vocab::with_capacity(tokens.len());
        for (id, token) in tokens.iter().enumerate() {
            let spelled = if token.chars().all(|c| alphabet.contains(&c)) {
                token.to_string()
            } else {
                token.bytes().map(|b| spelling[b as usize]).collect()
            };
            // Like the Python dict transformers builds: a later duplicate wins.
            vocab.insert(spelled, id as u32);
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|err| EgaError::Tokenizer(format!("{}: the GGUF vocabulary: {err}", file.name)))?;
        let mut tokenizer = tokenizers::Tokenizer::new(bpe);
        let split = file.get("tokenizer.ggml.pre").and_then(GgufValue::as_str).and_then(pre_tokenizer_split);
        match split {
            None => {
                tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
            }
            Some(pattern) => {
                let split =
                    Split::new(SplitPattern::Regex(pattern.to_string()), SplitDelimiterBehavior::Isolated, false)
                        .map_err(|err| EgaError::Tokenizer(format!("{}: the split regex: {err}", file.name)))?;
                tokenizer.with_pre_tokenizer(Some(PreSequence::new(vec![
                    split.into(),
                    ByteLevel::new(false, true, false).into(),
                ])));
            }
        }
        tokenizer.with_decoder(Some(ByteLevel::default()));
        // `$A` and `$A:0 $B:1`: no special tokens added around the text.
        tokenizer.with_post_processor(Some(TemplateProcessing::default()));
        let of_type = |wanted: i64| {
            tokens.iter().zip(&token_types).filter(move |(_, kind)| **kind == wanted).map(|(token, _)| *token)
        };
        // 3 = CONTROL (`<|im_start|>`); one not spelled in the byte alphabet is a llama.cpp
        // mislabel that transformers skips.
        let control: Vec<AddedToken> = of_type(3)
            .filter(|token| token.chars().all(|c| alphabet.contains(&c)))
            .map(|token| AddedToken::from(token.to_string(), true).normalized(false))
            .collect();
        tokenizer.add_special_tokens(&control);
        // 4 = USER_DEFINED: matched whole, not special.
        let user: Vec<AddedToken> = of_type(4)
            .filter(|token| tokenizer.token_to_id(token).is_some())
            .map(|token| AddedToken::from(token.to_string(), false).normalized(false))
            .collect();
        tokenizer.add_tokens(&user);
        Ok(tokenizer)
    }

    /// Special-token ids stored in the metadata (`tokenizer.ggml.{bos,eos,unknown,padding}_token_id`).
    pub fn special_token_ids(&self) -> BTreeMap<&'static str, u32> {
        let mut ids = BTreeMap::new();
        for (name, key) in [
            ("bos", "tokenizer.ggml.bos_token_id"),
            ("eos", "tokenizer.ggml.eos_token_id"),
            ("unk", "tokenizer.ggml.unknown_token_id"),
            ("pad", "tokenizer.ggml.padding_token_id"),
        ] {
            if let Some(id) = self.file.get(key).and_then(GgufValue::as_u64).and_then(|v| u32::try_from(v).ok()) {
                ids.insert(name, id);
            }
        }
        ids
    }
}

/// GPT-2's byte → character map (`bytes_to_unicode`): printable Latin-1 bytes stand for
/// themselves, the other 68 bytes for U+0100 onwards in byte order.
fn byte_spelling() -> [char; 256] {
    let mut spelling = ['\0'; 256];
    let mut next = 256u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        spelling[byte as usize] = if printable {
            byte as char
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap_or('\0')
        };
    }
    spelling
}

/// The split regex transformers uses for a `tokenizer.ggml.pre` value; `None` keeps GPT-2's
/// byte-level split (what transformers does for the names it does not list, `smollm` included).
fn pre_tokenizer_split(pre: &str) -> Option<&'static str> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" | "dbrx" | "smaug-bpe" => Some(LLAMA3),
        _ => None,
    }
}

impl TensorSource for GgufCheckpoint {
    fn name(&self) -> &str {
        &self.file.name
    }

    fn stored(&self) -> Vec<StoredTensor> {
        self.entries
            .iter()
            .map(|(name, entry)| {
                let info = &self.file.tensors[entry.index];
                StoredTensor { name: name.clone(), shape: info.shape(), dtype: info.kind.name() }
            })
            .collect()
    }

    fn take(&mut self, key: &str) -> Result<Option<HostTensor>> {
        let Some(entry) = self.entries.get(key) else { return Ok(None) };
        if entry.taken {
            return Err(self.file.error(format_args!("{key} was handed out already (each tensor is taken once)")));
        }
        let info = &self.file.tensors[entry.index];
        let shape = info.shape();
        let data = self.file.dequantize(&info.name.clone())?;
        let data = match entry.permuted {
            Permuted::No => data,
            Permuted::Query | Permuted::Key => {
                let heads = if entry.permuted == Permuted::Query { self.n_head } else { self.n_head_kv };
                let [rows, cols] = shape[..] else {
                    return Err(self.file.error(format_args!("{} has shape {shape:?}, not a matrix", info.name)));
                };
                unpermute_heads(&data, rows, cols, heads).ok_or_else(|| {
                    self.file.error(format_args!(
                        "{} has {rows} rows, not a whole number of {heads} heads of even size",
                        info.name
                    ))
                })?
            }
        };
        if let Some(entry) = self.entries.get_mut(key) {
            entry.taken = true;
        }
        self.left -= 1;
        if self.left == 0 {
            self.file.bytes = Vec::new();
        }
        Ok(Some(HostTensor { shape, data }))
    }
}

/// Reads every tensor of `source` (for load-time measurements and tests).
pub fn take_all(source: &mut dyn TensorSource) -> Result<HashMap<String, HostTensor>> {
    let names: Vec<String> = source.stored().into_iter().map(|t| t.name).collect();
    let mut out = HashMap::with_capacity(names.len());
    for name in names {
        if let Some(tensor) = source.take(&name)? {
            out.insert(name, tensor);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes GGUF v3 bytes: metadata `(key, type, encoded value)`, tensors `(name, dims innermost
    /// first, type, data)`, data aligned to 32.
    struct Writer {
        metadata: Vec<(String, u32, Vec<u8>)>,
        tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    }

    fn string_bytes(s: &str) -> Vec<u8> {
        let mut out = (s.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(s.as_bytes());
        out
    }

    impl Writer {
        fn llama() -> Self {
            let mut w = Writer { metadata: Vec::new(), tensors: Vec::new() };
            w.string("general.architecture", "llama");
            for (key, value) in [
                ("llama.embedding_length", 8u32),
                ("llama.block_count", 1),
                ("llama.feed_forward_length", 16),
                ("llama.attention.head_count", 2),
                ("llama.attention.head_count_kv", 1),
                ("llama.context_length", 64),
                ("llama.vocab_size", 4),
            ] {
                w.u32(key, value);
            }
            w.metadata.push(("llama.rope.freq_base".into(), 6, 100_000f32.to_le_bytes().to_vec()));
            w
        }

        fn string(&mut self, key: &str, value: &str) {
            self.metadata.push((key.into(), 8, string_bytes(value)));
        }

        fn u32(&mut self, key: &str, value: u32) {
            self.metadata.push((key.into(), 4, value.to_le_bytes().to_vec()));
        }

        fn strings(&mut self, key: &str, values: &[&str]) {
            let mut bytes = 8u32.to_le_bytes().to_vec();
            bytes.extend_from_slice(&(values.len() as u64).to_le_bytes());
            for v in values {
                bytes.extend(string_bytes(v));
            }
            self.metadata.push((key.into(), 9, bytes));
        }

        fn f32_tensor(&mut self, name: &str, dims: &[u64], values: &[f32]) {
            let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.tensors.push((name.into(), dims.to_vec(), 0, data));
        }

        fn bytes(&self) -> Vec<u8> {
            let mut out = b"GGUF".to_vec();
            out.extend_from_slice(&3u32.to_le_bytes());
            out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
            out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
            for (key, kind, value) in &self.metadata {
                out.extend(string_bytes(key));
                out.extend_from_slice(&kind.to_le_bytes());
                out.extend_from_slice(value);
            }
            let mut offset = 0u64;
            for (name, dims, kind, data) in &self.tensors {
                out.extend(string_bytes(name));
                out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
                for d in dims {
                    out.extend_from_slice(&d.to_le_bytes());
                }
                out.extend_from_slice(&kind.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
                offset += (data.len() as u64).div_ceil(32) * 32;
            }
            out.resize(out.len().div_ceil(32) * 32, 0);
            for (_, _, _, data) in &self.tensors {
                out.extend_from_slice(data);
                out.resize(out.len().div_ceil(32) * 32, 0);
            }
            out
        }
    }

    fn parse_error(bytes: Vec<u8>) -> String {
        match GgufFile::parse(bytes, "test.gguf") {
            Ok(_) => panic!("parsed"),
            Err(err) => err.to_string(),
        }
    }

    fn f16_bytes(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q8_0_block_by_hand() {
        // d = 0.25; q = 0, 1, −1, 2, −2, … , 127, −128 at the end.
        let mut block = f16_bytes(0.25).to_vec();
        let mut q: Vec<i8> = (0..30).map(|i| if i % 2 == 0 { i / 2 } else { -(i / 2) - 1 }).collect();
        q.extend([127, -128]);
        block.extend(q.iter().map(|&v| v as u8));
        let out = dequantize(GgmlType(8), &block, 32).unwrap();
        assert_eq!(&out[..5], &[0.0, -0.25, 0.25, -0.5, 0.5]);
        assert_eq!(&out[30..], &[31.75, -32.0]);
    }

    #[test]
    fn q4_0_block_by_hand() {
        // d = 2; byte j = (high j+16, low j): byte 0 = 0x F0 → value 0: 0 − 8, value 16: 15 − 8.
        let mut block = f16_bytes(2.0).to_vec();
        block.push(0xF0);
        block.push(0x18);
        block.extend([0x88u8; 14]);
        let out = dequantize(GgmlType(2), &block, 32).unwrap();
        assert_eq!(out[0], -16.0); // (0 − 8)·2
        assert_eq!(out[16], 14.0); // (15 − 8)·2
        assert_eq!(out[1], 0.0); // (8 − 8)·2
        assert_eq!(out[17], -14.0); // (1 − 8)·2
        assert!(out[2..16].iter().chain(&out[18..]).all(|&v| v == 0.0));
    }

    #[test]
    fn q4_1_block_by_hand() {
        // d = 0.5, m = −1: value = 0.5·q − 1. Byte j holds q_j (low) and q_{j+16} (high).
        let mut block = f16_bytes(0.5).to_vec();
        block.extend(f16_bytes(-1.0));
        let nibbles: [u8; 16] = [0x00, 0x21, 0xF3, 0x7F, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x5A];
        block.extend(nibbles);
        let out = dequantize(GgmlType(3), &block, 32).unwrap();
        let expected_low = [-1.0, -0.5, 0.5, 6.5]; // q = 0, 1, 3, 15
        let expected_high = [-1.0, 0.0, 6.5, 2.5]; // q = 0, 2, 15, 7
        assert_eq!(&out[..4], &expected_low);
        assert_eq!(&out[16..20], &expected_high);
        assert_eq!(out[15], 4.0); // low nibble 0xA = 10 → 5 − 1
        assert_eq!(out[31], 1.5); // high nibble 5 → 2.5 − 1
        assert!(out[4..15].iter().all(|&v| v == -1.0));
    }

    #[test]
    fn q5_0_and_q5_1_blocks_by_hand() {
        // qh bit 0 set (value 0 gets +16), bit 17 set (value 17 gets +16).
        let qh: u32 = 1 | (1 << 17);
        let mut nibbles = [0u8; 16];
        nibbles[0] = 0x13; // value 0: low 3, value 16: high 1
        nibbles[1] = 0x42; // value 1: low 2, value 17: high 4
        let mut q5_0 = f16_bytes(1.0).to_vec();
        q5_0.extend(qh.to_le_bytes());
        q5_0.extend(nibbles);
        let out = dequantize(GgmlType(6), &q5_0, 32).unwrap();
        assert_eq!([out[0], out[1], out[16], out[17], out[2]], [3.0, -14.0, -15.0, 4.0, -16.0]);

        let mut q5_1 = f16_bytes(0.5).to_vec();
        q5_1.extend(f16_bytes(10.0));
        q5_1.extend(qh.to_le_bytes());
        q5_1.extend(nibbles);
        let out = dequantize(GgmlType(7), &q5_1, 32).unwrap();
        // 0.5·q + 10 with q = 19, 2, 1, 20, 0.
        assert_eq!([out[0], out[1], out[16], out[17], out[2]], [19.5, 11.0, 10.5, 20.0, 10.0]);
    }

    #[test]
    fn float_types_by_hand() {
        let f16s: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|&v| f16_bytes(v)).collect();
        assert_eq!(dequantize(GgmlType(1), &f16s, 2).unwrap(), vec![1.5, -2.0]);
        // BF16 is the top half of an f32: 0x3FC0 = 1.5, 0xC000 = −2.
        assert_eq!(dequantize(GgmlType(30), &[0xC0, 0x3F, 0x00, 0xC0], 2).unwrap(), vec![1.5, -2.0]);
        assert_eq!(dequantize(GgmlType(0), &0.75f32.to_le_bytes(), 1).unwrap(), vec![0.75]);
        // Wrong byte count, unsupported type.
        assert!(dequantize(GgmlType(0), &[0, 0, 0], 1).is_none());
        assert!(dequantize(GgmlType(12), &[0; 144], 256).is_none());
    }

    #[test]
    fn unpermute_matches_its_definition() {
        // 2 heads of size 4, 3 columns; GGUF row r holds value 10·r + c.
        let (n_head, head_dim, cols) = (2, 4, 3);
        let rows = n_head * head_dim;
        let gguf: Vec<f32> = (0..rows * cols).map(|k| (10 * (k / cols) + k % cols) as f32).collect();
        let hf = unpermute_heads(&gguf, rows, cols, n_head).unwrap();
        // Definition: HF row h·hd + j·hd/2 + i = GGUF row h·hd + 2i + j. Head 0: HF rows 0, 1 are
        // the even GGUF rows 0, 2; HF rows 2, 3 the odd GGUF rows 1, 3. Head 1 likewise from 4.
        let gguf_row_of_hf = [0, 2, 1, 3, 4, 6, 5, 7];
        for (hf_row, &gguf_row) in gguf_row_of_hf.iter().enumerate() {
            for c in 0..cols {
                assert_eq!(hf[hf_row * cols + c], (10 * gguf_row + c) as f32);
            }
        }
        // Applying llama.cpp's forward permutation to the result gives the GGUF rows back.
        let mut forward = vec![0.0; gguf.len()];
        for h in 0..n_head {
            for i in 0..head_dim / 2 {
                for j in 0..2 {
                    let (to, from) = (h * head_dim + 2 * i + j, h * head_dim + j * head_dim / 2 + i);
                    forward[to * cols..(to + 1) * cols].copy_from_slice(&hf[from * cols..(from + 1) * cols]);
                }
            }
        }
        assert_eq!(forward, gguf);
        assert!(unpermute_heads(&gguf, rows, cols, 3).is_none());
    }

    #[test]
    fn tiny_llama_reads_with_hf_names() {
        let mut w = Writer::llama();
        w.strings("tokenizer.ggml.tokens", &["a", "b", "c", "d"]);
        let q: Vec<f32> = (0..64).map(|v| v as f32).collect();
        w.f32_tensor("blk.0.attn_q.weight", &[8, 8], &q);
        w.f32_tensor("blk.0.attn_k.weight", &[8, 4], &q[..32]);
        w.f32_tensor("blk.0.ffn_down.weight", &[16, 8], &[0.5; 128]);
        w.f32_tensor("output_norm.weight", &[8], &[1.0; 8]);
        w.f32_tensor("token_embd.weight", &[8, 4], &[0.0; 32]);
        let mut ckpt = GgufCheckpoint::from_bytes(w.bytes(), "tiny.gguf").unwrap();
        let config = ckpt.llama_config().unwrap();
        assert_eq!(
            (config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.vocab_size),
            (8, 2, 1, 4)
        );
        assert!(config.tie_word_embeddings);
        assert_eq!(config.rope_theta, 100_000.0);
        let stored = ckpt.stored();
        let down = stored.iter().find(|t| t.name == "text_model.layers.0.mlp.down_proj.weight").unwrap();
        assert_eq!((down.shape.clone(), down.dtype.as_str()), (vec![8, 16], "F32"));
        // Q: 2 heads of 4 rows; HF row 1 is GGUF row 2 (values 16..24).
        let q_hf = ckpt.take("text_model.layers.0.self_attn.q_proj.weight").unwrap().unwrap();
        assert_eq!(q_hf.shape, vec![8, 8]);
        assert_eq!(q_hf.data[8..16], q[16..24]);
        // K: 1 head of 4 rows: HF rows = GGUF rows 0, 2, 1, 3.
        let k_hf = ckpt.take("text_model.layers.0.self_attn.k_proj.weight").unwrap().unwrap();
        assert_eq!(k_hf.shape, vec![4, 8]);
        assert_eq!(k_hf.data[8..16], q[16..24]);
        assert_eq!(k_hf.data[16..24], q[8..16]);
        assert!(ckpt.take("lm_head.weight").unwrap().is_none());
        let again = ckpt.take("text_model.layers.0.self_attn.k_proj.weight").unwrap_err().to_string();
        assert!(again.contains("handed out already"), "{again}");
        let rest = take_all(&mut ckpt).unwrap_err().to_string();
        assert!(rest.contains("handed out already"), "{rest}");
    }

    #[test]
    fn unsupported_quant_is_named_with_the_tensor() {
        let mut w = Writer::llama();
        w.tensors.push(("blk.0.attn_q.weight".into(), vec![256, 1], 12, vec![0; 144]));
        let mut ckpt = GgufCheckpoint::from_bytes(w.bytes(), "k.gguf").unwrap();
        assert_eq!(ckpt.stored()[0].dtype, "Q4_K");
        let err = ckpt.take("text_model.layers.0.self_attn.q_proj.weight").unwrap_err().to_string();
        assert!(err.contains("blk.0.attn_q.weight is Q4_K, which this loader does not read (supported: F32"), "{err}");
    }

    #[test]
    fn other_architecture_is_named() {
        let mut w = Writer { metadata: Vec::new(), tensors: Vec::new() };
        w.string("general.architecture", "gemma3");
        let err = GgufCheckpoint::from_bytes(w.bytes(), "g.gguf").unwrap_err().to_string();
        assert!(err.contains("g.gguf") && err.contains("\"gemma3\""), "{err}");
    }

    #[test]
    fn bad_headers_are_clear_errors() {
        let good = Writer::llama().bytes();
        let mut magic = good.clone();
        magic[..4].copy_from_slice(b"GGML");
        assert!(parse_error(magic).contains("not a GGUF file"));
        let mut version = good.clone();
        version[4..8].copy_from_slice(&7u32.to_le_bytes());
        assert!(parse_error(version).contains("version 7 is not supported"));
        // Every truncation of the header (up to its last byte, 0x47 of the f32 100 000; then
        // padding) is an error, never a panic.
        let header_len = good.iter().rposition(|&b| b != 0).unwrap() + 1;
        for len in 0..header_len {
            let err = parse_error(good[..len].to_vec());
            assert!(err.contains("test.gguf: GGUF:"), "{len}: {err}");
        }
        let mut tensors = good.clone();
        tensors[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_error(tensors).contains("the tensor count is 18446744073709551615, over the limit of 1048576"));
    }

    #[test]
    fn absurd_lengths_are_refused_before_allocating() {
        // A string value claiming 2^40 bytes.
        let mut w = Writer { metadata: Vec::new(), tensors: Vec::new() };
        w.metadata.push(("general.name".into(), 8, (1u64 << 40).to_le_bytes().to_vec()));
        assert!(parse_error(w.bytes()).contains("general.name is 1099511627776 bytes long, over the limit of 1048576"));
        // An array claiming 2^30 items, and one claiming 2^20 (under the limit) with no bytes behind.
        for (count, message) in [(1u64 << 30, "over the limit of 16777216"), (1 << 20, "truncated")] {
            let mut w = Writer { metadata: Vec::new(), tensors: Vec::new() };
            let mut value = 4u32.to_le_bytes().to_vec();
            value.extend(count.to_le_bytes());
            w.metadata.push(("tokenizer.ggml.token_type".into(), 9, value));
            let err = parse_error(w.bytes());
            assert!(err.contains("the item count of tokenizer.ggml.token_type") && err.contains(message), "{err}");
        }
        // Dimensions whose product overflows.
        let mut w = Writer::llama();
        w.tensors.push(("huge".into(), vec![1 << 40, 1 << 40], 0, Vec::new()));
        assert!(parse_error(w.bytes()).contains("the dimensions of huge overflow"));
    }

    #[test]
    fn truncated_tensor_data_is_named() {
        let mut w = Writer::llama();
        w.f32_tensor("output_norm.weight", &[8], &[1.0; 8]);
        let mut bytes = w.bytes();
        bytes.truncate(bytes.len() - 4);
        let err = parse_error(bytes);
        assert!(err.contains("truncated: output_norm.weight needs bytes 0..32"), "{err}");
    }

    #[test]
    fn tokenizer_of_a_tiny_vocabulary() {
        let mut w = Writer::llama();
        w.string("tokenizer.ggml.model", "gpt2");
        w.strings("tokenizer.ggml.tokens", &["<|end|>", "a", "b", "ab", "Ġ", "Ġab"]);
        w.strings("tokenizer.ggml.merges", &["a b", "Ġ ab"]);
        let mut types = 5u32.to_le_bytes().to_vec();
        types.extend(6u64.to_le_bytes());
        for t in [3i32, 1, 1, 1, 1, 1] {
            types.extend(t.to_le_bytes());
        }
        w.metadata.push(("tokenizer.ggml.token_type".into(), 9, types));
        let ckpt = GgufCheckpoint::from_bytes(w.bytes(), "tok.gguf").unwrap();
        let tokenizer = ckpt.tokenizer().unwrap();
        let ids = tokenizer.encode("ab ab<|end|>", true).unwrap().get_ids().to_vec();
        assert_eq!(ids, vec![3, 5, 0]);
        assert_eq!(tokenizer.decode(&[3, 5], false).unwrap(), "ab ab");

        let mut w = Writer::llama();
        w.string("tokenizer.ggml.model", "llama");
        let err = GgufCheckpoint::from_bytes(w.bytes(), "sp.gguf").unwrap().tokenizer().unwrap_err().to_string();
        assert!(err.contains("tokenizer.ggml.model is \"llama\""), "{err}");
    }
}
