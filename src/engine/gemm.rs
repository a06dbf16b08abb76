//! The single place where matrices are multiplied.
//!
//! Matrices are strided views: element (i, j) of a matrix lives at `data[i * rs + j * cs]`, so
//! a transpose is a swap of strides and costs nothing.

/// A read-only strided matrix `[rows, cols]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    /// Distance between rows (elements).
    pub rs: usize,
    /// Distance between columns (elements).
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `[rows, cols]` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose, as a view.
    pub fn t(self) -> Self {
        Self { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
}

/// Whether a product may use the rayon pool (callers already inside a parallel loop say no).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parallelism {
    Sequential,
    Rayon,
}

/// `c = beta * c + alpha * a @ b` with c row-major `[m, n]`, a `[m, k]`, b `[k, n]`.
/// `beta == 0` overwrites c without reading it (so NaNs in c do not propagate).
pub fn sgemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut [f32], par: Parallelism) {
    let _ = par;
    sgemm_naive(alpha, a, b, beta, c);
}

/// The reference every fast path is tested against: the textbook triple loop.
pub fn sgemm_naive(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    debug_assert_eq!(b.rows, k);
    debug_assert!(c.len() >= m * n);
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for p in 0..k {
                acc += a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs];
            }
            let dst = &mut c[i * n + j];
            *dst = if beta == 0.0 { alpha * acc } else { beta * *dst + alpha * acc };
        }
    }
}
