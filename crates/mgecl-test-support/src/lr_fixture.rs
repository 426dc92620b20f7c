//! Fixture loading shared by the integration tests.

use ndarray::{Array1, Array2};
use safetensors::{Dtype, SafeTensors};

/// One logistic-regression reference fixture (scikit-learn solutions; provenance in `tests/data/README.md`).
pub struct Fixture {
    pub support: Array2<f64>,
    pub support_labels: Vec<usize>,
    pub query: Array2<f64>,
    pub query_labels: Vec<usize>,
    pub coef: Array2<f64>,
    pub intercept: Array1<f64>,
    pub proba: Array2<f64>,
    pub pred: Vec<usize>,
    pub n_classes: usize,
}

fn as_f64(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f64>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("tensor {name}: {e:?}"));
    let data = t.data();
    let vals = match t.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        other => panic!("tensor {name}: unexpected dtype {other:?}"),
    };
    (t.shape().to_vec(), vals)
}

fn as_labels(st: &SafeTensors, name: &str) -> Vec<usize> {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("tensor {name}: {e:?}"));
    assert_eq!(t.dtype(), Dtype::I64, "{name}");
    t.data()
        .chunks_exact(8)
        .map(|c| usize::try_from(i64::from_le_bytes(c.try_into().unwrap())).unwrap())
        .collect()
}

fn matrix(st: &SafeTensors, name: &str) -> Array2<f64> {
    let (shape, vals) = as_f64(st, name);
    Array2::from_shape_vec((shape[0], shape[1]), vals).unwrap()
}

/// Loads `tests/data/<name>.safetensors`.
pub fn load(name: &str) -> Fixture {
    let path = crate::data(&format!("{name}.safetensors"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let coef = matrix(&st, "coef");
    let n_classes = coef.nrows();
    Fixture {
        support: matrix(&st, "support"),
        support_labels: as_labels(&st, "support_labels"),
        query: matrix(&st, "query"),
        query_labels: as_labels(&st, "query_labels"),
        intercept: Array1::from(as_f64(&st, "intercept").1),
        proba: matrix(&st, "proba"),
        pred: as_labels(&st, "pred"),
        coef,
        n_classes,
    }
}

pub fn max_abs_diff<'a>(
    a: impl IntoIterator<Item = &'a f64>,
    b: impl IntoIterator<Item = &'a f64>,
) -> f64 {
    a.into_iter()
        .zip(b)
        .fold(0.0_f64, |m, (x, y)| m.max((x - y).abs()))
}

pub fn centred(v: &Array1<f64>) -> Array1<f64> {
    let mean = v.mean().unwrap();
    v.mapv(|x| x - mean)
}

pub fn argmax_rows(m: &Array2<f64>) -> Vec<usize> {
    m.rows()
        .into_iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv {
                        (i, v)
                    } else {
                        (bi, bv)
                    }
                })
                .0
        })
        .collect()
}
