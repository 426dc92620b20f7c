"""`mgecl label` on a Ray cluster: the same CSV, the embedding spread over the cluster.

    python -m mgecl.ray label --address ADDR --model M --support DIR --images DIR \\
        --out labels.csv [--report report.html] [--review-below 0.8] [--label-next 20] \\
        [--classifier prototype] [--raw-probabilities] [--augmented-copies N] \\
        [--augmentation rotate] [--[no-]augment-queries] [--inductive] [--batch-size 64] \\
        [--workers N] [--threads 1] [--strict] [--resume]

Task settings not given are the model's recommended ones (Model.task_options), as for
`mgecl label`.

Needs `pip install "./bindings/python[ray]"`. The support set is fitted once, on the driver;
the model file and the fitted task file are put in Ray's object store and every worker loads
them once (a Ray Data actor per worker, not per batch). Ray Data hands the actors the image
files in batches; each batch is read, embedded as the task embeds queries (with their augmented
copies under --augment-queries) and labelled with the task (its CSV rows), and
its features come back to the driver, which ranks the images to label next over all of them
(as `mgecl label` does) and writes the CSV atomically. As in `mgecl label`, the images are
answered together (transductively) unless --inductive: the workers only embed, and the driver labels all the images that could be embedded in one
call (Task.label_csv over all their features, which refines the class prototypes with them
once), the failed images' rows put back in their places. Rows are ordered by path, whatever the
number of workers; a failed worker's batches are retried by Ray (actors restarted, tasks
retried) and each image's row is kept once.

As in `mgecl label`, a file that cannot be read or decoded, or breaks an image limit, does not
stop the job: it gets a row with an empty label and the reason (naming the file) in the `error`
column, and is left out of the "label next" ranking; --strict stops at the first such file
instead (non-zero exit, no CSV). The folder is listed as `mgecl label` lists it (the same image
extensions, HEIC/HEIF/AVIF included so that they get their "convert them" row).

--resume: the driver appends every batch it receives (rows and features, each line with a
checksum, synced to disk) to OUT.ray-progress; a job restarted with the same flags and
--resume labels only the images not in it, and the CSV is the same as an uninterrupted run's.
The progress file is removed when the CSV is written.

The folders (--model, --support, --images) must be readable at the same path on every node
(a shared or replicated file system), as for Ray Data's file readers. --report draws the HTML
page from the CSV on the driver with `mgecl report` (the command-line tool: MGECL_CLI, else
`mgecl` on PATH).
"""

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import ray

import mgecl

# The formats the library decodes (mgecl::preprocess::IMAGE_EXTENSIONS) and those `mgecl
# label` lists anyway to report them as unsupported (UNSUPPORTED_IMAGE_EXTENSIONS).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
UNSUPPORTED_SUFFIXES = (".heic", ".heif", ".avif")
# The errors that are one image's (its file), not the job's.
IMAGE_ERRORS = (mgecl.STATUS["IO"], mgecl.STATUS["INVALID_IMAGE"], mgecl.STATUS["LIMIT_EXCEEDED"])


def images_under(root):
    """The image files under `root` (symbolic links are not followed), in `mgecl label`'s
    order: by path, compared component by component."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
        for name in files:
            path = os.path.join(folder, name)
            if name.lower().endswith(IMAGE_SUFFIXES + UNSUPPORTED_SUFFIXES) \
                    and os.path.isfile(path) and not os.path.islink(path):
                found.append(os.path.relpath(path, root).split(os.sep))
    found.sort()
    return ["/".join(parts) for parts in found]


def csv_field(text):
    """One CSV field as the library writes it: quoted when it holds a comma, a quote or a
    line break."""
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def failed_row(path, error):
    """The CSV row of an image that could not be labelled (the library's layout)."""
    return csv_field(path) + ",,,,,,,," + csv_field(error)


def embed_each(task, files, strict=False):
    """Each file's query features (or None) and the message of the error that made it
    unusable (or None). The files are embedded together; when one of them cannot be used,
    each is embedded alone to find which (with `strict`, its error is raised instead)."""
    try:
        return list(task.embed_queries(files)), [None] * len(files)
    except mgecl.Error as e:
        if e.status not in IMAGE_ERRORS or strict:
            raise
    features, errors = [], []
    for file in files:
        try:
            features.append(task.embed_queries([file])[0])
            errors.append(None)
        except mgecl.Error as e:
            if e.status not in IMAGE_ERRORS:
                raise
            features.append(None)
            errors.append(e.message)
    return features, errors


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
    # Transductive by default, as mgecl label.
    options["transductive"] = not args.inductive
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
    """A Ray Data actor: the model and the task loaded once, then batch after batch. A
    transductive task's batches are only embedded (their images' rows are empty): the driver
    answers all the images together."""

    def __init__(self, model_bytes, task_bytes, review_below, strict):
        self.model = mgecl.Model.from_bytes(ray.get(model_bytes))
        self.task = mgecl.Task.from_bytes(ray.get(task_bytes), self.model)
        self.review_below = review_below
        self.strict = strict
        self.label_rows = not self.task.options["transductive"]

    def __call__(self, batch):
        paths = [str(p) for p in batch["path"]]
        # By path, so that errors name the file as mgecl label's do.
        features, errors = embed_each(self.task, [str(f) for f in batch["file"]], self.strict)
        good = [i for i, error in enumerate(errors) if error is None]
        rows = [failed_row(path, error) if error is not None else None
                for path, error in zip(paths, errors)]
        matrix = np.zeros((len(paths), self.model.feature_dim), dtype=np.float32)
        if good:
            matrix[good] = np.asarray([features[i] for i in good], dtype=np.float32)
        if good and self.label_rows:
            # The batch's CSV rows (header dropped; no ranking: that needs every image).
            csv = self.task.label_csv(matrix[good], [paths[i] for i in good],
                                      self.review_below, 0)
            for i, row in zip(good, csv.split("\n")[1:-1]):
                rows[i] = row
        elif good:
            for i in good:
                rows[i] = ""  # labelled by the driver, with all the other images
        return {"index": batch["index"], "row": np.array(rows, dtype=object),
                "failed": np.array([error is not None for error in errors]),
                "features": matrix}


class Progress:
    """OUT.ray-progress: the batches the driver has received, so that a restarted job
    (--resume) does not redo them. A header line naming the job, then one line per batch
    (a CRC-32 and the JSON of its indices, rows, failed flags and features), each flushed and
    synced before the next is taken; a line cut short by a kill fails its CRC and is dropped
    (with anything after it) on resume."""

    FORMAT = "mgecl-ray-label-progress/1"

    def __init__(self, out, job):
        self.path = out + ".ray-progress"
        self.job = job
        self.file = None

    def start(self, resume, rows, failed, features):
        """Opens the file (continuing it with `resume`), filling `rows`, `failed` and
        `features` from it; the number of images it held."""
        done = 0
        if resume and os.path.exists(self.path):
            with open(self.path, "rb") as f:
                data = f.read()
            lines = data.split(b"\n")
            try:
                header = json.loads(lines[0])
            except ValueError:
                header = None
            if not isinstance(header, dict) or header.get("format") != self.FORMAT \
                    or header.get("job") != self.job:
                raise SystemExit(f"error: {self.path} was written by another job (other "
                                 "images, support examples, model or options); remove it, or "
                                 "run without --resume to start over")
            whole = len(lines[0]) + 1
            for line in lines[1:-1]:  # the last piece has no line end: never whole
                record = self._record(line)
                if record is None:
                    break
                for index, row, bad, feature in zip(*record):
                    if rows[index] is None:
                        done += 1
                    rows[index], failed[index], features[index] = row, bad, feature
                whole += len(line) + 1
            self.file = open(self.path, "r+b")
            self.file.truncate(whole)
            self.file.seek(whole)
        else:
            if os.path.exists(self.path):
                print(f"note: starting over; {self.path} of an earlier run is replaced "
                      "(--resume continues it)", file=sys.stderr)
            header = json.dumps({"format": self.FORMAT, "job": self.job}).encode() + b"\n"
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path) or ".",
                                       prefix=".mgecl-ray-progress-")
            with os.fdopen(fd, "wb") as f:
                f.write(header)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self.file = open(self.path, "ab")
        return done

    @staticmethod
    def _record(line):
        crc, _, payload = line.partition(b" ")
        try:
            if int(crc, 16) != zlib.crc32(payload):
                return None
            record = json.loads(payload)
            features = np.frombuffer(base64.b64decode(record["features"]), dtype=np.float32)
            features = features.reshape(len(record["index"]), -1)
            return record["index"], record["row"], record["failed"], features
        except (ValueError, KeyError, TypeError):
            return None

    def append(self, indices, rows, failed, features):
        payload = json.dumps({
            "index": [int(i) for i in indices], "row": [str(r) for r in rows],
            "failed": [bool(b) for b in failed],
            "features": base64.b64encode(
                np.ascontiguousarray(features, dtype=np.float32).tobytes()).decode(),
        }).encode()
        self.file.write(b"%08x " % zlib.crc32(payload) + payload + b"\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def remove(self):
        self.file.close()
        os.unlink(self.path)


def job_id(args, options, model_bytes, paths):
    """What a resumed job must share with the one that wrote the progress file: the model,
    the support images, the options and the image paths."""
    digest = hashlib.sha256(model_bytes)
    for label in sorted(os.listdir(args.support)):
        folder = os.path.join(args.support, label)
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                path = os.path.join(folder, name)
                if os.path.isfile(path):
                    digest.update(f"{label}/{name}\0".encode())
                    with open(path, "rb") as f:
                        digest.update(hashlib.sha256(f.read()).digest())
    settings = {"options": options, "review_below": args.review_below, "paths": paths,
                "images": os.path.abspath(args.images)}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


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
        raise SystemExit(f"error: no image files under {args.images} (supported: "
                         f"{', '.join(s[1:] for s in IMAGE_SUFFIXES)})")
    images = os.path.abspath(args.images)
    rows = [None] * len(paths)
    failed = [False] * len(paths)
    features = np.zeros((len(paths), model.feature_dim), dtype=np.float32)
    progress = Progress(os.path.abspath(args.out), job_id(args, options, model_bytes, paths))
    done = progress.start(args.resume, rows, failed, features)
    if args.resume and done:
        print(f"resuming: {done} of {len(paths)} images done ({progress.path})", file=sys.stderr)
    items = [{"index": i, "path": p, "file": os.path.join(images, *p.split("/"))}
             for i, p in enumerate(paths) if rows[i] is None]

    if items:
        ray.init(address=args.address, log_to_driver=False)
        workers = args.workers or max(1, int(ray.cluster_resources().get("CPU", 1))
                                      // args.threads)
        model_ref, task_ref = ray.put(model_bytes), ray.put(task_bytes)
        dataset = ray.data.from_items(items,
                                      override_num_blocks=max(1, len(items) // args.batch_size))
        # One stage: reading in separate tasks would need CPUs the labelling actors hold.
        labelled = dataset.map_batches(
            Labeller, batch_size=args.batch_size,
            fn_constructor_args=(model_ref, task_ref, args.review_below, args.strict),
            concurrency=workers, num_cpus=args.threads, max_restarts=-1, max_task_retries=-1,
            # The library's CPU kernels use as many threads as the actor has CPUs.
            runtime_env={"env_vars": {"RAYON_NUM_THREADS": str(args.threads)}})
        try:
            for batch in labelled.iter_batches(batch_size=None):
                progress.append(batch["index"], batch["row"], batch["failed"],
                                batch["features"])
                for index, row, bad, feature in zip(batch["index"], batch["row"],
                                                    batch["failed"], batch["features"]):
                    # A retried batch may deliver an image again: its row is the same.
                    rows[int(index)] = row
                    failed[int(index)] = bool(bad)
                    features[int(index)] = feature
        except Exception as e:
            if args.strict:
                progress.remove()
                raise SystemExit(f"error: {e}")
            raise
    missing = [paths[i] for i, row in enumerate(rows) if row is None]
    if missing:
        raise SystemExit(f"error: {len(missing)} images came back unlabelled, e.g. {missing[0]}")

    good = [i for i in range(len(paths)) if not failed[i]]
    if options["transductive"] and good:
        # One call over every image that was embedded, as mgecl label makes it: the batch
        # refines the prototypes once, and ranks the images to label next.
        csv = task.label_csv(features[good], [paths[i] for i in good], args.review_below,
                             args.label_next).split("\n")
        header = csv[0]
        for i, row in zip(good, csv[1:-1]):
            rows[i] = row
    else:
        # The ranking is over the images that were labelled, as in mgecl label.
        ranks = {}
        if good:
            ranks = {good[row]: rank + 1 for rank, (row, _) in
                     enumerate(task.label_next(features[good], args.label_next))}
        # The header as the library writes it (the CSV of one row, without its row).
        first = good[:1] or [0]
        header = task.label_csv(features[first], paths[:1], args.review_below,
                                0).split("\n")[0]
        for i in good:
            # The batch rows end with empty label_next and error fields: the rank goes before
            # the last comma.
            rows[i] = rows[i][:-1] + (str(ranks[i]) if i in ranks else "") + ","
    text = "\n".join([header] + rows) + "\n"
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
    progress.remove()
    if args.report:
        subprocess.run([mgecl_command(), "report", "--csv", out, "--support", args.support,
                        "--images", args.images, "--out", args.report,
                        "--review-below", str(args.review_below)], check=True)
    review = sum(1 for i, row in enumerate(rows) if not failed[i] and ",true," in row)
    print(f"labelled {len(good)} of {len(paths)} images into {len(task.classes)} classes: "
          f"{review} to review, {len(paths) - len(good)} failed (error column); "
          f"wrote {args.out}", file=sys.stderr)
    for i in [i for i in range(len(paths)) if failed[i]][:5]:
        print(f"not labelled: {paths[i]}", file=sys.stderr)


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
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--transductive", action="store_true",
                      help="answer all the images together (the default, as mgecl label): the "
                      "class prototypes are refined with them before they are labelled (at "
                      "least 2 images per class, else the usual answers)")
    mode.add_argument("--inductive", action="store_true",
                      help="answer each image on its own, as mgecl label --inductive")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None,
                   help="labelling actors (default: the cluster's CPUs / --threads)")
    p.add_argument("--threads", type=int, default=1, help="CPUs (threads) per labelling actor")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first file that cannot be read or decoded (no CSV) instead "
                   "of giving it a row with the error")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted job from OUT.ray-progress (same flags)")
    args = parser.parse_args(argv)
    label(args)


if __name__ == "__main__":
    main()
