"""`mgecl label` with and without `--transductive` on folders of photos like real ones: classes
of unequal sizes and photos of classes absent from the support. How accurate the proposed
labels are, and how much of the wrong and of the unknown photos the review list catches.

    python3 scripts/bench/label_photos.py [--data ../shared/data/miniimagenet]
        [--model models/miniimagenet-resnet12.safetensors] [--cases 20] [--classes 5]
        [--shots 1] [--unknown 3] [--per-unknown 20] [--min 5] [--max 100] [--seed 0]

Each case draws `--classes` val classes (the support: `--shots` photos each), gives each a
number of photos to label drawn uniformly from [`--min`, `--max`], and adds `--per-unknown`
photos of each of `--unknown` other val classes. Both runs label the same folder with the
model's recommended settings. Standard library only; runs target/release/mgecl (MGECL
overrides). Prints one line per mode with the totals over the cases and the seconds spent.
"""
import argparse
import csv
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time


def place(source, target):
    """A hard link (mgecl label does not follow symbolic links), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/miniimagenet")
    parser.add_argument("--model", default="models/miniimagenet-resnet12.safetensors")
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--unknown", type=int, default=3)
    parser.add_argument("--per-unknown", type=int, default=20)
    parser.add_argument("--min", type=int, default=5)
    parser.add_argument("--max", type=int, default=100)
    parser.add_argument("--review-below", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    mgecl = os.environ.get("MGECL", "target/release/mgecl")
    root = os.path.join(args.data, "images")
    with open(os.path.join(args.data, "splits", "val_classes.txt")) as f:
        classes = [line.strip() for line in f if line.strip()]
    rng = random.Random(args.seed)
    modes = {"inductive": ["--inductive"], "transductive": ["--transductive"]}
    totals = {m: dict(known=0, correct=0, wrong=0, wrong_flagged=0, correct_flagged=0,
                      unknown=0, unknown_flagged=0, seconds=0.0) for m in modes}
    with tempfile.TemporaryDirectory(prefix="mgecl-label-photos-") as work:
        for case in range(args.cases):
            chosen = rng.sample(classes, args.classes + args.unknown)
            known, unknown = chosen[:args.classes], chosen[args.classes:]
            base = os.path.join(work, f"case{case}")
            truth = {}
            for c in chosen:
                photos = sorted(os.listdir(os.path.join(root, c)))
                rng.shuffle(photos)
                if c in known:
                    support, photos = photos[:args.shots], photos[args.shots:]
                    os.makedirs(os.path.join(base, "support", c))
                    for p in support:
                        place(os.path.join(root, c, p), os.path.join(base, "support", c, p))
                    count = rng.randint(args.min, args.max)
                else:
                    count = args.per_unknown
                os.makedirs(os.path.join(base, "images", c), exist_ok=True)
                for p in photos[:count]:
                    # The folder names the true class; the labeller sees paths, not answers.
                    place(os.path.join(root, c, p), os.path.join(base, "images", c, p))
                    truth[f"{c}/{p}"] = c if c in known else None
            for mode, flags in modes.items():
                out = os.path.join(base, f"{mode}.csv")
                started = time.monotonic()
                subprocess.run([mgecl, "label", "--model", args.model,
                                "--support", os.path.join(base, "support"),
                                "--images", os.path.join(base, "images"), "--out", out,
                                "--review-below", str(args.review_below), *flags],
                               check=True, stderr=subprocess.DEVNULL)
                t = totals[mode]
                t["seconds"] += time.monotonic() - started
                with open(out, newline="") as f:
                    for row in csv.DictReader(f):
                        review = row["needs_review"] == "true"
                        expected = truth[row["path"]]
                        if expected is None:
                            t["unknown"] += 1
                            t["unknown_flagged"] += review
                        else:
                            t["known"] += 1
                            right = row["label"] == expected
                            t["correct"] += right
                            t["wrong"] += not right
                            t["wrong_flagged"] += (not right) and review
                            t["correct_flagged"] += right and review
    print(f"{args.cases} cases: {args.classes} classes x {args.shots} shots, "
          f"{args.min}-{args.max} photos each, {args.unknown} unknown classes x "
          f"{args.per_unknown}; review below {args.review_below}")
    for mode, t in totals.items():
        print(f"{mode:12s} accuracy {100 * t['correct'] / t['known']:.1f}% of {t['known']} known "
              f"photos; review list: {t['wrong_flagged']}/{t['wrong']} wrong, "
              f"{t['unknown_flagged']}/{t['unknown']} unknown, "
              f"{t['correct_flagged']}/{t['correct']} right ones; {t['seconds']:.0f} s")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
