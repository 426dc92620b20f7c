#!/usr/bin/env bash
# Calibration of a model on held-out classes, as in models/README.md: per classifier, 5-way
# 1-shot, 5-way 5-shot and (Omniglot) 20-way 1-shot with calibrated and raw probabilities (the
# same 2000 episodes, seed 0), then 5-way 1-shot with 5 unknown classes per episode (open set).
# DATA_ROOT is Omniglot (splits/val_alphabets.txt) or miniImageNet (splits/val_classes.txt).
# One JSON object per line (mgecl evaluate --json; "raw" says which probabilities).
#   research/calibration.sh MODEL [DATA_ROOT] [TEST_TIME_AUGMENTATION]
# (as in research/evaluate.sh: without the third argument, no test-time augmentation)
set -euo pipefail
model=$1
data=${2:-../shared/data/omniglot}
read -r -a tta <<< "${3:---augmented-copies 0}"
mgecl=${MGECL:-target/release/mgecl}
if [ -f "$data/splits/val_classes.txt" ]; then
  images=$data/images split=$data/splits/val_classes.txt settings=("5 1,5")
else
  images=$data/images_background split=$data/splits/val_alphabets.txt
  settings=("5 1,5" "20 1")
fi
# Both classifiers and every shot count of a setting on one embedding of the images.
evaluate() {
  "$mgecl" evaluate --model "$model" --data "$images" --include "$split" --queries 15 \
    --episodes 2000 --seed 0 --json --classifiers logistic,prototype "${tta[@]}" "$@"
}
for setting in "${settings[@]}"; do
  set -- $setting
  evaluate --ways "$1" --shots "$2" | sed 's/^{/{"raw":false,/'
  evaluate --ways "$1" --shots "$2" --raw-probabilities | sed 's/^{/{"raw":true,/'
done
evaluate --ways 5 --shots 1 --unknown-ways 5
