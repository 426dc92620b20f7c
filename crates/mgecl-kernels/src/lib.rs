//! The CPU kernels that mgecl's inference (`mgecl`'s `cpu_fast` path) and training
//! (`mgecl-train`'s `cpu_net` and `winograd`) both call: one f32 matrix-product wrapper and
//! the int8 matrix product (the only `unsafe` code), im2col, 2x2 max-pooling forward and
//! backward, NCHW/NHWC layout changes, Winograd F(2x2, 3x3) (the rule for when it is used and
//! the weight, input-tile and output-tile transforms), the per-thread scratch buffers and the
//! process-wide pool of activation buffers. Plain slices in, no tensor library: the callers
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
pub mod winograd;

pub use gemm::{gemm, Mat, Parallelism};
