#!/usr/bin/env bash
# Accuracy table of a model on the Omniglot val alphabets: 2000 fixed-seed episodes per setting
# (the same episodes for every model, so models are compared pairwise), 15 queries per class,
# both classifiers. One JSON object per line (mgecl evaluate --json); models/table.py turns them
# into the markdown table of models/README.md, models/paired.py compares two outputs episode by
# episode.
#   models/evaluate.sh MODEL [DATA_ROOT] [CLASSIFIERS] [TEST_TIME_AUGMENTATION]
# e.g. models/evaluate.sh MODEL ../shared/data/omniglot prototype \
#        "--augmented-copies 2 --augment-queries"
# Without the fourth argument there is no test-time augmentation, whatever the model
# recommends (--augmented-copies 0).
set -euo pipefail
model=$1
data=${2:-../shared/data/omniglot}
classifiers=${3:-logistic prototype}
read -r -a tta <<< "${4:---augmented-copies 0}"
mgecl=${MGECL:-target/release/mgecl}
for classifier in $classifiers; do
  # ways shots [within]: the last is Lake's protocol (20 characters of one alphabet).
  for setting in "5 1" "5 5" "20 1" "20 5" "20 1 within"; do
    set -- $setting
    within=()
    if [ "${3:-}" = within ]; then within=(--within-alphabet); fi
    "$mgecl" evaluate --model "$model" --data "$data/images_background" \
      --include "$data/splits/val_alphabets.txt" --ways "$1" --shots "$2" --queries 15 \
      --episodes 2000 --seed 0 --classifier "$classifier" "${within[@]}" "${tta[@]}" --json \
      --per-episode
  done
done
