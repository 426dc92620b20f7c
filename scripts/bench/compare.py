#!/usr/bin/env python3
"""mgecl's CPU forward pass against PyTorch eager, in one run on one machine.

For each configuration (ResNet-12 at 84x84, batch 1, 5, 25; Conv-4 at 28x28, batch 1, 100)
it runs, each in its own process so that peak resident memory is per job:

  * mgecl: `target/release/examples/bench_embed MODEL BATCH REPEATS ENGINE`
    (`Model::embed_preprocessed` on a random normalised batch);
  * PyTorch: the reference model of `ref_models.py` (eval, inference_mode), NCHW and
    channels_last, `torch.set_num_threads(THREADS)`.

Each reports the best of REPEATS timed forwards after one warm-up; images/s = batch / best.
The three jobs of a configuration are interleaved ROUNDS times and each keeps its best round
(the machine is shared: a busy spell then hits all three alike).
The ratio is mgecl over PyTorch's better layout. Peak RSS is the process's ru_maxrss.

Then the memory job of the issue: `mgecl embed` of 25 PNGs into a safetensors file against a
PyTorch script doing the same (decode, normalise, forward, save), peak RSS of each.

Setup (once; the venv is gitignored):

    python3 -m venv scripts/bench/.venv
    scripts/bench/.venv/bin/pip install torch numpy safetensors pillow
    cargo build --release --bin mgecl --example bench_embed

Run (the full-width ResNet-12 comes from the reference's `make_fixtures.py --full`):

    scripts/bench/.venv/bin/python scripts/bench/compare.py \\
        --resnet12 REF_COPY/fixtures/resnet12_full.safetensors   # REF_COPY: a writable copy of shared/reference
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def target_dir():
    return os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))


def run_measured(cmd, env=None):
    """Runs cmd, returns (stdout, peak RSS in MiB) of that one child."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()}")
    return out.decode(), usage.ru_maxrss / 1024.0


# ---------------------------------------------------------------------------------------
# Worker side: runs inside a child process.

def torch_setup(reference, threads):
    sys.path.insert(0, reference)
    import torch
    torch.set_num_threads(threads)
    return torch


def load_torch_model(torch, model_path):
    import ref_models
    from safetensors import safe_open
    with safe_open(model_path, framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    model = ref_models.build_from_metadata(meta)
    ref_models.load_weights(model, state)
    return model.eval(), meta


def quantize_fx(torch, model, calibration):
    """PyTorch's own int8 of `model`: `torch.ao.quantization`'s FX graph mode with the x86
    backend's default qconfig mapping (per-channel int8 weights, uint8 activations), its
    observers run on the batches `calibration`."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.backends.quantized.engine = "x86"

    class Features(torch.nn.Module):
        """forward(x) alone, so that FX traces `is_feat` as the constant False."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    prepared = prepare_fx(Features(model).eval(), get_default_qconfig_mapping("x86"),
                          example_inputs=(calibration[0],))
    with torch.inference_mode():
        for batch in calibration:
            prepared(batch)
    return convert_fx(prepared)


def time_forward(torch, model, x, repeats):
    """Best and median of `repeats` forwards of batch `x` after one warm-up, and images/s."""
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    times.sort()
    batch = x.shape[0]
    return {"batch": batch, "best_s": times[0], "median_s": times[len(times) // 2],
            "images_per_s": batch / times[0]}


def torch_time(args):
    torch = torch_setup(args.reference, args.threads)
    model, meta = load_torch_model(torch, args.model)
    size = json.loads(meta["image_size"]) if meta["image_size"].startswith("[") else int(meta["image_size"])
    h, w = (size, size) if isinstance(size, int) else size
    c = int(meta["in_channels"])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, c, h, w, generator=gen)
    if args.layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    print(json.dumps(dict(time_forward(torch, model, x, args.repeats), layout=args.layout)))


def torch_embed(args):
    """The PyTorch side of the memory job: PNGs -> features file."""
    torch = torch_setup(args.reference, args.threads)
    import numpy as np
    from PIL import Image
    from safetensors.torch import save_file
    model, meta = load_torch_model(torch, args.model)
    mean = torch.tensor(json.loads(meta["mean"]), dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(json.loads(meta["std"]), dtype=torch.float32).view(1, -1, 1, 1)
    mode = "RGB" if int(meta["in_channels"]) == 3 else "L"
    arrays = [np.asarray(Image.open(p).convert(mode), dtype=np.float32) / 255.0 for p in args.images]
    x = torch.from_numpy(np.stack(arrays))
    x = x.permute(0, 3, 1, 2) if x.dim() == 4 else x.unsqueeze(1)
    x = ((x - mean) / std).contiguous()
    with torch.inference_mode():
        features = model(x)
    save_file({"features": features.contiguous()}, args.out)


# ---------------------------------------------------------------------------------------
# Driver side.

def mgecl_time(binary, model, batch, repeats, engine, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out, rss = run_measured([binary, model, str(batch), str(repeats), engine], env)
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mib"] = rss
    return result


def torch_time_child(args, model, batch, repeats, layout):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "time", "--model", model,
           "--batch", str(batch), "--repeats", str(repeats), "--layout", layout,
           "--reference", args.reference, "--threads", str(args.threads)]
    out, rss = run_measured(cmd)
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mib"] = rss
    return result


def write_pngs(folder, n, size):
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        img = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        path = os.path.join(folder, f"{i:02d}.png")
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resnet12", help="ResNet-12 model (84x84; e.g. resnet12_full.safetensors)")
    ap.add_argument("--conv4", default=os.path.join(ROOT, "tests/data/conv4_gray.safetensors"),
                    help="Conv-4 model (28x28)")
    ap.add_argument("--reference", default=os.path.join(ROOT, "crates/mgecl-train/tests/data/train"),
                    help="folder holding ref_models.py (default: the repository's copy)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved repetitions of each configuration; the best round counts")
    ap.add_argument("--engine", default="auto", help="mgecl engine: auto or candle")
    ap.add_argument("--bench-bin", default=None, help="bench_embed binary")
    ap.add_argument("--mgecl-bin", default=None, help="mgecl binary")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--skip-memory-job", action="store_true")
    # Worker mode (internal).
    ap.add_argument("--worker", choices=["time", "embed"])
    ap.add_argument("--model")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--layout")
    ap.add_argument("--out")
    ap.add_argument("images", nargs="*")
    args = ap.parse_args()
    if args.worker == "time":
        return torch_time(args)
    if args.worker == "embed":
        return torch_embed(args)

    bench_bin = args.bench_bin or os.path.join(target_dir(), "release/examples/bench_embed")
    mgecl_bin = args.mgecl_bin or os.path.join(target_dir(), "release/mgecl")
    configs = []
    if args.resnet12:
        configs += [("ResNet-12", "84x84", args.resnet12, b) for b in (1, 5, 25)]
    configs += [("Conv-4", "28x28", args.conv4, b) for b in (1, 100)]

    load_before = os.getloadavg()
    rows = []
    def better(a, b):
        """The faster of two results, keeping the larger peak RSS of the two."""
        if a is None:
            return b
        fast = max(a, b, key=lambda r: r["images_per_s"])
        return dict(fast, peak_rss_mib=max(a["peak_rss_mib"], b["peak_rss_mib"]))

    for arch, size, model, batch in configs:
        repeats = max(5, 50 // batch)
        ours = nchw = cl = None
        # Rounds interleave the three jobs, so a busy spell on the machine hits them alike;
        # each side keeps its best round.
        for _ in range(args.rounds):
            ours = better(ours, mgecl_time(bench_bin, model, batch, repeats, args.engine, args.threads))
            nchw = better(nchw, torch_time_child(args, model, batch, repeats, "nchw"))
            cl = better(cl, torch_time_child(args, model, batch, repeats, "channels_last"))
        best = max(nchw, cl, key=lambda r: r["images_per_s"])
        row = {"arch": arch, "input": size, "batch": batch, "mgecl": ours,
               "torch_nchw": nchw, "torch_channels_last": cl,
               "ratio": ours["images_per_s"] / best["images_per_s"]}
        rows.append(row)
        print(f"{arch} {size} batch {batch}: mgecl {ours['images_per_s']:.1f} img/s, "
              f"torch {nchw['images_per_s']:.1f} (NCHW) / {cl['images_per_s']:.1f} (CL), "
              f"ratio {row['ratio']:.2f}", file=sys.stderr)

    memory = None
    if args.resnet12 and not args.skip_memory_job:
        with tempfile.TemporaryDirectory() as tmp:
            images = write_pngs(tmp, 25, 84)
            _, ours_rss = run_measured([mgecl_bin, "embed", "--model", args.resnet12,
                                        "--out", os.path.join(tmp, "mgecl.safetensors"), *images],
                                       dict(os.environ, RAYON_NUM_THREADS=str(args.threads)))
            _, torch_rss = run_measured([sys.executable, os.path.abspath(__file__), "--worker", "embed",
                                         "--model", args.resnet12, "--reference", args.reference,
                                         "--threads", str(args.threads),
                                         "--out", os.path.join(tmp, "torch.safetensors"), *images])
            from safetensors.numpy import load_file
            a = load_file(os.path.join(tmp, "mgecl.safetensors"))["features"]
            b = load_file(os.path.join(tmp, "torch.safetensors"))["features"]
            memory = {"mgecl_peak_rss_mib": ours_rss, "torch_peak_rss_mib": torch_rss,
                      "features_max_abs_diff": float(abs(a - b).max())}
    load_after = os.getloadavg()

    import torch
    print(f"\nmgecl engine {args.engine} vs PyTorch {torch.__version__} eager, {args.threads} threads, "
          f"best of {args.rounds} rounds; 1-min load average before {load_before[0]:.2f}, "
          f"after {load_after[0]:.2f}\n")
    print("| model | input | batch | mgecl img/s | PyTorch NCHW img/s | PyTorch channels_last img/s "
          "| ratio (mgecl / best PyTorch) | mgecl peak RSS MiB | PyTorch peak RSS MiB (NCHW / CL) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['input']} | {r['batch']} | {r['mgecl']['images_per_s']:.1f} "
              f"| {r['torch_nchw']['images_per_s']:.1f} | {r['torch_channels_last']['images_per_s']:.1f} "
              f"| {r['ratio']:.2f} | {r['mgecl']['peak_rss_mib']:.0f} "
              f"| {r['torch_nchw']['peak_rss_mib']:.0f} / {r['torch_channels_last']['peak_rss_mib']:.0f} |")
    if memory:
        print(f"\n`embed` of 25 PNGs (84x84) with {os.path.basename(args.resnet12)}: peak RSS mgecl "
              f"{memory['mgecl_peak_rss_mib']:.0f} MiB, PyTorch {memory['torch_peak_rss_mib']:.0f} MiB; "
              f"max |feature difference| {memory['features_max_abs_diff']:.2e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "memory_job": memory, "load_before": load_before,
                       "load_after": load_after, "threads": args.threads}, fh, indent=1)


if __name__ == "__main__":
    main()
