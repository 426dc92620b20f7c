//! The geometry of a square convolution or pooling window: its side, stride and padding, and
//! the output size they give (PyTorch's floor mode).

use std::ops::Range;

/// A `k x k` window moved `stride` pixels at a time over an image padded with `pad` pixels
/// on every side, as PyTorch's `Conv2d(k, stride=stride, padding=pad)` and
/// `MaxPool2d(k, stride, pad)` read it: output pixel `(oy, ox)`'s tap `(ky, kx)` is input
/// pixel `(oy * stride + ky - pad, ox * stride + kx - pad)`, in the padding when outside the
/// image. ResNet-12's convolutions are `Window::same(3)`, torchvision's stem `Window::new(7,
/// 2, 3)` and its max-pool `Window::new(3, 2, 1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// Side of the window, in pixels.
    pub k: usize,
    /// Step between neighbouring outputs, in input pixels.
    pub stride: usize,
    /// Pixels of padding on each side of the image.
    pub pad: usize,
}

impl Window {
    /// A `k x k` window with this stride and padding.
    pub const fn new(k: usize, stride: usize, pad: usize) -> Self {
        Window { k, stride, pad }
    }

    /// Stride 1 and padding `k / 2`: an odd `k` keeps the image's size (the convolutions
    /// [`crate::conv::im2col`] and [`crate::int8::Kernel::convolve`] compute).
    pub const fn same(k: usize) -> Self {
        Window::new(k, 1, k / 2)
    }

    /// Output side for an input `side`: `(side + 2 pad - k) / stride + 1`, rounded down as
    /// PyTorch does (a last partial step is dropped); `None` when the window is wider than
    /// the padded input, or `k` or the stride is 0.
    pub fn output_side(self, side: usize) -> Option<usize> {
        let padded = side + 2 * self.pad;
        if self.k == 0 || self.stride == 0 || padded < self.k {
            return None;
        }
        Some((padded - self.k) / self.stride + 1)
    }

    /// [`Window::output_side`] of both sides of an `(h, w)` image.
    pub fn output_hw(self, (h, w): (usize, usize)) -> Option<(usize, usize)> {
        Some((self.output_side(h)?, self.output_side(w)?))
    }

    /// The input coordinates along one axis (of `side` pixels) that output `o`'s taps read
    /// inside the image: the taps in the padding are left out, so the range is empty when
    /// the whole window lies in the padding.
    pub fn inside(self, o: usize, side: usize) -> Range<usize> {
        let first = o * self.stride;
        let start = first.saturating_sub(self.pad).min(side);
        let end = (first + self.k).saturating_sub(self.pad).min(side);
        start..end.max(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch's sizes for torchvision's ResNet at 224x224 and at odd sizes, and the
    /// windows that do not fit.
    #[test]
    fn output_sizes_are_pytorchs() {
        let stem = Window::new(7, 2, 3);
        let pool = Window::new(3, 2, 1);
        assert_eq!(stem.output_hw((224, 224)), Some((112, 112)));
        assert_eq!(pool.output_side(112), Some(56));
        assert_eq!(Window::new(3, 2, 1).output_side(56), Some(28));
        assert_eq!(Window::new(1, 2, 0).output_side(56), Some(28));
        assert_eq!(stem.output_hw((23, 19)), Some((12, 10)));
        assert_eq!(Window::new(1, 2, 0).output_side(7), Some(4));
        assert_eq!(pool.output_side(2), Some(1));
        assert_eq!(pool.output_side(1), Some(1));
        assert_eq!(Window::same(3).output_side(5), Some(5));
        assert_eq!(Window::same(1).output_side(1), Some(1));
        assert_eq!(Window::new(5, 1, 1).output_side(2), None);
        assert_eq!(Window::new(3, 1, 0).output_side(0), None);
        assert_eq!(Window::new(0, 1, 0).output_side(4), None);
        assert_eq!(Window::new(3, 0, 1).output_side(4), None);
    }

    /// The taps inside the image, against the definition tap by tap.
    #[test]
    fn inside_taps_are_those_in_the_image() {
        for window in [
            Window::new(7, 2, 3),
            Window::new(3, 2, 1),
            Window::new(1, 2, 0),
            Window::same(3),
            Window::new(2, 1, 3),
        ] {
            for side in 1..9 {
                for o in 0..window.output_side(side).unwrap() {
                    let want: Vec<usize> = (0..window.k)
                        .map(|t| (o * window.stride + t) as isize - window.pad as isize)
                        .filter(|&i| (0..side as isize).contains(&i))
                        .map(|i| i as usize)
                        .collect();
                    let got: Vec<usize> = window.inside(o, side).collect();
                    assert_eq!(got, want, "{window:?} side {side} output {o}");
                }
            }
        }
    }
}
