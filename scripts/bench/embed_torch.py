#!/usr/bin/env python3
"""PyTorch's side of `embed_cli.sh`: what `mgecl embed` does, in PyTorch, timed by phase.

Decodes the images with PIL, converts them to the model's channels (inverting where the
model's metadata says so), resizes them to the model's input size (Lanczos), normalises,
runs the reference network (`ref_models.py`, eval, inference_mode, channels_last) in batches
of BATCH, and writes the features as safetensors. With --int8 the network is first quantised
by `torch.ao.quantization`'s FX graph mode, x86 backend (per-channel int8 weights, uint8
activations), calibrated on the first batch: PyTorch has no file format a quantised FX model
loads from, so that conversion is part of its "load". Prints one JSON line of seconds:

  import_s  importing torch and friends
  load_s    reading the weights, building the network (and quantising it with --int8)
  run_s     decoding, preprocessing, the forward passes and writing the features
  total_s   the process from its first line (the interpreter's own start is not included)

    scripts/bench/.venv/bin/python scripts/bench/embed_torch.py --model F32 [--int8] \\
        [--batch 25] [--threads 2] --out FEATURES IMAGE...
"""
import argparse
import json
import os
import sys
import time
import warnings

START = time.perf_counter()
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a float32 mgecl model file")
    ap.add_argument("--int8", action="store_true", help="run PyTorch's own int8 of it")
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reference", default=os.path.join(ROOT, "crates/mgecl-train/tests/data/train"),
                    help="folder holding ref_models.py (default: the repository's copy)")
    ap.add_argument("--out", required=True)
    ap.add_argument("images", nargs="+")
    args = ap.parse_args()
    # torch.ao.quantization's deprecation notices, not results.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)

    sys.path.insert(0, args.reference)
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file
    import ref_models  # noqa: F401  (the reference network, imported with torch)
    torch.set_num_threads(args.threads)
    imported = time.perf_counter()

    sys.path.insert(0, HERE)
    import compare
    model, meta = compare.load_torch_model(torch, args.model)
    size = json.loads(meta["image_size"]) if meta["image_size"].startswith("[") else int(meta["image_size"])
    h, w = (size, size) if isinstance(size, int) else size
    c = int(meta["in_channels"])
    mean = torch.tensor(json.loads(meta["mean"]), dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(json.loads(meta["std"]), dtype=torch.float32).view(1, -1, 1, 1)
    invert = meta.get("invert") == "true"

    def preprocess(paths):
        arrays = []
        for p in paths:
            img = Image.open(p).convert("RGB" if c == 3 else "L")
            if invert:
                img = Image.eval(img, lambda v: 255 - v)
            img = img.resize((w, h), Image.LANCZOS)
            arrays.append(np.asarray(img, dtype=np.float32) / 255.0)
        x = torch.from_numpy(np.stack(arrays))
        x = x.permute(0, 3, 1, 2) if x.dim() == 4 else x.unsqueeze(1)
        return ((x - mean) / std).contiguous(memory_format=torch.channels_last)

    batches = [args.images[i:i + args.batch] for i in range(0, len(args.images), args.batch)]
    if args.int8:
        model = compare.quantize_fx(torch, model, [preprocess(batches[0])])
    else:
        model = model.to(memory_format=torch.channels_last)
    loaded = time.perf_counter()

    features = []
    with torch.inference_mode():
        for paths in batches:
            features.append(model(preprocess(paths)))
    save_file({"features": torch.cat(features).contiguous()}, args.out)
    done = time.perf_counter()
    print(json.dumps({"import_s": imported - START, "load_s": loaded - imported,
                      "run_s": done - loaded, "total_s": done - START,
                      "images": len(args.images), "batch": args.batch, "int8": args.int8}))


if __name__ == "__main__":
    main()
