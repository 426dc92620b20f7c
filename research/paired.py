#!/usr/bin/env python3
"""Paired comparison of two evaluations of the same episodes (`mgecl evaluate --json
--per-episode` lines, as research/evaluate.sh writes them): per cell, the mean difference B - A
in accuracy points and its 95% interval, 1.96 * std(differences) / sqrt(episodes). The
episodes are identical (same data, seed and shape), so the interval is that of the difference
itself, far tighter than the two unpaired intervals.

    python3 research/paired.py A.jsonl B.jsonl
"""
import json
import math
import sys


def cells(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if "episode_accuracies" not in r:
                sys.exit(f"{path}: no episode_accuracies (evaluate with --per-episode)")
            key = (r["classifier"], r["ways"], r["shots"], bool(r.get("within_alphabet")))
            out[key] = r
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a, b = cells(sys.argv[1]), cells(sys.argv[2])
    print("| classifier | setting | A | B | B - A (paired 95% CI) |")
    print("|---|---|---|---|---|")
    for key in a:
        if key not in b:
            continue
        x, y = a[key]["episode_accuracies"], b[key]["episode_accuracies"]
        if len(x) != len(y) or a[key].get("seed") != b[key].get("seed"):
            sys.exit(f"{key}: not the same episodes")
        d = [q - p for p, q in zip(x, y)]
        mean = sum(d) / len(d)
        sd = math.sqrt(sum((v - mean) ** 2 for v in d) / len(d))
        classifier, ways, shots, within = key
        setting = f"{ways}-way {shots}-shot" + (" within-alphabet" if within else "")
        print(f"| {classifier} | {setting} | {100 * a[key]['accuracy']:.2f} | "
              f"{100 * b[key]['accuracy']:.2f} | {100 * mean:+.2f} +- "
              f"{196 * sd / math.sqrt(len(d)):.2f} |")


main()
