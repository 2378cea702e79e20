#!/usr/bin/env bash
# Installs what the tests need and this machine lacks, checking by command or file (never asking
# apt for a package whose command is already there from another source, e.g. Node.js from
# nodesource, which conflicts with Debian's npm):
#   a Vulkan driver (lavapipe: software Vulkan, so the GPU tests run without a GPU), OpenBLAS
#   (the linear layers' matrix products on the CPU, opened at run time: core/src/blas.rs), node + npm,
#   Chromium (headless browser tests), the wasm32 target, wasm-bindgen-cli at Cargo.lock's version
#   (~3 min to build), trunk 0.21.14 (~8 min to build).
# Called by scripts/test.sh (README's test command) and .ci/run; safe to run again (a no-op when
# everything is there). apt needs root: as another user it uses sudo when that works without a
# password, else it prints the command to run and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=()
# Any Vulkan ICD will do (a GPU's driver, or lavapipe); the loader library too.
# (`ls a/*.json b/*.json` fails when either folder has none, so each is tried on its own.)
if ! compgen -G '/usr/share/vulkan/icd.d/*.json' >/dev/null && ! compgen -G '/etc/vulkan/icd.d/*.json' >/dev/null; then
  apt_packages+=(mesa-vulkan-drivers)
fi
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
  apt_packages+=(libvulkan1)
fi
if ! ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so\.0'; then
  apt_packages+=(libopenblas0-pthread)
fi
command -v node >/dev/null || apt_packages+=(nodejs)
command -v npm >/dev/null || apt_packages+=(npm)
if ! command -v "${CHROMIUM:-chromium}" >/dev/null && ! command -v chromium-browser >/dev/null; then
  apt_packages+=(chromium)
fi
if ((${#apt_packages[@]})); then
  echo "setup-test: installing ${apt_packages[*]} with apt-get" >&2
  if [[ $(id -u) == 0 ]]; then
    sudo=()
  elif sudo -n true 2>/dev/null; then
    sudo=(sudo)
  else
    echo "error: the tests need: ${apt_packages[*]}; install them with: sudo apt-get install -y ${apt_packages[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get install -y -qq "${apt_packages[@]}" ||
    { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq "${apt_packages[@]}"; }
fi

# The browser target of the web package (rustup downloads its std once).
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi

# wasm-bindgen-cli at exactly the version in Cargo.lock (without --locked: a locked dependency of
# it is not served by the registry).
bindgen=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
if [[ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$bindgen" ]]; then
  echo "setup-test: cargo install wasm-bindgen-cli --version $bindgen (~3 min)" >&2
  cargo install wasm-bindgen-cli --version "$bindgen"
fi

# trunk builds the demo page (0.21.14: the newest needs a newer Rust).
if [[ "$(trunk --version 2>/dev/null | awk '{print $2}')" != "0.21.14" ]]; then
  echo "setup-test: cargo install trunk --version 0.21.14 --locked (~8 min)" >&2
  cargo install trunk --version 0.21.14 --locked
fi
