#!/bin/bash
# The transductive step's cost on a ~10,000-photo folder: mgecl label of the 9,600 val photos
# against 5 classes x 5 examples, inductive then transductive, wall time and peak memory.
cd "$(dirname "$0")/.."
D=../shared/data/miniimagenet
W=$(mktemp -d)
for c in $(head -5 $D/splits/val_classes.txt); do
  mkdir -p $W/support/$c
  ls $D/images/$c/*.jpg | head -5 | xargs cp -t $W/support/$c
done
for c in $(cat $D/splits/val_classes.txt); do
  mkdir -p $W/images/$c
  ln $D/images/$c/*.jpg $W/images/$c/ 2>/dev/null || cp $D/images/$c/*.jpg $W/images/$c/
done
ls -R $W/images | grep -c jpg
for mode in "--inductive" "--transductive" "--inductive" "--transductive"; do
  /usr/bin/time -f "mode=$mode wall=%e s maxrss=%M KB" target/release/mgecl label \
    --model models/miniimagenet-resnet12.safetensors --support $W/support --images $W/images \
    --out $W/labels$mode.csv $mode 2>&1 | tail -2
done
cargo bench --bench task -- "queries 320d" 2>&1 | grep -E "time:|classify" 
rm -rf $W
