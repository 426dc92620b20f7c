//! Building blocks of the Winograd F(2x2, 3x3) transforms (Lavin & Gray, 2016): the rows of
//! B^T and A^T as sums and differences, applied to one tile position's channels at a time.

/// B^T's rows as `x[a] + sign * x[b]`.
pub const BT_PAIRS: [(usize, usize, f32); 4] =
    [(0, 2, -1.0), (1, 2, 1.0), (2, 1, -1.0), (1, 3, -1.0)];
/// A^T's rows as `x[a] + sign * (x[b] + x[c])`.
pub const AT_TRIPLES: [(usize, usize, usize, f32); 2] = [(0, 1, 2, 1.0), (1, 2, 3, -1.0)];

/// `dst = x + sign * y`. Inlined (into both crates' transforms): the slices are one tile
/// position's channels, often only 32-80 values, so a call costs as much as the work.
#[inline]
pub fn add_signed(dst: &mut [f32], x: &[f32], y: &[f32], sign: f32) {
    for ((d, a), b) in dst.iter_mut().zip(x).zip(y) {
        *d = a + sign * b;
    }
}

/// `dst = x + sign * (y + z)`. Inlined, as [`add_signed`].
#[inline]
pub fn add3_signed(dst: &mut [f32], x: &[f32], y: &[f32], z: &[f32], sign: f32) {
    for (((d, a), b), c) in dst.iter_mut().zip(x).zip(y).zip(z) {
        *d = a + sign * (b + c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pairs and triples are the textbook matrices
    /// B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]], A^T = [[1,1,1,0],[0,1,-1,-1]].
    #[test]
    fn rows_are_lavin_and_grays_matrices() {
        let bt = [
            [1.0, 0.0, -1.0, 0.0],
            [0.0, 1.0, 1.0, 0.0],
            [0.0, -1.0, 1.0, 0.0],
            [0.0, 1.0, 0.0, -1.0],
        ];
        let at = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];
        let x = [[3.0f32], [-2.0], [5.0], [7.0]];
        for (row, (a, b, sign)) in bt.iter().zip(BT_PAIRS) {
            let mut d = [0.0];
            add_signed(&mut d, &x[a], &x[b], sign);
            let want: f32 = row.iter().zip(&x).map(|(r, v)| r * v[0]).sum();
            assert_eq!(d[0], want);
        }
        for (row, (a, b, c, sign)) in at.iter().zip(AT_TRIPLES) {
            let mut d = [0.0];
            add3_signed(&mut d, &x[a], &x[b], &x[c], sign);
            let want: f32 = row.iter().zip(&x).map(|(r, v)| r * v[0]).sum();
            assert_eq!(d[0], want);
        }
    }
}
