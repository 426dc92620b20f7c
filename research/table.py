#!/usr/bin/env python3
"""Markdown accuracy table from `research/evaluate.sh` output (JSON lines on stdin or in files).

    research/evaluate.sh MODEL | python3 research/table.py
"""
import fileinput
import json

NAMES = {
    (5, 1, False): "5-way 1-shot",
    (5, 5, False): "5-way 5-shot",
    (20, 1, False): "20-way 1-shot",
    (20, 5, False): "20-way 5-shot",
    (20, 1, True): "20-way 1-shot within-alphabet",
}
rows = {}
for line in fileinput.input():
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    key = (r["ways"], r["shots"], bool(r.get("within_alphabet", False)))
    name = r["classifier"]
    if r.get("augmented_copies"):
        name += f" + {r['augmented_copies']} {r['augmentation']} copies"
        if r.get("augment_queries"):
            name += " (support and queries)"
    rows.setdefault(name, {})[key] = r
# The settings the input holds (Omniglot has all five, miniImageNet the 5-way two).
COLUMNS = [c for c in NAMES if any(c in cells for cells in rows.values())]
head = [NAMES[c] for c in COLUMNS]
print("| classifier | " + " | ".join(head) + " |")
print("|---" * (len(head) + 1) + "|")
for classifier, cells in rows.items():
    out = []
    for c in COLUMNS:
        r = cells.get(c)
        out.append(f"{100 * r['accuracy']:.2f} +- {100 * r['ci95']:.2f}" if r else "-")
    print(f"| {classifier} | " + " | ".join(out) + " |")
