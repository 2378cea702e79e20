//! Choosing the device that computes: a wgpu GPU (Vulkan / Metal / DX12 / WebGPU), software Vulkan
//! (lavapipe) when asked for, or burn's `flex` CPU backend.
//!
//! burn's wgpu runtime can be initialised once per process, so the probe result is cached.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

/// Which device a user asked for (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// A hardware GPU through wgpu when there is one, else the CPU backend. Software Vulkan
    /// (lavapipe) is slower than the CPU backend, so `auto` never picks it.
    #[default]
    Auto,
    /// wgpu, whatever adapter it finds (including software Vulkan).
    Wgpu,
    /// burn's `flex` CPU backend.
    Cpu,
}

impl std::str::FromStr for DeviceChoice {
    type Err = crate::EgaError;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            "cpu" | "flex" => Ok(Self::Cpu),
            other => Err(crate::EgaError::config("device", other, "expected auto, wgpu or cpu")),
        }
    }
}

/// What is known about the wgpu adapter burn opened.
#[derive(Debug, Clone)]
pub struct WgpuAdapter {
    /// The burn device on that adapter.
    pub device: Device,
    /// The adapter's name, e.g. "llvmpipe (LLVM 15.0.7, 256 bits)".
    pub name: String,
    /// The graphics API, e.g. "Vulkan".
    pub backend: String,
    /// wgpu's device type, e.g. "DiscreteGpu", "Cpu".
    pub device_type: String,
    /// True for a software rasteriser (lavapipe, SwiftShader, WARP).
    pub software: bool,
}

/// A device chosen for work, with a line that says what it is.
#[derive(Debug, Clone)]
pub struct SelectedDevice {
    /// The burn device (without autodiff; call `.autodiff()` for training).
    pub device: Device,
    /// One human line: backend, adapter, and why it was chosen.
    pub description: String,
    /// True when the device is a wgpu device (the WGSL kernels can run there).
    pub is_wgpu: bool,
}

#[cfg(all(not(target_family = "wasm"), feature = "wgpu"))]
static WGPU: std::sync::OnceLock<Result<WgpuAdapter, String>> = std::sync::OnceLock::new();

/// Opens (once per process) the default wgpu adapter. `Err` says why there is none.
#[cfg(all(not(target_family = "wasm"), feature = "wgpu"))]
pub fn wgpu_adapter() -> Result<&'static WgpuAdapter, &'static str> {
    WGPU.get_or_init(|| {
        // Adapter discovery can panic inside drivers; a missing GPU must be an error, not a crash.
        let opened = std::panic::catch_unwind(|| Device::wgpu_options().init_with_setup());
        match opened {
            Ok(Ok((device, setup))) => {
                let info = setup.adapter.get_info();
                let device_type = format!("{:?}", info.device_type);
                let software = matches!(info.device_type, burn::tensor::wgpu::wgpu::DeviceType::Cpu);
                Ok(WgpuAdapter {
                    device,
                    name: info.name.clone(),
                    backend: format!("{:?}", info.backend),
                    device_type,
                    software,
                })
            }
            Ok(Err(err)) => Err(format!("{err}")),
            Err(_) => Err("the wgpu adapter probe panicked".to_string()),
        }
    })
    .as_ref()
    .map_err(|err| err.as_str())
}

/// Built without ega-core's `wgpu` feature there is no adapter to open.
#[cfg(all(not(target_family = "wasm"), not(feature = "wgpu")))]
pub fn wgpu_adapter() -> Result<&'static WgpuAdapter, &'static str> {
    Err("ega-core was built without its `wgpu` feature")
}

/// The `flex` CPU device.
pub fn cpu() -> SelectedDevice {
    SelectedDevice { device: Device::flex(), description: "cpu (burn flex backend)".to_string(), is_wgpu: false }
}

/// Resolves a [`DeviceChoice`] to a device (native only; the browser initialises asynchronously).
#[cfg(not(target_family = "wasm"))]
pub fn select(choice: DeviceChoice) -> crate::Result<SelectedDevice> {
    let describe = |adapter: &WgpuAdapter, why: &str| SelectedDevice {
        device: adapter.device.clone(),
        description: format!(
            "wgpu: {} ({}, {}{}){}",
            adapter.name,
            adapter.backend,
            adapter.device_type,
            if adapter.software { ", software" } else { "" },
            why
        ),
        is_wgpu: true,
    };
    match choice {
        DeviceChoice::Cpu => Ok(cpu()),
        DeviceChoice::Wgpu => wgpu_adapter()
            .map(|adapter| describe(adapter, ""))
            .map_err(|why| crate::EgaError::Device(format!("no wgpu adapter: {why}"))),
        DeviceChoice::Auto => match wgpu_adapter() {
            Ok(adapter) if !adapter.software => Ok(describe(adapter, ", chosen by auto")),
            Ok(adapter) => {
                let mut selected = cpu();
                selected.description = format!(
                    "cpu (burn flex backend), chosen by auto: the only wgpu adapter, {}, is software \
                     (use --device wgpu to force it)",
                    adapter.name
                );
                Ok(selected)
            }
            Err(why) => {
                let mut selected = cpu();
                selected.description = format!("cpu (burn flex backend), chosen by auto: no wgpu adapter ({why})");
                Ok(selected)
            }
        },
    }
}
