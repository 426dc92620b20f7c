//! A block of the CPU network, any the layout describes: a chain of units, each followed by
//! the activation, a shortcut unit whose output joins the last unit's before its activation,
//! and an optional 2x2 max-pool. Forward, and backward through pooling, activation and the
//! residual add into its units.

use rayon::prelude::*;

use super::unit::{GradIn, Unit};
use super::{Param, Shape, Work, MIN_ROWS_PER_TASK};
use mgecl_kernels::pool::{max_pool_2x2, max_pool_2x2_leaky_backward};

/// A block with the step's saved activations.
pub(super) struct Block {
    /// The main path's units, in order.
    pub(super) units: Vec<Unit>,
    /// The shortcut's unit, added before the last activation.
    pub(super) shortcut: Option<Unit>,
    /// The activation's negative slope (0: ReLU).
    pub(super) slope: f32,
    /// Whether a 2x2 max-pool ends the block.
    pub(super) pool: bool,
    /// Each unit's activation output `(pixels, c_out)` (the last one's after the residual
    /// add, before pooling).
    pub(super) acts: Vec<Vec<f32>>,
}

impl Block {
    pub(super) fn new(units: Vec<Unit>, shortcut: Option<Unit>, slope: f32, pool: bool) -> Self {
        let acts = units.iter().map(|_| Vec::new()).collect();
        Block {
            units,
            shortcut,
            slope,
            pool,
            acts,
        }
    }

    pub(super) fn c_out(&self) -> usize {
        self.units.last().map_or(0, |u| u.c_out)
    }

    pub(super) fn pools(&self) -> bool {
        self.pool
    }
}

pub(super) fn global_avg_pool_backward(d_features: &[f32], g: Shape, c: usize, out: &mut [f32]) {
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
    g: Shape,
    out: &mut Vec<f32>,
) {
    let p = g.pixels();
    let (slope, c, last) = (block.slope, block.c_out(), block.units.len() - 1);
    for i in 0..=last {
        let (before, rest) = block.acts.split_at_mut(i);
        let input = if i == 0 { x } else { &before[i - 1][..] };
        let unit = &mut block.units[i];
        unit.forward(params, work, input, g);
        let residual = match (&mut block.shortcut, i == last) {
            (Some(shortcut), true) => {
                shortcut.forward(params, work, x, g);
                Some(&*shortcut)
            }
            _ => None,
        };
        let act = &mut rest[0];
        act.resize(p * unit.c_out, 0.0);
        normalize_activate(unit, residual, slope, act);
    }
    let act = &block.acts[last];
    if block.pool {
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
    g: Shape,
    d_out: &[f32],
    d_in: Option<&mut Vec<f32>>,
) {
    let p = g.pixels();
    let (slope, c, last) = (block.slope, block.c_out(), block.units.len() - 1);
    let mut dz = std::mem::take(&mut work.dz);
    dz.resize(p * c, 0.0);
    unpool_activation_backward(&block.acts[last], g, c, block.pool, slope, d_out, &mut dz);
    let Block {
        units,
        shortcut,
        acts,
        ..
    } = block;
    // The last unit and the shortcut both receive the residual sum's gradient.
    units[last].bn_backward(params, work, GradIn::Direct(&dz));
    if let Some(shortcut) = shortcut.as_mut() {
        shortcut.bn_backward(params, work, GradIn::Direct(&dz));
    }
    let input = |i: usize| if i == 0 { x } else { &acts[i - 1][..] };
    units[last].weight_backward(params, work, input(last), g);
    if let Some(shortcut) = shortcut.as_mut() {
        shortcut.weight_backward(params, work, x, g);
    }
    // Down the chain: each unit's input gradient through the activation before it.
    let mut d_a = std::mem::take(&mut work.d_a);
    for i in (1..=last).rev() {
        d_a.resize(p * units[i].c_in, 0.0);
        units[i].input_backward(params, work, g, &mut d_a, false);
        let grad = GradIn::Activation {
            d_a: &d_a,
            a: &acts[i - 1],
            slope,
        };
        units[i - 1].bn_backward(params, work, grad);
        units[i - 1].weight_backward(params, work, input(i - 1), g);
    }
    work.d_a = d_a;
    if let Some(d_in) = d_in {
        d_in.resize(p * units[0].c_in, 0.0);
        units[0].input_backward(params, work, g, d_in, false);
        if let Some(shortcut) = shortcut.as_mut() {
            shortcut.input_backward(params, work, g, d_in, true);
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
    g: Shape,
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
