#!/usr/bin/env python3
"""The transductive answer of a task (`TaskConfig::transductive`), written again in numpy from
its description (src/classifier/transductive.rs, models/README.md "Transductive labelling"),
as the independent truth `tests/transductive.rs` checks the library against.

It draws small feature sets (class-structured, non-negative like the encoders' outputs,
rounded to float32 so both sides read the same numbers), computes what a task answers for
them, and writes one JSON fixture per case into tests/data/transductive/:

  - `conv4_gray.json`: the uncalibrated test model (64-d features), prototype temperature 0.1,
    3 classes x 2 examples, 14 queries of which 2 far from every class;
  - `photo.json`: the shipped photo model (320-d, calibrated: its unaugmented prototype scale
    and open-set function, read from the model file's metadata), 5-way 1-shot, 12 queries.

    python3 scripts/transductive_reference.py   # numpy only; rewrites the fixtures
"""
import json
import math
import pathlib
import struct

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "transductive"

# The method's constants (src/classifier/transductive.rs).
BETA, ITERATIONS, PRIOR_COUNT, KNOWN_POWER = 30.0, 30, 1.0, 2


def unit(x):
    n = np.sqrt((x * x).sum(axis=1, keepdims=True))
    return np.where(n > 0, x / np.where(n > 0, n, 1), x)


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def task_answer(support, labels, classes, queries, scale, known_fn):
    """Probabilities (queries x classes) and known-probabilities of a transductive task."""
    s, q = unit(support), unit(queries)
    y = np.asarray(labels)
    onehot = np.eye(classes)[y]  # support rows x classes
    prototypes = unit(onehot.T @ s)
    known = known_fn((q @ prototypes.T).max(axis=1))
    w = np.clip(known, 0, 1) ** KNOWN_POWER
    centre = (s.sum(axis=0) + w @ q) / (len(s) + w.sum())
    sc, qc = unit(s - centre), unit(q - centre)
    support_sums = onehot.T @ sc
    means = unit(support_sums)
    log_pi = np.zeros(classes)
    for _ in range(ITERATIONS):
        r = softmax(BETA * qc @ means.T + log_pi) * w[:, None]
        means = unit(support_sums + r.T @ qc)
        mass = r.sum(axis=0)
        log_pi = np.log((mass + PRIOR_COUNT) / (mass.sum() + classes * PRIOR_COUNT))
    r = softmax(BETA * qc @ means.T + log_pi) * w[:, None]
    refined = unit(onehot.T @ s + r.T @ q)
    return softmax(scale * (q @ refined.T)), known


def features(rng, centres, per_class, noise, outliers=0):
    dim = centres.shape[1]
    rows, labels = [], []
    for k in range(len(centres)):
        for _ in range(per_class[k]):
            rows.append(np.maximum(centres[k] + rng.normal(0, noise, dim), 0))
            labels.append(k)
    for _ in range(outliers):
        rows.append(rng.gamma(0.6, 1.0, size=dim))
        labels.append(-1)
    return np.asarray(rows, np.float32).astype(np.float64), labels


def metadata(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))["__metadata__"]


def write(name, model, support, labels, queries, classes, probabilities, known, note):
    OUT.mkdir(parents=True, exist_ok=True)
    case = {
        "note": note,
        "model": model,
        "classes": classes,
        "support": support.astype(np.float32).tolist(),
        "labels": list(labels),
        "queries": queries.astype(np.float32).tolist(),
        "probabilities": probabilities.tolist(),
        "known_probability": known.tolist(),
    }
    (OUT / name).write_text(json.dumps(case) + "\n")


def main():
    rng = np.random.default_rng(20261207)

    # Uncalibrated: softmax(cosine / 0.1); known-probability = best cosine clipped to [0, 1].
    centres = rng.gamma(0.6, 1.0, size=(3, 64))
    support, labels = features(rng, centres, [2, 2, 2], 0.9)
    queries, _ = features(rng, centres, [7, 4, 1], 0.9, outliers=2)
    p, k = task_answer(support, labels, 3, queries, 1 / 0.1, lambda m: np.clip(m, 0, 1))
    write("conv4_gray.json", "tests/data/conv4_gray.safetensors", support, labels, queries, 3,
          p, k, "prototype classifier, temperature 0.1, no calibration")

    # Calibrated (the photo model's unaugmented functions, 5 ways, 1 shot).
    model = "models/miniimagenet-resnet12.safetensors"
    calibration = json.loads(metadata(ROOT / model)["calibration"])["unaugmented"]
    ways, shots = 5, 1.0
    a = calibration["prototype"]
    scale = math.exp(a["a"] + a["b"] * math.log(ways) + a["c"] * math.log(shots))
    w = calibration["open_set"]["w"]

    def known(m):
        return 1 / (1 + np.exp(-(w[0] + w[1] * m + w[2] * math.log(ways) + w[3] * math.log(shots))))

    centres = rng.gamma(0.6, 1.0, size=(ways, 320))
    support, labels = features(rng, centres, [1] * ways, 0.9)
    queries, _ = features(rng, centres, [4, 3, 2, 2, 1], 0.9)
    p, k = task_answer(support, labels, ways, queries, scale, known)
    write("photo.json", model, support, labels, queries, ways, p, k,
          "logistic classifier configured (transductive answers come from the refined "
          "prototypes), calibrated, no augmented copies")


if __name__ == "__main__":
    main()
