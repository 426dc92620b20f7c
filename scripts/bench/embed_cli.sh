#!/usr/bin/env bash
# Wall-clock seconds of `mgecl embed` on N images (default 800: every 24th image of the data set
# in path order: Omniglot's background PNGs, or miniImageNet's JPEGs), process start and
# decoding included, for each model given, interleaved, three rounds. Run on an idle machine
# after `cargo build --release`.
#   scripts/bench/embed_cli.sh MODEL [MODEL...]
#   DATA=../shared/data/omniglot (default) or ../shared/data/miniimagenet; BATCH=16 (default);
#   N=800 (default); TORCH=F32_MODEL also runs scripts/bench/embed_torch.py (PyTorch eager f32
#   and its FX int8 of that model, same images and batch) in each round, printing its whole
#   time and the part after import and model setup (needs the bench venv).
set -euo pipefail
data=${DATA:-../shared/data/omniglot}
batch=${BATCH:-16}
count=${N:-800}
mgecl=${MGECL:-target/release/mgecl}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if [ -d "$data/images_background" ]; then
  mapfile -t files < <(find "$data/images_background" -name '*.png' | sort | awk 'NR % 24 == 0' | head -"$count")
else
  mapfile -t files < <(find "$data/images" -name '*.jpg' | sort | awk 'NR % 24 == 0' | head -"$count")
fi
echo "${#files[@]} images, batch $batch"
for round in 1 2 3; do
  for model in "$@"; do
    start=$(date +%s.%N)
    "$mgecl" embed --model "$model" --batch-size "$batch" --out "$out/features.safetensors" \
      "${files[@]}" >/dev/null 2>"$out/stderr" || { cat "$out/stderr"; exit 1; }
    end=$(date +%s.%N)
    python3 -c "import sys; s = float(sys.argv[2]) - float(sys.argv[1]); print(f'round $round  $model  {s:.2f} s  {int(sys.argv[3]) / s:.0f} images/s')" "$start" "$end" "${#files[@]}"
  done
  if [ -n "${TORCH:-}" ]; then
    for int8 in "" --int8; do
      start=$(date +%s.%N)
      result=$(${PYTHON:-scripts/bench/.venv/bin/python} scripts/bench/embed_torch.py --model "$TORCH" $int8 \
        --batch "$batch" --out "$out/torch.safetensors" "${files[@]}")
      end=$(date +%s.%N)
      wall=$(python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.2f}")' "$start" "$end")
      echo "round $round  PyTorch ${int8:-f32}  $wall s  $result"
    done
  fi
done
