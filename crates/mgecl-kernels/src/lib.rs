//! The CPU kernels that mgecl's inference (`mgecl`'s `cpu_fast` path) and training
//! (`mgecl-train`'s `cpu_net` and `winograd`) both call: one f32 matrix-product wrapper and
//! the int8 matrix product (the only `unsafe` code), im2col, 2x2 max-pooling forward and
//! backward, NCHW/NHWC layout changes, Winograd F(2x2, 3x3) (the rule for when it is used and
//! the weight, input-tile and output-tile transforms), the per-thread scratch buffers and the
//! process-wide pool of activation buffers.
//!
//! For any convolution or pooling [`Window`] (side, stride, padding: torchvision's 7x7/2/3
//! stem, 3x3/2/1 and 1x1/2/0 convolutions, 3x3/2/1 max-pool): im2col of f32 values
//! ([`conv::im2col_window`]) and of int8 codes ([`conv::im2col_codes_window`]), its adjoint
//! for the input gradient ([`conv::col2im`]), the int8 convolution
//! ([`int8::Kernel::convolve_window`]), and max-pooling forward and backward, plain or
//! fused with the leaky ReLU's backward ([`pool::max_pool`], [`pool::max_pool_backward`],
//! [`pool::max_pool_leaky_backward`]). Plain slices in, no tensor library: the callers
//! own the network logic, chunking and threading; this crate owns the loops, one
//! implementation each, so both paths run the same arithmetic.
//!
//! Activations are NHWC (`(n, h, w, c)`, row-major) throughout.

pub mod conv;
pub mod gemm;
pub mod int8;
pub mod layout;
pub mod pool;
pub mod scratch;
#[cfg(test)]
mod test_values;
pub mod window;
pub mod winograd;

pub use gemm::{gemm, Mat, Parallelism};
pub use window::Window;
