"""`mgecl label` on a Ray cluster: the same CSV, the embedding spread over the cluster.

    python -m mgecl.ray label --address ADDR --model M --support DIR --images DIR \\
        --out labels.csv [--report report.html] [--review-below 0.8] [--label-next 20] \\
        [--classifier prototype] [--raw-probabilities] [--augmented-copies N] \\
        [--augmentation rotate] [--[no-]augment-queries] [--batch-size 64] [--workers N] \\
        [--threads 1]

Task settings not given are the model's recommended ones (Model.task_options), as for
`mgecl label`.

Needs `pip install "./bindings/python[ray]"`. The support set is fitted once, on the driver;
the model file and the fitted task file are put in Ray's object store and every worker loads
them once (a Ray Data actor per worker, not per batch). Ray Data hands the actors the image
files in batches; each batch is read, embedded as the task embeds queries (with their augmented
copies under --augment-queries) and labelled with the task (its CSV rows), and
its features come back to the driver, which ranks the images to label next over all of them
(as `mgecl label` does) and writes the CSV atomically. Rows are ordered by path, whatever the
number of workers; a failed worker's batches are retried by Ray (actors restarted, tasks
retried) and each image's row is kept once.

The folders (--model, --support, --images) must be readable at the same path on every node
(a shared or replicated file system), as for Ray Data's file readers. --report draws the HTML
page from the CSV on the driver with `mgecl report` (the command-line tool: MGECL_CLI, else
`mgecl` on PATH).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import ray

import mgecl

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def images_under(root):
    """Every PNG/JPEG file under `root` (symbolic links to folders are not followed), in
    `mgecl label`'s order: by path, compared component by component."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
        for name in files:
            path = os.path.join(folder, name)
            if name.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(path) \
                    and not os.path.islink(path):
                found.append(os.path.relpath(path, root).split(os.sep))
    found.sort()
    return ["/".join(parts) for parts in found]


def task_options(model, args):
    """The task options of `mgecl label` with these flags: the model's recommended ones
    (Model.task_options) with the flags given over them; a recommended query augmentation
    lapses with --augmented-copies 0."""
    options = model.task_options
    options["raw_probabilities"] = args.raw_probabilities
    for key in ("classifier", "augmented_copies", "augmentation"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.augment_queries is not None:
        options["augment_queries"] = args.augment_queries
    elif options["augmented_copies"] == 0:
        options["augment_queries"] = False
    if options["augment_queries"] and options["augmented_copies"] == 0:
        raise SystemExit("error: --augment-queries needs --augmented-copies 1 or more")
    return options


def fit_support(model, support, options):
    """A task fitted on the class folders of `support` (as `mgecl label`: one folder per
    class, sorted; the images directly inside it, sorted)."""
    task = mgecl.Task(model, **options)
    for label in sorted(d for d in os.listdir(support)
                        if os.path.isdir(os.path.join(support, d))):
        task.add_class(label)
        folder = os.path.join(support, label)
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(path):
                task.add_example(label, path)
    task.fit()
    return task


class Labeller:
    """A Ray Data actor: the model and the task loaded once, then batch after batch."""

    def __init__(self, model_bytes, task_bytes, review_below):
        self.model = mgecl.Model.from_bytes(ray.get(model_bytes))
        self.task = mgecl.Task.from_bytes(ray.get(task_bytes), self.model)
        self.review_below = review_below

    def __call__(self, batch):
        paths = [str(p) for p in batch["path"]]
        images = []
        for file in batch["file"]:
            with open(str(file), "rb") as f:
                images.append(f.read())
        features = self.task.embed_queries(images)
        # The batch's CSV rows (header dropped; no ranking: that needs every image).
        csv = self.task.label_csv(features, paths, self.review_below, 0)
        rows = csv.split("\n")[1:-1]
        return {"index": batch["index"], "row": np.array(rows, dtype=object),
                "features": np.asarray(features, dtype=np.float32)}


def mgecl_command():
    """The `mgecl` command-line tool, or None."""
    return os.environ.get("MGECL_CLI") or shutil.which("mgecl")


def label(args):
    if args.report and not mgecl_command():
        raise SystemExit("error: --report needs the mgecl command (set MGECL_CLI or put mgecl "
                         "on PATH: cargo install --path crates/mgecl-cli)")
    model = mgecl.Model(args.model)
    options = task_options(model, args)
    task = fit_support(model, args.support, options)
    with tempfile.TemporaryDirectory() as scratch:
        task_file = os.path.join(scratch, "support.task")
        task.save(task_file)
        with open(task_file, "rb") as f:
            task_bytes = f.read()
    with open(args.model, "rb") as f:
        model_bytes = f.read()

    paths = images_under(args.images)
    if not paths:
        raise SystemExit(f"error: no PNG or JPEG images under {args.images}")
    images = os.path.abspath(args.images)
    items = [{"index": i, "path": p, "file": os.path.join(images, *p.split("/"))}
             for i, p in enumerate(paths)]

    ray.init(address=args.address, log_to_driver=False)
    workers = args.workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // args.threads)
    model_ref, task_ref = ray.put(model_bytes), ray.put(task_bytes)
    dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items) // args.batch_size))

    # One stage: reading in separate tasks would need CPUs the labelling actors hold.
    labelled = dataset.map_batches(
        Labeller, batch_size=args.batch_size,
        fn_constructor_args=(model_ref, task_ref, args.review_below),
        concurrency=workers, num_cpus=args.threads, max_restarts=-1, max_task_retries=-1,
        # The library's CPU kernels use as many threads as the actor has CPUs.
        runtime_env={"env_vars": {"RAYON_NUM_THREADS": str(args.threads)}})

    rows = [None] * len(paths)
    features = np.zeros((len(paths), model.feature_dim), dtype=np.float32)
    for batch in labelled.iter_batches(batch_size=None):
        for index, row, feature in zip(batch["index"], batch["row"], batch["features"]):
            # A retried batch may deliver an image again: its row is the same; keep one.
            rows[int(index)] = row
            features[int(index)] = feature
    missing = [paths[i] for i, row in enumerate(rows) if row is None]
    if missing:
        raise SystemExit(f"error: {len(missing)} images came back unlabelled, e.g. {missing[0]}")

    ranks = {row: rank + 1 for rank, (row, _) in
             enumerate(task.label_next(features, args.label_next))}
    # The header as the library writes it (the CSV of one row, without its row).
    header = task.label_csv(features[:1], paths[:1], args.review_below, 0).split("\n")[0]
    lines = [header]
    for i, row in enumerate(rows):
        # The batch rows end with an empty label_next field.
        lines.append(row + (str(ranks[i]) if i in ranks else ""))
    text = "\n".join(lines) + "\n"
    out = os.path.abspath(args.out)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out), prefix=".mgecl-label-")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
    if args.report:
        subprocess.run([mgecl_command(), "report", "--csv", out, "--support", args.support,
                        "--images", args.images, "--out", args.report,
                        "--review-below", str(args.review_below)], check=True)
    review = sum(1 for row in rows if ",true," in row)
    print(f"labelled {len(paths)} images into {len(task.classes)} classes: {review} to review; "
          f"wrote {args.out}", file=sys.stderr)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mgecl.ray")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("label", help="mgecl label on a Ray cluster")
    p.add_argument("--address", required=True, help="Ray cluster address (host:port, auto)")
    p.add_argument("--model", required=True)
    p.add_argument("--support", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--report", help="also write the HTML report (needs the mgecl command)")
    p.add_argument("--review-below", type=float, default=0.8)
    p.add_argument("--label-next", type=int, default=20)
    p.add_argument("--classifier", choices=sorted(mgecl.CLASSIFIERS),
                   help="default: the model's recommendation, else prototype")
    p.add_argument("--raw-probabilities", action="store_true")
    p.add_argument("--augmented-copies", type=int,
                   help="augmented copies embedded with each support image (0-8; 0 = off; "
                   "default: the model's recommendation, else 0)")
    p.add_argument("--augmentation", choices=sorted(mgecl.AUGMENTATIONS),
                   help="which copies: rotate (drawings, text) or flip-shift (photographs)")
    p.add_argument("--augment-queries", action="store_const", const=True,
                   help="also classify each image by the mean of it and its copies")
    p.add_argument("--no-augment-queries", dest="augment_queries", action="store_const",
                   const=False, help="classify each image alone, whatever the model recommends")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None,
                   help="labelling actors (default: the cluster's CPUs / --threads)")
    p.add_argument("--threads", type=int, default=1, help="CPUs (threads) per labelling actor")
    args = parser.parse_args(argv)
    label(args)


if __name__ == "__main__":
    main()
