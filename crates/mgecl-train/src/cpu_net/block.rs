//! A block of the CPU network (Conv-4: unit, ReLU, pool; ResNet-12: three units and the
//! shortcut, LeakyReLU, residual add, pool): forward, and backward through pooling,
//! activation and the residual add into its units.

use rayon::prelude::*;

use super::unit::{GradIn, Unit};
use super::{Geom, Param, Work, MIN_ROWS_PER_TASK};
use mgecl_kernels::pool::{max_pool_2x2, max_pool_2x2_leaky_backward};

/// A block with the step's saved activations.
pub(super) enum Block {
    Conv4 {
        unit: Unit,
        pool: bool,
        /// The activation's negative slope (0: ReLU).
        slope: f32,
        /// ReLU output, `(pixels, c)`.
        act: Vec<f32>,
    },
    ResNet {
        /// conv1, conv2, conv3, shortcut.
        units: Box<[Unit; 4]>,
        /// The activation's negative slope (0: ReLU).
        slope: f32,
        a1: Vec<f32>,
        a2: Vec<f32>,
        /// LeakyReLU of the residual sum, before pooling.
        act: Vec<f32>,
    },
}

impl Block {
    pub(super) fn c_out(&self) -> usize {
        match self {
            Block::Conv4 { unit, .. } => unit.c_out,
            Block::ResNet { units, .. } => units[0].c_out,
        }
    }
    pub(super) fn pools(&self) -> bool {
        match self {
            Block::Conv4 { pool, .. } => *pool,
            Block::ResNet { .. } => true,
        }
    }
    pub(super) fn slope(&self) -> f32 {
        match self {
            Block::Conv4 { slope, .. } | Block::ResNet { slope, .. } => *slope,
        }
    }
}

pub(super) fn global_avg_pool_backward(d_features: &[f32], g: Geom, c: usize, out: &mut [f32]) {
    let hw = g.h * g.w;
    let inv = 1.0 / hw as f32;
    for (img, df) in out.chunks_exact_mut(hw * c).zip(d_features.chunks_exact(c)) {
        for row in img.chunks_exact_mut(c) {
            for (o, v) in row.iter_mut().zip(df) {
                *o = v * inv;
            }
        }
    }
}

pub(super) fn block_forward(
    block: &mut Block,
    params: &mut [Param],
    work: &mut Work,
    x: &[f32],
    g: Geom,
    out: &mut Vec<f32>,
) {
    let p = g.pixels();
    let slope = block.slope();
    let c = block.c_out();
    let pools = block.pools();
    match block {
        Block::Conv4 { unit, act, .. } => {
            unit.forward(params, work, x, g);
            act.resize(p * c, 0.0);
            normalize_activate(unit, None, slope, act);
        }
        Block::ResNet {
            units, a1, a2, act, ..
        } => {
            let [u1, u2, u3, us] = &mut **units;
            u1.forward(params, work, x, g);
            a1.resize(p * c, 0.0);
            normalize_activate(u1, None, slope, a1);
            u2.forward(params, work, a1, g);
            a2.resize(p * c, 0.0);
            normalize_activate(u2, None, slope, a2);
            u3.forward(params, work, a2, g);
            us.forward(params, work, x, g);
            act.resize(p * c, 0.0);
            normalize_activate(u3, Some(us), slope, act);
        }
    }
    let act = match block {
        Block::Conv4 { act, .. } | Block::ResNet { act, .. } => act,
    };
    if pools {
        out.resize(g.pooled().pixels() * c, 0.0);
        max_pool_2x2(act, (g.n, g.h, g.w), c, out);
    } else {
        out.resize(p * c, 0.0);
        out.copy_from_slice(act);
    }
}

/// Backward of one block: `d_out` is the gradient of its output; fills its parameters'
/// gradients and, when asked, the gradient of its input `x`.
pub(super) fn block_backward(
    block: &mut Block,
    params: &mut [Param],
    work: &mut Work,
    x: &[f32],
    g: Geom,
    d_out: &[f32],
    d_in: Option<&mut Vec<f32>>,
) {
    let p = g.pixels();
    let slope = block.slope();
    let c = block.c_out();
    let pools = block.pools();
    let mut dz = std::mem::take(&mut work.dz);
    dz.resize(p * c, 0.0);
    let act = match block {
        Block::Conv4 { act, .. } | Block::ResNet { act, .. } => act,
    };
    unpool_activation_backward(act, g, c, pools, slope, d_out, &mut dz);
    match block {
        Block::Conv4 { unit, .. } => {
            unit.bn_backward(params, work, GradIn::Direct(&dz));
            unit.weight_backward(params, work, x, g);
            if let Some(d_in) = d_in {
                d_in.resize(p * unit.c_in, 0.0);
                unit.input_backward(params, work, g, d_in, false);
            }
        }
        Block::ResNet { units, a1, a2, .. } => {
            let [u1, u2, u3, us] = &mut **units;
            u3.bn_backward(params, work, GradIn::Direct(&dz));
            us.bn_backward(params, work, GradIn::Direct(&dz));
            u3.weight_backward(params, work, a2, g);
            us.weight_backward(params, work, x, g);
            let mut d_a = std::mem::take(&mut work.d_a);
            d_a.resize(p * c, 0.0);
            u3.input_backward(params, work, g, &mut d_a, false);
            let grad = GradIn::Activation {
                d_a: &d_a,
                a: a2,
                slope,
            };
            u2.bn_backward(params, work, grad);
            u2.weight_backward(params, work, a1, g);
            u2.input_backward(params, work, g, &mut d_a, false);
            let grad = GradIn::Activation {
                d_a: &d_a,
                a: a1,
                slope,
            };
            u1.bn_backward(params, work, grad);
            u1.weight_backward(params, work, x, g);
            work.d_a = d_a;
            if let Some(d_in) = d_in {
                d_in.resize(p * u1.c_in, 0.0);
                u1.input_backward(params, work, g, d_in, false);
                us.input_backward(params, work, g, d_in, true);
            }
        }
    }
    work.dz = dz;
}

/// `out = act(y1 * scale1 + shift1 [+ y2 * scale2 + shift2])`, `act(v) = max(v, slope v)`.
pub(super) fn normalize_activate(u: &Unit, residual: Option<&Unit>, slope: f32, out: &mut [f32]) {
    let c = u.c_out;
    let rows = (MIN_ROWS_PER_TASK * 4).max(1);
    out.par_chunks_mut(rows * c)
        .enumerate()
        .for_each(|(i, dst)| {
            let start = i * rows * c;
            let y = &u.y[start..start + dst.len()];
            match residual {
                None => {
                    for (drow, yrow) in dst.chunks_exact_mut(c).zip(y.chunks_exact(c)) {
                        for (((o, v), s), t) in
                            drow.iter_mut().zip(yrow).zip(&u.scale).zip(&u.shift)
                        {
                            let z = v * s + t;
                            *o = z.max(slope * z);
                        }
                    }
                }
                Some(r) => {
                    let y2 = &r.y[start..start + dst.len()];
                    for ((drow, yrow), y2row) in dst
                        .chunks_exact_mut(c)
                        .zip(y.chunks_exact(c))
                        .zip(y2.chunks_exact(c))
                    {
                        let (s1, t1, s2, t2) =
                            (&u.scale[..c], &u.shift[..c], &r.scale[..c], &r.shift[..c]);
                        let (yrow, y2row) = (&yrow[..c], &y2row[..c]);
                        for (j, o) in drow[..c].iter_mut().enumerate() {
                            let z = yrow[j] * s1[j] + t1[j] + (y2row[j] * s2[j] + t2[j]);
                            *o = z.max(slope * z);
                        }
                    }
                }
            }
        });
}

/// Gradient of the activation's input from the gradient of the (pooled) block output: the
/// pooled gradient goes to the first maximum of each window in row-major order (PyTorch's
/// choice), times the activation's derivative; pixels outside every window get 0.
pub(super) fn unpool_activation_backward(
    a: &[f32],
    g: Geom,
    c: usize,
    pools: bool,
    slope: f32,
    d_out: &[f32],
    dz: &mut [f32],
) {
    if !pools {
        dz.par_chunks_mut(MIN_ROWS_PER_TASK * c)
            .zip(a.par_chunks(MIN_ROWS_PER_TASK * c))
            .zip(d_out.par_chunks(MIN_ROWS_PER_TASK * c))
            .for_each(|((dz, a), d)| {
                for ((o, a), d) in dz.iter_mut().zip(a).zip(d) {
                    *o = if *a > 0.0 { *d } else { slope * d };
                }
            });
        return;
    }
    max_pool_2x2_leaky_backward(a, (g.n, g.h, g.w), c, slope, d_out, dz);
}
