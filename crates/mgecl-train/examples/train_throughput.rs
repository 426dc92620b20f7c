//! Training throughput: one SGD step (forward, backward, momentum update) of batch B with a
//! 790-class head, as in Omniglot pretraining, on random normalised input. Prints the time and
//! images/s of each of 4 steps (step 0 includes the buffers' first allocation).
//!
//!     cargo run --release --example train_throughput -- conv4 28 64
//!     cargo run --release --example train_throughput -- resnet12 84 64 [auto|candle]
//!
//! ResNet-12 is 64-160-320-640 on 3 channels, Conv-4 width 64 on 1 channel. The optional
//! fourth argument picks the engine (`auto`: mgecl's CPU kernels; `candle`: candle's autograd).
//! `scripts/bench/train_compare.py` runs this next to PyTorch.

use std::time::Instant;

use candle_core::Device;
use mgecl::Engine;
use mgecl_train::{
    net::{EncoderSpec, TrainNet},
    optim::Sgd,
    rng::Rng,
    trainer::Trainer,
    Batch,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arch = args.get(1).cloned().unwrap_or_else(|| "conv4".into());
    let size: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(28);
    let batch: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let engine: Engine = args
        .get(4)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or_default();
    let (widths, channels) = if arch == "conv4" {
        (vec![64; 4], 1)
    } else {
        (vec![64, 160, 320, 640], 3)
    };
    let spec = EncoderSpec {
        arch: arch.parse()?,
        widths,
        in_channels: channels,
    };
    let net = TrainNet::new(spec, 790, 0, &Device::Cpu)?;
    let mut trainer = Trainer::new(net, Sgd::new(0.05, 0.9, 5e-4), engine)?;
    let mut rng = Rng::new(0, 1);
    let input: Vec<f32> = (0..batch * channels * size * size)
        .map(|_| rng.normal() as f32)
        .collect();
    let data = Batch {
        input,
        n: batch,
        labels: (0..batch).map(|i| i % 790).collect(),
        rotations: Vec::new(),
        teacher_logits: Vec::new(),
    };
    for step in 0..4 {
        let t = Instant::now();
        trainer.step_cross_entropy(&data, (channels, size, size), &Default::default())?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "{arch} {size}x{size} batch {batch} step {step}: {s:.3} s, {:.1} img/s",
            batch as f64 / s
        );
    }
    Ok(())
}
