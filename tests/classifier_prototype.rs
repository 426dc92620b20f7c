//! Prototype head: hand-computed example and validation errors.

use mgecl_test_support as common;

use common::invalid;
use mgecl::classifier::prototype::{PrototypeModel, DEFAULT_TEMPERATURE};
use ndarray::{array, Array2};

#[test]
fn hand_computed_two_classes_in_3d() {
    // Class 0: e1 and e2 -> mean (0.5, 0.5, 0) -> prototype (1/sqrt2, 1/sqrt2, 0).
    // Class 1: e3 alone -> prototype (0, 0, 1).
    let x = array![[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let m = PrototypeModel::fit(x.view(), &[0, 0, 1], 2, DEFAULT_TEMPERATURE).unwrap();
    let h = std::f64::consts::FRAC_1_SQRT_2;
    assert!((m.prototypes()[[0, 0]] - h).abs() < 1e-15);

    // Query e1: cosines (1/sqrt2, 0) -> scores (7.0711, 0) at T = 0.1
    //   p0 = 1 / (1 + exp(-7.0711)) = 1 / (1 + 8.494e-4) = 0.9991514
    // Query (0, 0.6, 0.8) (unit): cosines (0.6/sqrt2 = 0.42426, 0.8) -> scores (4.2426, 8)
    //   p0 = 1 / (1 + exp(8 - 4.2426)) = 1 / (1 + 42.836) = 0.0228127
    // Query (2, 0, 0) (not unit; normalised internally) behaves like e1.
    let q = array![[1.0, 0.0, 0.0], [0.0, 0.6, 0.8], [2.0, 0.0, 0.0]];
    let p = m.predict_proba(q.view()).unwrap();
    let p0a = 1.0 / (1.0 + (-10.0 * h).exp());
    let p0b = 1.0 / (1.0 + (10.0 * (0.8 - 0.6 * h)).exp());
    assert!((p0a - 0.9991514).abs() < 1e-7 && (p0b - 0.0228127).abs() < 1e-7);
    let expected = array![[p0a, 1.0 - p0a], [p0b, 1.0 - p0b], [p0a, 1.0 - p0a]];
    for (a, b) in p.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-12, "{p} vs {expected}");
    }
}

#[test]
fn temperature_scales_scores() {
    let x = array![[1.0, 0.0], [0.0, 1.0]];
    let m = PrototypeModel::fit(x.view(), &[0, 1], 2, 1.0).unwrap();
    let d = m.decision(array![[0.6, 0.8]].view()).unwrap();
    assert!((d[[0, 0]] - 0.6).abs() < 1e-15 && (d[[0, 1]] - 0.8).abs() < 1e-15);
    // Zero query: all scores 0, uniform probabilities.
    let p = m.predict_proba(array![[0.0, 0.0]].view()).unwrap();
    assert!((p[[0, 0]] - 0.5).abs() < 1e-15);
}

#[test]
fn rejects_invalid_input() {
    let x = array![[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]];
    let fit =
        |x: &Array2<f64>, y: &[usize], k: usize, t: f64| PrototypeModel::fit(x.view(), y, k, t);
    println!("{}", invalid(fit(&x, &[0, 0, 0], 1, 0.1)));
    println!("{}", invalid(fit(&x, &[0, 0, 1], 3, 0.1)));
    println!("{}", invalid(fit(&x, &[0, 1, 5], 2, 0.1)));
    println!("{}", invalid(fit(&x, &[0, 1], 2, 0.1)));
    let mut xb = x.clone();
    xb[[0, 0]] = f64::NAN;
    println!("{}", invalid(fit(&xb, &[0, 1, 1], 2, 0.1)));
    xb[[0, 0]] = f64::INFINITY;
    println!("{}", invalid(fit(&xb, &[0, 1, 1], 2, 0.1)));
    for t in [0.0, -0.1, f64::NAN, f64::INFINITY] {
        println!("{}", invalid(fit(&x, &[0, 1, 1], 2, t)));
    }
    let m = fit(&x, &[0, 1, 1], 2, 0.1).unwrap();
    println!(
        "{}",
        invalid(m.predict_proba(array![[1.0, 0.0, 0.0]].view()))
    );
    println!(
        "{}",
        invalid(m.predict_proba(array![[f64::NAN, 0.0]].view()))
    );
}
