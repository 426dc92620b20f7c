#!/usr/bin/env python3
"""The int8 engine against mgecl's f32 engine, PyTorch eager f32 and PyTorch's own int8, in
one run on one machine.

For each configuration (the photo ResNet-12 at 84x84, batch 1 and 25; the Omniglot Conv-4 at
28x28, batch 1 and 100) four jobs, each in its own process (so peak RSS is per job),
interleaved ROUNDS times, each keeping its best round:

  * mgecl f32:  `target/release/examples/bench_embed MODEL BATCH REPEATS auto`
  * mgecl int8: the same on the `mgecl quantize`d file
  * PyTorch f32: the reference model (`ref_models.py`), eval, inference_mode, channels_last
  * PyTorch int8: the same weights through `torch.ao.quantization`'s FX graph mode with the
    x86 backend's default configuration (`get_default_qconfig_mapping("x86")`: per-channel
    int8 weights, uint8 activations), calibrated on 32 random normalised inputs (timing
    only: the calibration's content does not change the speed), then `convert_fx`.

Each job times the best of REPEATS forwards of a random normalised batch after one warm-up.
File sizes are printed too.

    cargo build --release --bin mgecl --example bench_embed
    target/release/mgecl quantize --model F32 --data DIR --include LIST --out INT8   # per model
    scripts/bench/.venv/bin/python scripts/bench/int8_compare.py \\
        --resnet12 models/miniimagenet-resnet12.safetensors --resnet12-int8 R8 \\
        --conv4 models/omniglot-conv4.safetensors --conv4-int8 C8
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402  (run_measured, torch_setup, load_torch_model, quantize_fx, mgecl_time, time_forward)


def torch_int8_time(args):
    """Worker: PyTorch's int8 (FX graph mode, x86 backend) of the reference model."""
    torch = compare.torch_setup(args.reference, args.threads)
    model, meta = compare.load_torch_model(torch, args.model)
    size = json.loads(meta["image_size"]) if meta["image_size"].startswith("[") else int(meta["image_size"])
    h, w = (size, size) if isinstance(size, int) else size
    c = int(meta["in_channels"])
    gen = torch.Generator().manual_seed(0)
    quantized = compare.quantize_fx(torch, model, [torch.randn(8, c, h, w, generator=gen) for _ in range(4)])
    x = torch.randn(args.batch, c, h, w, generator=gen)
    print(json.dumps(compare.time_forward(torch, quantized, x, args.repeats)))


def child(args, worker, model, batch, repeats, layout="channels_last"):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", worker, "--model", model,
           "--batch", str(batch), "--repeats", str(repeats), "--layout", layout,
           "--reference", args.reference, "--threads", str(args.threads)]
    out, rss = compare.run_measured(cmd)
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mib"] = rss
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resnet12")
    ap.add_argument("--resnet12-int8")
    ap.add_argument("--conv4")
    ap.add_argument("--conv4-int8")
    ap.add_argument("--reference", default=os.path.join(compare.ROOT, "crates/mgecl-train/tests/data/train"),
                    help="folder holding ref_models.py (default: the repository's copy)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bench-bin", default=None)
    ap.add_argument("--json")
    ap.add_argument("--worker", choices=["time", "int8"])
    ap.add_argument("--model")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--layout", default="channels_last")
    args = ap.parse_args()
    if args.worker == "time":
        return compare.torch_time(args)
    if args.worker == "int8":
        return torch_int8_time(args)

    bench = args.bench_bin or os.path.join(compare.target_dir(), "release/examples/bench_embed")
    configs = []
    if args.resnet12:
        configs += [("ResNet-12", "84x84", args.resnet12, args.resnet12_int8, b) for b in (1, 25)]
    if args.conv4:
        configs += [("Conv-4", "28x28", args.conv4, args.conv4_int8, b) for b in (1, 100)]

    def better(a, b):
        if a is None:
            return b
        fast = max(a, b, key=lambda r: r["images_per_s"])
        return dict(fast, peak_rss_mib=max(a["peak_rss_mib"], b["peak_rss_mib"]))

    load_before = os.getloadavg()
    rows = []
    for arch, size, f32, int8, batch in configs:
        repeats = max(5, 50 // batch)
        jobs = {"mgecl_f32": None, "mgecl_int8": None, "torch_f32": None, "torch_int8": None}
        for _ in range(args.rounds):
            jobs["mgecl_f32"] = better(jobs["mgecl_f32"], compare.mgecl_time(bench, f32, batch, repeats, "auto", args.threads))
            jobs["mgecl_int8"] = better(jobs["mgecl_int8"], compare.mgecl_time(bench, int8, batch, repeats, "auto", args.threads))
            jobs["torch_f32"] = better(jobs["torch_f32"], child(args, "time", f32, batch, repeats))
            jobs["torch_int8"] = better(jobs["torch_int8"], child(args, "int8", f32, batch, repeats))
        row = {"arch": arch, "input": size, "batch": batch, **jobs,
               "f32_bytes": os.path.getsize(f32), "int8_bytes": os.path.getsize(int8)}
        rows.append(row)
        print(f"{arch} {size} batch {batch}: " + ", ".join(
            f"{k} {v['images_per_s']:.1f} img/s" for k, v in jobs.items()), file=sys.stderr)
    load_after = os.getloadavg()

    import torch
    print(f"\nmgecl int8 and f32 vs PyTorch {torch.__version__} (eager f32 channels_last; FX int8, x86 "
          f"backend), {args.threads} threads, best of {args.rounds} interleaved rounds; 1-min load "
          f"average before {load_before[0]:.2f}, after {load_after[0]:.2f}\n")
    print("| model | batch | mgecl int8 img/s | mgecl f32 img/s | PyTorch f32 img/s | PyTorch int8 img/s "
          "| int8 / mgecl f32 | int8 / PyTorch int8 | peak RSS MiB (mgecl int8 / f32 / PyTorch f32 / int8) "
          "| file MB (f32 / int8) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ips = {k: r[k]["images_per_s"] for k in ("mgecl_int8", "mgecl_f32", "torch_f32", "torch_int8")}
        rss = " / ".join(f"{r[k]['peak_rss_mib']:.0f}" for k in ("mgecl_int8", "mgecl_f32", "torch_f32", "torch_int8"))
        print(f"| {r['arch']} {r['input']} | {r['batch']} | {ips['mgecl_int8']:.1f} | {ips['mgecl_f32']:.1f} "
              f"| {ips['torch_f32']:.1f} | {ips['torch_int8']:.1f} | {ips['mgecl_int8'] / ips['mgecl_f32']:.2f} "
              f"| {ips['mgecl_int8'] / ips['torch_int8']:.2f} | {rss} "
              f"| {r['f32_bytes'] / 1e6:.1f} / {r['int8_bytes'] / 1e6:.1f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "load_before": load_before, "load_after": load_after,
                       "threads": args.threads}, fh, indent=1)


if __name__ == "__main__":
    main()
