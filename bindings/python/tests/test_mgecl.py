"""Tests of the Python binding on the Conv-4 fixture (run: python3 -m unittest discover -s
bindings/python/tests). MGECL_PY_NO_NUMPY=1 runs them without numpy."""

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
# MGECL_TEST_INSTALLED=1 (CI): test the installed package (pip install ./bindings/python)
# and fail if the source tree would be imported instead; otherwise the source tree.
INSTALLED = os.environ.get("MGECL_TEST_INSTALLED") == "1"
if not INSTALLED:
    sys.path.insert(0, os.path.dirname(HERE))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
DATA = os.path.join(ROOT, "tests", "data")
MODEL = os.path.join(DATA, "conv4_gray.safetensors")
IMAGES = [os.path.join(DATA, "conv4_gray_inputs", f"{i}.png") for i in range(4)]
LABELS = ["zero", "zero", "two", "two"]
# The command-line tool, whose answers are the Rust API's.
CLI = os.environ.get("MGECL_CLI", os.path.join(ROOT, "target", "release", "mgecl"))

import mgecl  # noqa: E402

np = mgecl.np


def rows(features):
    return [list(r) for r in features]


class LibraryTest(unittest.TestCase):
    @unittest.skipUnless(INSTALLED, "tests the source tree (MGECL_TEST_INSTALLED unset)")
    def test_the_installed_package_carries_its_library(self):
        package = os.path.dirname(os.path.abspath(mgecl.__file__))
        self.assertNotEqual(package, os.path.join(os.path.dirname(HERE), "mgecl"))
        self.assertEqual(os.path.dirname(os.path.abspath(mgecl.library_path)), package)
        self.assertTrue(os.path.basename(mgecl.library_path).startswith("_native"))

    def test_version(self):
        self.assertRegex(mgecl.version(), r"^\d+\.\d+\.\d+$")

    def test_status_codes_match_the_header(self):
        with open(os.path.join(ROOT, "include", "mgecl.h")) as f:
            header = f.read()
        codes = dict((n, int(v)) for n, v in re.findall(r"MGECL_STATUS_(\w+) = (\d+)", header))
        self.assertEqual(codes, mgecl.STATUS)
        for prefix, names in (("CLASSIFIER", mgecl.CLASSIFIERS),
                              ("AUGMENTATION", mgecl.AUGMENTATIONS)):
            codes = {n.lower().replace("_", "-"): int(v)
                     for n, v in re.findall(rf"MGECL_{prefix}_(\w+) = (\d+)", header)}
            self.assertEqual(codes, names)


class ModelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.model = mgecl.Model(MODEL)

    def test_info(self):
        info = self.model.info
        self.assertEqual(info["arch"], "conv4")
        self.assertEqual(info["feature_dim"], 64)
        self.assertEqual(info["image_size"], [28, 28])
        self.assertEqual(self.model.feature_dim, 64)

    def test_released_buffers_are_allocated_again(self):
        before = rows(self.model.embed(IMAGES))
        mgecl.release_buffers()
        self.assertEqual(rows(self.model.embed(IMAGES)), before)
        # Released by themselves after a short idle time, then allocated again.
        mgecl.set_buffer_idle_release(0.05)
        try:
            time.sleep(0.3)
            self.assertEqual(rows(self.model.embed(IMAGES)), before)
        finally:
            mgecl.set_buffer_idle_release(30)

    def test_embed_files_bytes_and_pixels(self):
        features = self.model.embed(IMAGES)
        if np is not None:
            self.assertEqual(features.shape, (4, 64))
            self.assertEqual(features.dtype, np.float32)
        else:
            self.assertEqual((len(features), len(features[0])), (4, 64))
        with open(IMAGES[1], "rb") as f:
            encoded = f.read()
        self.assertEqual(rows(self.model.embed([encoded])), rows(features)[1:2])
        tight = bytes((x * 9 + y * 5) % 256 for y in range(28) for x in range(28))
        padded = b"".join(tight[y * 28:(y + 1) * 28] + b"\xab" * 4 for y in range(28))
        a = self.model.embed([mgecl.Pixels(tight, 28, 28, 28, mgecl.PIXEL_GRAY8)])
        b = self.model.embed([mgecl.Pixels(padded, 28, 28, 32, mgecl.PIXEL_GRAY8)])
        self.assertEqual(rows(a), rows(b))
        if np is not None:
            array = np.frombuffer(tight, dtype=np.uint8).reshape(28, 28)
            self.assertEqual(rows(self.model.embed([array])), rows(a))
            # A strided view (every other column of a wider image) is made contiguous.
            wide = np.repeat(array, 2, axis=1)
            self.assertEqual(rows(self.model.embed([wide[:, ::2]])), rows(a))

    def test_errors_carry_status_and_message(self):
        with self.assertRaises(mgecl.Error) as e:
            mgecl.Model("/nonexistent/model.safetensors")
        self.assertEqual(e.exception.status, mgecl.STATUS_IO)
        self.assertEqual(e.exception.status_name, "MGECL_STATUS_IO")
        self.assertIn("/nonexistent/model.safetensors", e.exception.message)
        with self.assertRaises(mgecl.Error) as e:
            mgecl.Model(MODEL, device="tpu")
        self.assertEqual(e.exception.status, mgecl.STATUS_INVALID_ARGUMENT)
        with self.assertRaises(mgecl.Error) as e:
            mgecl.Model.from_bytes(b"not a model")
        self.assertEqual(e.exception.status, mgecl.STATUS_INVALID_MODEL)
        with self.assertRaises(mgecl.Error) as e:
            self.model.embed([b"\x00\x01\x02"])
        self.assertEqual(e.exception.status, mgecl.STATUS_INVALID_IMAGE)
        with self.assertRaises(mgecl.Error) as e:
            self.model.embed([])
        self.assertEqual(e.exception.status, mgecl.STATUS_INVALID_ARGUMENT)
        with self.assertRaises(TypeError):
            self.model.embed(IMAGES[0])

    def test_metadata_overrides_and_from_bytes(self):
        with open(MODEL, "rb") as f:
            data = f.read()
        inverted = mgecl.Model.from_bytes(data, metadata={"invert": "true"})
        self.assertTrue(inverted.info["invert"])
        self.assertNotEqual(inverted.info["fingerprint"], self.model.info["fingerprint"])
        inverted.close()
        with self.assertRaises(ValueError):
            inverted.embed(IMAGES)


class TaskTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.model = mgecl.Model(MODEL)

    def make_task(self, **options):
        task = mgecl.Task(self.model, **options)
        for label in ("zero", "two"):
            task.add_class(label)
        ids = [task.add_example(label, path) for label, path in zip(LABELS, IMAGES)]
        return task, ids

    def test_fit_classify_top_k(self):
        task, ids = self.make_task()
        self.assertEqual(task.classes, ["zero", "two"])
        self.assertEqual(task.class_examples(0), ids[:2])
        self.assertFalse(task.is_fitted)
        with self.assertRaises(mgecl.Error) as e:
            task.classify(IMAGES[0])
        self.assertEqual(e.exception.status, mgecl.STATUS_NOT_FITTED)
        report = task.fit()
        self.assertTrue(report["converged"])
        self.assertEqual((report["classes"], report["rows"]), (2, 4))
        predictions = task.classify_batch(IMAGES)
        self.assertEqual([p.label for p in predictions], LABELS)
        for path, p in zip(IMAGES, predictions):
            single = task.classify(path)
            self.assertEqual(single.class_index, p.class_index)
            self.assertAlmostEqual(single.probability, p.probability, places=12)
        top = task.top_k(IMAGES[3], 5)
        self.assertEqual([label for label, _ in top], ["two", "zero"])
        self.assertAlmostEqual(sum(p for _, p in top), 1.0, places=9)
        features = self.model.embed(IMAGES)
        from_feature = task.classify_feature(list(features[2]))
        self.assertEqual(from_feature.label, "two")
        # Label next: distinct rows, scores never increasing; lists work like arrays.
        ranked = task.label_next(features, 3)
        self.assertEqual(len(ranked), 3)
        self.assertEqual(len({row for row, _ in ranked}), 3)
        self.assertTrue(all(a[1] >= b[1] for a, b in zip(ranked, ranked[1:])))
        self.assertEqual(task.label_next([list(r) for r in features], 3), ranked)
        with self.assertRaises(mgecl.Error) as e:
            task.label_next([row[:-1] for row in features], 1)
        self.assertEqual(e.exception.status, mgecl.STATUS_INVALID_ARGUMENT)

    def test_label_paths_gives_damaged_files_an_error_row(self):
        task, _ = self.make_task()
        task.fit()
        with tempfile.TemporaryDirectory() as scratch:
            text = os.path.join(scratch, "notes.png")
            with open(text, "w") as f:
                f.write("not an image")
            missing = os.path.join(scratch, "missing.png")
            paths = [IMAGES[0], text, IMAGES[1], missing, IMAGES[2], IMAGES[3]]
            csv = task.label_paths(paths, 0.8, 2).splitlines()
        # The good files' rows are those of label_csv on their features alone.
        expected = task.label_csv(task.embed_queries(IMAGES), IMAGES, 0.8, 2).splitlines()
        self.assertEqual(csv[0], expected[0])
        self.assertTrue(csv[0].endswith(",error"))
        self.assertEqual([csv[i] for i in (1, 3, 5, 6)], expected[1:])
        for row, path in ((csv[2], text), (csv[4], missing)):
            self.assertTrue(row.startswith(path + ",,,,,,,,"), row)
            self.assertIn(path, row[len(path) + 8:])
        self.assertEqual(len(csv), 1 + len(paths))

    def test_transductive_option(self):
        self.assertFalse(self.model.task_options["transductive"])
        self.assertFalse(mgecl.Task(self.model).options["transductive"])
        task = mgecl.Task(self.model, transductive=True, classifier="logistic")
        self.assertTrue(task.options["transductive"])
        task.options = {**task.options, "transductive": False}
        self.assertEqual((task.options["transductive"], task.options["classifier"]),
                         (False, "logistic"))
        task.options = {"transductive": True}  # the others back to the model's
        self.assertEqual((task.options["transductive"], task.options["classifier"]),
                         (True, "prototype"))
        model = mgecl.Model(MODEL, metadata={"task_defaults": '{"transductive": true}'})
        self.assertTrue(model.task_options["transductive"])
        self.assertTrue(mgecl.Task(model).options["transductive"])
        self.assertFalse(mgecl.Task(model, transductive=False).options["transductive"])
        # Saved and loaded with the task.
        with tempfile.TemporaryDirectory() as scratch:
            mgecl.Task(self.model, transductive=True).save(os.path.join(scratch, "t.mgecl"))
            loaded = mgecl.Task.load(os.path.join(scratch, "t.mgecl"), self.model)
        self.assertTrue(loaded.options["transductive"])

    def one_shot_tasks(self):
        """An inductive and a transductive task, one example each: 2.png -> two, 0.png -> zero
        (the classes in `mgecl label`'s order, by folder name)."""
        tasks = []
        for transductive in (False, True):
            task = mgecl.Task(self.model, transductive=transductive)
            for label, path in (("two", IMAGES[2]), ("zero", IMAGES[0])):
                task.add_class(label)
                task.add_example(label, path)
            task.fit()
            tasks.append(task)
        return tasks

    def test_transductive_batches_are_answered_together(self):
        inductive, transductive = self.one_shot_tasks()
        alone, together = inductive.classify_batch(IMAGES), transductive.classify_batch(IMAGES)
        # The batch moved the answers; the known-probabilities are the inductive ones.
        self.assertTrue(any(a.probability != t.probability for a, t in zip(alone, together)))
        self.assertEqual([a.known_probability for a in alone],
                         [t.known_probability for t in together])
        # One image, or fewer than 2 per class, is answered alone.
        self.assertEqual(transductive.classify(IMAGES[1]), alone[1])
        self.assertEqual(transductive.classify_batch(IMAGES[:3]), alone[:3])
        # The label calls answer the batch as classify_batch does.
        features = transductive.embed_queries(IMAGES)
        csv = transductive.label_csv(features, IMAGES, 0.8, 2)
        self.assertEqual(transductive.label_paths(IMAGES, 0.8, 2), csv)
        self.assertNotEqual(inductive.label_csv(features, IMAGES, 0.8, 2), csv)
        for row, t in zip(csv.splitlines()[1:], together):
            fields = row.split(",")
            self.assertEqual((fields[1], fields[2]), (t.label, f"{t.probability:.6f}"))

    @unittest.skipUnless(os.path.exists(CLI), "needs the mgecl command (MGECL_CLI)")
    def test_transductive_csv_is_mgecl_labels(self):
        """The CSV of the transductive task is `mgecl label --transductive`'s (the Rust API's
        answer) on the same support and images, byte for byte."""
        _, transductive = self.one_shot_tasks()
        names = [os.path.basename(p) for p in IMAGES]
        with tempfile.TemporaryDirectory() as scratch:
            for label, path in (("two", IMAGES[2]), ("zero", IMAGES[0])):
                os.makedirs(os.path.join(scratch, "support", label))
                shutil.copy(path, os.path.join(scratch, "support", label))
            os.makedirs(os.path.join(scratch, "images"))
            for path in IMAGES:
                shutil.copy(path, os.path.join(scratch, "images"))
            out = os.path.join(scratch, "labels.csv")
            subprocess.run([CLI, "label", "--model", MODEL, "--support",
                            os.path.join(scratch, "support"), "--images",
                            os.path.join(scratch, "images"), "--out", out, "--label-next", "2",
                            "--transductive"], check=True, stderr=subprocess.DEVNULL)
            with open(out, newline="") as f:
                expected = f.read()
        got = transductive.label_csv(transductive.embed_queries(IMAGES), names, 0.8, 2)
        self.assertEqual(got, expected)

    def test_errors_and_use_after_them(self):
        task, ids = self.make_task()
        for bad, status in [(lambda: task.add_class("zero"), mgecl.STATUS_DUPLICATE_LABEL),
                            (lambda: task.add_class(""), mgecl.STATUS_INVALID_ARGUMENT),
                            (lambda: task.remove_class("nine"), mgecl.STATUS_UNKNOWN_LABEL),
                            (lambda: task.remove_example(999), mgecl.STATUS_UNKNOWN_EXAMPLE),
                            (lambda: task.add_example("zero", "/nonexistent.png"),
                             mgecl.STATUS_IO),
                            (lambda: task.add_example_feature("zero", [1.0, 2.0]),
                             mgecl.STATUS_INVALID_ARGUMENT)]:
            with self.assertRaises(mgecl.Error) as e:
                bad()
            self.assertEqual(e.exception.status, status, e.exception)
        with self.assertRaises(TypeError):
            task.add_class(b"bytes")
        task.fit()
        self.assertEqual(task.classify(IMAGES[0]).label, "zero")
        task.remove_example(ids[0])
        self.assertEqual(task.class_examples(0), ids[1:2])

    def test_options_threshold_prototype(self):
        task, _ = self.make_task(classifier="prototype", temperature=0.5)
        self.assertEqual(task.options["classifier"], "prototype")
        self.assertEqual(task.options["temperature"], 0.5)
        self.assertEqual(task.fit()["classifier"], "prototype")
        task.options = {"threshold": 1.0}  # the others back to their defaults
        self.assertEqual(task.options["classifier"], "prototype")
        self.assertEqual(task.options["temperature"], 0.1)
        task.fit()
        self.assertIsNone(task.classify(IMAGES[0]).label)
        with self.assertRaises(mgecl.Error) as e:
            task.options = {"alpha": -1.0}
        self.assertEqual(e.exception.status, mgecl.STATUS_INVALID_ARGUMENT)
        with self.assertRaises(TypeError):
            mgecl.Task(self.model, colour="blue")

    def test_augmented_copies_and_queries(self):
        plain, _ = self.make_task()
        self.assertEqual((plain.options["augmentation"], plain.options["augment_queries"]),
                         ("rotate", False))
        task, _ = self.make_task(augmented_copies=2, augment_queries=True)
        self.assertEqual(task.fit()["rows"], 4 * 3)
        self.assertEqual([p.label for p in task.classify_batch(IMAGES)], LABELS)
        # The copies change the answer's probability: the queries were augmented too.
        plain.fit()
        self.assertNotAlmostEqual(task.classify(IMAGES[0]).probability,
                                  plain.classify(IMAGES[0]).probability, places=9)
        # embed_queries gives the features classify() classifies: Model.embed's without query
        # augmentation, others with it, and classify_feature on them answers as classify_batch.
        self.assertEqual(rows(plain.embed_queries(IMAGES)), rows(self.model.embed(IMAGES)))
        features = task.embed_queries(IMAGES)
        self.assertNotEqual(rows(features), rows(self.model.embed(IMAGES)))
        for feature, batch in zip(rows(features), task.classify_batch(IMAGES)):
            one = task.classify_feature(feature)
            self.assertEqual(one.class_index, batch.class_index)
            self.assertAlmostEqual(one.probability, batch.probability, places=9)
        task.options = {"augmentation": "flip-shift", "augmented_copies": 1}
        self.assertEqual(task.options["augmentation"], "flip-shift")
        with self.assertRaises(ValueError):
            mgecl.Task(self.model, augmentation="mirror")

    def test_options_the_model_recommends(self):
        self.assertEqual(self.model.task_options, mgecl.Task(self.model).options)
        self.assertEqual(self.model.task_options["augmented_copies"], 0)
        model = mgecl.Model(MODEL, metadata={
            "task_defaults": '{"augmented_copies": 2, "augment_queries": true}'})
        self.assertEqual((model.task_options["augmented_copies"],
                          model.task_options["augment_queries"]), (2, True))
        task = mgecl.Task(model, classifier="logistic")
        self.assertEqual((task.options["augmented_copies"], task.options["augment_queries"],
                          task.options["classifier"]), (2, True, "logistic"))
        self.assertEqual(mgecl.Task(model, augmented_copies=0,
                                    augment_queries=False).options["augmented_copies"], 0)
        # Replacing the options: what is not given returns to the model's values, not the
        # library's, for a new task and for a loaded one.
        task.options = {"threshold": 0.5}
        with tempfile.TemporaryDirectory() as scratch:
            task.save(os.path.join(scratch, "task.mgecl"))
            loaded = mgecl.Task.load(os.path.join(scratch, "task.mgecl"), model)
        loaded.options = {"classifier": "logistic"}
        for t in (task, loaded):
            self.assertEqual((t.options["augmented_copies"], t.options["augment_queries"]),
                             (2, True))
        self.assertEqual((task.options["classifier"], task.options["threshold"]),
                         ("prototype", 0.5))
        self.assertEqual((loaded.options["classifier"], loaded.options["threshold"]),
                         ("logistic", None))
        with self.assertRaises(mgecl.Error) as caught:
            mgecl.Model(MODEL, metadata={"task_defaults": '{"colour": "blue"}'})
        self.assertIn("task_defaults", str(caught.exception))

    def test_raw_probabilities_and_one_class_tasks(self):
        # The test model has no calibration: calibrated and raw answers agree, and the
        # known-probability is the best cosine similarity to a class mean, clipped to [0, 1].
        task, _ = self.make_task()
        raw, _ = self.make_task(raw_probabilities=True)
        self.assertTrue(raw.options["raw_probabilities"])
        self.assertFalse(task.options["raw_probabilities"])
        task.fit()
        raw.fit()
        for path in IMAGES:
            a, b = task.classify(path), raw.classify(path)
            self.assertEqual(a.probability, b.probability)
            self.assertTrue(0.0 <= a.known_probability <= 1.0)
        one = mgecl.Task(self.model, classifier="prototype")
        one.add_class("zero")
        one.add_example("zero", IMAGES[0])
        one.fit()
        p = one.classify(IMAGES[1])
        self.assertEqual(p.probability, p.known_probability)
        self.assertLess(p.probability, 1.0)
        logistic = mgecl.Task(self.model, classifier="logistic")
        logistic.add_class("zero")
        logistic.add_example("zero", IMAGES[0])
        with self.assertRaises(mgecl.Error) as e:
            logistic.fit()
        self.assertEqual(e.exception.status, mgecl.STATUS_INVALID_TASK)

    def test_limits(self):
        task = mgecl.Task(self.model, max_classes=2, max_rows=2)
        self.assertEqual((task.options["max_classes"], task.options["max_rows"]), (2, 2))
        task.add_class("a")
        task.add_class("b")
        with self.assertRaises(mgecl.Error) as e:
            task.add_class("c")
        self.assertEqual(e.exception.status, mgecl.STATUS_LIMIT_EXCEEDED)
        self.assertEqual(mgecl.Task(self.model).options["max_rows"], 10000)
        small = mgecl.Model(MODEL, max_image_side=16)
        with self.assertRaises(mgecl.Error) as e:
            small.embed(IMAGES[:1])
        self.assertEqual(e.exception.status, mgecl.STATUS_LIMIT_EXCEEDED)
        # The activations of one 28x28 Conv-4 image are far over 1000 bytes; a 4096x4096
        # input is over the 1 GiB default.
        with self.assertRaises(mgecl.Error) as e:
            mgecl.Model(MODEL, max_embed_bytes=1000)
        self.assertEqual(e.exception.status, mgecl.STATUS_LIMIT_EXCEEDED)
        self.assertIn("max_embed_bytes", e.exception.message)
        with self.assertRaises(mgecl.Error) as e:
            mgecl.Model(MODEL, metadata={"image_size": "[4096, 4096]"})
        self.assertEqual(e.exception.status, mgecl.STATUS_LIMIT_EXCEEDED)
        self.assertIn("over the limit of 1024 MiB", e.exception.message)

    def test_save_and_load(self):
        task, _ = self.make_task()
        task.fit()
        expected = task.classify_batch(IMAGES)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "task.safetensors")
            task.save(path)
            loaded = mgecl.Task.load(path, self.model)
            self.assertEqual(loaded.classify_batch(IMAGES), expected)
            with open(path, "rb") as f:
                data = f.read()
            self.assertEqual(mgecl.Task.from_bytes(data, self.model).classify_batch(IMAGES),
                             expected)
            with self.assertRaises(mgecl.Error) as e:
                mgecl.Task.from_bytes(data[:100], self.model)
            self.assertEqual(e.exception.status, mgecl.STATUS_INVALID_TASK_FILE)
            other = mgecl.Model(MODEL, metadata={"invert": "true"})
            with self.assertRaises(mgecl.Error) as e:
                mgecl.Task.load(path, other)
            self.assertEqual(e.exception.status, mgecl.STATUS_MODEL_MISMATCH)

    def test_one_model_many_threads(self):
        task, _ = self.make_task()
        task.fit()
        expected_features = rows(self.model.embed(IMAGES))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "task.safetensors")
            task.save(path)
            expected = task.classify_batch(IMAGES)

            def work(_):
                own = mgecl.Task.load(path, self.model)  # one task per thread
                same = True
                for _ in range(3):
                    same &= own.classify_batch(IMAGES) == expected
                    same &= rows(self.model.embed(IMAGES)) == expected_features
                return same

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                self.assertTrue(all(pool.map(work, range(8))))


class FromFolderTest(unittest.TestCase):
    """Task.from_folder reads a support folder as `mgecl classify --support` does (one
    sub-folder per class, named by its label): the same classes, labels and probabilities as
    the command on the same folder and images."""

    SHIPPED = os.path.join(ROOT, "models", "omniglot-conv4.safetensors")
    EXAMPLES = os.path.join(ROOT, "examples", "data", "omniglot")

    def support_folder(self, scratch):
        """A hand-made support folder: per character of examples/data/omniglot, its first
        four drawings (the fifth is a query), a text file and a hidden folder, which are not
        examples. Returns the folder, the class names and the queries."""
        support = os.path.join(scratch, "support")
        classes = sorted(d for d in os.listdir(self.EXAMPLES)
                         if os.path.isdir(os.path.join(self.EXAMPLES, d)))
        queries = []
        for name in classes:
            files = sorted(os.listdir(os.path.join(self.EXAMPLES, name)))
            os.makedirs(os.path.join(support, name))
            for file in files[:4]:
                shutil.copy(os.path.join(self.EXAMPLES, name, file),
                            os.path.join(support, name))
            queries.append(os.path.join(self.EXAMPLES, name, files[4]))
            with open(os.path.join(support, name, "notes.txt"), "w") as f:
                f.write("not an image")
        os.makedirs(os.path.join(support, ".ipynb_checkpoints"))
        shutil.copy(queries[0], os.path.join(support, ".ipynb_checkpoints"))
        return support, classes, queries

    @unittest.skipUnless(os.path.exists(CLI), "needs the mgecl command (MGECL_CLI)")
    def test_answers_are_mgecl_classify(self):
        model = mgecl.Model(self.SHIPPED)
        with tempfile.TemporaryDirectory() as scratch:
            support, classes, queries = self.support_folder(scratch)
            for options, flags in (({}, []),
                                   ({"classifier": "logistic"}, ["--classifier", "logistic"])):
                out = subprocess.run([CLI, "classify", "--json", "--model", self.SHIPPED,
                                      "--support", support, *flags, *queries], check=True,
                                     capture_output=True, text=True).stdout
                expected = [json.loads(line) for line in out.splitlines()]
                task = mgecl.Task.from_folder(model, support, **options)
                self.assertTrue(task.is_fitted)
                self.assertEqual(task.classes, classes)
                self.assertEqual([len(task.class_examples(i)) for i in range(len(classes))],
                                 [4] * len(classes))
                answers = task.classify_batch(queries)
                self.assertEqual(len(answers), len(expected))
                for query, answer, line in zip(queries, answers, expected):
                    self.assertEqual(line["path"], query)
                    self.assertEqual(answer.label, line["label"])
                    self.assertEqual(answer.probability, line["probability"])
                    self.assertEqual(answer.known_probability, line["known_probability"])
                    # Every class's probability (top_k embeds the image alone: not bit for
                    # bit the batch's).
                    top = dict(task.top_k(query, len(classes)))
                    self.assertEqual(sorted(top), sorted(line["probabilities"]))
                    for label, p in line["probabilities"].items():
                        self.assertAlmostEqual(top[label], p, places=9)
                # The drawings of a character are recognised as that character.
                self.assertEqual([a.label for a in answers], classes)

    @unittest.skipUnless(os.path.exists(CLI), "needs the mgecl command (MGECL_CLI)")
    def test_damaged_images_are_all_named(self):
        model = mgecl.Model(self.SHIPPED)
        with tempfile.TemporaryDirectory() as scratch:
            support, classes, queries = self.support_folder(scratch)
            damaged = [os.path.join(support, classes[0], "broken.png"),
                       os.path.join(support, classes[2], "cut.jpg")]
            for path in damaged:
                with open(path, "wb") as f:
                    f.write(b"\x89PNG\r\n\x1a\n not really")
            with self.assertRaises(mgecl.Error) as e:
                mgecl.Task.from_folder(model, support)
            self.assertEqual(e.exception.status, mgecl.STATUS_INVALID_IMAGE)
            for path in damaged:
                self.assertIn(path, e.exception.message)
            cli = subprocess.run([CLI, "classify", "--model", self.SHIPPED, "--support",
                                  support, queries[0]], capture_output=True, text=True)
            self.assertNotEqual(cli.returncode, 0)
            for path in damaged:
                self.assertIn(path, cli.stderr)
            # A task keeps none of a folder that failed, and takes a good one afterwards.
            task = mgecl.Task(model)
            with self.assertRaises(mgecl.Error):
                task.add_folder(support)
            self.assertEqual(task.classes, [])
            for path in damaged:
                os.remove(path)
            self.assertEqual(task.add_folder(support), 4 * len(classes))
            task.fit()
            self.assertEqual(task.classify(queries[1]).label, classes[1])

    def test_folder_errors(self):
        model = mgecl.Model(MODEL)
        with tempfile.TemporaryDirectory() as scratch:
            with self.assertRaises(mgecl.Error) as e:
                mgecl.Task.from_folder(model, os.path.join(scratch, "missing"))
            self.assertEqual(e.exception.status, mgecl.STATUS_IO)
            with self.assertRaises(mgecl.Error) as e:
                mgecl.Task.from_folder(model, scratch)  # no class folders
            self.assertEqual(e.exception.status, mgecl.STATUS_INVALID_ARGUMENT)
            os.makedirs(os.path.join(scratch, "empty"))
            with self.assertRaises(mgecl.Error) as e:
                mgecl.Task.from_folder(model, scratch)  # a class without images
            self.assertIn("empty", e.exception.message)
            with self.assertRaises(TypeError):
                mgecl.Task.from_folder(model, scratch, no_such_option=1)


if __name__ == "__main__":
    unittest.main()
