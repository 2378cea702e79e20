//! `native info`: the presets with their parameter counts and the devices this machine offers,
//! or (--model) what a checkpoint holds.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ega_core::device::{self, DeviceChoice};
use ega_core::model::{Embedder, ModelConfig, PRESETS};

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Describe a checkpoint instead of the presets: a Hugging Face folder (config.json +
    /// model.safetensors or a sharded index; Idefics3 / SmolVLM or Llama), a `.gguf` file of a
    /// Llama-family decoder, or a bundle / run folder of this project.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Which device to describe: auto (hardware GPU, else CPU), wgpu, cpu.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `native info`.
pub fn run(args: InfoArgs) -> Result<()> {
    if let Some(path) = &args.model {
        return info_model(path, args.json);
    }
    let cpu = burn::tensor::Device::flex();
    let mut presets = Vec::new();
    for name in PRESETS {
        let config = ModelConfig::preset(name)?;
        let model = Embedder::new(&config, 0, &cpu)?;
        let parts = model.part_sizes();
        presets.push((config.clone(), parts[0].1, parts[1].1, parts[2].1));
    }
    let selected = device::select(args.device);
    let wgpu = device::wgpu_adapter();
    if args.json {
        let presets: Vec<_> = presets
            .iter()
            .map(|(c, v, p, l)| {
                serde_json::json!({
                    "preset": c.preset, "image_size": c.image_size(), "image_tokens": c.image_tokens(),
                    "embed_dim": c.embed_dim(), "params": v + p + l, "vision_params": v,
                    "projector_params": p, "language_params": l, "config": c,
                })
            })
            .collect();
        let report = serde_json::json!({
            "version": ega_core::VERSION,
            "presets": presets,
            "device": selected.as_ref().map(|d| d.description.clone()).map_err(|e| e.to_string()),
            "ega_loss_path": selected.as_ref().map(|d| ega_core::kernels::ega_path(&d.device).to_string()).map_err(|e| e.to_string()),
            "wgpu_adapter": wgpu.map(|a| serde_json::json!({
                "name": a.name, "backend": a.backend, "device_type": a.device_type, "software": a.software,
            })).map_err(|e| e.to_string()),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("ega-core {}\n", ega_core::VERSION);
    println!("| preset | image | image tokens | vision | projector | language | total params | embedding |");
    println!("|---|---|---|---|---|---|---|---|");
    for (c, v, p, l) in &presets {
        println!(
            "| {} | {} px | {} | {} | {} | {} | {} ({:.1} M) | {} |",
            c.preset,
            c.image_size(),
            c.image_tokens(),
            v,
            p,
            l,
            v + p + l,
            (v + p + l) as f64 / 1e6,
            c.embed_dim()
        );
    }
    println!();
    match wgpu {
        Ok(a) => println!(
            "wgpu adapter: {} ({}, {}{})",
            a.name,
            a.backend,
            a.device_type,
            if a.software { ", software rasteriser" } else { "" }
        ),
        Err(why) => println!("wgpu adapter: none ({why})"),
    }
    let choice = format!("{:?}", args.device).to_lowercase();
    match selected {
        Ok(d) => {
            println!("--device {choice}: {}", d.description);
            println!("EGA / info-NCE loss on it: {}", ega_core::kernels::ega_path(&d.device));
        }
        Err(err) => println!("--device {choice}: unavailable: {err}"),
    }
    Ok(())
}

/// `native info --model PATH`: what a checkpoint holds, without building the model.
fn info_model(path: &std::path::Path, json: bool) -> Result<()> {
    use ega_core::pretrained::safetensors::HfModel;
    // A bundle's config.json has a format_version; a Hugging Face one does not.
    let bundle_dir = ega_core::bundle::resolve(path).ok().filter(|dir| {
        ega_core::fs::read_regular(&dir.join("config.json"), ega_core::fs::MAX_JSON)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(ega_core::fs::strip_bom(&bytes)).ok())
            .is_some_and(|value| value.get("format_version").is_some())
    });
    {
        if let Some(dir) = bundle_dir {
            let bundle = ega_core::bundle::load(&dir, &burn::tensor::Device::flex())
                .with_context(|| format!("loading the bundle {}", dir.display()))?;
            let parts = bundle.model.part_sizes();
            let total: usize = parts.iter().map(|p| p.1).sum();
            let c = &bundle.config;
            if json {
                let report = serde_json::json!({
                    "path": dir.display().to_string(), "format": "EGA bundle", "architecture": c.model.architecture_name(),
                    "model_id": c.model_id, "params": total,
                    "parts": parts.iter().map(|(n, v)| (n.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
                    "weights_dtype": c.weights_dtype, "tokenizer_tokens": bundle.tokenizer.vocab_size(), "config": c.model,
                });
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{}: EGA bundle, architecture {}, model id {}",
                    dir.display(),
                    c.model.architecture_name(),
                    c.model_id
                );
                for (name, count) in &parts {
                    println!("  {name:<14} {count:>12} parameters");
                }
                println!("  {:<14} {total:>12} parameters ({:.1} M)", "total", total as f64 / 1e6);
                println!(
                    "  weights stored as {:?}; tokenizer {} tokens; {} steps on {}",
                    c.weights_dtype,
                    bundle.tokenizer.vocab_size(),
                    c.steps,
                    c.data
                );
            }
            return Ok(());
        }
    }
    let checkpoint = ega_core::pretrained::open(path).with_context(|| format!("reading {}", path.display()))?;
    let (parts, dtypes) = checkpoint.summary();
    let total: usize = parts.iter().map(|p| p.1).sum();
    let text = checkpoint.text_config();
    let architecture = match &checkpoint.model {
        HfModel::Smolvlm { .. } => "smolvlm (Idefics3: SigLIP + connector + Llama decoder)",
        HfModel::Llama(_) => "llama decoder (the text_model of a smolvlm embedder)",
    };
    let tokenizer = checkpoint.tokenizer.as_ref().map(|t| t.get_vocab_size(true));
    if json {
        let report = serde_json::json!({
            "path": checkpoint.path, "format": checkpoint.format, "architecture": architecture, "params": total,
            "parts": parts.iter().map(|(n, v)| (n.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "stored_types": dtypes.iter().map(|(n, v)| (n.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "text_config": text, "vision_config": checkpoint.smolvlm_config().map(|c| &c.vision_config),
            "tokenizer_tokens": tokenizer,
            "details": checkpoint.details.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{}: {}", checkpoint.path, checkpoint.format);
    println!("architecture: {architecture}");
    for (key, value) in &checkpoint.details {
        println!("  {key}: {value}");
    }
    println!(
        "decoder: {} layers, width {}, FFN {}, {} query / {} key-value heads of {}, vocabulary {}, RoPE θ {}, RMSNorm ε {:e}, context {}, output head {}",
        text.num_hidden_layers,
        text.hidden_size,
        text.intermediate_size,
        text.num_attention_heads,
        text.num_key_value_heads,
        text.head_dim(),
        text.vocab_size,
        text.rope_theta,
        text.rms_norm_eps,
        text.max_position_embeddings,
        if text.tie_word_embeddings { "tied to the token embedding" } else { "separate" }
    );
    if let Some(c) = checkpoint.smolvlm_config() {
        let v = &c.vision_config;
        println!(
            "vision: SigLIP {} layers, width {}, MLP {}, {} heads, {} px images in {} px patches; pixel shuffle ×{} → {} image tokens",
            v.num_hidden_layers,
            v.hidden_size,
            v.intermediate_size,
            v.num_attention_heads,
            v.image_size,
            v.patch_size,
            c.scale_factor,
            v.num_patches() / (c.scale_factor * c.scale_factor)
        );
    }
    println!("parameters:");
    for (name, count) in &parts {
        println!("  {name:<14} {count:>12}");
    }
    println!("  {:<14} {total:>12} ({:.1} M)", "total", total as f64 / 1e6);
    let types: Vec<String> = dtypes.iter().map(|(d, n)| format!("{d} × {n}")).collect();
    println!("stored as: {}", types.join(", "));
    match tokenizer {
        Some(n) => println!("tokenizer: {n} tokens"),
        None => println!("tokenizer: none in the checkpoint"),
    }
    Ok(())
}
