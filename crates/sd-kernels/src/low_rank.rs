//! A LoRA's update of one block of a weight: rows += factor · left · right, with `left`
//! rows × rank and `right` rank × cols (rank is small, 4 to 128). Written as one scaled row
//! addition per (row, rank) pair, which the compiler vectorizes (SIMD128 in wasm): no gemm
//! library is linked into the module for it.

/// `values` (rows × cols, row-major) += factor · `left` (rows × rank) · `right` (rank × cols).
pub fn add_low_rank(values: &mut [f32], cols: usize, left: &[f32], rank: usize, right: &[f32], factor: f32) {
    assert!(cols > 0 && rank > 0 && values.len() % cols == 0);
    let rows = values.len() / cols;
    assert!(left.len() == rows * rank && right.len() == rank * cols);
    for (row, coefficients) in values.chunks_exact_mut(cols).zip(left.chunks_exact(rank)) {
        for (&c, right_row) in coefficients.iter().zip(right.chunks_exact(cols)) {
            let c = factor * c;
            for (v, &r) in row.iter_mut().zip(right_row) {
                *v += c * r;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_matrix_product() {
        let (rows, rank, cols) = (3, 2, 4);
        let left: Vec<f32> = (0..rows * rank).map(|i| i as f32 - 2.0).collect();
        let right: Vec<f32> = (0..rank * cols).map(|i| (i as f32) * 0.5).collect();
        let mut values = vec![1.0; rows * cols];
        super::add_low_rank(&mut values, cols, &left, rank, &right, 0.5);
        for i in 0..rows {
            for j in 0..cols {
                let dot: f32 = (0..rank).map(|k| left[i * rank + k] * right[k * cols + j]).sum();
                assert_eq!(values[i * cols + j], 1.0 + 0.5 * dot);
            }
        }
    }
}
