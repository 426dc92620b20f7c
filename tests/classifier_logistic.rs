//! Logistic-regression head: span-trick exactness, rank deficiency, validation errors.

use mgecl_test_support as common;

use common::invalid;
use common::lr_fixture::{load, max_abs_diff};
use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_logistic::MultiLogisticRegression;
use mgecl::classifier::logistic::{LogisticConfig, LogisticModel};
use ndarray::{array, s, Array2, ArrayView1, Axis};

/// Independent check of the span trick: linfa directly on the raw 160-d problem (no reduction,
/// no centring) must land on the same optimum as the reduced fit.
#[test]
fn span_trick_matches_full_dimensional_linfa_fit() {
    let fx = load("lr_5w1s");
    let cfg = LogisticConfig::default();
    let model =
        LogisticModel::fit(fx.support.view(), &fx.support_labels, fx.n_classes, &cfg).unwrap();

    let ds = DatasetBase::new(fx.support.view(), ArrayView1::from(&fx.support_labels[..]));
    let raw = MultiLogisticRegression::<f64>::default()
        .alpha(cfg.alpha)
        .max_iterations(cfg.max_iterations)
        .gradient_tolerance(1e-7)
        .fit(&ds)
        .unwrap();
    // linfa stores params as d x k; classes 0..k are all present so columns are in order.
    let raw_coef = raw.params().t().to_owned();
    let raw_icpt = raw.intercept().to_owned();
    let raw_icpt = &raw_icpt - raw_icpt.mean().unwrap();

    let e_coef = max_abs_diff(model.coef(), &raw_coef);
    let e_icpt = max_abs_diff(model.intercept(), &raw_icpt);
    println!("reduced vs raw-d linfa: coef {e_coef:.3e} intercept {e_icpt:.3e}");
    // Both sides are converged to a gradient of ~1e-7..1e-6, so agree to about that.
    assert!(e_coef < 1e-5 && e_icpt < 1e-5);
}

/// KKT at the solution: alpha * W = -(P - Y)^T X and sum_i (P - Y)_i = 0, checked here
/// independently of the module's own gradient code, on every fixture.
#[test]
fn kkt_conditions_hold_on_all_fixtures() {
    for name in ["lr_5w1s", "lr_5w5s", "lr_20w1s"] {
        let fx = load(name);
        let cfg = LogisticConfig::default();
        let m =
            LogisticModel::fit(fx.support.view(), &fx.support_labels, fx.n_classes, &cfg).unwrap();
        let mut resid = m.predict_proba(fx.support.view()).unwrap();
        for (mut row, &y) in resid.rows_mut().into_iter().zip(&fx.support_labels) {
            row[y] -= 1.0;
        }
        let lhs = m.coef().mapv(|w| cfg.alpha * w);
        let rhs = -resid.t().dot(&fx.support);
        let e_w = max_abs_diff(&lhs, &rhs);
        let e_b = resid
            .sum_axis(Axis(0))
            .iter()
            .fold(0.0_f64, |a, v| a.max(v.abs()));
        println!(
            "{name}: KKT W {e_w:.3e} b {e_b:.3e} (grad_max_abs {:.3e})",
            m.grad_max_abs()
        );
        assert!(e_w <= 1e-6 && e_b <= 1e-6, "{name}");
        assert!((e_w.max(e_b) - m.grad_max_abs()).abs() < 1e-9, "{name}");
    }
}

/// Duplicated support vectors make X rank-deficient (and force the Gram-Schmidt path). The
/// optimum is then the fit on the distinct rows with the duplicate's loss counted twice; check
/// it converges to a tiny full-problem gradient, and that duplicating every row equals fitting
/// once with alpha halved (sum_i 2 * l_i + a/2 ||W||^2 = 2 * (sum_i l_i + (a/2)/2 ||W||^2)).
#[test]
fn duplicate_support_vectors_fit_exactly() {
    let fx = load("lr_5w5s");
    let cfg = LogisticConfig::default();
    let n = fx.support.nrows();
    let doubled = ndarray::concatenate(Axis(0), &[fx.support.view(), fx.support.view()]).unwrap();
    let labels2: Vec<usize> = fx
        .support_labels
        .iter()
        .chain(&fx.support_labels)
        .copied()
        .collect();
    let m2 = LogisticModel::fit(doubled.view(), &labels2, 5, &cfg).unwrap();
    assert!(m2.converged(), "grad {}", m2.grad_max_abs());

    let half = LogisticConfig {
        alpha: cfg.alpha / 2.0,
        ..cfg.clone()
    };
    let m1 = LogisticModel::fit(fx.support.view(), &fx.support_labels, 5, &half).unwrap();
    let e = max_abs_diff(m1.coef(), m2.coef()).max(max_abs_diff(m1.intercept(), m2.intercept()));
    println!(
        "duplicated rows vs alpha/2: {e:.3e}, grad {:.3e}",
        m2.grad_max_abs()
    );
    assert!(e < 1e-5);

    // A single duplicated row and an exactly colinear (scaled) row.
    let mut x = fx.support.slice(s![..n, ..]).to_owned();
    let first = x.row(0).to_owned();
    x.row_mut(1).assign(&first);
    x.row_mut(7).assign(&(&first * 0.5));
    let m = LogisticModel::fit(x.view(), &fx.support_labels, 5, &cfg).unwrap();
    println!(
        "one duplicate + one colinear row: grad {:.3e}",
        m.grad_max_abs()
    );
    assert!(m.converged());
}

#[test]
fn classes_keep_their_column_order_with_shuffled_labels() {
    // Labels listed out of order: column j of the output must still be class j.
    // Orthogonal, well separated points and a weak penalty: each point's own class wins.
    let x = array![
        [0.0, 1.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0],
        [0.9, 0.1, 0.0]
    ];
    let labels = [2, 0, 1, 0];
    let cfg = LogisticConfig {
        alpha: 0.1,
        ..LogisticConfig::default()
    };
    let m = LogisticModel::fit(x.view(), &labels, 3, &cfg).unwrap();
    assert!(m.converged());
    let p = m.predict_proba(x.view()).unwrap();
    for (row, &y) in p.rows().into_iter().zip(&labels) {
        let arg = row
            .iter()
            .enumerate()
            .fold(0, |b, (i, &v)| if v > row[b] { i } else { b });
        assert_eq!(arg, y);
        assert!((row.sum() - 1.0).abs() < 1e-12);
    }
}

#[test]
fn predict_proba_is_stable_for_large_logits() {
    let x = array![[1.0, 0.0], [0.0, 1.0]];
    let m = LogisticModel::fit(x.view(), &[0, 1], 2, &LogisticConfig::default()).unwrap();
    let big = array![[1e6, 0.0]];
    let p = m.predict_proba(big.view()).unwrap();
    assert!(p.iter().all(|v| v.is_finite()));
    assert!((p[[0, 0]] - 1.0).abs() < 1e-12);
}

#[test]
fn fit_rejects_invalid_input() {
    let x = array![[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]];
    let cfg = LogisticConfig::default();
    let fit = |x: &Array2<f64>, y: &[usize], k: usize, c: &LogisticConfig| {
        LogisticModel::fit(x.view(), y, k, c)
    };
    println!("{}", invalid(fit(&x, &[0, 0, 0], 1, &cfg))); // fewer than 2 classes
    println!("{}", invalid(fit(&x, &[0, 0, 1], 3, &cfg))); // class 2 has no example
    println!("{}", invalid(fit(&x, &[0, 1, 3], 3, &cfg))); // label out of range
    println!("{}", invalid(fit(&x, &[0, 1], 2, &cfg))); // label count != rows
    println!("{}", invalid(fit(&Array2::zeros((0, 2)), &[], 2, &cfg))); // empty
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut xb = x.clone();
        xb[[1, 1]] = bad;
        println!("{}", invalid(fit(&xb, &[0, 1, 1], 2, &cfg)));
    }
    for alpha in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let c = LogisticConfig {
            alpha,
            ..cfg.clone()
        };
        println!("{}", invalid(fit(&x, &[0, 1, 1], 2, &c)));
    }
    for gradient_tolerance in [0.0, -1e-6, f64::NAN] {
        let c = LogisticConfig {
            gradient_tolerance,
            ..cfg.clone()
        };
        println!("{}", invalid(fit(&x, &[0, 1, 1], 2, &c)));
    }
    let c = LogisticConfig {
        max_iterations: 0,
        ..cfg.clone()
    };
    println!("{}", invalid(fit(&x, &[0, 1, 1], 2, &c)));
}

#[test]
fn predict_rejects_invalid_queries() {
    let x = array![[1.0, 0.0], [0.0, 1.0]];
    let m = LogisticModel::fit(x.view(), &[0, 1], 2, &LogisticConfig::default()).unwrap();
    println!(
        "{}",
        invalid(m.predict_proba(array![[1.0, 0.0, 0.0]].view()))
    );
    println!("{}", invalid(m.decision(array![[f64::NAN, 0.0]].view())));
    println!(
        "{}",
        invalid(m.predict_proba(array![[f64::INFINITY, 0.0]].view()))
    );
    // Zero queries is fine.
    assert_eq!(
        m.predict_proba(Array2::zeros((0, 2)).view()).unwrap().dim(),
        (0, 2)
    );
}

#[test]
fn all_zero_features_fit_intercept_only() {
    // Degenerate but valid: no direction to learn, W = 0, b from class frequencies.
    let x = Array2::zeros((3, 4));
    let m = LogisticModel::fit(x.view(), &[0, 0, 1], 2, &LogisticConfig::default()).unwrap();
    assert!(m.coef().iter().all(|&w| w == 0.0));
    let p = m.predict_proba(x.view()).unwrap();
    assert!((p[[0, 0]] - 2.0 / 3.0).abs() < 1e-6, "{p}");
    assert!(m.converged());
}
