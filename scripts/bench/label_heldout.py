"""`mgecl label` on held-out cases with classes absent from the support: how accurate the
proposed labels are, and how many of the wrong and of the unknown images the review list
catches.

    python3 scripts/bench/label_heldout.py [--data ../shared/data/omniglot] [--model models/omniglot-conv4.safetensors]
        [--classes 10] [--shots 5] [--unknown 5] [--review-below 0.8] [--seed 0] [--keep DIR]
        [--add 10]

One case per val alphabet: `--classes` characters drawn at random are the known classes
(`--shots` drawings each as the support), `--unknown` other characters of the same alphabet
are absent from the support; the images to label are the remaining drawings of the known
characters and every drawing of the unknown ones. Standard library only; runs
target/release/mgecl (MGECL overrides).

With --add K it also measures the "label next" list: the person labels the first K suggested
images (known ones join the support under their true class; unknown ones are set aside), the
folder is labelled again, and the accuracy on the known images left is compared with labelling
K images drawn at random instead (the same number of each kind moved out of the folder).
"""
import argparse
import csv
import os
import random
import shutil
import subprocess
import sys
import tempfile


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/omniglot")
    parser.add_argument("--model", default="models/omniglot-conv4.safetensors")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--unknown", type=int, default=5)
    parser.add_argument("--review-below", type=float, default=0.8)
    parser.add_argument("--classifier", default="prototype")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="keep the cases (and reports) in this folder")
    parser.add_argument("--repeats", type=int, default=1,
                        help="cases per alphabet (each with its own random characters)")
    parser.add_argument("--add", type=int, default=0,
                        help="label the first K suggestions, against K random images")
    args = parser.parse_args()
    mgecl = os.environ.get("MGECL", "target/release/mgecl")
    root = os.path.join(args.data, "images_background")
    with open(os.path.join(args.data, "splits", "val_alphabets.txt")) as f:
        alphabets = [line.strip() for line in f if line.strip()]
    rng = random.Random(args.seed)
    pick_rng = random.Random(args.seed + 1)
    work = args.keep or tempfile.mkdtemp(prefix="mgecl-label-")
    totals = dict(known=0, correct=0, wrong=0, wrong_flagged=0, unknown=0, unknown_flagged=0,
                  correct_flagged=0)
    gains = {"before": [0, 0], "suggested": [0, 0], "random": [0, 0]}
    for alphabet in [a for _ in range(args.repeats) for a in alphabets]:
        chars = sorted(os.listdir(os.path.join(root, alphabet)))
        chosen = rng.sample(chars, args.classes + args.unknown)
        known, unknown = chosen[:args.classes], chosen[args.classes:]
        case = os.path.join(work, alphabet)
        shutil.rmtree(case, ignore_errors=True)
        truth = {}
        for char in chosen:
            drawings = sorted(os.listdir(os.path.join(root, alphabet, char)))
            rng.shuffle(drawings)
            support = drawings[:args.shots] if char in known else []
            for name in support:
                os.makedirs(os.path.join(case, "support", char), exist_ok=True)
                shutil.copy(os.path.join(root, alphabet, char, name),
                            os.path.join(case, "support", char, name))
            for name in drawings[len(support):]:
                os.makedirs(os.path.join(case, "images"), exist_ok=True)
                shutil.copy(os.path.join(root, alphabet, char, name),
                            os.path.join(case, "images", name))
                truth[name] = char if char in known else None
        rows = label(mgecl, args, case, "labels.csv")
        case_totals = dict.fromkeys(totals, 0)
        for row in rows:
            char = truth[row["path"]]
            flagged = row["needs_review"] == "true"
            if char is None:
                case_totals["unknown"] += 1
                case_totals["unknown_flagged"] += flagged
            else:
                case_totals["known"] += 1
                if row["label"] == char:
                    case_totals["correct"] += 1
                    case_totals["correct_flagged"] += flagged
                else:
                    case_totals["wrong"] += 1
                    case_totals["wrong_flagged"] += flagged
        for k, v in case_totals.items():
            totals[k] += v
        print(f"{alphabet}: {describe(case_totals)}")
        if args.add:
            suggested = sorted((r for r in rows if r["label_next"]), key=lambda r: int(r["label_next"]))
            picks = [r["path"] for r in suggested[:args.add]]
            random_picks = pick_rng.sample([r["path"] for r in rows], len(picks))
            moved = set(picks) | set(random_picks)
            for row in rows:
                char = truth[row["path"]]
                if char is not None and row["path"] not in moved:
                    gains["before"][0] += row["label"] == char
                    gains["before"][1] += 1
            for name, chosen_paths in (("suggested", picks), ("random", random_picks)):
                variant = os.path.join(work, f"{alphabet}-{name}")
                shutil.rmtree(variant, ignore_errors=True)
                shutil.copytree(case, variant)
                for path in chosen_paths:
                    char = truth[path]
                    source = os.path.join(variant, "images", path)
                    if char is None:
                        os.remove(source)
                    else:
                        shutil.move(source, os.path.join(variant, "support", char, path))
                relabelled = label(mgecl, args, variant, "labels.csv")
                # Accuracy on the known images neither variant moved.
                for row in relabelled:
                    char = truth[row["path"]]
                    if char is not None and row["path"] not in moved:
                        gains[name][0] += row["label"] == char
                        gains[name][1] += 1
                if not args.keep:
                    shutil.rmtree(variant)

    print(f"all {len(alphabets) * args.repeats} cases: {describe(totals)}")
    if args.add:
        for name, (correct, total) in gains.items():
            print(f"{name} (labelling {args.add} images per case): accuracy "
                  f"{100 * correct / max(total, 1):.2f}% on the {total} known images left")
    if not args.keep:
        shutil.rmtree(work)


def label(mgecl, args, case, csv_name):
    out = os.path.join(case, csv_name)
    subprocess.run([mgecl, "label", "--model", args.model, "--support",
                    os.path.join(case, "support"), "--images", os.path.join(case, "images"),
                    "--out", out, "--report", os.path.join(case, "report.html"),
                    "--review-below", str(args.review_below), "--classifier", args.classifier,
                    "--label-next", str(max(args.add, 20))],
                   check=True, stderr=subprocess.DEVNULL)
    with open(out, newline="") as f:
        return list(csv.DictReader(f))


def describe(t):
    accuracy = t["correct"] / max(t["known"], 1)
    flagged = t["wrong_flagged"] + t["unknown_flagged"] + t["correct_flagged"]
    return (f"accuracy {100 * accuracy:.1f}% on {t['known']} known images; review list "
            f"catches {t['wrong_flagged']}/{t['wrong']} wrong and "
            f"{t['unknown_flagged']}/{t['unknown']} unknown; {flagged} images to review "
            f"({t['correct_flagged']} of them correct)")


if __name__ == "__main__":
    sys.exit(main())
