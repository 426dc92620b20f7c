#!/usr/bin/env bash
# Wall-clock seconds of `mgecl label` on 800 Omniglot drawings (every 24th PNG of the background
# set in path order) against a 5-class one-shot support set, process start, decoding and the
# task fit included, for one model under each setting given (quoted flag sets; "" = the
# model's recommended task settings), interleaved, three rounds. Measures what test-time
# augmentation costs per image. Run on an idle machine after `cargo build --release`.
#   scripts/bench/label_cli.sh MODEL SETTING [SETTING...]
#   e.g. scripts/bench/label_cli.sh models/omniglot-conv4.safetensors "" "--augmented-copies 0"
set -euo pipefail
data=${DATA:-../shared/data/omniglot}
mgecl=${MGECL:-target/release/mgecl}
model=$1
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/images"
find "$data/images_background" -name '*.png' | sort | awk 'NR % 24 == 0' | head -800 |
  while read -r f; do cp "$f" "$work/images/$(echo "$f" | md5sum | cut -c1-12).png"; done
find "$data/images_background" -mindepth 2 -maxdepth 2 -type d | sort | head -5 |
  while read -r d; do
    mkdir -p "$work/support/$(basename "$(dirname "$d")")_$(basename "$d")"
    cp "$(find "$d" -name '*.png' | sort | head -1)" \
      "$work/support/$(basename "$(dirname "$d")")_$(basename "$d")/"
  done
n=$(find "$work/images" -name '*.png' | wc -l)
echo "$n images, $(ls "$work/support" | wc -l) classes"
for round in 1 2 3; do
  for setting in "$@"; do
    read -r -a flags <<< "$setting"
    start=$(date +%s.%N)
    "$mgecl" label --model "$model" --support "$work/support" --images "$work/images" \
      --out "$work/labels.csv" "${flags[@]}" 2>/dev/null
    end=$(date +%s.%N)
    python3 -c "import sys; s = float(sys.argv[2]) - float(sys.argv[1]); print(f'round $round  [{sys.argv[4]}]  {s:.2f} s  {int(sys.argv[3]) / s:.0f} images/s')" "$start" "$end" "$n" "$setting"
  done
done
