//! The one-pass CPU kernels of `model::fused` (norms, attention softmax, SwiGLU, GELU, RoPE)
//! against their burn-op references: forward values
//! and every gradient, small (one thread) and large (rayon) shapes, strided inputs, masks that
//! broadcast over heads and batch; the same bits with one thread as with two; and the kernels
//! really run on flex (their call counter moves) while wgpu takes the reference.

use burn::tensor::{Device, Tensor};
use ega_core::model::fused::{
    attention_softmax, attention_softmax_reference, gelu_tanh, gelu_tanh_reference, kernel_calls, layer_norm,
    layer_norm_reference, rms_norm, rms_norm_reference, rope, rope_reference, swiglu, swiglu_reference,
};
use ega_core::model::layers::rope_tables;
use ega_core::tensor_util::{floats, to_f32_vec, to_f64_vec};
use ega_tests::{assert_close, gpu, uniform};

fn random<const D: usize>(shape: [usize; D], lo: f64, hi: f64, seed: u64, device: &Device) -> Tensor<D> {
    let count = shape.iter().product();
    floats(uniform(count, lo, hi, seed).into_iter().map(|v| v as f32).collect(), shape, device)
}

/// A causal mask bias `[b, 1, l, l]` (0 on and below the diagonal, −1e9 above) with the last
/// `pad` keys of the first item masked too (a padded prompt).
fn mask(b: usize, l: usize, pad: usize, device: &Device) -> Tensor<4> {
    let mut values = Vec::with_capacity(b * l * l);
    for item in 0..b {
        for q in 0..l {
            for k in 0..l {
                let masked = k > q || (item == 0 && k >= l - pad && q != k);
                values.push(if masked { -1e9 } else { 0.0 });
            }
        }
    }
    floats(values, [b, 1, l, l], device)
}

/// Values and gradients of `f` (fused) and `reference` on the same inputs, on flex under
/// autodiff: the loss is `Σ out · w` with fixed random `w`, so every output element matters.
fn compare_norm(what: &str, shape: [usize; 3], with_bias: bool, strided: bool) {
    let device = Device::flex().autodiff();
    let [b, l, d] = shape;
    let run = |fused: bool| -> Vec<Vec<f64>> {
        let x = if strided {
            // [B, D, L] swapped to [B, L, D]: a non-contiguous view.
            random([b, d, l], -2.0, 3.0, 1, &device).swap_dims(1, 2).require_grad()
        } else {
            random(shape, -2.0, 3.0, 1, &device).require_grad()
        };
        let gain = random([d], 0.5, 1.5, 2, &device).require_grad();
        let bias = random([d], -0.5, 0.5, 3, &device).require_grad();
        let w = random(shape, -1.0, 1.0, 4, &device);
        let out = match (with_bias, fused) {
            (false, true) => rms_norm(x.clone(), gain.clone(), 1e-6),
            (false, false) => rms_norm_reference(x.clone(), gain.clone(), 1e-6),
            (true, true) => layer_norm(x.clone(), gain.clone(), bias.clone(), 1e-5),
            (true, false) => layer_norm_reference(x.clone(), gain.clone(), bias.clone(), 1e-5),
        };
        let grads = (out.clone() * w).sum().backward();
        let mut result = vec![
            to_f64_vec(out).unwrap(),
            to_f64_vec(x.grad(&grads).unwrap()).unwrap(),
            to_f64_vec(gain.grad(&grads).unwrap()).unwrap(),
        ];
        if with_bias {
            result.push(to_f64_vec(bias.grad(&grads).unwrap()).unwrap());
        }
        result
    };
    let calls = kernel_calls();
    let (fused, reference) = (run(true), run(false));
    assert!(kernel_calls() > calls, "{what}: the kernel did not run on flex");
    for (name, (f, r)) in ["output", "∂x", "∂gain", "∂bias"].iter().zip(fused.iter().zip(&reference)) {
        assert_close(&format!("{what} {name}"), f, r, 1e-5, 1e-4);
    }
}

#[test]
fn rms_norm_matches_its_reference_values_and_gradients() {
    compare_norm("rms small", [2, 3, 8], false, false);
    compare_norm("rms large", [4, 40, 200], false, false);
    compare_norm("rms strided", [3, 17, 72], false, true);
}

#[test]
fn layer_norm_matches_its_reference_values_and_gradients() {
    compare_norm("layer small", [2, 3, 8], true, false);
    compare_norm("layer large", [4, 40, 200], true, false);
    compare_norm("layer strided", [3, 17, 72], true, true);
}

fn compare_softmax(what: &str, shape: [usize; 4], bias: Option<[usize; 2]>) {
    let device = Device::flex().autodiff();
    let l = shape[2];
    let scale = 0.125;
    let run = |fused: bool| -> Vec<Vec<f64>> {
        let scores = random(shape, -6.0, 6.0, 5, &device).require_grad();
        let bias = bias.map(|[bb, bh]| {
            let m = mask(bb, l, 2, &device);
            if bh == 1 {
                m
            } else {
                m.repeat_dim(1, bh)
            }
        });
        let w = random(shape, -1.0, 1.0, 6, &device);
        let out = if fused {
            attention_softmax(scores.clone(), scale, bias.as_ref())
        } else {
            attention_softmax_reference(scores.clone(), scale, bias.as_ref())
        };
        let grads = (out.clone() * w).sum().backward();
        vec![to_f64_vec(out).unwrap(), to_f64_vec(scores.grad(&grads).unwrap()).unwrap()]
    };
    let calls = kernel_calls();
    let (fused, reference) = (run(true), run(false));
    assert!(kernel_calls() > calls, "{what}: the kernel did not run on flex");
    assert_close(&format!("{what} weights"), &fused[0], &reference[0], 1e-6, 1e-5);
    assert_close(&format!("{what} ∂scores"), &fused[1], &reference[1], 1e-6, 1e-4);
}

#[test]
fn attention_softmax_matches_its_reference_values_and_gradients() {
    compare_softmax("no mask", [2, 3, 5, 5], None);
    compare_softmax("mask over heads", [2, 3, 6, 6], Some([2, 1]));
    compare_softmax("mask per head", [2, 3, 6, 6], Some([2, 3]));
    compare_softmax("mask over batch", [2, 3, 6, 6], Some([1, 1]));
    compare_softmax("large", [4, 4, 40, 40], Some([4, 1]));
}

/// Values and gradients of an element-wise kernel against its reference, on flex under autodiff.
fn compare_elementwise(what: &str, len: usize) {
    let device = Device::flex().autodiff();
    let run = |fused: bool| -> Vec<Vec<f64>> {
        // [rows, 2·cols] sliced in two: strided views, as the models' projections are not.
        let a = random([len, 6], -5.0, 5.0, 20, &device).require_grad();
        let b = random([len, 6], -3.0, 3.0, 21, &device).require_grad();
        let (a_view, b_view) = (a.clone().slice([0..len, 1..4]), b.clone().slice([0..len, 2..5]));
        let w = random([len, 3], -1.0, 1.0, 22, &device);
        let out = match (what, fused) {
            ("swiglu", true) => swiglu(a_view, b_view),
            ("swiglu", false) => swiglu_reference(a_view, b_view),
            (_, true) => gelu_tanh(a_view) + b_view,
            (_, false) => gelu_tanh_reference(a_view) + b_view,
        };
        let grads = (out.clone() * w).sum().backward();
        vec![
            to_f64_vec(out).unwrap(),
            to_f64_vec(a.grad(&grads).unwrap()).unwrap(),
            to_f64_vec(b.grad(&grads).unwrap()).unwrap(),
        ]
    };
    let calls = kernel_calls();
    let (fused, reference) = (run(true), run(false));
    assert!(kernel_calls() > calls, "{what}: the kernel did not run on flex");
    for (name, (f, r)) in ["output", "∂a", "∂b"].iter().zip(fused.iter().zip(&reference)) {
        assert_close(&format!("{what} {len} {name}"), f, r, 1e-5, 1e-4);
    }
}

#[test]
fn swiglu_and_gelu_match_their_references_values_and_gradients() {
    for len in [7, 9000] {
        compare_elementwise("swiglu", len);
        compare_elementwise("gelu_tanh", len);
    }
}

#[test]
fn rope_matches_its_reference_values_and_gradients() {
    let device = Device::flex().autodiff();
    for [b, h, l, hd] in [[2, 3, 5, 8], [4, 8, 40, 64]] {
        let (cos, sin) = rope_tables(l, hd, 10_000.0, &device);
        let run = |fused: bool| -> Vec<Vec<f64>> {
            // [B, L, H, hd] swapped to [B, H, L, hd], as the models' heads are.
            let x = random([b, l, h, hd], -2.0, 2.0, 23, &device).require_grad();
            let heads = x.clone().swap_dims(1, 2);
            let w = random([b, h, l, hd], -1.0, 1.0, 24, &device);
            let out = if fused { rope(heads, &cos, &sin) } else { rope_reference(heads, &cos, &sin) };
            let grads = (out.clone() * w).sum().backward();
            vec![to_f64_vec(out).unwrap(), to_f64_vec(x.grad(&grads).unwrap()).unwrap()]
        };
        let calls = kernel_calls();
        let (fused, reference) = (run(true), run(false));
        assert!(kernel_calls() > calls, "rope: the kernel did not run on flex");
        assert_close(&format!("rope {l}×{hd} output"), &fused[0], &reference[0], 1e-6, 1e-5);
        assert_close(&format!("rope {l}×{hd} ∂x"), &fused[1], &reference[1], 1e-6, 1e-5);
    }
}

#[test]
fn kernels_without_autodiff_match_the_references() {
    let device = Device::flex();
    let x = random([3, 9, 64], -2.0, 2.0, 7, &device);
    let (gain, bias) = (random([64], 0.5, 1.5, 8, &device), random([64], -1.0, 1.0, 9, &device));
    let calls = kernel_calls();
    assert_close(
        "rms forward",
        &to_f64_vec(rms_norm(x.clone(), gain.clone(), 1e-6)).unwrap(),
        &to_f64_vec(rms_norm_reference(x.clone(), gain.clone(), 1e-6)).unwrap(),
        1e-5,
        1e-5,
    );
    assert_close(
        "layer forward",
        &to_f64_vec(layer_norm(x.clone(), gain.clone(), bias.clone(), 1e-5)).unwrap(),
        &to_f64_vec(layer_norm_reference(x, gain, bias, 1e-5)).unwrap(),
        1e-5,
        1e-5,
    );
    let scores = random([2, 2, 9, 9], -5.0, 5.0, 10, &device);
    let m = mask(2, 9, 3, &device);
    assert_close(
        "softmax forward",
        &to_f64_vec(attention_softmax(scores.clone(), 0.3, Some(&m))).unwrap(),
        &to_f64_vec(attention_softmax_reference(scores, 0.3, Some(&m))).unwrap(),
        1e-6,
        1e-5,
    );
    assert!(kernel_calls() >= calls + 3, "the kernels did not run on flex");
}

/// The same bits with one rayon thread as with two: rows and column sums have a fixed order.
#[test]
fn kernels_give_the_same_bits_on_one_thread_and_two() {
    let run = || -> Vec<Vec<f32>> {
        let device = Device::flex().autodiff();
        let x = random([8, 64, 96], -2.0, 2.0, 11, &device).require_grad();
        let gain = random([96], 0.5, 1.5, 12, &device).require_grad();
        let bias = random([96], -1.0, 1.0, 13, &device).require_grad();
        let scores = random([8, 4, 64, 64], -4.0, 4.0, 14, &device).require_grad();
        let m = mask(8, 64, 5, &device);
        let y = rms_norm(x.clone(), gain.clone(), 1e-6) + layer_norm(x.clone(), gain.clone(), bias.clone(), 1e-5);
        let p = attention_softmax(scores.clone(), 0.2, Some(&m));
        let loss = (y.clone() * y.clone()).sum() + (p.clone() * scores.clone()).sum();
        let grads = loss.backward();
        vec![
            to_f32_vec(y).unwrap(),
            to_f32_vec(p).unwrap(),
            to_f32_vec(x.grad(&grads).unwrap()).unwrap(),
            to_f32_vec(gain.grad(&grads).unwrap()).unwrap(),
            to_f32_vec(bias.grad(&grads).unwrap()).unwrap(),
            to_f32_vec(scores.grad(&grads).unwrap()).unwrap(),
        ]
    };
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
    let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(run);
    for (k, (a, b)) in one.iter().zip(&two).enumerate() {
        let a_bits: Vec<u32> = a.iter().map(|v| v.to_bits()).collect();
        let b_bits: Vec<u32> = b.iter().map(|v| v.to_bits()).collect();
        assert!(a_bits == b_bits, "output {k} differs between one thread and two");
    }
}

/// On wgpu the functions are their references (no CPU kernel is involved).
#[test]
fn wgpu_takes_the_reference() {
    let Some(device) = gpu("wgpu_takes_the_reference") else { return };
    let x = random([2, 5, 16], -2.0, 2.0, 15, &device);
    let gain = random([16], 0.5, 1.5, 16, &device);
    let fused = to_f64_vec(rms_norm(x.clone(), gain.clone(), 1e-6)).unwrap();
    let reference = to_f64_vec(rms_norm_reference(x, gain, 1e-6)).unwrap();
    assert_eq!(fused, reference, "wgpu rms_norm should be the reference itself");
}

/// The BLAS this machine has, or SKIPPED (a failure when `REQUIRE_BLAS=1`).
fn blas(test: &str) -> bool {
    if ega_core::blas::library().is_some() {
        return true;
    }
    if std::env::var("REQUIRE_BLAS").is_ok_and(|v| v == "1") {
        panic!("REQUIRE_BLAS=1 but no BLAS loaded (apt-get install libopenblas0-pthread; EGA_BLAS names one)");
    }
    eprintln!("\n*** SKIPPED {test}: no system BLAS (apt-get install libopenblas0-pthread) ***\n");
    false
}

/// The linear layer on the BLAS against burn's own `module::linear`: values and the gradients of
/// x, w and b, with and without a bias, 2-D and 3-D inputs, a strided input, under autodiff and
/// without it.
#[test]
fn linear_on_the_blas_matches_burns_linear() {
    if !blas("linear_on_the_blas_matches_burns_linear") {
        return;
    }
    let device = Device::flex().autodiff();
    let check = |what: &str, shape: [usize; 3], d_out: usize, with_bias: bool, strided: bool| {
        let [b, l, d_in] = shape;
        let run = |fused: bool| -> Vec<Vec<f64>> {
            let x = if strided {
                random([b, d_in, l], -2.0, 2.0, 21, &device).swap_dims(1, 2).require_grad()
            } else {
                random(shape, -2.0, 2.0, 21, &device).require_grad()
            };
            let w = random([d_in, d_out], -0.5, 0.5, 22, &device).require_grad();
            let bias = random([d_out], -1.0, 1.0, 23, &device).require_grad();
            let bias_arg = with_bias.then(|| bias.clone());
            let out = if fused {
                ega_core::model::fused::linear(x.clone(), w.clone(), bias_arg)
            } else {
                burn::tensor::module::linear(x.clone(), w.clone(), bias_arg)
            };
            let weights = random([b, l, d_out], -1.0, 1.0, 24, &device);
            let grads = (out.clone() * weights).sum().backward();
            let mut result = vec![
                to_f64_vec(out).unwrap(),
                to_f64_vec(x.grad(&grads).unwrap()).unwrap(),
                to_f64_vec(w.grad(&grads).unwrap()).unwrap(),
            ];
            if with_bias {
                result.push(to_f64_vec(bias.grad(&grads).unwrap()).unwrap());
            }
            result
        };
        let calls = kernel_calls();
        let (fused, reference) = (run(true), run(false));
        assert!(kernel_calls() > calls, "{what}: the BLAS did not run");
        for (name, (f, r)) in ["output", "∂x", "∂w", "∂b"].iter().zip(fused.iter().zip(&reference)) {
            assert_close(&format!("{what} {name}"), f, r, 1e-5, 1e-4);
        }
    };
    check("small, bias", [2, 3, 5], 7, true, false);
    check("large, bias", [4, 33, 130], 70, true, false);
    check("no bias", [3, 8, 64], 96, false, false);
    check("strided", [3, 9, 40], 24, true, true);

    // Without autodiff, 2-D.
    let plain = Device::flex();
    let x = random([17, 31], -1.0, 1.0, 25, &plain);
    let w = random([31, 13], -1.0, 1.0, 26, &plain);
    let b = random([13], -1.0, 1.0, 27, &plain);
    let fused = to_f64_vec(ega_core::model::fused::linear(x.clone(), w.clone(), Some(b.clone()))).unwrap();
    let reference = to_f64_vec(burn::tensor::module::linear(x, w, Some(b))).unwrap();
    assert_close("plain 2-D", &fused, &reference, 1e-5, 1e-4);
}

/// The BLAS's products give the same bits on one thread as on two (the output's rows are split
/// over threads, each summed over the whole inner dimension), so exact resume holds with any
/// thread count.
#[test]
fn linear_on_the_blas_gives_the_same_bits_on_one_thread_and_two() {
    if !blas("linear_on_the_blas_gives_the_same_bits_on_one_thread_and_two") {
        return;
    }
    let run = || -> Vec<Vec<u32>> {
        let device = Device::flex().autodiff();
        let x = random([8, 64, 256], -2.0, 2.0, 31, &device).require_grad();
        let w = random([256, 384], -0.5, 0.5, 32, &device).require_grad();
        let b = random([384], -1.0, 1.0, 33, &device).require_grad();
        let y = ega_core::model::fused::linear(x.clone(), w.clone(), Some(b.clone()));
        let grads = (y.clone() * y.clone()).sum().backward();
        [y, x.grad(&grads).unwrap()]
            .into_iter()
            .map(|t| to_f32_vec(t).unwrap())
            .chain([to_f32_vec(w.grad(&grads).unwrap()).unwrap(), to_f32_vec(b.grad(&grads).unwrap()).unwrap()])
            .map(|v| v.iter().map(|f| f.to_bits()).collect())
            .collect()
    };
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
    let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(run);
    for (k, (a, b)) in one.iter().zip(&two).enumerate() {
        assert!(a == b, "output {k} differs between one thread and two");
    }
}
