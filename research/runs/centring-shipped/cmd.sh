#!/bin/sh
# Feature centring on the shipped photo encoder (issue 44): its features less the mean of the
# 64 training classes' mean features, measured on the first 100 photos (sorted by name) of
# each training class, then the paired evaluations against the uncentred model's
# (runs/transductive/photo.jsonl, runs/mini-r12w32-class/eval-flip-prototype.jsonl). Run from
# the repository root; MGECL points at the mgecl binary. SUBSET is a folder of the 64
# training classes with their first 100 photos each (symlinks); the calibration fitted on the
# way (1 episode per shape) is not used.
D=../shared/data/miniimagenet
M=${OUT:-/tmp}/shipped-centred.safetensors
$MGECL calibrate --model models/miniimagenet-resnet12.safetensors --data "$SUBSET" \
    --episodes-per-shape 1 --centre --out "$M"
MGECL=$MGECL research/transductive.sh "$M" $D > research/runs/centring-shipped/transductive.jsonl
MGECL=$MGECL research/evaluate.sh "$M" $D prototype \
    "--augmentation flip-shift --augmented-copies 1 --augment-queries" \
    > research/runs/centring-shipped/eval-flip-prototype.jsonl
