#!/usr/bin/env bash
# Accuracy table of a model on the Omniglot val alphabets: 2000 fixed-seed episodes per setting,
# 15 queries per class, both classifiers. One JSON object per line (mgecl evaluate --json).
#   models/evaluate.sh MODEL [DATA_ROOT] [CLASSIFIERS]
set -euo pipefail
model=$1
data=${2:-../shared/data/omniglot}
classifiers=${3:-logistic prototype}
mgecl=${MGECL:-target/release/mgecl}
for classifier in $classifiers; do
  for setting in "5 1" "5 5" "20 1" "20 5"; do
    set -- $setting
    "$mgecl" evaluate --model "$model" --data "$data/images_background" \
      --include "$data/splits/val_alphabets.txt" --ways "$1" --shots "$2" --queries 15 \
      --episodes 2000 --seed 0 --classifier "$classifier" --json
  done
done
