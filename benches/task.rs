//! Few-shot task fit + classify through the public task API, from stored features:
//! 5-way 1-shot and 5-way 5-shot, 640-d, 75 queries (the lr_5w5s fixture), for both
//! classifiers. scikit-learn takes 2.8-3.6 ms for the logistic case on this machine.
//!
//!     cargo bench --bench task
// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use mgecl_test_support as common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use mgecl::{ClassifierKind, Task, TaskConfig};
use ndarray::{Array2, Axis};

fn bench(c: &mut Criterion) {
    let fx = common::lr_fixture::load("lr_5w5s");
    let model = common::synthetic_conv4(fx.support.ncols());
    let query: Array2<f32> = fx.query.mapv(|v| v as f32);
    for shots in [1usize, 5] {
        for classifier in [ClassifierKind::Logistic, ClassifierKind::Prototype] {
            let mut task = Task::new(
                model.clone(),
                TaskConfig {
                    classifier,
                    ..Default::default()
                },
            )
            .unwrap();
            for k in 0..fx.n_classes {
                task.add_class(&format!("c{k}")).unwrap();
            }
            // Class-major support: the first `shots` rows of each class.
            for (i, row) in fx.support.axis_iter(Axis(0)).enumerate() {
                if i % 5 < shots {
                    let feature: Vec<f32> = row.iter().map(|&v| v as f32).collect();
                    task.add_example_feature(&format!("c{}", fx.support_labels[i]), &feature)
                        .unwrap();
                }
            }
            let name = format!("{classifier:?} fit+classify 5w{shots}s 640d 75q").to_lowercase();
            c.bench_function(&name, |b| {
                b.iter(|| {
                    task.fit().unwrap();
                    black_box(task.classify_features(black_box(query.view())).unwrap())
                })
            });
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
