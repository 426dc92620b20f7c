#!/usr/bin/env bash
# Accuracy table of a model on held-out classes: 2000 fixed-seed episodes per setting (the same
# episodes for every model, so models are compared pairwise), 15 queries per class, both
# classifiers. DATA_ROOT is Omniglot (splits/val_alphabets.txt: 5-way and 20-way, 1 and 5 shots,
# and Lake's within-alphabet runs) or miniImageNet (splits/val_classes.txt: 5-way 1 and 5 shots,
# the photo benchmark). One JSON object per line (mgecl evaluate --json); research/table.py turns them
# into the markdown table of models/README.md, research/paired.py compares two outputs episode by
# episode.
#   research/evaluate.sh MODEL [DATA_ROOT] [CLASSIFIERS] [TEST_TIME_AUGMENTATION]
# e.g. research/evaluate.sh MODEL ../shared/data/omniglot prototype \
#        "--augmented-copies 2 --augment-queries"
#      research/evaluate.sh MODEL ../shared/data/miniimagenet "logistic prototype" \
#        "--augmentation flip-shift --augmented-copies 1 --augment-queries"
# Without the fourth argument there is no test-time augmentation, whatever the model
# recommends (--augmented-copies 0).
set -euo pipefail
model=$1
data=${2:-../shared/data/omniglot}
classifiers=${3:-logistic prototype}
read -r -a tta <<< "${4:---augmented-copies 0}"
mgecl=${MGECL:-target/release/mgecl}
# ways shots [within] (a list of shots is evaluated on one embedding of the images, with the
# episodes each value draws alone): the last is Lake's protocol (20 characters of one alphabet).
if [ -f "$data/splits/val_classes.txt" ]; then
  images=$data/images split=$data/splits/val_classes.txt settings=("5 1,5")
else
  images=$data/images_background split=$data/splits/val_alphabets.txt
  settings=("5 1,5" "20 1,5" "20 1 within")
fi
# Every classifier on one embedding of the images per setting.
classifiers=$(echo $classifiers | tr ' ' ',')
for setting in "${settings[@]}"; do
  set -- $setting
  within=()
  if [ "${3:-}" = within ]; then within=(--within-alphabet); fi
  "$mgecl" evaluate --model "$model" --data "$images" \
    --include "$split" --ways "$1" --shots "$2" --queries 15 \
    --episodes 2000 --seed 0 --classifiers "$classifiers" "${within[@]}" "${tta[@]}" --json \
    --per-episode
done
