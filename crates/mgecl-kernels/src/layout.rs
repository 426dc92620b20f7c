//! NCHW (the model's and PyTorch's layout) to and from NHWC (the kernels' layout).

use rayon::prelude::*;

/// `(n, c, hw)` -> `(n, hw, c)`, one image per task.
///
/// # Panics
/// When either slice is shorter than `n * c * hw`.
pub fn nchw_to_nhwc(src: &[f32], (n, c, hw): (usize, usize, usize), dst: &mut [f32]) {
    let len = n * c * hw;
    if c == 1 {
        dst[..len].copy_from_slice(&src[..len]);
        return;
    }
    dst[..len]
        .par_chunks_mut(c * hw)
        .zip(src[..len].par_chunks(c * hw))
        .for_each(|(dst, src)| {
            for ch in 0..c {
                for (p, v) in src[ch * hw..(ch + 1) * hw].iter().enumerate() {
                    dst[p * c + ch] = *v;
                }
            }
        });
}

/// `(n, hw, c)` -> `(n, c, hw)`, one image per task.
///
/// # Panics
/// When either slice is shorter than `n * c * hw`.
pub fn nhwc_to_nchw(src: &[f32], (n, c, hw): (usize, usize, usize), dst: &mut [f32]) {
    let len = n * c * hw;
    if c == 1 {
        dst[..len].copy_from_slice(&src[..len]);
        return;
    }
    dst[..len]
        .par_chunks_mut(c * hw)
        .zip(src[..len].par_chunks(c * hw))
        .for_each(|(dst, src)| {
            for ch in 0..c {
                for (p, d) in dst[ch * hw..(ch + 1) * hw].iter_mut().enumerate() {
                    *d = src[p * c + ch];
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_move_each_value_where_its_index_says() {
        let (n, c, hw) = (2, 3, 4);
        let nchw: Vec<f32> = (0..n * c * hw).map(|i| i as f32).collect();
        let mut nhwc = vec![0.0; nchw.len()];
        nchw_to_nhwc(&nchw, (n, c, hw), &mut nhwc);
        for i in 0..n {
            for ch in 0..c {
                for p in 0..hw {
                    assert_eq!(nhwc[(i * hw + p) * c + ch], nchw[(i * c + ch) * hw + p]);
                }
            }
        }
        let mut back = vec![0.0; nchw.len()];
        nhwc_to_nchw(&nhwc, (n, c, hw), &mut back);
        assert_eq!(back, nchw);
    }
}
