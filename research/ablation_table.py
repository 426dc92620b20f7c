#!/usr/bin/env python3
"""The photo model's ablation table (models/README.md) from the evaluations that
research/photos-ablation.sh writes: per model and classifier, 5-way 1- and 5-shot accuracy; the
first row with its 95% interval, the others with their paired difference to it (same episodes).

    python3 research/ablation_table.py [flip]     (flip: with one flip-shift copy)
"""
import json
import math
import statistics
import sys
from pathlib import Path

RUNS = Path(__file__).parent / "runs"
MODELS = [
    ("cross-entropy only (stage 1)", "mini-r12w32"),
    ("+ class loss (shipped)", "mini-r12w32-class"),
    ("+ instance loss", "mini-r12w32-inst"),
    ("+ both", "mini-r12w32-both"),
]
CLASSIFIERS = ["logistic", "prototype"]


def load(run, variant, classifier):
    out = {}
    for line in open(RUNS / run / f"eval-{variant}{classifier}.jsonl"):
        r = json.loads(line)
        out[r["shots"]] = r
    return out


def main():
    variant = "flip-" if sys.argv[1:] == ["flip"] else ""
    base = {c: load(MODELS[0][1], variant, c) for c in CLASSIFIERS}
    print("| model | logistic 5w1s | logistic 5w5s | prototype 5w1s | prototype 5w5s |")
    print("|---|---|---|---|---|")
    for i, (name, run) in enumerate(MODELS):
        cells = []
        for c in CLASSIFIERS:
            results = load(run, variant, c)
            for shots in (1, 5):
                r = results[shots]
                text = f"{100 * r['accuracy']:.2f}"
                if i == 0:
                    text += f" +- {100 * r['ci95']:.2f}"
                else:
                    a = base[c][shots]["episode_accuracies"]
                    b = r["episode_accuracies"]
                    diff = [100 * (y - x) for x, y in zip(a, b)]
                    ci = 1.96 * statistics.stdev(diff) / math.sqrt(len(diff))
                    text += f" ({statistics.mean(diff):+.2f} +- {ci:.2f})"
                cells.append(text)
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
