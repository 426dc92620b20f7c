//! The CPU kernels that mgecl's inference (`mgecl`'s `cpu_fast` path) and training
//! (`mgecl-train`'s `cpu_net`) both call: one matrix-product wrapper (the only `unsafe` code),
//! 2x2 max-pooling forward and backward, NCHW/NHWC layout changes, the Winograd F(2x2, 3x3)
//! transform building blocks and the per-thread scratch buffers. Plain `f32` slices in, no
//! tensor library: the callers own the network logic; this crate owns the loops.
//!
//! Activations are NHWC (`(n, h, w, c)`, row-major) throughout.

pub mod conv;
pub mod gemm;
pub mod layout;
pub mod pool;
pub mod scratch;
pub mod winograd;

pub use gemm::{gemm, Mat, Parallelism};
