"""`python -m mgecl.ray label` against a local Ray cluster started here (head plus one worker
node on the loopback address, `ray start`, stopped at the end), 2,100 images: the CSV must be
`mgecl label`'s (same rows, labels, review flags and ranking; probabilities within 1e-5), with
two labelling workers, and again after one worker process is killed in the middle of the job,
after the driver itself is killed and the job restarted with --resume, and on a folder with
damaged files (their rows, with the error, as `mgecl label` writes them). Both answer the
images together by default (transductively; Ray at the driver): with --transductive given on
both sides the CSV must be `mgecl label --transductive`'s byte for byte, also after a killed
driver and --resume; with --inductive the workers label their own batches.

Runs when Ray is installed (`pip install "./bindings/python[ray]"`) and the `mgecl` command is
found (MGECL_CLI, else the source checkout's target/release/mgecl); MGECL_TEST_RAY=1 makes
their absence a failure instead of a skip (CI sets it).
"""
import csv
import io
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
MODEL = os.path.join(ROOT, "models", "omniglot-conv4.safetensors")
CLI = os.environ.get("MGECL_CLI", os.path.join(ROOT, "target", "release", "mgecl"))
REQUIRED = os.environ.get("MGECL_TEST_RAY") == "1"
# The `ray` command of the interpreter running the tests (a venv's bin/ray).
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
if not os.path.exists(RAY):
    RAY = shutil.which("ray") or "ray"

try:
    import ray  # noqa: F401
    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False

CLASSES, PER_CLASS, SHOTS = 10, 213, 3


def write_png(path, pixels, size):
    """An 8-bit greyscale PNG (no dependency beyond zlib)."""
    raw = b"".join(b"\x00" + bytes(pixels[y * size:(y + 1) * size]) for y in range(size))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 0, 0,
                                                                   0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def drawing(strokes, rng, size=28):
    """Dark strokes on white, each point jittered: one handwritten-like instance."""
    pixels = [255] * (size * size)
    dx, dy = rng.uniform(-2, 2), rng.uniform(-2, 2)
    for (x0, y0), (x1, y1) in strokes:
        x0, y0 = x0 + dx + rng.gauss(0, 0.8), y0 + dy + rng.gauss(0, 0.8)
        x1, y1 = x1 + dx + rng.gauss(0, 0.8), y1 + dy + rng.gauss(0, 0.8)
        steps = int(max(abs(x1 - x0), abs(y1 - y0)) * 2) + 1
        for s in range(steps + 1):
            x, y = x0 + (x1 - x0) * s / steps, y0 + (y1 - y0) * s / steps
            for ox in (0, 1):
                for oy in (0, 1):
                    px, py = int(x) + ox, int(y) + oy
                    if 0 <= px < size and 0 <= py < size:
                        pixels[py * size + px] = 0
    return pixels


def make_images(root, seed=0):
    """support/<class>/ (SHOTS each) and images/<class % 3>/... (the rest): 2,100 images."""
    rng = random.Random(seed)
    for c in range(CLASSES):
        start = (rng.uniform(5, 23), rng.uniform(5, 23))
        strokes, point = [], start
        for _ in range(3):
            nxt = (rng.uniform(4, 24), rng.uniform(4, 24))
            strokes.append((point, nxt))
            point = nxt
        for i in range(PER_CLASS):
            if i < SHOTS:
                folder = os.path.join(root, "support", f"class{c:02d}")
            else:
                folder = os.path.join(root, "images", f"part{i % 3}")
            os.makedirs(folder, exist_ok=True)
            write_png(os.path.join(folder, f"c{c:02d}_{i:03d}.png"), drawing(strokes, rng), 28)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@unittest.skipUnless(((HAVE_RAY and os.path.exists(CLI)) or REQUIRED)
                     and not os.environ.get("MGECL_PY_NO_NUMPY"),
                     "needs ray and the mgecl command (MGECL_TEST_RAY=1 to require them)")
class RayLabelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.scratch = tempfile.mkdtemp(prefix="mgecl-ray-test-")
        make_images(cls.scratch)
        cls.support = os.path.join(cls.scratch, "support")
        cls.images = os.path.join(cls.scratch, "images")
        cls.expected = os.path.join(cls.scratch, "expected.csv")
        subprocess.run([CLI, "label", "--model", MODEL, "--support", cls.support,
                        "--images", cls.images, "--out", cls.expected], check=True,
                       stderr=subprocess.DEVNULL)
        cls.port = free_port()
        cls.address = f"127.0.0.1:{cls.port}"
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
        common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        subprocess.run([RAY, "start", "--head", f"--port={cls.port}",
                        "--include-dashboard=false", *common], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run([RAY, "start", f"--address={cls.address}", *common], check=True,
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @classmethod
    def tearDownClass(cls):
        subprocess.run([RAY, "stop", "--force"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(cls.scratch, ignore_errors=True)

    def command(self, out, *extra):
        return [sys.executable, "-m", "mgecl.ray", "label", "--address", self.address,
                "--model", MODEL, "--support", self.support, "--images", self.images,
                "--out", out, *extra]

    def assert_same_as_cli(self, out, expected=None, min_rows=2000):
        expected, got = read_csv(expected or self.expected), read_csv(out)
        self.assertGreaterEqual(len(expected), min_rows)
        self.assertEqual(len(got), len(expected))
        for e, g in zip(expected, got):
            for key in ("path", "label", "needs_review", "runner_up", "label_next", "error"):
                self.assertEqual(e[key], g[key], (key, e["path"]))
            for key in ("probability", "runner_up_probability", "known_probability"):
                if e["error"]:
                    self.assertEqual(g[key], "")
                else:
                    self.assertAlmostEqual(float(e[key]), float(g[key]), delta=1e-5)

    def test_same_csv_as_mgecl_label(self):
        out = os.path.join(self.scratch, "ray.csv")
        report = os.path.join(self.scratch, "ray.html")
        started = time.monotonic()
        subprocess.run(self.command(out, "--workers", "2", "--batch-size", "64",
                                    "--report", report),
                       check=True, stderr=subprocess.DEVNULL, env=dict(os.environ, MGECL_CLI=CLI))
        print(f"ray label, 2 workers: {time.monotonic() - started:.1f} s", file=sys.stderr)
        self.assert_same_as_cli(out)
        with open(report) as f:
            self.assertIn("Label these next", f.read())

    def test_augmentation_flags_as_mgecl_label(self):
        # The shipped model recommends augmented queries (the default runs use them); here the
        # flags turn them off on both sides, inductively (the workers label their batches).
        off = ["--augmented-copies", "0", "--inductive"]
        expected = os.path.join(self.scratch, "expected-plain.csv")
        subprocess.run([CLI, "label", "--model", MODEL, "--support", self.support,
                        "--images", self.images, "--out", expected, *off], check=True,
                       stderr=subprocess.DEVNULL)
        out = os.path.join(self.scratch, "ray-plain.csv")
        subprocess.run(self.command(out, "--workers", "2", *off), check=True,
                       stderr=subprocess.DEVNULL)
        self.assert_same_as_cli(out, expected)
        # The copies change the answers' probabilities (else this would test nothing).
        self.assertNotEqual([r["probability"] for r in read_csv(expected)],
                            [r["probability"] for r in read_csv(self.cli_csv("inductive"))])

    def test_a_killed_worker_loses_nothing(self):
        out = os.path.join(self.scratch, "ray-killed.csv")
        job = subprocess.Popen(self.command(out, "--workers", "2", "--batch-size", "16"),
                               stderr=subprocess.DEVNULL)
        killed = None
        deadline = time.monotonic() + 120
        while killed is None and job.poll() is None and time.monotonic() < deadline:
            listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True,
                                     text=True).stdout
            actors = [int(line.split()[0]) for line in listing.splitlines()
                      if "Labeller" in line and "ps -eo" not in line]
            if actors:
                time.sleep(1.0)  # let it label a few batches first
                if job.poll() is None:
                    os.kill(actors[0], signal.SIGKILL)
                    killed = actors[0]
            else:
                time.sleep(0.2)
        self.assertIsNotNone(killed, "no labelling worker to kill while the job ran")
        self.assertEqual(job.wait(timeout=300), 0)
        self.assert_same_as_cli(out)

    def cli_csv(self, mode):
        """`mgecl label --MODE`'s CSV of the images (mode transductive or inductive; written
        once)."""
        expected = os.path.join(self.scratch, f"expected-{mode}.csv")
        if not os.path.exists(expected):
            subprocess.run([CLI, "label", "--model", MODEL, "--support", self.support,
                            "--images", self.images, "--out", expected, f"--{mode}"],
                           check=True, stderr=subprocess.DEVNULL)
        return expected

    def assert_same_bytes(self, out, expected):
        with open(out, "rb") as got, open(expected, "rb") as want:
            self.assertEqual(got.read(), want.read())

    def test_transductive_as_mgecl_label(self):
        # 10 classes, ~210 images each: the transductive step applies (>= 2 per class).
        expected = self.cli_csv("transductive")
        out = os.path.join(self.scratch, "ray-transductive.csv")
        subprocess.run(self.command(out, "--workers", "2", "--batch-size", "64",
                                    "--transductive"), check=True, stderr=subprocess.DEVNULL)
        # One step over all the images at the driver: the CSV of mgecl label --transductive,
        # byte for byte.
        self.assert_same_bytes(out, expected)
        # Transduction changed answers (else this would test nothing), and it is the default.
        self.assert_same_bytes(self.expected, expected)
        self.assertNotEqual([r["probability"] for r in read_csv(expected)],
                            [r["probability"] for r in read_csv(self.cli_csv("inductive"))])

    def test_a_killed_transductive_driver_resumes(self):
        # The progress file holds the features: the resumed job's one step covers them all.
        self.kill_driver_then_resume(os.path.join(self.scratch, "ray-resumed-transductive.csv"),
                                     self.cli_csv("transductive"), "--transductive")

    def test_a_killed_driver_resumes(self):
        self.kill_driver_then_resume(os.path.join(self.scratch, "ray-resumed.csv"))

    def kill_driver_then_resume(self, out, expected=None, *flags):
        """Kills the driver (SIGKILL) after 20 batches of 16 are in OUT.ray-progress,
        restarts it with --resume and checks the CSV against `expected` (default:
        `mgecl label`'s)."""
        progress = out + ".ray-progress"
        job = subprocess.Popen(self.command(out, "--workers", "2", "--batch-size", "16",
                                            *flags),
                               stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        batches = 0
        while job.poll() is None and time.monotonic() < deadline:
            if os.path.exists(progress):
                with open(progress, "rb") as f:
                    batches = f.read().count(b"\n") - 1
                if batches >= 20:
                    break
            time.sleep(0.1)
        self.assertIsNone(job.poll(), "the job ended before it could be killed")
        job.kill()  # SIGKILL: no clean-up of its own
        job.wait()
        self.assertFalse(os.path.exists(out))
        resumed = subprocess.run(self.command(out, "--workers", "2", "--resume", *flags),
                                 stderr=subprocess.PIPE, text=True)
        self.assertEqual(resumed.returncode, 0, resumed.stderr)
        done = int(resumed.stderr.split("resuming: ")[1].split()[0])
        self.assertGreaterEqual(done, 16 * 20, resumed.stderr)
        self.assertLess(done, len(read_csv(self.expected)))
        if flags:
            self.assert_same_bytes(out, expected)
        else:
            self.assert_same_as_cli(out, expected)
        self.assertFalse(os.path.exists(progress))

    def test_damaged_files_as_mgecl_label(self):
        folder = os.path.join(self.scratch, "damaged")
        for part in sorted(os.listdir(self.images)):
            os.makedirs(os.path.join(folder, part))
            for name in sorted(os.listdir(os.path.join(self.images, part)))[:60]:
                shutil.copy(os.path.join(self.images, part, name), os.path.join(folder, part))
        with open(os.path.join(self.images, "part0", sorted(os.listdir(
                os.path.join(self.images, "part0")))[0]), "rb") as f:
            png = f.read()
        damaged = {"part0/cut.png": png[:len(png) // 2], "part1/empty.png": b"",
                   "part1/text.jpg": b"not a photo\n", "part2/IMG_1.heic":
                   b"\0\0\0\x18ftypheic\0\0\0\0mif1heic"}
        for name, data in damaged.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        expected = os.path.join(self.scratch, "damaged-cli.csv")
        subprocess.run([CLI, "label", "--model", MODEL, "--support", self.support,
                        "--images", folder, "--out", expected], check=True,
                       stderr=subprocess.DEVNULL)
        out = os.path.join(self.scratch, "damaged-ray.csv")
        command = self.command(out, "--workers", "2", "--batch-size", "16")
        command[command.index("--images") + 1] = folder
        subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
        self.assert_same_as_cli(out, expected, min_rows=180)
        errors = {r["path"]: r["error"] for r in read_csv(out) if r["error"]}
        self.assertEqual(sorted(errors), sorted(damaged))
        for name, error in errors.items():
            self.assertIn(os.path.join(folder, *name.split("/")), error)
        # --strict: no CSV, a failure.
        strict_out = os.path.join(self.scratch, "damaged-strict.csv")
        command[command.index("--out") + 1] = strict_out
        strict = subprocess.run(command + ["--strict"], stderr=subprocess.PIPE, text=True)
        self.assertNotEqual(strict.returncode, 0)
        self.assertFalse(os.path.exists(strict_out))
        self.assertFalse(os.path.exists(strict_out + ".ray-progress"))


if __name__ == "__main__":
    unittest.main()
