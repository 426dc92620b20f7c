#!/usr/bin/env python3
"""The inductive-vs-transductive table of models/README.md from research/transductive.sh's
output: per setting and shot count, both accuracies, their paired difference (mean of the
per-episode differences, 95% interval 1.96 * std / sqrt(episodes)), the expected calibration
error of each and, with unknown classes among the queries, the open-set AUROC of each.

    python3 research/transductive_table.py OUT.jsonl
"""
import json
import math
import sys


def setting(r):
    if "query_dirichlet" in r:
        return f"unequal, Dirichlet({r['query_dirichlet']:g})"
    if "open_set_auroc" in r:
        return "equal + 5 unknown classes"
    return "equal"


def main():
    pairs = {}
    for line in open(sys.argv[1]):
        if line.startswith("{"):
            r = json.loads(line)
            key = (setting(r), r["ways"], r["shots"])
            pairs.setdefault(key, {})[r["transductive"]] = r
    print("| queries | ways x shots | inductive | transductive | paired difference | ECE ind. / trans. | AUROC ind. / trans. |")
    print("|---|---|---|---|---|---|---|")
    for (name, ways, shots), p in pairs.items():
        a, b = p[False], p[True]
        d = [y - x for x, y in zip(a["episode_accuracies"], b["episode_accuracies"])]
        mean = sum(d) / len(d)
        sd = math.sqrt(sum((x - mean) ** 2 for x in d) / len(d))
        auroc = "-"
        if "open_set_auroc" in a:
            auroc = f"{a['open_set_auroc']:.3f} / {b['open_set_auroc']:.3f}"
        print(f"| {name} | {ways}x{shots} | {100 * a['accuracy']:.2f} +- {100 * a['ci95']:.2f} "
              f"| {100 * b['accuracy']:.2f} +- {100 * b['ci95']:.2f} "
              f"| **{100 * mean:+.2f} +- {196 * sd / math.sqrt(len(d)):.2f}** "
              f"| {a['ece']:.3f} / {b['ece']:.3f} | {auroc} |")


if __name__ == "__main__":
    main()
