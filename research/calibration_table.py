#!/usr/bin/env python3
"""The before/after calibration table of models/README.md from research/calibration.sh output:
per classifier and setting, accuracy, then mean top probability and expected calibration error
with the raw probabilities (before) and the calibrated ones (after); then the open-set AUROCs.

    research/calibration.sh MODEL ... > OUT.jsonl; python3 research/calibration_table.py OUT.jsonl
"""
import fileinput
import json

cells, open_set = {}, []
for line in fileinput.input():
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if r.get("open_set_auroc") is not None:
        open_set.append(r)
        continue
    cells.setdefault((r["classifier"], r["ways"], r["shots"]), {})[r["raw"]] = r
print("| classifier | setting | accuracy | before: confidence, ECE | after: confidence, ECE |")
print("|---|---|---|---|---|")
for (classifier, ways, shots), by_raw in cells.items():
    before, after = by_raw[True], by_raw[False]
    print(
        f"| {classifier} | {ways}-way {shots}-shot | {100 * after['accuracy']:.2f} | "
        f"{before['mean_confidence']:.3f}, {before['ece']:.3f} | "
        f"{after['mean_confidence']:.3f}, {after['ece']:.3f} |"
    )
for r in open_set:
    print(
        f"\nOpen set, {r['classifier']} {r['ways']}-way {r['shots']}-shot with the queries of "
        f"unknown classes too: AUROC {r['open_set_auroc']:.3f} by "
        f"known_probability, {r['open_set_auroc_top_probability']:.3f} by the top probability."
    )
