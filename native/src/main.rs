//! `native`: the EGA command line. Thin: parses arguments, calls ega-core, prints results. Each
//! command's module owns its flags (a clap `Args` struct) and runs it; this file only dispatches.

mod ablate;
mod args;
mod bench;
mod bench_decoder;
mod bench_train;
mod eval;
mod example;
mod export;
mod gen_data;
mod info;
mod search;
mod train;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use ega_core::device::DeviceChoice;

/// EGA: train and run a multimodal-LLM embedder with the Explicit Gradient Amplifier loss,
/// on wgpu GPUs (Vulkan / Metal / DX12), on the CPU, and in the browser on WebGPU.
#[derive(Parser, Debug)]
#[command(name = "native", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train an embedder (default: the `small` preset on the built-in `shapes` data with EGA),
    /// with progress, a metrics log, checkpoints and a final evaluation table.
    Train(train::TrainArgs),
    /// Evaluate a trained run: R@1/5/10 and MRR both ways, and hard-negative accuracy, on the
    /// held-out split and (shapes) the unseen-combination split; with --queries FILE also
    /// success@1/@10 of hand-written queries against every image of a split (default test).
    Eval(eval::EvalArgs),
    /// Compare losses × seeds with everything else equal (default: info-NCE, EGA, LLaVE, HCL ×
    /// seeds 0, 1, 2 on the `tiny` preset, about a minute a run on 2 CPU cores) and print a markdown
    /// table of mean ± std. Finished runs are reused and interrupted ones resumed.
    Ablate(ablate::AblateArgs),
    /// Embed a gallery of images into a search index: a folder of your images (non-images are
    /// skipped and counted), a JSONL file, or built-in data (shapes, openmoji, openclipart, fluentui).
    Index(search::IndexArgs),
    /// Rank an index's images for a text query (or --image FILE) with the model that made it.
    Search(search::SearchArgs),
    /// Write a model bundle and its gallery index in the form the web page loads (f16 where the
    /// measured retrieval does not drop; every file under WebGPU's default buffer limit).
    Export(export::ExportArgs),
    /// Rebuild an exported model split into parts (`export --parts-base`) from its base
    /// checkpoint: DIR/model/model.safetensors and tokenizer.json, checked byte for byte.
    Assemble(export::AssembleArgs),
    /// Write a dataset to look at: PNG images (and hard-negative images) plus a JSONL file that
    /// `train --data jsonl:DIR/data.jsonl` reads back.
    GenData(gen_data::GenDataArgs),
    /// Show the model presets with their parameter counts, and the devices this machine offers.
    Info(info::InfoArgs),
    /// Compute EGA on a small similarity matrix (default: docs/ega.md's worked example) and print
    /// P, the hardness h, the amplified P̄ and the gradients of info-NCE and EGA.
    Example(example::ExampleArgs),
    /// Benchmarks, measured in one run on one device; results as ratios.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// The `--device` a command was given, for the commands that compute.
fn device_of(command: &Command) -> Option<DeviceChoice> {
    match command {
        Command::Train(a) => Some(a.device),
        Command::Eval(a) => Some(a.device),
        Command::Ablate(a) => Some(a.device),
        Command::Index(a) => Some(a.device),
        Command::Search(a) => Some(a.device),
        Command::Export(a) => Some(a.device),
        Command::Example(a) => Some(a.device),
        _ => None,
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    // burn materialises some tensors on `Device::default()` (a loaded optimizer state, until the
    // next step moves it): wgpu, unless BURN_DEVICE says otherwise. With --device cpu that opened
    // a wgpu device for nothing, and its driver probe printed XDG_RUNTIME_DIR errors (issue 16).
    // Set while the process has one thread, before anything reads the environment.
    if device_of(&cli.command) == Some(DeviceChoice::Cpu) && std::env::var_os("BURN_DEVICE").is_none() {
        std::env::set_var("BURN_DEVICE", "flex");
    }
    let result = match cli.command {
        Command::Train(args) => {
            // Which flags were given (not defaulted): a resumed run takes only some.
            let given = matches.subcommand_matches("train").map(train::given_flags).unwrap_or_default();
            train::command(args, &given)
        }
        Command::Eval(args) => eval::run(args),
        Command::Ablate(args) => ablate::run(args),
        Command::Index(args) => search::index(args),
        Command::Search(args) => search::search(args),
        Command::Export(args) => export::export(args),
        Command::Assemble(args) => export::assemble(args),
        Command::GenData(args) => gen_data::run(args),
        Command::Info(args) => info::run(args),
        Command::Example(args) => example::run(args),
        Command::Bench(command) => bench::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
