#!/bin/sh
# The photo model's ablation (issue 28): cross-entropy only (stage 1) / + class loss /
# + instance loss / both (the stage-2 arms), each on the same 2000 fixed val episodes per
# setting (5-way 1- and 5-shot), per classifier, without test-time augmentation and with one
# flip-shift copy of every support and query image. Writes runs/RUN/eval-CLASSIFIER.jsonl and
# runs/RUN/eval-flip-CLASSIFIER.jsonl (research/table.py and research/paired.py read them); a file
# already written is kept, so run it again after an interruption. The classifiers missing for
# one run and variant are evaluated by one `mgecl evaluate` call per shot list, which embeds
# the 9600 val photos (1 + copies) times.
#   MGECL=... research/photos-ablation.sh [RUN...] [-- CLASSIFIER...] [-- VARIANT...]
# (default: the four runs, logistic and prototype, plain then flip).
set -e
cd "$(dirname "$0")/.."
data=../shared/data/miniimagenet
runs="" classifiers="" variants=""
while [ $# -gt 0 ] && [ "$1" != -- ]; do runs="$runs $1"; shift; done
[ "${1:-}" = -- ] && shift
while [ $# -gt 0 ] && [ "$1" != -- ]; do classifiers="$classifiers $1"; shift; done
[ "${1:-}" = -- ] && shift
variants="$*"
runs=${runs:-mini-r12w32 mini-r12w32-class mini-r12w32-inst mini-r12w32-both}
classifiers=${classifiers:-logistic prototype}
variants=${variants:-plain flip}
for variant in $variants; do
    for run in $runs; do
        if [ $variant = plain ]; then
            prefix=research/runs/$run/eval- tta="--augmented-copies 0"
        else
            prefix=research/runs/$run/eval-flip-
            tta="--augmentation flip-shift --augmented-copies 1 --augment-queries"
        fi
        missing=""
        for classifier in $classifiers; do
            [ -s "$prefix$classifier.jsonl" ] || missing="$missing $classifier"
        done
        [ -n "$missing" ] || continue
        research/evaluate.sh research/runs/$run/best.safetensors $data "$missing" "$tta" \
            > "${prefix}all.part"
        for classifier in $missing; do
            grep -F "\"classifier\":\"$classifier\"" "${prefix}all.part" \
                > "$prefix$classifier.jsonl.part"
            mv "$prefix$classifier.jsonl.part" "$prefix$classifier.jsonl"
        done
        rm "${prefix}all.part"
    done
done
