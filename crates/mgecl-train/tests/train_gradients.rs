//! Finite-difference gradient checks for every layer training goes through, and the MGECL
//! losses against values computed by hand.

use candle_core::{DType, Device, Tensor, Var};
use mgecl_train::layers::{
    batch_norm_train, conv, global_avg_pool, leaky_relu, linear, max_pool2x2,
};
use mgecl_train::loss::{class_hinge, cross_entropy, instance_contrastive};
use mgecl_train::rng::Rng;

fn random(shape: &[usize], rng: &mut Rng, away_from_zero: bool) -> Var {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| {
            let x = rng.normal();
            if away_from_zero {
                x.signum() * (x.abs() + 0.05)
            } else {
                x
            }
        })
        .collect();
    Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
}

/// Checks d(loss)/d(input) for every input against central differences, where
/// `loss = sum(f(inputs) * r)` with a fixed random `r` (scalar outputs use r = 1).
fn check(name: &str, inputs: &[Var], f: impl Fn(&[Tensor]) -> Tensor) {
    let mut rng = Rng::new(99, 0);
    let tensors: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&tensors);
    let r = if out.rank() == 0 {
        Tensor::new(1f64, &Device::Cpu).unwrap()
    } else {
        random(out.dims(), &mut rng, false).as_tensor().clone()
    };
    let loss = |ts: &[Tensor]| (f(ts) * &r).unwrap().sum_all().unwrap();
    let grads = loss(&tensors).backward().unwrap();
    let eps = 1e-6;
    for (k, var) in inputs.iter().enumerate() {
        let analytic: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let mut worst = 0f64;
        for i in 0..base.len() {
            let eval = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                let mut ts = tensors.clone();
                ts[k] = Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap();
                loss(&ts).to_scalar::<f64>().unwrap()
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
            let err = (numeric - analytic[i]).abs() / (1.0 + numeric.abs());
            worst = worst.max(err);
        }
        println!("{name} input {k}: max relative error {worst:.2e}");
        assert!(worst < 1e-6, "{name}: gradient of input {k} off by {worst}");
    }
}

#[test]
fn conv_gradients() {
    let mut rng = Rng::new(1, 0);
    let (x, w, b) = (
        random(&[2, 3, 5, 6], &mut rng, false),
        random(&[4, 3, 3, 3], &mut rng, false),
        random(&[4], &mut rng, false),
    );
    check("conv3x3", &[x.clone(), w, b], |t| {
        conv(&t[0], &t[1], Some(&t[2])).unwrap()
    });
    let w1 = random(&[4, 3, 1, 1], &mut rng, false);
    check("conv1x1", &[x, w1], |t| conv(&t[0], &t[1], None).unwrap());
}

#[test]
fn batch_norm_training_mode_gradients() {
    let mut rng = Rng::new(2, 0);
    let (x, g, b) = (
        random(&[3, 2, 3, 4], &mut rng, false),
        random(&[2], &mut rng, false),
        random(&[2], &mut rng, false),
    );
    check("batch_norm_train", &[x, g, b], |t| {
        batch_norm_train(&t[0], &t[1], &t[2], 1e-5).unwrap().y
    });
}

#[test]
fn batch_norm_statistics_match_pytorch_semantics() {
    // Channel 0 holds 1, 2, 3, 4 over (N=2, H=1, W=2): mean 2.5, biased var 1.25, unbiased 5/3.
    let x = Tensor::from_vec(vec![1f64, 2.0, 3.0, 4.0], (2, 1, 1, 2), &Device::Cpu).unwrap();
    let one = Tensor::new(&[1f64], &Device::Cpu).unwrap();
    let zero = Tensor::new(&[0f64], &Device::Cpu).unwrap();
    let out = batch_norm_train(&x, &one, &zero, 0.0).unwrap();
    assert_eq!(out.mean.to_vec1::<f64>().unwrap(), vec![2.5]);
    assert!((out.var_unbiased.to_vec1::<f64>().unwrap()[0] - 5.0 / 3.0).abs() < 1e-12);
    let y: Vec<f64> = out.y.flatten_all().unwrap().to_vec1().unwrap();
    assert!((y[0] + 1.5 / 1.25f64.sqrt()).abs() < 1e-12);
}

#[test]
fn activation_and_pooling_gradients() {
    let mut rng = Rng::new(3, 0);
    let x = random(&[2, 2, 4, 4], &mut rng, true);
    check("leaky_relu", std::slice::from_ref(&x), |t| {
        leaky_relu(&t[0], 0.1).unwrap()
    });
    check("relu", std::slice::from_ref(&x), |t| t[0].relu().unwrap());
    check("max_pool2x2 even", std::slice::from_ref(&x), |t| {
        max_pool2x2(&t[0]).unwrap()
    });
    // Odd sizes: floor mode drops the last row and column (21 -> 10 in ResNet-12).
    let odd = random(&[1, 2, 5, 5], &mut rng, true);
    check("max_pool2x2 odd", std::slice::from_ref(&odd), |t| {
        max_pool2x2(&t[0]).unwrap()
    });
    assert_eq!(max_pool2x2(odd.as_tensor()).unwrap().dims(), &[1, 2, 2, 2]);
    check("global_avg_pool", &[x], |t| global_avg_pool(&t[0]).unwrap());
}

#[test]
fn max_pool_gives_a_lone_maximum_its_full_gradient() {
    // The defect measured in candle's max_pool2d backward: a lone maximum got 0.25.
    let x = Var::from_tensor(
        &Tensor::from_vec(vec![1f64, 5.0, 2.0, 3.0], (1, 1, 2, 2), &Device::Cpu).unwrap(),
    )
    .unwrap();
    let g = max_pool2x2(x.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(
        g.get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap(),
        vec![0.0, 1.0, 0.0, 0.0]
    );
}

#[test]
fn linear_and_cross_entropy_gradients() {
    let mut rng = Rng::new(4, 0);
    let (x, w, b) = (
        random(&[3, 5], &mut rng, false),
        random(&[4, 5], &mut rng, false),
        random(&[4], &mut rng, false),
    );
    check("linear", &[x, w, b], |t| {
        linear(&t[0], &t[1], &t[2]).unwrap()
    });
    let logits = random(&[3, 4], &mut rng, false);
    check("cross_entropy", std::slice::from_ref(&logits), |t| {
        cross_entropy(&t[0], &[1, 3, 0], 0.0).unwrap()
    });
    check("cross_entropy smoothed", &[logits], |t| {
        cross_entropy(&t[0], &[1, 3, 0], 0.1).unwrap()
    });
}

#[test]
fn mgecl_loss_gradients() {
    let mut rng = Rng::new(5, 0);
    let support = random(&[6, 4], &mut rng, false); // 3 ways x 2 shots
    let query = random(&[5, 4], &mut rng, false);
    check("class_hinge", &[support, query], |t| {
        class_hinge(&t[0], 3, &t[1], &[0, 1, 2, 2, 1], 0.5).unwrap()
    });
    let features = random(&[7, 4], &mut rng, false);
    check("instance_contrastive", &[features], |t| {
        instance_contrastive(&t[0], &[0, 0, 1, 1, 1, 2, 3], 0.5).unwrap()
    });
}

fn t(v: &[f64], shape: (usize, usize)) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

#[test]
fn losses_match_hand_computations() {
    // Cross-entropy: logits (0, ln 3), label 1: p = 3/4.
    let logits = t(&[0.0, 3f64.ln()], (1, 2));
    let ce = cross_entropy(&logits, &[1], 0.0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!((ce + 0.75f64.ln()).abs() < 1e-12);
    let smoothed = cross_entropy(&logits, &[1], 0.1)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!((smoothed + 0.05 * 0.25f64.ln() + 0.95 * 0.75f64.ln()).abs() < 1e-12);

    // Class hinge, margin 0.2: prototypes e1 (class 0), e2 (class 1).
    // Query (1, 0), label 0: max(0, 0.2 - 1 + 0) = 0. Query (0.6, 0.8), label 0:
    // max(0, 0.2 - 0.6 + 0.8) = 0.4. Mean over the two queries: 0.2.
    let support = t(&[3.0, 0.0, 0.0, 2.0], (2, 2));
    let query = t(&[5.0, 0.0, 0.6, 0.8], (2, 2));
    let hinge = class_hinge(&support, 2, &query, &[0, 0], 0.2)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!((hinge - 0.2).abs() < 1e-12, "{hinge}");

    // Instance loss, tau 1: rows (1,0), (2,0) share group 0, (0,1) alone. Anchors 0 and 1
    // each: -log(e / (e + 1)); row 2 has no positive. Mean: ln(1 + 1/e).
    let features = t(&[1.0, 0.0, 2.0, 0.0, 0.0, 1.0], (3, 2));
    let inst = instance_contrastive(&features, &[0, 0, 1], 1.0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!((inst - (1.0 + (-1f64).exp()).ln()).abs() < 1e-9, "{inst}");
    assert_eq!(features.dtype(), DType::F64);
}

#[test]
fn im2col_conv_equals_candle_conv2d() {
    let mut rng = Rng::new(6, 0);
    let x = random(&[2, 3, 7, 5], &mut rng, false);
    for k in [1usize, 3] {
        let w = random(&[4, 3, k, k], &mut rng, false);
        let ours = conv(x.as_tensor(), w.as_tensor(), None).unwrap();
        let reference = x.as_tensor().conv2d(w.as_tensor(), k / 2, 1, 1, 1).unwrap();
        let d: f64 = (ours - reference)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(d < 1e-12, "k={k}: {d}");
    }
}

#[test]
fn cpu_kernels_equal_the_composite_formulas() {
    use mgecl_train::layers::{batch_norm_train_composite, conv_composite};
    let mut rng = Rng::new(7, 0);
    let x = random(&[3, 4, 6, 5], &mut rng, false);
    let w = random(&[2, 4, 3, 3], &mut rng, false);
    let d = |a: Tensor, b: Tensor| -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    assert!(
        d(
            conv(x.as_tensor(), w.as_tensor(), None).unwrap(),
            conv_composite(x.as_tensor(), w.as_tensor(), None).unwrap()
        ) < 1e-12
    );
    let (g, b) = (random(&[4], &mut rng, false), random(&[4], &mut rng, false));
    let fast = batch_norm_train(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-5).unwrap();
    let slow =
        batch_norm_train_composite(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-5).unwrap();
    assert!(d(fast.y, slow.y) < 1e-12);
    assert!(d(fast.mean, slow.mean) < 1e-12);
    assert!(d(fast.var_unbiased, slow.var_unbiased) < 1e-12);
    check("batch_norm_train composite", &[x.clone(), g, b], |t| {
        batch_norm_train_composite(&t[0], &t[1], &t[2], 1e-5)
            .unwrap()
            .y
    });
    check("conv composite", &[x, w], |t| {
        conv_composite(&t[0], &t[1], None).unwrap()
    });
}
