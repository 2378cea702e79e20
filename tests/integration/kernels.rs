//! The WGSL kernels: naga validation of every shader (no adapter needed), docs/ega.md oracle 4 for the
//! fused loss (value and `G`), gradient parity through a real tiny-model training step, and top-k
//! against a sort-based reference. GPU parts run on the wgpu adapter (lavapipe in CI).

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use ega_core::kernels::{self, ega_path, topk_cosine, topk_reference, LossPath, SHADERS};
use ega_core::loss::{
    contrastive_loss, contrastive_loss_fused, contrastive_loss_reference, oracle, similarity_matrix, LossConfig,
    Rescale,
};
use ega_core::model::{Embedder, EmbedderInput, ModelConfig};
use ega_core::prompt::{tokenize_prompts, AssembledBatch, Pooling};
use ega_core::tensor_util::{floats, to_f64_vec};
use ega_tests::{assert_close, draw_shape, gpu, uniform, WordTokenizer};

use super::loss::value_and_grad_on_path;

/// Every shader parses and validates with naga (wgpu's own WGSL front end) for each template
/// value the host uses, so a WGSL error fails here even on a machine without any adapter.
#[test]
fn every_wgsl_shader_validates_with_naga() {
    let wgsl_files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../shaders"))
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().path().extension().is_some_and(|e| e == "wgsl"))
        .count();
    assert_eq!(SHADERS.len(), wgsl_files, "every .wgsl file in shaders/ is listed in kernels::SHADERS");
    for (file, source) in SHADERS {
        for workgroup in [64, 128, 256] {
            let filled =
                source.replace("{{ workgroup_size }}", &workgroup.to_string()).replace("{{ rows_per_thread }}", "32");
            assert!(!filled.contains("{{"), "{file}: a template placeholder is not filled");
            let module = naga::front::wgsl::parse_str(&filled)
                .unwrap_or_else(|err| panic!("{file} (workgroup {workgroup}): {}", err.emit_to_string(&filled)));
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty())
                .validate(&module)
                .unwrap_or_else(|err| panic!("{file} (workgroup {workgroup}): {err:?}"));
            assert!(
                module.entry_points.iter().any(|e| e.name == "main"),
                "{file}: burn launches the entry point `main`"
            );
        }
    }
}

/// Similarities near ±1 (the largest logits a temperature can make), with exact ±1 on some rows.
fn near_unit_similarities(n: usize, m: usize, seed: u64) -> Vec<f64> {
    uniform(n * m, -1.0, 1.0, seed).iter().map(|v| v.signum() * (1.0 - v.abs() * 0.05)).collect()
}

/// Dispatch counts of the forward and backward EGA shaders for `S [n, m]`.
fn shader_launches(dims: (usize, usize)) -> [u64; 2] {
    [kernels::launches("ega_loss.wgsl", dims), kernels::launches("ega_loss_backward.wgsl", dims)]
}

/// Both EGA shaders were dispatched for `S [n, m]` since `before` was taken: with burn-fusion the
/// kernels are operations of the lazy stream, so this (checked after the results were read)
/// shows the WGSL ran rather than a fall-back. Shapes used here are not used by other tests.
#[track_caller]
fn assert_kernels_ran(what: &str, before: [u64; 2], dims: (usize, usize)) {
    let after = shader_launches(dims);
    assert!(after[0] > before[0], "{what}: ega_loss.wgsl was not dispatched for {dims:?}");
    assert!(after[1] > before[1], "{what}: ega_loss_backward.wgsl was not dispatched for {dims:?}");
}

/// docs/ega.md oracle 4: the fused kernels (value and `G`) equal the float64 oracle for
/// N ∈ {1, 2, 7, 64, 257, 1024}, M ∈ {N, N + 13}, τ ∈ {0.01, 0.05, 1.0}, similarities near ±1,
/// |a − b| ≤ 1e-5 + 1e-4·|ref|, with both rescale modes.
#[test]
fn fused_ega_matches_the_oracle_on_ega_md_shapes() {
    let Some(device) = gpu("fused_ega_matches_the_oracle_on_ega_md_shapes") else { return };
    assert_eq!(ega_path(&device), LossPath::FusedWgsl, "the fused path must be taken on wgpu");
    for n in [1, 2, 7, 64, 257, 1024] {
        for m in [n, n + 13] {
            for tau in [0.01, 0.05, 1.0] {
                for rescale in [Rescale::None, Rescale::Sum] {
                    if n == 1024 && rescale == Rescale::Sum && tau != 0.05 {
                        continue; // keeps the lavapipe run short; N = 1024 is covered for every τ above
                    }
                    let config = LossConfig { tau, rescale, ..LossConfig::default() };
                    let s = near_unit_similarities(n, m, (n * 31 + m) as u64);
                    let launched = shader_launches((n, m));
                    let (value, grad) = value_and_grad_on_path(&s, n, m, &config, &device, true);
                    assert_kernels_ran(&format!("[{n},{m}] tau {tau} {rescale:?}"), launched, (n, m));
                    let (want_value, _, want_grad) = oracle::ega_loss_and_grads(&s, n, m, &config);
                    let what = format!("fused [{n},{m}] tau {tau} {rescale:?}");
                    assert_close(&format!("{what} value"), &[value], &[want_value], 1e-5, 1e-4);
                    assert_close(&format!("{what} G"), &grad, &want_grad, 1e-5, 1e-4);
                }
            }
        }
    }
}

/// Rows wider than 4096 columns run with 256-thread workgroups: the same oracle holds.
#[test]
fn fused_ega_matches_the_oracle_on_wide_rows() {
    let Some(device) = gpu("fused_ega_matches_the_oracle_on_wide_rows") else { return };
    let (n, m) = (3, 5000);
    for rescale in [Rescale::None, Rescale::Sum] {
        let config = LossConfig { tau: 0.05, tau_h: Some(0.1), rescale, ..LossConfig::default() };
        let s = near_unit_similarities(n, m, 99);
        let launched = shader_launches((n, m));
        let (value, grad) = value_and_grad_on_path(&s, n, m, &config, &device, true);
        assert_kernels_ran(&format!("wide {rescale:?}"), launched, (n, m));
        let (want_value, _, want_grad) = oracle::ega_loss_and_grads(&s, n, m, &config);
        assert_close(&format!("wide {rescale:?} value"), &[value], &[want_value], 1e-5, 1e-4);
        assert_close(&format!("wide {rescale:?} G"), &grad, &want_grad, 1e-5, 1e-4);
    }
}

/// The forward-only path (a wgpu device without autodiff) gives the same value.
#[test]
fn fused_ega_without_autodiff_gives_the_loss() {
    let Some(device) = gpu("fused_ega_without_autodiff_gives_the_loss") else { return };
    let (n, m) = (9, 20);
    let s = uniform(n * m, -1.0, 1.0, 77);
    for config in
        [LossConfig::default(), LossConfig { symmetric: true, ..LossConfig::default() }, LossConfig::infonce(0.1)]
    {
        let forward_launches = || kernels::launches("ega_loss.wgsl", (n, m));
        let before = forward_launches();
        let sims = floats(s.iter().map(|&v| v as f32).collect(), [n, m], &device);
        let value = to_f64_vec(contrastive_loss(sims, &config).unwrap()).unwrap()[0];
        let (want, _, _) = oracle::ega_loss_and_grads(&s, n, m, &config);
        assert_close(&format!("{config:?}"), &[value], &[want], 1e-5, 1e-5);
        // The kernels really ran (no silent fall-back to the reference), with and without autodiff:
        // the path takes the tensor, and the forward shader was dispatched by the time the value is
        // read (burn-fusion runs it lazily, as an operation of its stream).
        assert!(forward_launches() > before, "{config:?}: ega_loss.wgsl did not run for contrastive_loss");
        for on in [device.clone(), device.clone().autodiff()] {
            let before = forward_launches();
            let sims = floats(s.iter().map(|&v| v as f32).collect(), [n, m], &on);
            let fused = contrastive_loss_fused(sims, &config).expect("the fused path refused a wgpu f32 tensor");
            assert_close(&format!("{config:?} fused"), &to_f64_vec(fused).unwrap(), &[want], 1e-5, 1e-5);
            assert!(
                forward_launches() > before,
                "{config:?}: ega_loss.wgsl did not run (autodiff: {})",
                on.is_autodiff()
            );
        }
        if config.symmetric {
            assert!(kernels::launches("ega_loss.wgsl", (n, n)) > 0, "the transposed term runs on the kernel too");
        }
    }
    let flex = floats(s.iter().map(|&v| v as f32).collect(), [n, m], &Device::flex());
    assert!(contrastive_loss_fused(flex, &LossConfig::default()).is_err(), "flex tensors go to the reference");
}

fn tiny_batch(config: &ModelConfig, device: &Device) -> (EmbedderInput, EmbedderInput) {
    let mut tokenizer = WordTokenizer::default();
    let captions = ["a red square", "a blue circle", "a green square", "a yellow circle", "a red circle"];
    let colours = [[0.9, 0.1, 0.1], [0.1, 0.2, 0.9], [0.1, 0.8, 0.2], [0.9, 0.9, 0.1], [0.9, 0.1, 0.1]];
    let mut pixels = Vec::new();
    for (i, rgb) in colours.iter().enumerate() {
        pixels.extend(draw_shape(32, *rgb, i % 2 == 1, 0.3 + 0.1 * i as f32, 0.5, 0.2));
    }
    let n = captions.len();
    let texts: Vec<_> = captions.iter().map(|c| (*c, None)).collect();
    let images: Vec<_> = (0..n).map(|i| ("", Some(i))).collect();
    let mut encode = |s: &str| Ok(tokenizer.encode(s));
    let k = config.image_slot();
    let max_len = config.max_seq_len();
    let queries = tokenize_prompts(&config.prompts.query, &config.special, &texts, &mut encode).unwrap();
    let targets = tokenize_prompts(&config.prompts.target, &config.special, &images, &mut encode).unwrap();
    let queries = AssembledBatch::new(&queries, &k, 0, &config.special, max_len).unwrap();
    let targets = AssembledBatch::new(&targets, &k, n, &config.special, max_len).unwrap();
    (
        EmbedderInput::new(&queries, None, Pooling::Last, device).unwrap(),
        EmbedderInput::new(&targets, Some(floats(pixels, [n, 3, 32, 32], device)), Pooling::Last, device).unwrap(),
    )
}

/// Through one real tiny-model step on wgpu, the gradients reaching `Q` and `T` (and the model's
/// parameters behind them) are the same whether the loss runs on the kernels or the reference.
#[test]
fn fused_and_reference_give_the_same_gradients_through_a_training_step() {
    let Some(device) = gpu("fused_and_reference_give_the_same_gradients_through_a_training_step") else { return };
    let device = device.autodiff();
    let config = ModelConfig::tiny();
    let model = Embedder::new(&config, 11, &device).unwrap();
    let (queries, targets) = tiny_batch(&config, &device);
    for loss_config in [
        LossConfig::default(),
        LossConfig { rescale: Rescale::Sum, symmetric: true, tau: 0.1, alpha: 2.0, ..LossConfig::default() },
    ] {
        let mut results = Vec::new();
        for fused in [true, false] {
            let loss_of = |s: Tensor<2>| {
                if fused { contrastive_loss(s, &loss_config) } else { contrastive_loss_reference(s, &loss_config) }
                    .unwrap()
            };
            // Gradients at Q and T: the embeddings as leaves.
            let q = model.embed(&queries).detach().require_grad();
            let t = model.embed(&targets).detach().require_grad();
            let grads = loss_of(similarity_matrix(q.clone(), t.clone())).backward();
            let grad_q = to_f64_vec(q.grad(&grads).unwrap()).unwrap();
            let grad_t = to_f64_vec(t.grad(&grads).unwrap()).unwrap();
            // And through the whole model, down to the first layers of both towers.
            let loss = loss_of(similarity_matrix(model.embed(&queries), model.embed(&targets)));
            let value = to_f64_vec(loss.clone()).unwrap()[0];
            let grads = loss.backward();
            let grad_tokens =
                to_f64_vec(model.as_mini().unwrap().language.token_embed.val().grad(&grads).unwrap()).unwrap();
            let grad_patches =
                to_f64_vec(model.as_mini().unwrap().vision.patch_embed.weight.val().grad(&grads).unwrap()).unwrap();
            results.push((value, grad_q, grad_t, grad_tokens, grad_patches));
        }
        let (fused, reference) = (&results[0], &results[1]);
        let what = format!("{loss_config:?}");
        assert_close(&format!("{what} loss"), &[fused.0], &[reference.0], 1e-5, 1e-5);
        assert_close(&format!("{what} ∂L/∂Q"), &fused.1, &reference.1, 1e-5, 1e-4);
        assert_close(&format!("{what} ∂L/∂T"), &fused.2, &reference.2, 1e-5, 1e-4);
        assert_close(&format!("{what} ∂L/∂token_embed"), &fused.3, &reference.3, 1e-6, 1e-3);
        assert_close(&format!("{what} ∂L/∂patch_embed"), &fused.4, &reference.4, 1e-6, 1e-3);
        assert!(fused.1.iter().any(|g| g.abs() > 1e-4), "gradients must not be trivially zero");
    }
    assert!(model.num_params() > 0);
}

/// Host reference of top-k: f64 scores, sorted by score descending then index ascending.
fn host_topk(queries: &[f32], index: &[f32], d: usize, k: usize) -> Vec<Vec<(usize, f64)>> {
    let n = index.len() / d;
    queries
        .chunks(d)
        .map(|query| {
            let mut scored: Vec<(usize, f64)> =
                (0..n).map(|r| (r, (0..d).map(|c| query[c] as f64 * index[r * d + c] as f64).sum())).collect();
            scored.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
            scored.truncate(k);
            scored
        })
        .collect()
}

fn unit_rows(rows: usize, d: usize, seed: u64) -> Vec<f32> {
    let values = uniform(rows * d, -1.0, 1.0, seed);
    values
        .chunks(d)
        .flat_map(|row| {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            row.iter().map(move |v| (v / norm) as f32).collect::<Vec<_>>()
        })
        .collect()
}

/// Checks a device top-k against the host reference: same length, descending scores, scores
/// equal the host scores of the returned rows, exact ties by lower index, and every row that
/// clearly beats the k-th score is present (near-ties within f32 rounding may swap).
fn check_topk(
    what: &str,
    indices: &[i64],
    scores: &[f64],
    expected: &[Vec<(usize, f64)>],
    index: &[f32],
    queries: &[f32],
    d: usize,
) {
    let kept = expected[0].len();
    assert_eq!(indices.len(), expected.len() * kept, "{what}: result size");
    for (a, want) in expected.iter().enumerate() {
        let got_idx = &indices[a * kept..(a + 1) * kept];
        let got_score = &scores[a * kept..(a + 1) * kept];
        for t in 0..kept {
            let row = got_idx[t] as usize;
            let host: f64 = (0..d).map(|c| queries[a * d + c] as f64 * index[row * d + c] as f64).sum();
            assert!(
                (got_score[t] - host).abs() <= 1e-5,
                "{what}: query {a} slot {t}: score {} but row {row} scores {host}",
                got_score[t]
            );
            if t > 0 {
                assert!(got_score[t] <= got_score[t - 1], "{what}: query {a}: scores not descending at {t}");
                if got_score[t] == got_score[t - 1] {
                    assert!(got_idx[t] > got_idx[t - 1], "{what}: query {a}: tie at {t} not broken by the lower index");
                }
            }
        }
        let kth = want[kept - 1].1;
        for &(row, score) in want {
            if score > kth + 1e-5 {
                assert!(
                    got_idx.contains(&(row as i64)),
                    "{what}: query {a}: row {row} (score {score}) missing; got {got_idx:?}, want {want:?}"
                );
            }
        }
        assert_eq!(
            got_idx.iter().collect::<std::collections::HashSet<_>>().len(),
            kept,
            "{what}: query {a}: duplicate rows"
        );
    }
}

/// The top-k kernel equals a sort-based reference: k = 1, k > n, n not a multiple of the
/// workgroup or chunk size, several chunks (merge pass), exact ties.
#[test]
fn topk_kernel_matches_a_sort_reference() {
    let Some(device) = gpu("topk_kernel_matches_a_sort_reference") else { return };
    let d = 24;
    for (q, n, k) in [
        (1, 1, 1),
        (3, 5, 10),
        (7, 1000, 1),
        (7, 1023, 10),
        (4, 1025, 10),
        (5, 3000, 7),
        (2, 2500, 300),
        (6, 257, 257),
        (3, 20000, 12),
        (2, 9000, 40),
    ] {
        let queries = unit_rows(q, d, 5 + n as u64);
        let index = unit_rows(n, d, 9 + n as u64 * 3);
        let before =
            [kernels::launches("topk_cosine.wgsl", (q, n)), kernels::launches("topk_cosine_merge.wgsl", (q, n))];
        let result =
            topk_cosine(floats(queries.clone(), [q, d], &device), floats(index.clone(), [n, d], &device), k).unwrap();
        let indices: Vec<i64> = result.indices.into_data().iter::<i64>().collect();
        let scores = to_f64_vec(result.scores).unwrap();
        // The selection ran on the WGSL kernels (lazily, in burn-fusion's stream), not the sort;
        // the merge pass runs when the index spans several 8192-row chunks.
        assert!(kernels::launches("topk_cosine.wgsl", (q, n)) > before[0], "q={q} n={n}: topk_cosine.wgsl did not run");
        if n > 8192 {
            assert!(
                kernels::launches("topk_cosine_merge.wgsl", (q, n)) > before[1],
                "q={q} n={n}: topk_cosine_merge.wgsl did not run"
            );
        }
        check_topk(
            &format!("wgpu q={q} n={n} k={k}"),
            &indices,
            &scores,
            &host_topk(&queries, &index, d, k),
            &index,
            &queries,
            d,
        );
    }
    // Queries in several score blocks (here 2 queries per block) give the same answer.
    let (q, n, k) = (5, 3000, 6);
    let queries = unit_rows(q, d, 55);
    let index = unit_rows(n, d, 66);
    let result = kernels::topk::topk_cosine_blocked(
        floats(queries.clone(), [q, d], &device),
        floats(index.clone(), [n, d], &device),
        k,
        2 * n + 1,
    )
    .unwrap();
    let indices: Vec<i64> = result.indices.into_data().iter::<i64>().collect();
    check_topk(
        "blocked",
        &indices,
        &to_f64_vec(result.scores).unwrap(),
        &host_topk(&queries, &index, d, k),
        &index,
        &queries,
        d,
    );
    // Exact ties: the index is 4 copies of 4500 rows, so every score appears 4 times, bit-identical,
    // in different chunks and different threads; the order must be by row index.
    let base = unit_rows(4500, d, 123);
    let index: Vec<f32> = (0..4).flat_map(|_| base.clone()).collect();
    let n = 18000;
    let queries = unit_rows(3, d, 321);
    for k in [1, 4, 9, 40] {
        let result =
            topk_cosine(floats(queries.clone(), [3, d], &device), floats(index.clone(), [n, d], &device), k).unwrap();
        let indices: Vec<i64> = result.indices.into_data().iter::<i64>().collect();
        for (a, want) in host_topk(&queries, &index, d, k).iter().enumerate() {
            let want: Vec<i64> = want.iter().map(|&(r, _)| r as i64).collect();
            assert_eq!(&indices[a * k..(a + 1) * k], want.as_slice(), "exact ties, query {a}, k {k}");
        }
    }
}

/// The composed burn reference (used on flex) agrees with the host reference too, and bad
/// arguments are errors, not panics.
#[test]
fn topk_reference_and_bad_arguments() {
    let device = Device::flex();
    let d = 8;
    let (q, n, k) = (3, 50, 5);
    let queries = unit_rows(q, d, 1);
    let index = unit_rows(n, d, 2);
    let result =
        topk_reference(floats(queries.clone(), [q, d], &device), floats(index.clone(), [n, d], &device), k).unwrap();
    let indices: Vec<i64> = result.indices.into_data().iter::<i64>().collect();
    check_topk(
        "flex reference",
        &indices,
        &to_f64_vec(result.scores).unwrap(),
        &host_topk(&queries, &index, d, k),
        &index,
        &queries,
        d,
    );
    let auto =
        topk_cosine(floats(queries.clone(), [q, d], &device), floats(index.clone(), [n, d], &device), 100).unwrap();
    assert_eq!(auto.indices.dims(), [q, n], "k > n returns all n rows");
    let wrong_dim = topk_cosine(floats(queries.clone(), [q, d], &device), floats(vec![0.0; 7 * 3], [7, 3], &device), 2);
    assert!(wrong_dim.unwrap_err().to_string().contains("dimension"));
    let zero_k = topk_cosine(floats(queries, [q, d], &device), floats(index, [n, d], &device), 0);
    assert!(zero_k.unwrap_err().to_string().contains("k = 0"));
    assert_eq!(ega_path(&device), LossPath::Reference);
    assert!(kernels::kernels_enabled() || std::env::var("EGA_KERNELS").is_ok());
}
