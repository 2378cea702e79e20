//! Split bundles: a `smolvlm` model whose decoder comes from a pretrained checkpoint (the SmolLM2
//! GGUF of `scripts/setup-pretrained.sh`) kept as the small **parts** that the checkpoint cannot
//! give back, so that git holds a few MB and a set-up step rebuilds the whole `model.safetensors`,
//! byte for byte, from the checkpoint plus those parts.
//!
//! A model trained from `--init-lm` differs from its checkpoint's first `K` decoder layers in:
//! - tensors the checkpoint has not got (the new vision tower, the connector, LoRA adapters);
//! - decoder weights into which LoRA adapters were **merged** (a recipe's text stage, `--init`
//!   from a model with adapters): `W + s·B·A` is a full matrix, but `A` and `B` are small, so
//!   each merge is recorded ([`Merges`], `merged-lora.json` + `merged-lora.safetensors` in the run
//!   folder and its bundle) and replayed on the checkpoint's weights with the very same arithmetic
//!   ([`merge_lora`]), which gives the same `f32` bits.
//!
//! [`split`] finds the tensors whose stored bytes the checkpoint (after the recorded merges) does
//! not reproduce, and [`Parts::assemble`] puts the model file back together and checks it against
//! the bundle's recorded hash, so a wrong or changed checkpoint is an error, never a silently
//! different model.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::smolvlm::merge_lora;
use burn::tensor::Device;

use crate::model::{Embedder, LoraConfig, ModelConfig};
use crate::pretrained::safetensors::{Rename, SafetensorsSource};
use crate::store::{fnv_hex, safetensors, write_atomic, HostTensor, StoredDtype, TensorSource};
use crate::{EgaError, Result};

/// The list of merges beside a model (in a run folder or a bundle).
pub const MERGES_JSON: &str = "merged-lora.json";
/// Their adapters, named `<merge number>.<PEFT name>`.
pub const MERGES_FILE: &str = "merged-lora.safetensors";
/// A split bundle's manifest (in its `parts/` folder).
pub const PARTS_JSON: &str = "parts.json";
/// The tensors the checkpoint does not give back.
pub const OWN_FILE: &str = "own.safetensors";
/// Version of the parts format written here.
pub const PARTS_FORMAT_VERSION: u32 = 1;

/// Named tensors (Hugging Face names), as a model exports them.
pub type Tensors = Vec<(String, HostTensor)>;

/// One recorded merge: which stage (or start) merged which adapters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Merge {
    /// What merged them (`stage-2-align`: the boundary before that stage; `init`: `--init`).
    pub name: String,
    /// The adapters' rank, α and targets (the merge's scale).
    pub lora: LoraConfig,
}

/// LoRA adapters merged into a model's weights, in the order they were merged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merges {
    entries: Vec<(Merge, Vec<(String, HostTensor)>)>,
}

/// Every tensor of a safetensors file at `path`, as `f32`, sorted by name.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, HostTensor)>> {
    let bytes = crate::fs::read_regular(path, crate::fs::MAX_WEIGHTS)?;
    let name = path.display().to_string();
    let mut source = SafetensorsSource::from_files(&name, vec![(name.clone(), bytes)], Rename::Smolvlm)?;
    let mut out = Vec::new();
    for stored in source.stored() {
        let tensor =
            source.take(&stored.name)?.ok_or_else(|| EgaError::format(&name, format!("{} vanished", stored.name)))?;
        out.push((stored.name, tensor));
    }
    Ok(out)
}

impl Merges {
    /// The merges recorded in `dir` (none when it has no [`MERGES_JSON`]).
    pub fn read(dir: &Path) -> Result<Self> {
        let list_path = dir.join(MERGES_JSON);
        if !list_path.exists() {
            return Ok(Self::default());
        }
        let list: Vec<Merge> = serde_json::from_slice(&crate::fs::read_regular(&list_path, crate::fs::MAX_JSON)?)
            .map_err(|err| EgaError::format(list_path.display(), err.to_string()))?;
        let mut tensors = read_tensors(&dir.join(MERGES_FILE))?;
        let mut entries = Vec::with_capacity(list.len());
        for (number, merge) in list.into_iter().enumerate() {
            let prefix = format!("{number}.");
            let (mine, rest): (Vec<_>, Vec<_>) = tensors.into_iter().partition(|(name, _)| name.starts_with(&prefix));
            tensors = rest;
            let mine: Vec<_> = mine.into_iter().map(|(name, t)| (name[prefix.len()..].to_string(), t)).collect();
            if mine.is_empty() {
                return Err(EgaError::format(
                    dir.join(MERGES_FILE).display(),
                    format!("no adapters of merge {number} ({})", merge.name),
                ));
            }
            entries.push((merge, mine));
        }
        if let Some((name, _)) = tensors.first() {
            return Err(EgaError::format(
                dir.join(MERGES_FILE).display(),
                format!("{name} belongs to no listed merge"),
            ));
        }
        Ok(Self { entries })
    }

    /// Writes the merges into `dir` (nothing when there are none).
    pub fn write(&self, dir: &Path) -> Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        std::fs::create_dir_all(dir).map_err(|err| EgaError::io(dir, err))?;
        let mut tensors = Vec::new();
        for (number, (_, adapters)) in self.entries.iter().enumerate() {
            tensors.extend(adapters.iter().map(|(name, t)| (format!("{number}.{name}"), t.clone())));
        }
        write_atomic(&dir.join(MERGES_FILE), &safetensors::to_bytes(&tensors)?)?;
        let list: Vec<&Merge> = self.entries.iter().map(|(m, _)| m).collect();
        write_atomic(&dir.join(MERGES_JSON), serde_json::to_string_pretty(&list)?.as_bytes())
    }

    /// Records that `adapters` (a model's `*.lora_A.weight` / `*.lora_B.weight` tensors; other
    /// tensors are left out) of config `lora` were merged, by `name` (for people: `stage-2-align`,
    /// `init`).
    pub fn record(&mut self, name: &str, lora: &LoraConfig, tensors: Vec<(String, HostTensor)>) {
        let adapters: Vec<_> = tensors.into_iter().filter(|(n, _)| n.contains(".lora_")).collect();
        self.entries.push((Merge { name: name.to_string(), lora: lora.clone() }, adapters));
    }

    /// `model`'s LoRA adapters merged into the weights they adapt ([`Embedder::merged_lora`]) and
    /// recorded as `name`: the model without adapters and its config, or `None` (nothing recorded)
    /// when it has none. Blocking read-back: native only.
    pub fn merge_into_weights(
        &mut self,
        name: &str,
        model: &Embedder,
        config: &ModelConfig,
        device: &Device,
    ) -> Result<Option<(ModelConfig, Embedder)>> {
        let (Some(lora), Some(smolvlm)) = (config.smolvlm().and_then(|s| s.lora.clone()), model.as_smolvlm()) else {
            return Ok(None);
        };
        let adapters = smolvlm.export()?;
        let merged = model.merged_lora(config, device)?;
        if merged.is_some() {
            self.record(name, &lora, adapters);
        }
        Ok(merged)
    }

    /// Drops the adapters of decoder layers `k` and above (a model cut to its first `k` layers
    /// by `--lm-layers` has no weight to replay them on).
    pub fn cut_layers(&mut self, k: usize) {
        let layer =
            |name: &str| -> Option<usize> { name.strip_prefix("text_model.layers.")?.split('.').next()?.parse().ok() };
        for (_, adapters) in &mut self.entries {
            adapters.retain(|(name, _)| layer(name).is_none_or(|i| i < k));
        }
    }

    /// Whether none is recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The merges' names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|(m, _)| m.name.as_str()).collect()
    }

    /// `tensors` with every recorded merge replayed in order ([`merge_lora`], the arithmetic the
    /// training used). Tensors without adapters pass through unchanged.
    pub fn apply(&self, mut tensors: Vec<(String, HostTensor)>) -> Result<Vec<(String, HostTensor)>> {
        for (merge, adapters) in &self.entries {
            tensors.extend(adapters.iter().cloned());
            tensors = merge_lora(tensors, &merge.lora)
                .map_err(|err| EgaError::Data(format!("replaying merge {}: {err}", merge.name)))?;
        }
        Ok(tensors)
    }
}

/// Where a split bundle's decoder comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// The checkpoint's file name (`SmolLM2-135M-Instruct.Q4_1.gguf`), looked for where the set-up
    /// step puts it unless a path is given.
    pub file_name: String,
    /// [`fnv_hex`] of the checkpoint file, checked before it is used.
    pub file_hash: String,
    /// Decoder layers kept (`--lm-layers`).
    pub lm_layers: usize,
}

/// A split bundle's manifest: the base, the model file's tensors in order with where each comes
/// from, and the hashes the assembled files must have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parts {
    /// [`PARTS_FORMAT_VERSION`].
    pub format_version: u32,
    /// The checkpoint.
    pub base: Base,
    /// How the model file stores its weights.
    pub dtype: StoredDtype,
    /// Every tensor of the model file in file order, and whether it is in [`OWN_FILE`] (`true`)
    /// or comes from the base after the merges (`false`).
    pub tensors: Vec<(String, bool)>,
    /// [`fnv_hex`] of the model file's bytes (the bundle's `weights_hash`).
    pub weights_hash: String,
    /// [`fnv_hex`] of the tokenizer file's bytes (the bundle's `tokenizer_hash`).
    pub tokenizer_hash: String,
}

/// `tensor`'s values as `dtype` stores them (f16 rounds), for comparing stored bytes.
fn stored_bits(tensor: &HostTensor, dtype: StoredDtype) -> Vec<u32> {
    match dtype {
        StoredDtype::F32 => tensor.data.iter().map(|v| v.to_bits()).collect(),
        StoredDtype::F16 => tensor.data.iter().map(|v| half::f16::from_f32(*v).to_bits() as u32).collect(),
    }
}

/// The tensors of `model` (a model file's tensors in file order, as `f32`) that `base` (the
/// checkpoint's tensors after the merges) does not reproduce once stored as `dtype`: the model's
/// own, and for every tensor whether it is own.
pub fn split(
    model: &[(String, HostTensor)],
    base: &[(String, HostTensor)],
    dtype: StoredDtype,
) -> (Tensors, Vec<(String, bool)>) {
    let base: std::collections::HashMap<&str, &HostTensor> = base.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut own = Vec::new();
    let mut order = Vec::with_capacity(model.len());
    for (name, tensor) in model {
        let from_base = base
            .get(name.as_str())
            .is_some_and(|b| b.shape == tensor.shape && stored_bits(b, dtype) == stored_bits(tensor, dtype));
        if !from_base {
            own.push((name.clone(), tensor.clone()));
        }
        order.push((name.clone(), !from_base));
    }
    (own, order)
}

impl Parts {
    /// Reads `dir/parts.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(PARTS_JSON);
        let parts: Parts = serde_json::from_slice(&crate::fs::read_regular(&path, crate::fs::MAX_JSON)?)
            .map_err(|err| EgaError::format(path.display(), err.to_string()))?;
        if parts.format_version != PARTS_FORMAT_VERSION {
            return Err(EgaError::format(
                path.display(),
                format!("parts format {} (this build reads {PARTS_FORMAT_VERSION})", parts.format_version),
            ));
        }
        Ok(parts)
    }

    /// The model file's bytes from `base` (the checkpoint's tensors as the model held them: the
    /// export of a model built from it, merges not yet applied) and the parts in `dir` (its
    /// [`OWN_FILE`] and the merges recorded there). The bytes must hash to
    /// [`Parts::weights_hash`]: anything else is an error that says the checkpoint differs.
    pub fn assemble(&self, dir: &Path, base: Vec<(String, HostTensor)>) -> Result<Vec<u8>> {
        let merged = Merges::read(dir)?.apply(base)?;
        let mut merged: std::collections::HashMap<String, HostTensor> = merged.into_iter().collect();
        let mut own: std::collections::HashMap<String, HostTensor> =
            read_tensors(&dir.join(OWN_FILE))?.into_iter().collect();
        let mut tensors = Vec::with_capacity(self.tensors.len());
        for (name, is_own) in &self.tensors {
            let (from, what) = if *is_own { (&mut own, OWN_FILE) } else { (&mut merged, "the checkpoint") };
            let tensor = from.remove(name).ok_or_else(|| {
                EgaError::Data(format!("{}: {name} is not in {what}", dir.join(PARTS_JSON).display()))
            })?;
            tensors.push((name.clone(), tensor));
        }
        let mut bytes = safetensors::to_bytes(&tensors)?;
        if self.dtype == StoredDtype::F16 {
            bytes = safetensors::convert(&bytes, StoredDtype::F16, "the assembled model")?;
        }
        let hash = fnv_hex(&[&bytes]);
        if hash != self.weights_hash {
            return Err(EgaError::Data(format!(
                "the assembled model's hash is {hash}, the parts in {} expect {}: the base checkpoint is not the one \
                 they were split from ({}, hash {})",
                dir.display(),
                self.weights_hash,
                self.base.file_name,
                self.base.file_hash
            )));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], data: &[f32]) -> HostTensor {
        HostTensor { shape: shape.to_vec(), data: data.to_vec() }
    }

    #[test]
    fn merges_round_trip_and_replay_the_training_arithmetic() {
        let dir = std::env::temp_dir().join(format!("ega-parts-merges-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let lora = LoraConfig { rank: 1, alpha: 2.0, targets: vec!["q_proj".into()] };
        let weight = ("m.q_proj.weight".to_string(), t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]));
        let adapters = vec![
            ("m.q_proj.lora_A.weight".to_string(), t(&[1, 2], &[1.0, -1.0])),
            ("m.q_proj.lora_B.weight".to_string(), t(&[2, 1], &[0.5, 0.25])),
            ("vision.x".to_string(), t(&[1], &[9.0])),
        ];
        let mut merges = Merges::default();
        assert!(Merges::read(&dir).unwrap().is_empty(), "no file: no merges");
        merges.record("stage-2-align", &lora, adapters.clone());
        assert_eq!(merges.names(), ["stage-2-align"]);
        merges.write(&dir).unwrap();
        let back = Merges::read(&dir).unwrap();
        assert_eq!(back, merges);
        let expected = merge_lora(vec![weight.clone(), adapters[0].clone(), adapters[1].clone()], &lora).unwrap();
        let replayed = back.apply(vec![weight]).unwrap();
        assert_eq!(replayed, expected);
        // W + 2·B·A = [[1+1, 2-1], [3+0.5, 4-0.5]]
        assert_eq!(replayed[0].1.data, [2.0, 1.0, 3.5, 3.5]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn split_keeps_what_the_base_does_not_give_back_in_the_stored_dtype() {
        let model = vec![
            ("a".to_string(), t(&[2], &[1.0, 2.0])),
            ("b".to_string(), t(&[2], &[1.0, 2.0001])),
            ("c".to_string(), t(&[1], &[5.0])),
        ];
        let base = vec![("a".to_string(), t(&[2], &[1.0, 2.0])), ("b".to_string(), t(&[2], &[1.0, 2.0]))];
        let (own, order) = split(&model, &base, StoredDtype::F32);
        assert_eq!(own.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(order, [("a".to_string(), false), ("b".to_string(), true), ("c".to_string(), true)]);
        // 2.0001 and 2.0 are the same half float: in an f16 file `b` comes from the base.
        let (own, _) = split(&model, &base, StoredDtype::F16);
        assert_eq!(own.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["c"]);
    }
}
