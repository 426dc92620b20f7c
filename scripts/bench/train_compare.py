#!/usr/bin/env python3
"""One training step of mgecl against PyTorch eager, interleaved in one run on one machine.

A training step is: forward of the backbone in train mode (BatchNorm on batch statistics),
a 790-class linear head on the pooled features, mean cross-entropy, backward, and an SGD
update of every backbone and head parameter (lr 0.05, momentum 0.9, weight decay 5e-4),
on a random normalised batch of 64 images with random labels.

Configurations (`--configs`, comma-separated subset; default all three):

    conv4-28       Conv-4 width 64, 1 channel, 28x28
    resnet12-32    ResNet-12 widths 64-160-320-640, 3 channels, 32x32
    resnet12-84    ResNet-12 widths 64-160-320-640, 3 channels, 84x84

Each job runs in its own process, so that its peak resident memory (ru_maxrss from
os.wait4) is its own:

  * mgecl: `$CARGO_TARGET_DIR/release/examples/train_throughput ARCH SIZE BATCH [ENGINE]`
    (default target dir `target/` of this repository; ENGINE only with `--engine`), with
    RAYON_NUM_THREADS=THREADS. It runs 4 steps
    and prints one line per step, e.g. `conv4 28x28 batch 64 step 3: 0.123 s, 520.3 img/s`;
    step 0 is warm-up and the best of steps 1..3 counts.
  * PyTorch: this script in its hidden `--torch-job ARCH SIZE BATCH THREADS` mode, the models
    of `crates/mgecl-train/tests/data/train/ref_models.py`, NCHW float32, `torch.set_num_threads(THREADS)`;
    1 warm-up step and 3 timed steps, the best counts.

For each configuration the two jobs alternate ROUNDS times (PyTorch, then mgecl) and each
keeps its best round, so that a busy spell on the machine hits both alike.
`mgecl/PyTorch` in the table is mgecl's images/s over PyTorch's (above 1: mgecl is faster).

Setup (once, from the repository root; the venv is gitignored):

    python3 -m venv scripts/bench/.venv
    scripts/bench/.venv/bin/pip install -r scripts/bench/requirements.txt
    cargo build --release --example train_throughput

Run (from the repository root):

    scripts/bench/.venv/bin/python scripts/bench/train_compare.py --markdown
    scripts/bench/.venv/bin/python scripts/bench/train_compare.py --configs conv4-28,resnet12-32 --rounds 3 --threads 2

PyTorch side alone (one job, prints one JSON line):

    scripts/bench/.venv/bin/python scripts/bench/train_compare.py --torch-job conv4 28 64 2
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REF_MODELS_DIR = os.path.join(ROOT, "crates", "mgecl-train", "tests", "data", "train")

NUM_CLASSES = 790
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4
RESNET12_WIDTHS = (64, 160, 320, 640)
CONV4_WIDTH = 64
IN_CHANNELS = {"conv4": 1, "resnet12": 3}

# name -> (ARCH argument of both jobs, image size)
CONFIGS = {
    "conv4-28": ("conv4", 28),
    "resnet12-32": ("resnet12", 32),
    "resnet12-84": ("resnet12", 84),
}


def target_dir():
    return os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))


def run_measured(cmd, env=None):
    """Runs cmd, returns (stdout, stderr, peak RSS in MiB) of that one child.

    stderr goes to a temporary file rather than a pipe, so a chatty child cannot fill a pipe
    nobody is reading while stdout is being read."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env)
        out = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        err_text = err.read().decode(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err_text}")
    return out.decode(), err_text, usage.ru_maxrss / 1024.0


# ---------------------------------------------------------------------------------------
# Worker side: runs inside a child process.

def torch_job(arch, size, batch, threads, timed_steps=3):
    """One PyTorch training-throughput job; prints one JSON line."""
    sys.path.insert(0, REF_MODELS_DIR)
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from ref_models import Conv4, ResNet12

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    in_ch = IN_CHANNELS[arch]
    if arch == "conv4":
        net = Conv4(in_channels=in_ch, width=CONV4_WIDTH)
    elif arch == "resnet12":
        net = ResNet12(widths=RESNET12_WIDTHS, in_channels=in_ch)
    else:
        sys.exit(f"unknown arch {arch!r} (conv4 or resnet12)")
    head = nn.Linear(net.feature_dim, NUM_CLASSES)
    net.train()
    head.train()
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    # Random input that is already normalised (zero mean, unit variance), random labels.
    x = torch.randn(batch, in_ch, size, size)
    y = torch.randint(0, NUM_CLASSES, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(net(x)), y)
        loss.backward()
        opt.step()
        return loss.item()

    times, losses = [], []
    for _ in range(1 + timed_steps):
        start = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - start)
    warmup, times = times[0], times[1:]  # step 0 is warm-up
    best = min(times)
    print(json.dumps({"arch": arch, "size": size, "batch": batch, "threads": threads,
                      "step_s": times, "warmup_s": warmup, "best_s": best,
                      "images_per_s": batch / best, "losses": losses,
                      "torch": torch.__version__}))


# ---------------------------------------------------------------------------------------
# Driver side.

# `conv4 28x28 batch 64 step 3: 0.123 s, 520.3 img/s`
_NUM = r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
STEP_LINE = re.compile(r"^\s*(?P<arch>\S+)\s+(?P<h>\d+)x(?P<w>\d+)\s+batch\s+(?P<batch>\d+)\s+"
                       rf"step\s+(?P<step>\d+):\s*(?P<secs>{_NUM})\s*s\s*,\s*(?P<ips>{_NUM})\s*img/s")


def parse_mgecl_steps(out, arch, size, batch):
    """The per-step seconds of train_throughput's output, as {step: seconds}.

    Lines that are not step lines are ignored; a step line for another size or batch, or
    whose arch does not start with ARCH (ignoring case, '-' and '_'), is an error (the example
    and this script disagree). The seconds are taken as printed; images/s is recomputed
    from them."""
    def norm(a):
        return a.lower().replace("-", "").replace("_", "")

    steps = {}
    for line in out.splitlines():
        m = STEP_LINE.match(line)
        if not m:
            continue
        if (not norm(m["arch"]).startswith(norm(arch))
                or (int(m["h"]), int(m["w"]), int(m["batch"])) != (size, size, batch)):
            sys.exit(f"train_throughput printed {line.strip()!r}, expected {arch} {size}x{size} batch {batch}")
        steps[int(m["step"])] = float(m["secs"])
    return steps


def mgecl_job(binary, arch, size, batch, threads, engine=None):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cmd = [binary, arch, str(size), str(batch)] + ([engine] if engine else [])
    out, err, rss = run_measured(cmd, env)
    # The step lines are looked for on stdout and stderr alike.
    steps = parse_mgecl_steps(out + "\n" + err, arch, size, batch)
    timed = [s for k, s in sorted(steps.items()) if k >= 1]  # step 0 is warm-up
    if not timed:
        sys.exit(f"no timed step (step >= 1) in the output of {binary}:\n{out}\n{err}")
    best = min(timed)
    return {"step_s": timed, "warmup_s": steps.get(0), "best_s": best,
            "images_per_s": batch / best, "peak_rss_mib": rss}


def torch_job_child(arch, size, batch, threads):
    cmd = [sys.executable, os.path.abspath(__file__), "--torch-job", arch, str(size), str(batch), str(threads)]
    out, _, rss = run_measured(cmd)
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mib"] = rss
    return result


def better(a, b):
    """The faster of two results, keeping the larger peak RSS of the two."""
    if a is None:
        return b
    fast = min(a, b, key=lambda r: r["best_s"])
    return dict(fast, peak_rss_mib=max(a["peak_rss_mib"], b["peak_rss_mib"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2,
                    help="interleaved repetitions of each configuration; each side keeps its best (default 2)")
    ap.add_argument("--threads", type=int, default=2,
                    help="PyTorch intra-op threads and RAYON_NUM_THREADS for mgecl (default 2)")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma-separated subset of {', '.join(CONFIGS)} (default all)")
    ap.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--mgecl-bin", default=None,
                    help="train_throughput binary (default $CARGO_TARGET_DIR or target/, release/examples/)")
    ap.add_argument("--engine", default=None,
                    help="mgecl engine, passed as train_throughput's optional 4th argument (auto or candle; "
                         "default: not passed, the example's default)")
    ap.add_argument("--torch-only", action="store_true", help="skip the mgecl jobs")
    ap.add_argument("--torch-job", nargs=4, metavar=("ARCH", "SIZE", "BATCH", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.torch_job:
        arch, size, batch, threads = args.torch_job
        return torch_job(arch, int(size), int(batch), int(threads))

    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown or not names:
        ap.error(f"unknown configuration(s) {unknown}; choose from {', '.join(CONFIGS)}")
    binary = args.mgecl_bin or os.path.join(target_dir(), "release", "examples", "train_throughput")
    if not args.torch_only and not os.access(binary, os.X_OK):
        sys.exit(f"{binary} not found: cargo build --release --example train_throughput "
                 f"(or --mgecl-bin PATH, or --torch-only)")

    load_before = os.getloadavg()
    rows = []
    for name in names:
        arch, size = CONFIGS[name]
        theirs = ours = None
        for r in range(args.rounds):
            theirs = better(theirs, torch_job_child(arch, size, args.batch, args.threads))
            if not args.torch_only:
                ours = better(ours, mgecl_job(binary, arch, size, args.batch, args.threads, args.engine))
            print(f"{name} round {r + 1}/{args.rounds}: PyTorch best {theirs['best_s']:.3f} s"
                  + (f", mgecl best {ours['best_s']:.3f} s" if ours else ""), file=sys.stderr)
        ratio = ours["images_per_s"] / theirs["images_per_s"] if ours else None
        rows.append({"config": name, "arch": arch, "size": size, "batch": args.batch,
                     "torch": theirs, "mgecl": ours, "ratio": ratio})
        if not args.markdown:
            line = (f"{name} batch {args.batch}: PyTorch {theirs['best_s']:.3f} s/step "
                    f"({theirs['images_per_s']:.1f} img/s, peak RSS {theirs['peak_rss_mib']:.0f} MiB)")
            if ours:
                line += (f", mgecl {ours['best_s']:.3f} s/step ({ours['images_per_s']:.1f} img/s, "
                         f"peak RSS {ours['peak_rss_mib']:.0f} MiB), mgecl/PyTorch {ratio:.2f}")
            print(line, flush=True)
    load_after = os.getloadavg()

    torch_version = rows[0]["torch"].get("torch", "?")
    if args.markdown:
        engine = f" (engine {args.engine})" if args.engine else ""
        print(f"\nTraining step, batch {args.batch}, {NUM_CLASSES}-class linear head, SGD momentum {MOMENTUM}; "
              f"mgecl{engine} vs PyTorch {torch_version} eager (NCHW), threads {args.threads}, best of "
              f"{args.rounds} rounds x 3 steps; 1-min load average before {load_before[0]:.2f}, "
              f"after {load_after[0]:.2f}\n")
        print("| config | PyTorch s/step | PyTorch img/s | mgecl s/step | mgecl img/s | mgecl/PyTorch "
              "| peak RSS PyTorch MiB | peak RSS mgecl MiB |")
        print("|---|---|---|---|---|---|---|---|")
        for row in rows:
            t, m = row["torch"], row["mgecl"]
            cells = [row["config"], f"{t['best_s']:.3f}", f"{t['images_per_s']:.1f}",
                     f"{m['best_s']:.3f}" if m else "-", f"{m['images_per_s']:.1f}" if m else "-",
                     f"{row['ratio']:.2f}" if m else "-", f"{t['peak_rss_mib']:.0f}",
                     f"{m['peak_rss_mib']:.0f}" if m else "-"]
            print("| " + " | ".join(cells) + " |")
        print("\nmgecl/PyTorch: mgecl images/s over PyTorch images/s (above 1: mgecl is faster).")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "threads": args.threads, "rounds": args.rounds,
                       "load_before": load_before, "load_after": load_after,
                       "torch": torch_version}, fh, indent=1)


if __name__ == "__main__":
    main()
