"""Throughput of `python -m mgecl.ray label` with 1 and 2 worker CPUs, next to `mgecl label`.

    python scripts/bench/ray_label.py [--images 10500] [--rounds 2]

Run with the Python of a venv holding `pip install "./bindings/python[ray]"` (its `ray`
command starts the cluster), from the repository root after `cargo build --release -p
mgecl-cli`. Generates the drawings of bindings/python/tests/test_ray.py (10 classes, 3
examples each), starts a head and a worker node of one CPU each on 127.0.0.1, and times, in
interleaved rounds: `mgecl label` on one thread (RAYON_NUM_THREADS=1) and on two, and the Ray
job with one and with two labelling workers of one CPU each. Wall-clock seconds include each
command's start (process, Ray driver, dataset). Prints a markdown table.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python", "tests"))
import test_ray  # noqa: E402

MODEL = os.path.join(ROOT, "models", "omniglot-conv4.safetensors")
CLI = os.environ.get("MGECL_CLI", os.path.join(ROOT, "target", "release", "mgecl"))


def timed(command, env=None):
    started = time.monotonic()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10500)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="mgecl-ray-bench-")
    test_ray.PER_CLASS = args.images // test_ray.CLASSES + test_ray.SHOTS
    test_ray.make_images(scratch)
    support, images = os.path.join(scratch, "support"), os.path.join(scratch, "images")
    n = sum(len(files) for _, _, files in os.walk(images))
    ray = test_ray.RAY
    port = test_ray.free_port()
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    subprocess.run([ray, "start", "--head", f"--port={port}", "--include-dashboard=false",
                    *common], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", *common], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cases = {
        "mgecl label, 1 thread": lambda out: timed(
            [CLI, "label", "--model", MODEL, "--support", support, "--images", images,
             "--out", out], env=dict(os.environ, RAYON_NUM_THREADS="1")),
        "mgecl label, 2 threads": lambda out: timed(
            [CLI, "label", "--model", MODEL, "--support", support, "--images", images,
             "--out", out]),
    }
    for workers in (1, 2):
        cases[f"mgecl.ray label, {workers} worker CPU{'s' if workers > 1 else ''}"] = (
            lambda out, w=workers: timed(
                [sys.executable, "-m", "mgecl.ray", "label", "--address", f"127.0.0.1:{port}",
                 "--model", MODEL, "--support", support, "--images", images, "--out", out,
                 "--workers", str(w), "--threads", "1"]))
    seconds = {name: [] for name in cases}
    try:
        for _ in range(args.rounds):
            for name, run in cases.items():
                seconds[name].append(run(os.path.join(scratch, "out.csv")))
    finally:
        subprocess.run([ray, "stop", "--force"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(scratch, ignore_errors=True)
    base = min(seconds["mgecl label, 1 thread"])
    print(f"{n} images (28x28 PNG), Conv-4 shipped model, best of {args.rounds} interleaved rounds\n")
    print("| job | seconds | images/s | vs mgecl label, 1 thread: extra ms/image |")
    print("|---|---|---|---|")
    for name, values in seconds.items():
        best = min(values)
        print(f"| {name} | {best:.1f} | {n / best:.0f} | {1000 * (best - base) / n:+.2f} |")


if __name__ == "__main__":
    main()
