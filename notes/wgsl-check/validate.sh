#!/usr/bin/env bash
# Validates the WGSL kernels in ../../shaders without cargo: fills the burn SourceTemplate
# placeholders (the double-brace names) with test values, then runs naga (the WGSL front end of
# wgpu 30, the version this workspace locks) and, when present, tint (the WGSL compiler of
# Chromium's WebGPU). Usage: bash notes/wgsl-check/validate.sh  (from the repository root or here)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
shaders="$here/../../shaders"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
status=0

fill() { # file, then name=value pairs
    local src="$1"; shift
    local text; text="$(cat "$src")"
    for kv in "$@"; do
        local k="${kv%%=*}" v="${kv#*=}"
        text="$(printf '%s' "$text" | sed -E "s/\{\{ *$k *\}\}/$v/g")"
    done
    if printf '%s' "$text" | grep -q '{{'; then
        echo "unfilled placeholder in $src" >&2; return 1
    fi
    printf '%s\n' "$text"
}

check() { # name, file, then name=value pairs
    local name="$1" src="$2"; shift 2
    local dst="$out/$name.wgsl"
    fill "$shaders/$src" "$@" > "$dst"
    if naga "$dst" >/dev/null 2>"$out/err"; then
        echo "naga ok   $name"
    else
        echo "naga FAIL $name"; cat "$out/err"; status=1
    fi
    # SPIR-V and MSL output exercise naga's back ends (what Vulkan and Metal drivers receive).
    naga "$dst" "$out/$name.spv" >/dev/null 2>&1 || { echo "naga spv FAIL $name"; status=1; }
    naga "$dst" "$out/$name.metal" >/dev/null 2>&1 || { echo "naga msl FAIL $name"; status=1; }
    if command -v tint >/dev/null; then
        if tint --format wgsl -o "$out/$name.tint.wgsl" "$dst" >/dev/null 2>"$out/err"; then
            echo "tint ok   $name"
        else
            echo "tint FAIL $name"; cat "$out/err"; status=1
        fi
    fi
}

for wg in 64 128 256; do
    check "ega_loss_wg$wg" ega_loss.wgsl "workgroup_size=$wg"
    check "ega_loss_backward_wg$wg" ega_loss_backward.wgsl "workgroup_size=$wg"
    check "topk_cosine_wg$wg" topk_cosine.wgsl "workgroup_size=$wg" "rows_per_thread=4"
    check "topk_cosine_merge_wg$wg" topk_cosine_merge.wgsl "workgroup_size=$wg"
done
exit $status
