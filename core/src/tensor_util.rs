//! Small helpers between host vectors and burn tensors.

use burn::tensor::{Device, Int, Tensor, TensorData};

/// A float tensor from a row-major host vector.
pub fn floats<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// An int tensor from a row-major host vector.
pub fn ints<const D: usize>(values: Vec<i64>, shape: [usize; D], device: &Device) -> Tensor<D, Int> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Reads a float tensor back as `f32` values (blocking: native only, never on wasm).
pub fn to_f32_vec<const D: usize>(tensor: Tensor<D>) -> crate::Result<Vec<f32>> {
    let data = tensor.try_into_data().map_err(|err| crate::EgaError::Readback(format!("{err:?}")))?;
    Ok(data.iter::<f32>().collect())
}

/// Reads a float tensor back as `f64` values (blocking: native only, never on wasm).
pub fn to_f64_vec<const D: usize>(tensor: Tensor<D>) -> crate::Result<Vec<f64>> {
    let data = tensor.try_into_data().map_err(|err| crate::EgaError::Readback(format!("{err:?}")))?;
    Ok(data.iter::<f64>().collect())
}

/// Reads a one-element float tensor back as `f64` (blocking: native only).
pub fn scalar<const D: usize>(tensor: Tensor<D>) -> crate::Result<f64> {
    let values = to_f64_vec(tensor)?;
    values.first().copied().ok_or_else(|| crate::EgaError::Readback("empty tensor".into()))
}

/// The `[rows, cols]` matrix with ones on the main diagonal `i == j` (`cols >= rows` allowed).
pub fn eye(rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    let mut values = vec![0.0f32; rows * cols];
    for i in 0..rows.min(cols) {
        values[i * cols + i] = 1.0;
    }
    floats(values, [rows, cols], device)
}

/// Column indices `[rows, 1]` holding `i` in row `i`: gathers the diagonal of a `[rows, cols]` matrix.
pub fn diagonal_index(rows: usize, device: &Device) -> Tensor<2, Int> {
    ints((0..rows as i64).collect(), [rows, 1], device)
}
