//! A system BLAS's `cblas_sgemm`, loaded at run time when the machine has one (native builds).
//!
//! burn-flex multiplies matrices with the `gemm` crate, which on these 2-core AMD EPYC machines
//! reaches about 40 GFLOP/s a core at the model's shapes, where OpenBLAS reaches about 90 (README,
//! "Performance: ega-core against PyTorch"). The linear layers ([`crate::model::fused::linear`])
//! call this module's [`sgemm`] when a BLAS was found and fall back to burn's matmul otherwise,
//! so nothing changes on a machine without one and no build links against one.
//!
//! Which library: `EGA_BLAS=off` turns it off, `EGA_BLAS=/path/to/libopenblas.so` names one;
//! otherwise the first of OpenBLAS's usual names (`libopenblas.so.0`, `libopenblas.so`,
//! `libopenblas.dylib`, `libopenblas.dll`) and macOS's Accelerate that loads and exports
//! `cblas_sgemm`. Debian/Ubuntu: `apt-get install libopenblas0-pthread` (scripts/setup-test.sh
//! installs it). OpenBLAS runs on one thread per call; [`sgemm`] splits the rows of its output over
//! rayon's threads (`RAYON_NUM_THREADS`, `--threads`), each block over the whole inner dimension,
//! so results do not depend on the thread count (tested).

use std::ffi::c_int;
use std::sync::OnceLock;

/// `cblas_sgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)`.
type SgemmFn = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    f32,
    *const f32,
    c_int,
    *const f32,
    c_int,
    f32,
    *mut f32,
    c_int,
);

/// `openblas_set_num_threads(n)`.
type SetThreadsFn = unsafe extern "C" fn(c_int);

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

/// The loaded library.
struct Blas {
    /// Kept loaded for the process's life.
    _library: libloading::Library,
    sgemm: SgemmFn,
    set_threads: Option<SetThreadsFn>,
    name: String,
}

static BLAS: OnceLock<Option<Blas>> = OnceLock::new();

/// The library names tried when `EGA_BLAS` names none.
const CANDIDATES: [&str; 5] = [
    "libopenblas.so.0",
    "libopenblas.so",
    "libopenblas.dylib",
    "libopenblas.dll",
    "/System/Library/Frameworks/Accelerate.framework/Accelerate",
];

fn load(name: &str) -> Option<Blas> {
    // SAFETY: loading a shared library runs its initialisers; the ones tried are BLAS libraries
    // (or the one the user named), and the symbols are used with their C signatures.
    unsafe {
        let library = libloading::Library::new(name).ok()?;
        let sgemm: SgemmFn = *library.get::<SgemmFn>(b"cblas_sgemm\0").ok()?;
        let set_threads = library.get::<SetThreadsFn>(b"openblas_set_num_threads\0").ok().map(|f| *f);
        Some(Blas { _library: library, sgemm, set_threads, name: name.to_string() })
    }
}

fn blas() -> Option<&'static Blas> {
    BLAS.get_or_init(|| {
        let choice = std::env::var("EGA_BLAS").ok();
        let blas = match choice.as_deref() {
            Some("off" | "0" | "none") => None,
            Some(path) if !path.is_empty() => {
                let loaded = load(path);
                if loaded.is_none() {
                    eprintln!("warning: EGA_BLAS={path}: not a library exporting cblas_sgemm; using burn's matmul");
                }
                loaded
            }
            _ => CANDIDATES.iter().find_map(|name| load(name)),
        };
        if let Some(blas) = &blas {
            // One thread inside each call: the calls themselves are spread over rayon's threads
            // (OpenBLAS's own threads spin in sched_yield while rayon's work, 27% of a profile).
            if let Some(set_threads) = blas.set_threads {
                // SAFETY: a plain setter of the library's thread count.
                unsafe { set_threads(1) };
            }
        }
        blas
    })
    .as_ref()
}

/// The BLAS in use (its library name), or `None` when matrix products stay on burn's matmul.
pub fn library() -> Option<&'static str> {
    blas().map(|b| b.name.as_str())
}

/// `C = op(A) · op(B) + beta · C`, row-major: `op(A)` is `[m, k]` (`A` stored `[k, m]` when
/// `trans_a`), `op(B)` is `[k, n]` (`B` stored `[n, k]` when `trans_b`), `C` is `[m, n]`, all
/// contiguous. The rows of `C` are split into blocks over rayon's threads (each block one
/// single-threaded BLAS call over the whole inner dimension, so no sum is split and the result
/// does not depend on the thread count). Returns `false` (and leaves `c` alone) when no BLAS is
/// loaded or a size does not fit the C interface's `int`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) -> bool {
    let Some(blas) = blas() else { return false };
    let fits = |v: usize| c_int::try_from(v).is_ok();
    if ![m, n, k, m * k, k * n, m * n].into_iter().all(fits) {
        return false;
    }
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "sgemm: slices shorter than their shapes");
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 {
        c[..m * n].iter_mut().for_each(|v| *v *= beta);
        return true;
    }
    let lda = if trans_a { m } else { k };
    let ldb = if trans_b { k } else { n };
    // One block: rows `r0..r0 + rows` of C.
    let block = |r0: usize, c_rows: &mut [f32]| {
        let rows = c_rows.len() / n;
        // Row r0 of op(A): row r0 of A, or column r0 of the stored `[k, m]`.
        let a_block = if trans_a { &a[r0..] } else { &a[r0 * k..] };
        // SAFETY: the slices hold at least the elements the shapes and leading dimensions address.
        unsafe {
            (blas.sgemm)(
                ROW_MAJOR,
                if trans_a { TRANS } else { NO_TRANS },
                if trans_b { TRANS } else { NO_TRANS },
                rows as c_int,
                n as c_int,
                k as c_int,
                1.0,
                a_block.as_ptr(),
                lda as c_int,
                b.as_ptr(),
                ldb as c_int,
                beta,
                c_rows.as_mut_ptr(),
                n as c_int,
            );
        }
    };
    let threads = rayon::current_num_threads();
    let flops = m as f64 * n as f64 * k as f64;
    if threads > 1 && m >= 2 * threads && flops >= PARALLEL_MIN_FLOPS {
        use rayon::prelude::*;
        let rows_per_block = m.div_ceil(threads);
        c[..m * n].par_chunks_mut(rows_per_block * n).enumerate().for_each(|(i, rows)| block(i * rows_per_block, rows));
    } else {
        block(0, &mut c[..m * n]);
    }
    true
}

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_FLOPS: f64 = 262_144.0;
