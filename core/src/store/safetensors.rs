//! Safetensors bytes this project writes and converts itself (reading other tools' checkpoints is
//! `pretrained::safetensors`): host tensors to bytes, F32 ↔ F16 re-encoding of every tensor, and
//! the F32-and-finite check of a `mini` model's weights. All of them read the header the same way,
//! so a truncated or foreign file is an error naming it, never a panic.

use std::ops::Range;

use serde_json::{Map, Value};

use super::HostTensor;
use super::StoredDtype;
use crate::{EgaError, Result};

/// The JSON header of a safetensors file and the data after it, or why there is none.
fn split(bytes: &[u8]) -> std::result::Result<(Map<String, Value>, &[u8]), String> {
    let header_len = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| "shorter than 8 bytes".to_string())?;
    let data_start = 8u64
        .checked_add(header_len)
        .filter(|end| *end <= bytes.len() as u64)
        .ok_or_else(|| format!("a {header_len}-byte header in {} bytes (truncated?)", bytes.len()))?
        as usize;
    let header = serde_json::from_slice(&bytes[8..data_start]).map_err(|err| format!("header is not JSON: {err}"))?;
    Ok((header, &bytes[data_start..]))
}

/// The bytes of tensor `name` (header entry `info`) within `data`, or why they are not there.
fn data_range(name: &str, info: &Value, data: &[u8]) -> std::result::Result<Range<usize>, String> {
    let offsets = info.get("data_offsets").and_then(|o| o.as_array());
    match offsets.map(|o| o.iter().map(|v| v.as_u64()).collect::<Vec<_>>()).as_deref() {
        Some([Some(start), Some(end)]) if start <= end && *end <= data.len() as u64 => {
            Ok(*start as usize..*end as usize)
        }
        Some([Some(_), Some(_)]) => Err(format!("tensor {name} lies outside the file (truncated?)")),
        _ => Err(format!("tensor {name} has no data_offsets")),
    }
}

/// A header and the data after it as one file (the header padded to 8 bytes with spaces).
fn join(header: &Map<String, Value>, data: &[u8]) -> Result<Vec<u8>> {
    let mut header = serde_json::to_vec(header)?;
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + data.len());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    Ok(out)
}

/// Host tensors as safetensors bytes (F32), names in the order given.
pub fn to_bytes(tensors: &[(String, HostTensor)]) -> Result<Vec<u8>> {
    let mut header = Map::new();
    let mut data = Vec::with_capacity(tensors.iter().map(|(_, t)| t.data.len() * 4).sum());
    for (name, tensor) in tensors {
        let start = data.len();
        data.extend(tensor.data.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": "F32", "shape": tensor.shape, "data_offsets": [start, data.len()] }),
        );
    }
    join(&header, &data)
}

/// Re-encodes every F32 tensor of a safetensors file as `to` (F16 ↔ F32; other dtypes are kept).
/// `name` names the file in messages: a truncated or foreign file is an error.
pub fn convert(bytes: &[u8], to: StoredDtype, name: &str) -> Result<Vec<u8>> {
    let bad = |why: String| EgaError::format(&name, format!("not a readable safetensors file: {why}"));
    let (header, data) = split(bytes).map_err(bad)?;
    let (from_name, to_name) = match to {
        StoredDtype::F16 => ("F32", "F16"),
        StoredDtype::F32 => ("F16", "F32"),
    };
    let mut tensors: Vec<(String, Value, Range<usize>)> = Vec::new();
    let mut out_header = Map::new();
    for (key, value) in header {
        if key == "__metadata__" {
            out_header.insert(key, value);
            continue;
        }
        let range = data_range(&key, &value, data).map_err(bad)?;
        tensors.push((key, value, range));
    }
    tensors.sort_by_key(|t| t.2.start);
    let mut out_data: Vec<u8> = Vec::with_capacity(data.len());
    for (key, mut value, range) in tensors {
        let raw = &data[range];
        let begin = out_data.len();
        if value.get("dtype").and_then(|d| d.as_str()) == Some(from_name) {
            value["dtype"] = Value::from(to_name);
            match to {
                StoredDtype::F16 => out_data.extend(
                    raw.chunks_exact(4)
                        .flat_map(|c| half::f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes()),
                ),
                StoredDtype::F32 => out_data.extend(
                    raw.chunks_exact(2).flat_map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32().to_le_bytes()),
                ),
            }
        } else {
            out_data.extend_from_slice(raw);
        }
        value["data_offsets"] = serde_json::json!([begin, out_data.len()]);
        out_header.insert(key, value);
    }
    join(&out_header, &out_data)
}

/// Refuses a mini model's safetensors file unless every tensor is F32 and finite, naming the first
/// tensor that is not: another dtype would reach a matmul as a dtype mismatch (a panic), and NaN
/// or ±Inf weights make every embedding NaN, which ranks and scores as nonsense (issue 16).
pub fn check_f32_finite(bytes: &[u8], what: &str) -> Result<()> {
    let bad = |why: String| EgaError::format(&what, why);
    let (header, data) = split(bytes).map_err(|why| bad(format!("not a safetensors file: {why}")))?;
    let mut names: Vec<&String> = header.keys().filter(|k| *k != "__metadata__").collect();
    names.sort();
    for name in names {
        let info = &header[name];
        let dtype = info.get("dtype").and_then(|d| d.as_str()).unwrap_or("?");
        if dtype != "F32" {
            return Err(bad(format!("tensor {name} is stored as {dtype}; this model's weights must be F32 (or F16 with weights_dtype \"f16\")")));
        }
        let values = data[data_range(name, info, data).map_err(bad)?]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        if let Some((at, value)) = values.enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(bad(format!(
                "tensor {name} holds a non-finite value ({value} at element {at}); weights must be finite"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_tensors() -> Vec<u8> {
        to_bytes(&[
            ("b".into(), HostTensor { shape: vec![2], data: vec![1.5, -2.0] }),
            ("a".into(), HostTensor { shape: vec![1, 1], data: vec![0.25] }),
        ])
        .unwrap()
    }

    #[test]
    fn f16_round_trips_and_keeps_the_header_padded() {
        let f32_bytes = two_tensors();
        check_f32_finite(&f32_bytes, "x").unwrap();
        let f16_bytes = convert(&f32_bytes, StoredDtype::F16, "x").unwrap();
        assert_eq!(u64::from_le_bytes(f16_bytes[..8].try_into().unwrap()) % 8, 0);
        let err = check_f32_finite(&f16_bytes, "half.safetensors").unwrap_err().to_string();
        assert!(err.starts_with("half.safetensors: tensor a is stored as F16"), "{err}");
        assert_eq!(convert(&f16_bytes, StoredDtype::F32, "x").unwrap(), f32_bytes);
    }

    #[test]
    fn damaged_files_are_errors_naming_the_file() {
        let bytes = two_tensors();
        for cut in [0, 7, 12, bytes.len() - 1] {
            let err = convert(&bytes[..cut], StoredDtype::F16, "cut.safetensors").unwrap_err().to_string();
            assert!(err.starts_with("cut.safetensors: not a readable safetensors file"), "{cut}: {err}");
            assert!(check_f32_finite(&bytes[..cut], "cut.safetensors").is_err(), "{cut}");
        }
        let err = check_f32_finite(&bytes[..bytes.len() - 1], "cut.safetensors").unwrap_err();
        assert!(
            matches!(&err, EgaError::Format { file, problem } if file == "cut.safetensors" && problem.contains("outside the file")),
            "{err:?}"
        );
    }
}
