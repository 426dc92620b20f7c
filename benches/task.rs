//! Few-shot task fit + classify through the public task API, from stored features:
//! 5-way 1-shot and 5-way 5-shot, 640-d, 75 queries (the lr_5w5s fixture), for both
//! classifiers. scikit-learn takes 2.8-3.6 ms for the logistic case on this machine.
//! And a folder's worth of transductive answers: 10,000 queries of 320-d features (the photo
//! model's) against 5 and 20 classes, inductive and transductive, to set against the time the
//! folder takes to embed.
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

/// 10,000 queries, 320-d, in `classes` clusters (non-negative, like the encoder's outputs), 5
/// support examples each: classify_features inductive and transductive.
fn bench_folder(c: &mut Criterion) {
    const QUERIES: usize = 10_000;
    const DIM: usize = 320;
    let model = common::synthetic_conv4(DIM);
    // A small deterministic generator: the features only need to be clustered.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f32 / (1u64 << 53) as f32
    };
    for classes in [5usize, 20] {
        let centres: Vec<Vec<f32>> = (0..classes)
            .map(|_| (0..DIM).map(|_| uniform() * uniform() * 2.0).collect())
            .collect();
        let mut draw = |k: usize| -> Vec<f32> {
            centres[k]
                .iter()
                .map(|&m| (m + uniform() - 0.5).max(0.0))
                .collect()
        };
        let queries: Vec<f32> = (0..QUERIES).flat_map(|i| draw(i % classes)).collect();
        let queries = Array2::from_shape_vec((QUERIES, DIM), queries).unwrap();
        for transductive in [false, true] {
            let mut task = Task::new(
                model.clone(),
                TaskConfig {
                    transductive,
                    ..Default::default()
                },
            )
            .unwrap();
            for k in 0..classes {
                task.add_class(&format!("c{k}")).unwrap();
                for _ in 0..5 {
                    task.add_example_feature(&format!("c{k}"), &draw(k))
                        .unwrap();
                }
            }
            task.fit().unwrap();
            let mode = if transductive {
                "transductive"
            } else {
                "inductive"
            };
            let name = format!("{mode} classify {QUERIES} queries 320d {classes} classes");
            c.bench_function(&name, |b| {
                b.iter(|| black_box(task.classify_features(black_box(queries.view())).unwrap()))
            });
        }
    }
}

criterion_group! {
    name = folder;
    config = Criterion::default().sample_size(10).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(5));
    targets = bench_folder
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches, folder);
