//! Training throughput of the candle pipeline: one SGD step (forward, backward, update) of
//! batch B with a 790-class head, as in Omniglot pretraining. Prints images/s per step.
//!
//!     cargo run --release --example train_throughput -- conv4 28 64
//!     cargo run --release --example train_throughput -- resnet12 84 64

use std::time::Instant;

use candle_core::{Device, Tensor};
use mgecl::train::{
    loss::cross_entropy,
    net::{NetSpec, TrainNet},
    optim::Sgd,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arch = args.get(1).cloned().unwrap_or_else(|| "conv4".into());
    let size: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(28);
    let batch: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let (widths, channels) = if arch == "conv4" {
        (vec![64; 4], 1)
    } else {
        (vec![64, 160, 320, 640], 3)
    };
    let net = TrainNet::new(
        NetSpec {
            arch: arch.clone(),
            widths,
            in_channels: channels,
        },
        790,
        0,
        &Device::Cpu,
    )?;
    let mut sgd = Sgd::new(0.05, 0.9, 5e-4);
    let x = Tensor::randn(0f32, 1.0, (batch, channels, size, size), &Device::Cpu)?;
    let labels: Vec<usize> = (0..batch).map(|i| i % 790).collect();
    for step in 0..4 {
        let t = Instant::now();
        let loss = cross_entropy(&net.logits(&net.features(&x, true)?)?, &labels, 0.0)?;
        let grads = loss.backward()?;
        sgd.step(&net, &grads)?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "{arch} {size}x{size} batch {batch} step {step}: {s:.3} s, {:.1} img/s",
            batch as f64 / s
        );
    }
    Ok(())
}
