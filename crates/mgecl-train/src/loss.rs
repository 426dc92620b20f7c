//! Training losses: cross-entropy (with label smoothing) for pretraining, and MGECL's
//! class-granularity hinge and instance-granularity contrastive losses for meta-training.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::layers::{l2_normalize, log_softmax, one_hot};

/// Mean cross-entropy of (N, K) logits against `labels`, with label smoothing `eps`
/// (PyTorch semantics: target = (1 - eps) one-hot + eps / K).
pub fn cross_entropy(logits: &Tensor, labels: &[usize], smoothing: f64) -> Result<Tensor> {
    let (n, k) = logits.dims2()?;
    let logp = log_softmax(logits)?;
    let target = ((one_hot(labels, k, logits)? * (1.0 - smoothing))? + smoothing / k as f64)?;
    Ok(((logp * target)?.sum_all()? * (-1.0 / n as f64))?)
}

/// [`cross_entropy`] and its gradient on host rows, for the CPU engine: `logits` (N, K)
/// row-major become `d loss / d logits`; returns the mean loss and how many rows' top logit
/// (the first, on ties) is their label.
pub(crate) fn cross_entropy_backward(
    logits: &mut [f32],
    labels: &[usize],
    k: usize,
    smoothing: f64,
) -> (f64, usize) {
    let n = labels.len();
    let mut loss = 0.0;
    let mut correct = 0;
    for (row, &label) in logits.chunks_exact_mut(k).zip(labels) {
        let (mut best, mut max) = (0, f32::NEG_INFINITY);
        for (j, &v) in row.iter().enumerate() {
            if v > max {
                (best, max) = (j, v);
            }
        }
        correct += usize::from(best == label);
        let max = f64::from(max);
        let sum: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        let lse = max + sum.ln();
        // loss = -sum_j t_j log p_j, t = (1 - eps) onehot + eps / K; dlogit = (p - t) / n
        let off = smoothing / k as f64;
        for (j, v) in row.iter_mut().enumerate() {
            let logp = f64::from(*v) - lse;
            let t = off + if j == label { 1.0 - smoothing } else { 0.0 };
            loss -= t * logp;
            *v = ((logp.exp() - t) / n as f64) as f32;
        }
    }
    (loss / n as f64, correct)
}

/// Knowledge distillation (Hinton et al. 2015, as RFS's `DistillKL`): the mean over rows of
/// `T^2 KL(softmax(teacher / T) || softmax(logits / T))`, for (N, K) student `logits` and
/// fixed `teacher` logits of the same shape. The `T^2` keeps the gradient's scale as `T`
/// changes.
pub fn distillation(logits: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    let (n, _) = logits.dims2()?;
    let log_student = log_softmax(&(logits / temperature)?)?;
    let log_teacher = log_softmax(&(teacher.detach() / temperature)?)?;
    let kl = (log_teacher.exp()? * (log_teacher - log_student)?)?.sum_all()?;
    Ok((kl * (temperature * temperature / n as f64))?)
}

/// [`distillation`] and its gradient on host rows, for the CPU engine: `logits` (N, K)
/// row-major become `d loss / d logits` = `T (softmax(logits / T) - softmax(teacher / T)) / N`;
/// returns the loss.
pub(crate) fn distillation_backward(
    logits: &mut [f32],
    teacher: &[f32],
    k: usize,
    temperature: f64,
) -> f64 {
    let n = logits.len() / k;
    let t = temperature;
    let log_softmax = |row: &[f32]| -> Vec<f64> {
        let max = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v) / t));
        let lse = max
            + row
                .iter()
                .map(|&v| (f64::from(v) / t - max).exp())
                .sum::<f64>()
                .ln();
        row.iter().map(|&v| f64::from(v) / t - lse).collect()
    };
    let mut loss = 0.0;
    for (row, teacher_row) in logits.chunks_exact_mut(k).zip(teacher.chunks_exact(k)) {
        let (log_s, log_t) = (log_softmax(row), log_softmax(teacher_row));
        for ((v, ls), lt) in row.iter_mut().zip(log_s).zip(log_t) {
            loss += lt.exp() * (lt - ls);
            *v = (t * (ls.exp() - lt.exp()) / n as f64) as f32;
        }
    }
    loss * t * t / n as f64
}

/// Class-granularity loss. `support` (N*K, D) class-major features of `ways` classes,
/// `query` (M, D) with labels in 0..ways. Features and prototypes (class means of the
/// normalised support features) are L2-normalised; for every query and every other class:
/// `max(0, margin - cos(q, p+) + cos(q, p-))`, summed over negatives and averaged over queries.
pub fn class_hinge(
    support: &Tensor,
    ways: usize,
    query: &Tensor,
    query_labels: &[usize],
    margin: f64,
) -> Result<Tensor> {
    let (ns, d) = support.dims2()?;
    if ways == 0 || ns % ways != 0 || query.dim(0)? != query_labels.len() {
        return Err(Error::InvalidArgument(
            "class_hinge: inconsistent episode shapes".into(),
        ));
    }
    let shots = ns / ways;
    let prototypes = l2_normalize(&l2_normalize(support)?.reshape((ways, shots, d))?.mean(1)?)?;
    let sim = l2_normalize(query)?.matmul(&prototypes.t()?)?; // (M, ways)
    let pos_mask = one_hot(query_labels, ways, &sim)?;
    let pos = (&sim * &pos_mask)?.sum_keepdim(1)?; // (M, 1)
    let hinge = (sim.broadcast_sub(&pos)? + margin)?.relu()?;
    let neg_mask = (1.0 - pos_mask)?;
    Ok(((hinge * neg_mask)?.sum_all()? / query_labels.len() as f64)?)
}

/// Instance-granularity loss (SupCon / InfoNCE). `features` (M, D), `groups[i]` the instance
/// id of row i (an image and its augmented views share one; rows whose id appears once have
/// no positive and serve only as negatives). Rows are L2-normalised, similarities divided
/// by `tau`; for each anchor with positives, the mean over its positives p of
/// `-log(exp(s_ip) / sum_{a != i} exp(s_ia))`; averaged over anchors.
pub fn instance_contrastive(features: &Tensor, groups: &[usize], tau: f64) -> Result<Tensor> {
    let m = features.dim(0)?;
    if groups.len() != m || tau <= 0.0 {
        return Err(Error::InvalidArgument(
            "instance_contrastive: bad groups or tau".into(),
        ));
    }
    let z = l2_normalize(features)?;
    let sim = (z.matmul(&z.t()?)? / tau)?;
    let mut self_mask = vec![0f32; m * m];
    let mut pos = vec![0f32; m * m];
    let mut anchors = 0usize;
    for i in 0..m {
        self_mask[i * m + i] = -1e9;
        let count = (0..m).filter(|&j| j != i && groups[j] == groups[i]).count();
        if count > 0 {
            anchors += 1;
            for j in 0..m {
                if j != i && groups[j] == groups[i] {
                    pos[i * m + j] = 1.0 / count as f32;
                }
            }
        }
    }
    if anchors == 0 {
        return Err(Error::InvalidArgument(
            "instance_contrastive: no row has a positive".into(),
        ));
    }
    let dev = features.device();
    let dt = features.dtype();
    let self_mask = Tensor::from_vec(self_mask, (m, m), dev)?.to_dtype(dt)?;
    let pos = Tensor::from_vec(pos, (m, m), dev)?.to_dtype(dt)?;
    let logp = log_softmax(&(sim + self_mask)?)?;
    let per_anchor = (logp * pos)?.sum(1)?.neg()?; // rows without positives give 0
    Ok((per_anchor.sum_all()? / anchors as f64)?)
}
