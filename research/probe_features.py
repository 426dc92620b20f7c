#!/usr/bin/env python3
"""Probe of feature variants no model file can express yet, on the Omniglot val alphabets:
the features of Conv-4 model files computed with the PyTorch reference network
(shared/reference/ref_models.py), scored with the prototype classifier (cosine to the one
support image per class) on 2000 numpy-drawn 20-way 1-shot episodes, within-alphabet (Lake's
protocol) and across alphabets, 15 queries per class, paired against the first model's plain
features. Not the SDK's protocol (`mgecl evaluate` draws other episodes): a quick screen of
what might be worth building, whose winners must be re-measured through the SDK.

Variants: `final` (the model's features, power 0.5: what the SDK computes), `final+block3`
(the average-pooled output of the third block appended), `flat` (the last block's 3x3 map
flattened instead of averaged), and with two or more models `ensemble` (their final features
concatenated, each L2-normalised).

    scripts/bench/.venv/bin/python research/probe_features.py ../shared/data/omniglot MODEL [MODEL...]
"""
import json
import pathlib
import struct
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import load_file

EPISODES, WAYS, QUERIES = 2000, 20, 15


def val_images(root):
    alphabets = (root / "splits" / "val_alphabets.txt").read_text().split()
    paths = sorted(
        p for a in alphabets for p in (root / "images_background" / a).glob("*/*.png")
    )
    return paths


def conv4_blocks(model_path, images):
    """The third and fourth block outputs of a grey Conv-4 model file on `images` (paths)."""
    from ref_models import Conv4, load_weights

    weights = load_file(str(model_path))
    meta = load_meta(model_path)
    mean, std = float(meta["mean"].strip("[]")), float(meta["std"].strip("[]"))
    net = Conv4(in_channels=1, width=int(meta["width"]))
    load_weights(net, {k: v for k, v in weights.items() if k.startswith("layer")})
    net.eval()
    size = int(meta["image_size"])
    pixels = np.stack(
        [
            np.asarray(Image.open(p).convert("L").resize((size, size), Image.LANCZOS), np.float32)
            for p in images
        ]
    )
    if meta.get("invert") == "true":
        pixels = 255 - pixels
    x = torch.from_numpy(((pixels / 255 - mean) / std)[:, None])
    with torch.no_grad():
        blocks, _ = net(x, is_feat=True)
    return blocks[2].numpy(), blocks[3].numpy()


def load_meta(path):
    raw = pathlib.Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]).get("__metadata__", {})


def unit(f, power=0.5):
    f = np.sign(f) * np.abs(f) ** power
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def episodes(images, within, rng):
    classes = [p.parent for p in images]
    names = sorted(set(classes))
    class_of = np.array([names.index(c) for c in classes])
    rows = {c: np.flatnonzero(class_of == c) for c in range(len(names))}
    by_alphabet = {}
    for c, name in enumerate(names):
        by_alphabet.setdefault(name.parent.name, []).append(c)
    alphabets = [a for a, cs in sorted(by_alphabet.items()) if len(cs) >= WAYS]
    out = []
    for _ in range(EPISODES):
        if within:
            pool = by_alphabet[alphabets[rng.integers(len(alphabets))]]
        else:
            pool = range(len(names))
        picked = rng.choice(list(pool), WAYS, replace=False)
        support, queries, labels = [], [], []
        for k, c in enumerate(picked):
            order = rng.permutation(rows[c])
            support.append(order[0])
            queries.extend(order[1 : 1 + QUERIES])
            labels.extend([k] * QUERIES)
        out.append((np.array(support), np.array(queries), np.array(labels)))
    return out


def main():
    root = pathlib.Path(sys.argv[1])
    models = sys.argv[2:]
    # The reference network of the shared folder the data root lies in (shared/data/omniglot).
    sys.path.insert(0, str(root.resolve().parents[1] / "reference"))
    images = val_images(root)
    variants = {}
    finals = []
    for i, m in enumerate(models):
        b3, b4 = conv4_blocks(m, images)
        final = unit(b4.mean((2, 3)))
        finals.append(final)
        variants[f"final [{i}]"] = final
        if i == 0:
            variants["final+block3 [0]"] = np.hstack([final, unit(b3.mean((2, 3)))])
            variants["flat [0]"] = unit(b4.reshape(len(b4), -1))
    if len(finals) > 1:
        variants["ensemble"] = np.hstack(finals)
    rng = np.random.default_rng(0)
    print("| episodes | features | accuracy | minus final [0] (paired 95% CI) |")
    print("|---|---|---|---|")
    for name, within in [("20-way 1-shot within-alphabet", True), ("20-way 1-shot", False)]:
        eps = episodes(images, within, rng)
        base = None
        for variant, f in variants.items():
            acc = np.array([((f[q] @ f[s].T).argmax(1) == y).mean() for s, q, y in eps])
            base = acc if base is None else base
            d = acc - base
            ci = 1.96 * d.std() / np.sqrt(len(d))
            print(f"| {name} | {variant} | {acc.mean() * 100:.2f} | {d.mean() * 100:+.2f} +- {ci * 100:.2f} |")


if __name__ == "__main__":
    main()
