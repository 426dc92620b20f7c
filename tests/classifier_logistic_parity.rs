//! Parity with scikit-learn's `LogisticRegression(C=1, lbfgs, multinomial, tol=1e-8)`.

use mgecl_test_support as common;

use common::lr_fixture::{argmax_rows, centred, load, max_abs_diff};
use mgecl::classifier::logistic::{LogisticConfig, LogisticModel};

fn check(name: &str) {
    let fx = load(name);
    let start = std::time::Instant::now();
    let model = LogisticModel::fit(
        fx.support.view(),
        &fx.support_labels,
        fx.n_classes,
        &LogisticConfig::default(),
    )
    .unwrap();
    let fit_time = start.elapsed();
    let proba = model.predict_proba(fx.query.view()).unwrap();

    let e_proba = max_abs_diff(&proba, &fx.proba);
    let e_coef = max_abs_diff(model.coef(), &fx.coef);
    let e_icpt = max_abs_diff(
        &centred(&model.intercept().to_owned()),
        &centred(&fx.intercept),
    );
    let pred = argmax_rows(&proba);
    println!(
        "{name}: proba {e_proba:.3e}  coef {e_coef:.3e}  intercept {e_icpt:.3e}  \
         grad_max_abs {:.3e}  converged {}  fit {fit_time:?}",
        model.grad_max_abs(),
        model.converged()
    );
    assert!(model.converged(), "{name}: not converged");
    assert!(e_proba <= 1e-5, "{name}: proba error {e_proba}");
    assert!(e_coef <= 1e-4, "{name}: coef error {e_coef}");
    assert!(e_icpt <= 1e-4, "{name}: intercept error {e_icpt}");
    assert_eq!(pred, fx.pred, "{name}: predictions differ");
}

#[test]
fn parity_5w1s() {
    check("lr_5w1s");
}

#[test]
fn parity_5w5s() {
    check("lr_5w5s");
}

#[test]
fn parity_20w1s() {
    check("lr_20w1s");
}
