//! Matrix products through the `gemm` crate (the kernels candle itself uses; its AVX-512
//! kernels are enabled, picked at run time, AVX2/FMA or scalar elsewhere).

pub use gemm::Parallelism;

/// A strided matrix view: element (i, j) at `data[i * rs + j * cs]`.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a> {
    /// The values the view addresses (at least [`Mat::extent`] of them).
    pub data: &'a [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between rows.
    pub rs: usize,
    /// Distance between columns.
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major `(rows, cols)` from the start of `data`.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (a view).
    pub fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// One past the largest index addressed.
    pub fn extent(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1
        }
    }
}

/// `dst (m, n) row-major = [dst +] lhs rhs`: with `accumulate` the product is added to
/// `dst`'s values, without it they are overwritten (and never read).
///
/// # Panics
/// When the shapes disagree (`lhs` is not `(m, k)`, `rhs` not `(k, n)`) or a slice is too
/// short for its view.
pub fn gemm(
    dst: &mut [f32],
    (m, n): (usize, usize),
    accumulate: bool,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    parallelism: Parallelism,
) {
    assert!(lhs.rows == m && rhs.cols == n && lhs.cols == rhs.rows);
    assert!(dst.len() >= m * n && lhs.data.len() >= lhs.extent());
    assert!(rhs.data.len() >= rhs.extent());
    if m == 0 || n == 0 {
        return;
    }
    if lhs.cols == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the assertions keep every element gemm addresses inside the slices: dst
    // (i, j) at i * n + j < m * n, lhs (i, l) at i * rs + l * cs < extent, rhs likewise.
    // `dst` is borrowed mutably, so it aliases neither input; without `accumulate` gemm
    // does not read dst.
    unsafe {
        gemm::gemm(
            m,
            n,
            lhs.cols,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every layout (plain, transposed either side) and accumulation against the schoolbook
    /// product in f64.
    #[test]
    fn products_match_the_definition() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 13 % 7) as f32 - 3.0) / 2.0)
            .collect();
        let want = |accumulated: f64, i: usize, j: usize| {
            accumulated
                + (0..k)
                    .map(|l| f64::from(a[i * k + l]) * f64::from(b[l * n + j]))
                    .sum::<f64>()
        };
        let a_t: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let b_t: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let lhs = [Mat::rows(&a, m, k), Mat::rows(&a_t, k, m).t()];
        let rhs = [Mat::rows(&b, k, n), Mat::rows(&b_t, n, k).t()];
        for l in lhs {
            for r in rhs {
                for accumulate in [false, true] {
                    let mut dst = vec![1.0f32; m * n];
                    gemm(&mut dst, (m, n), accumulate, l, r, Parallelism::None);
                    for i in 0..m {
                        for j in 0..n {
                            let start = if accumulate { 1.0 } else { 0.0 };
                            let err = (f64::from(dst[i * n + j]) - want(start, i, j)).abs();
                            assert!(err < 1e-5, "({i}, {j}): {err}");
                        }
                    }
                }
            }
        }
    }
}
