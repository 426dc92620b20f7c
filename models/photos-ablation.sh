#!/bin/sh
# The photo model's ablation (issue 28): cross-entropy only (stage 1) / + class loss /
# + instance loss / both (the stage-2 arms), each on the same 2000 fixed val episodes per
# setting (5-way 1- and 5-shot), per classifier, without test-time augmentation and with one
# flip-shift copy of every support and query image. Writes runs/RUN/eval-CLASSIFIER.jsonl and
# runs/RUN/eval-flip-CLASSIFIER.jsonl (models/table.py and models/paired.py read them); a file
# already written is kept, so run it again after an interruption. Each file is two
# `mgecl evaluate` calls, each of which embeds the 9600 val photos (1 + copies) times.
#   MGECL=... models/photos-ablation.sh [RUN...] [-- CLASSIFIER...]
# (default: the four runs, logistic then prototype).
set -e
cd "$(dirname "$0")/.."
data=../shared/data/miniimagenet
runs="" classifiers=""
while [ $# -gt 0 ] && [ "$1" != -- ]; do runs="$runs $1"; shift; done
[ "${1:-}" = -- ] && shift
classifiers="$*"
runs=${runs:-mini-r12w32 mini-r12w32-class mini-r12w32-inst mini-r12w32-both}
classifiers=${classifiers:-logistic prototype}
for classifier in $classifiers; do
    for variant in plain flip; do
        for run in $runs; do
            if [ $variant = plain ]; then
                out=models/runs/$run/eval-$classifier.jsonl tta="--augmented-copies 0"
            else
                out=models/runs/$run/eval-flip-$classifier.jsonl
                tta="--augmentation flip-shift --augmented-copies 1 --augment-queries"
            fi
            [ -s "$out" ] && continue
            models/evaluate.sh models/runs/$run/best.safetensors $data $classifier "$tta" \
                > "$out.part"
            mv "$out.part" "$out"
        done
    done
done
