#!/usr/bin/env bash
# Wall-clock seconds of `mgecl embed` on 800 Omniglot drawings (every 24th PNG of the background
# set in path order), process start and decoding included, for each model given, interleaved,
# three rounds. Run on an idle machine after `cargo build --release`.
#   bench/embed_cli.sh MODEL [MODEL...]   (DATA=../shared/data/omniglot by default)
set -euo pipefail
data=${DATA:-../shared/data/omniglot}
mgecl=${MGECL:-target/release/mgecl}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mapfile -t files < <(find "$data/images_background" -name '*.png' | sort | awk 'NR % 24 == 0' | head -800)
echo "${#files[@]} images"
for round in 1 2 3; do
  for model in "$@"; do
    start=$(date +%s.%N)
    "$mgecl" embed --model "$model" --out "$out/features.safetensors" "${files[@]}" >/dev/null
    end=$(date +%s.%N)
    python3 -c "import sys; s = float(sys.argv[2]) - float(sys.argv[1]); print(f'round $round  $model  {s:.2f} s  {int(sys.argv[3]) / s:.0f} images/s')" "$start" "$end" "${#files[@]}"
  done
done
