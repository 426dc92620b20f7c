#!/usr/bin/env bash
# Inductive against transductive answers (TaskConfig::transductive) on held-out classes, paired:
# every setting evaluated both ways on one embedding and the same 2000 fixed-seed episodes
# (mgecl evaluate --also-transductive), with the model's recommended task settings. Three
# settings, 1 and 5 shots each: equal class sizes, unequal ones (--query-dirichlet 2: Veilleux
# et al.'s realistic protocol) and 5 unknown classes among the queries (--unknown-ways 5:
# accuracy on the known queries and open-set AUROC). One JSON object per line;
# research/transductive_table.py prints the table of models/README.md.
#   research/transductive.sh MODEL DATA_ROOT > OUT.jsonl
# miniImageNet (splits/val_classes.txt): 5-way, 15 queries per class. Omniglot
# (splits/val_alphabets.txt; 20 drawings per character): 20-way, 5 queries per class.
set -euo pipefail
model=$1
data=$2
mgecl=${MGECL:-target/release/mgecl}
if [ -f "$data/splits/val_classes.txt" ]; then
  images=$data/images split=$data/splits/val_classes.txt ways=5 queries=15
else
  images=$data/images_background split=$data/splits/val_alphabets.txt ways=20 queries=5
fi
for setting in "" "--query-dirichlet 2" "--unknown-ways 5"; do
  # shellcheck disable=SC2086
  "$mgecl" evaluate --model "$model" --data "$images" --include "$split" --ways $ways \
    --shots 1,5 --queries $queries --episodes 2000 --seed 0 --also-transductive $setting \
    --json --per-episode
done
