#!/bin/sh
# Resident memory of an app whose 16 threads embedded one batch of 32 each and went idle, with
# the buffer pools' total bounded (the default) and unbounded (as before the bound), then after
# 2 s idle (the idle release at 1 s; unbounded: off, as before), then after
# mgecl::release_buffers(). Two runs of each, interleaved.
#   scripts/bench/pool_memory.sh [MODEL]   (default: the photo model)
set -eu
cd "$(dirname "$0")/../.."
model=${1:-models/miniimagenet-resnet12.safetensors}
cargo build --release --example pool_memory >/dev/null 2>&1
for round in 1 2; do
    for mode in unbounded bounded; do
        target/release/examples/pool_memory "$model" "$mode"
    done
done
