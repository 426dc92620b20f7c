"""mgecl — few-shot image recognition, Python bindings (ctypes over the C library).

    import mgecl
    model = mgecl.Model("model.safetensors")
    task = mgecl.Task(model)
    task.add_class("cat"); task.add_example("cat", "cat1.png")
    task.add_class("dog"); task.add_example("dog", "dog1.png")
    task.fit()
    print(task.classify("query.png"))        # Prediction(label='cat', class_index=0, ...)
    features = model.embed(["a.png", "b.png"])  # numpy (2, feature_dim) float32

An image is a path (str or os.PathLike: PNG/JPEG file), bytes (an encoded PNG/JPEG), a
`Pixels` value, or — with numpy — a uint8 array of shape (H, W) grey, (H, W, 3) RGB or
(H, W, 4) RGBA. numpy is used when installed (features come back as numpy arrays);
without it, features are lists of lists of floats.

The shared library is found through the MGECL_LIBRARY environment variable (a path to
libmgecl.so / .dylib / .dll), else the one an installed package carries (mgecl/_native*),
else in a source checkout's target/release (or $CARGO_TARGET_DIR/release), else on the system
library path.

Threads: a Model may be used from many threads at once (the library releases the GIL during
calls, as ctypes does for every foreign call); a Task from one thread at a time.
"""

import ctypes
import json
import os
import sys
from ctypes import (POINTER, Structure, byref, c_bool, c_char, c_char_p, c_double, c_float,
                    c_int32, c_size_t, c_uint8, c_uint32, c_uint64, c_void_p)
from typing import NamedTuple

if os.environ.get("MGECL_PY_NO_NUMPY"):  # lets the tests exercise the numpy-free path
    np = None
else:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - depends on the environment
        np = None

__all__ = ["Error", "Model", "Task", "Pixels", "Prediction", "version", "release_buffers",
           "set_buffer_idle_release",
           "library_path",
           "PIXEL_RGB8", "PIXEL_RGBA8", "PIXEL_GRAY8"]

# mgecl_status (include/mgecl.h); the tests check these against the header.
STATUS = {
    "OK": 0, "INVALID_ARGUMENT": 1, "NULL_ARGUMENT": 2, "BUFFER_TOO_SMALL": 3, "IO": 4,
    "INVALID_MODEL": 5, "INVALID_IMAGE": 6, "LIMIT_EXCEEDED": 7, "DEVICE_UNAVAILABLE": 8,
    "NOT_FITTED": 9, "INVALID_TASK": 10, "DUPLICATE_LABEL": 11, "UNKNOWN_LABEL": 12,
    "UNKNOWN_EXAMPLE": 13, "INVALID_TASK_FILE": 14, "MODEL_MISMATCH": 15, "BACKEND": 16,
    "PANIC": 17, "HEADER_TOO_NEW": 18,
}
for _name, _value in STATUS.items():
    globals()["STATUS_" + _name] = _value

CLASSIFIERS = {"logistic": 0, "prototype": 1}
AUGMENTATIONS = {"rotate": 0, "flip-shift": 1}
IMAGE_FILE, IMAGE_ENCODED, IMAGE_PIXELS = 1, 2, 3
PIXEL_RGB8, PIXEL_RGBA8, PIXEL_GRAY8 = 1, 2, 3


class Error(Exception):
    """A failed call: `status` (int, an mgecl_status), `status_name` and `message`."""

    def __init__(self, status, message):
        self.status = status
        self.status_name = _lib.mgecl_status_name(status).decode()
        self.message = message
        super().__init__(f"{self.status_name}: {message}")


# --- The C structs -------------------------------------------------------------------------
# Each names its struct of include/mgecl.h: tests/test_abi.py compares fields, types and
# offsets with the header.

class _Image(Structure):
    c_name = "mgecl_image"
    _fields_ = [("kind", c_uint32), ("path", c_char_p), ("data", POINTER(c_uint8)),
                ("len", c_size_t), ("width", c_uint32), ("height", c_uint32),
                ("stride", c_size_t), ("format", c_uint32)]


class _MetadataEntry(Structure):
    c_name = "mgecl_metadata_entry"
    _fields_ = [("key", c_char_p), ("value", c_char_p)]


class _Growing(Structure):
    """A struct that may grow: `struct_size` first, set to this declaration's size, so that
    a newer library reads it as the older header it is (include/mgecl.h, "Structs that
    grow")."""

    def __init__(self, **fields):
        super().__init__(**fields)
        self.struct_size = ctypes.sizeof(self)


class _LoadOptions(_Growing):
    c_name = "mgecl_load_options"
    _fields_ = [("struct_size", c_size_t), ("device", c_char_p),
                ("metadata", POINTER(_MetadataEntry)), ("metadata_len", c_size_t),
                ("max_image_side", c_uint32), ("max_image_bytes", c_uint64),
                ("max_embed_bytes", c_uint64)]


class _ModelInfo(_Growing):
    c_name = "mgecl_model_info"
    _fields_ = [("struct_size", c_size_t), ("arch", c_char_p), ("device", c_char_p), ("fingerprint", c_char_p),
                ("feature_dim", c_size_t), ("in_channels", c_size_t),
                ("image_height", c_size_t), ("image_width", c_size_t), ("invert", c_bool)]


class _TaskOptions(_Growing):
    c_name = "mgecl_task_options"
    _fields_ = [("struct_size", c_size_t), ("classifier", c_uint32), ("alpha", c_double), ("max_iterations", c_uint64),
                ("gradient_tolerance", c_double), ("temperature", c_double),
                ("augmented_copies", c_size_t), ("use_threshold", c_bool),
                ("threshold", c_double), ("max_classes", c_size_t), ("max_rows", c_size_t),
                ("raw_probabilities", c_bool), ("augmentation", c_uint32),
                ("augment_queries", c_bool), ("transductive", c_uint64)]


class _FitReport(_Growing):
    c_name = "mgecl_fit_report"
    _fields_ = [("struct_size", c_size_t), ("classifier", c_uint32), ("converged", c_bool),
                ("gradient_max_abs", c_double), ("rows", c_size_t), ("classes", c_size_t)]


class _Prediction(Structure):
    c_name = "mgecl_prediction"
    _fields_ = [("label", c_char_p), ("class_index", c_size_t), ("probability", c_double),
                ("known_probability", c_double)]


# --- Loading the library -------------------------------------------------------------------

def _candidates():
    here = os.path.dirname(os.path.abspath(__file__))
    # Installed (pip install ./bindings/python): the library the package carries.
    for name in sorted(os.listdir(here)):
        if name.startswith("_native") and name.endswith((".so", ".dylib", ".pyd", ".dll")):
            yield os.path.join(here, name)
    # A source checkout: the library cargo built.
    names = {"linux": ["libmgecl.so"], "darwin": ["libmgecl.dylib"],
             "win32": ["mgecl.dll"]}.get(sys.platform, ["libmgecl.so"])
    dirs = []
    if os.environ.get("CARGO_TARGET_DIR"):
        dirs.append(os.path.join(os.environ["CARGO_TARGET_DIR"], "release"))
    dirs.append(os.path.join(here, "..", "..", "..", "target", "release"))
    for d in dirs:
        for n in names:
            yield os.path.normpath(os.path.join(d, n))


def _find_library():
    explicit = os.environ.get("MGECL_LIBRARY")
    if explicit:
        return explicit
    for path in _candidates():
        if os.path.exists(path):
            return path
    import ctypes.util
    found = ctypes.util.find_library("mgecl")
    if found:
        return found
    raise OSError("libmgecl not found: install the package (pip install ./bindings/python), "
                  "build the library (cargo build --release), or set MGECL_LIBRARY")


library_path = _find_library()
_lib = ctypes.CDLL(library_path)

_status = c_int32  # enum mgecl_status
_P = POINTER


def _declare(name, restype, *argtypes):
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)


_declare("mgecl_version", c_char_p)
_declare("mgecl_last_error_message", c_char_p)
_declare("mgecl_status_name", c_char_p, c_int32)
_declare("mgecl_release_buffers", _status)
_declare("mgecl_set_buffer_idle_release", _status, c_uint64)
_declare("mgecl_model_load", _status, c_char_p, _P(_LoadOptions), _P(c_void_p))
_declare("mgecl_model_load_bytes", _status, _P(c_uint8), c_size_t, _P(_LoadOptions),
         _P(c_void_p))
_declare("mgecl_model_free", None, c_void_p)
_declare("mgecl_model_describe", _status, c_void_p, _P(_ModelInfo))
_declare("mgecl_model_info_json", _status, c_void_p, _P(c_char), c_size_t, _P(c_size_t))
_declare("mgecl_model_embed", _status, c_void_p, _P(_Image), c_size_t, _P(c_float), c_size_t,
         _P(c_size_t))
_declare("mgecl_load_options_init", _status, _P(_LoadOptions), c_size_t)
_declare("mgecl_task_options_init", _status, _P(_TaskOptions), c_size_t)
_declare("mgecl_model_task_options", _status, c_void_p, _P(_TaskOptions))
_declare("mgecl_task_new", _status, c_void_p, _P(_TaskOptions), _P(c_void_p))
_declare("mgecl_task_free", None, c_void_p)
_declare("mgecl_task_get_options", _status, c_void_p, _P(_TaskOptions))
_declare("mgecl_task_set_options", _status, c_void_p, _P(_TaskOptions))
_declare("mgecl_task_add_class", _status, c_void_p, c_char_p)
_declare("mgecl_task_remove_class", _status, c_void_p, c_char_p)
_declare("mgecl_task_add_example", _status, c_void_p, c_char_p, _P(_Image), _P(c_uint64))
_declare("mgecl_task_add_example_feature", _status, c_void_p, c_char_p, _P(c_float), c_size_t,
         _P(c_uint64))
_declare("mgecl_task_add_folder", _status, c_void_p, c_char_p, _P(c_size_t))
_declare("mgecl_task_remove_example", _status, c_void_p, c_uint64)
_declare("mgecl_task_class_count", _status, c_void_p, _P(c_size_t))
_declare("mgecl_task_class_label", _status, c_void_p, c_size_t, _P(c_char_p))
_declare("mgecl_task_class_examples", _status, c_void_p, c_size_t, _P(c_uint64), c_size_t,
         _P(c_size_t))
_declare("mgecl_task_is_fitted", _status, c_void_p, _P(c_bool))
_declare("mgecl_task_fit", _status, c_void_p, _P(_FitReport))
_declare("mgecl_task_classify", _status, c_void_p, _P(_Image), _P(_Prediction))
_declare("mgecl_task_classify_batch", _status, c_void_p, _P(_Image), c_size_t,
         _P(_Prediction), c_size_t)
_declare("mgecl_task_classify_top_k", _status, c_void_p, _P(_Image), c_size_t, _P(c_size_t),
         _P(c_double), _P(c_size_t))
_declare("mgecl_task_embed_queries", _status, c_void_p, _P(_Image), c_size_t, _P(c_float),
         c_size_t, _P(c_size_t))
_declare("mgecl_task_classify_feature", _status, c_void_p, _P(c_float), c_size_t,
         _P(_Prediction))
_declare("mgecl_task_label_next", _status, c_void_p, _P(c_float), c_size_t, c_size_t, c_size_t,
         _P(c_size_t), _P(c_double), c_size_t, _P(c_size_t))
_declare("mgecl_task_label_csv", _status, c_void_p, _P(c_float), c_size_t, c_size_t,
         _P(c_char_p), c_double, c_size_t, _P(c_char), c_size_t, _P(c_size_t))
_declare("mgecl_task_label_paths_csv", _status, c_void_p, _P(c_char_p), c_size_t, c_double,
         c_size_t, _P(c_char), c_size_t, _P(c_size_t))
_declare("mgecl_task_save", _status, c_void_p, c_char_p)
_declare("mgecl_task_load", _status, c_char_p, c_void_p, _P(c_void_p))
_declare("mgecl_task_load_bytes", _status, _P(c_uint8), c_size_t, c_void_p, _P(c_void_p))


def _check(status):
    if status != STATUS_OK:  # noqa: F821 (defined through globals())
        raise Error(status, _lib.mgecl_last_error_message().decode("utf-8", "replace"))


def _text(value, what):
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    return value.encode("utf-8")


def version():
    """The library's version, e.g. "0.2.0"."""
    return _lib.mgecl_version().decode()


def release_buffers():
    """Frees the buffers the library keeps between embeddings for reuse (the activation pool
    all threads share, at most 256 MiB, and the convolution scratch) and hands the memory back
    to the system. Also happens by itself after `set_buffer_idle_release`'s time idle."""
    _check(_lib.mgecl_release_buffers())


def set_buffer_idle_release(seconds):
    """Releases the kept buffers once no embedding has used them for `seconds` (default 30);
    None or 0: never. Process-wide."""
    milliseconds = 0 if not seconds else max(1, round(seconds * 1000))
    _check(_lib.mgecl_set_buffer_idle_release(milliseconds))


# --- Images --------------------------------------------------------------------------------

class Pixels(NamedTuple):
    """Raw pixels: `height` rows of `stride` bytes, each starting with `width` pixels in
    `format` (PIXEL_RGB8, PIXEL_RGBA8 or PIXEL_GRAY8)."""
    data: bytes
    width: int
    height: int
    stride: int
    format: int


def _u8_pointer(buffer):
    """A uint8 pointer to a bytes-like object, and the object keeping it alive."""
    if isinstance(buffer, bytes):
        return ctypes.cast(c_char_p(buffer), _P(c_uint8)), buffer
    array = (c_uint8 * len(buffer)).from_buffer_copy(buffer)
    return ctypes.cast(array, _P(c_uint8)), array


def _image(source, keep):
    """An _Image for `source`; objects that must outlive the call are appended to `keep`."""
    image = _Image()
    if isinstance(source, (str, os.PathLike)):
        path = os.fsencode(source)
        keep.append(path)
        image.kind, image.path = IMAGE_FILE, path
    elif isinstance(source, (bytes, bytearray, memoryview)):
        pointer, owner = _u8_pointer(bytes(source) if not isinstance(source, bytes) else source)
        keep.append(owner)
        image.kind, image.data, image.len = IMAGE_ENCODED, pointer, len(source)
    elif isinstance(source, Pixels):
        pointer, owner = _u8_pointer(source.data)
        keep.append(owner)
        image.kind, image.data, image.len = IMAGE_PIXELS, pointer, len(source.data)
        image.width, image.height = source.width, source.height
        image.stride, image.format = source.stride, source.format
    elif np is not None and isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3) or (
                source.ndim == 3 and source.shape[2] not in (3, 4)):
            raise TypeError("pixel arrays must be uint8 of shape (H, W), (H, W, 3) or (H, W, 4)")
        array = np.ascontiguousarray(source)
        keep.append(array)
        fmt = PIXEL_GRAY8 if array.ndim == 2 else (PIXEL_RGB8 if array.shape[2] == 3
                                                     else PIXEL_RGBA8)
        image.kind = IMAGE_PIXELS
        image.data = array.ctypes.data_as(_P(c_uint8))
        image.len = array.nbytes
        image.height, image.width = array.shape[0], array.shape[1]
        image.stride, image.format = array.strides[0], fmt
    else:
        raise TypeError(f"cannot use {type(source).__name__} as an image")
    return image


def _images(sources):
    if isinstance(sources, (str, bytes, os.PathLike, Pixels)) or (
            np is not None and isinstance(sources, np.ndarray)):
        raise TypeError("expected a list of images")
    keep = []
    images = [_image(s, keep) for s in sources]
    array = (_Image * max(len(images), 1))(*images)
    return array, len(images), keep


def _floats(values):
    """A float pointer to a feature vector and the object keeping it alive."""
    if np is not None:
        array = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        return array.ctypes.data_as(_P(c_float)), array.size, array
    data = (c_float * len(values))(*values)
    return data, len(values), data


# --- Model ---------------------------------------------------------------------------------

def _load_options(device, metadata, max_image_side, max_image_bytes, max_embed_bytes):
    metadata = dict(metadata or {})
    entries = (_MetadataEntry * max(len(metadata), 1))(*[
        _MetadataEntry(_text(k, "metadata key"), _text(v, "metadata value"))
        for k, v in metadata.items()])
    options = _LoadOptions(device=_text(device, "device"), metadata=entries,
                           metadata_len=len(metadata), max_image_side=max_image_side,
                           max_image_bytes=max_image_bytes, max_embed_bytes=max_embed_bytes)
    return options, entries


class _Handle:
    """An owned C handle: `close()` (also on `with` exit and garbage collection) frees it once."""

    _kind = "handle"
    _handle = None

    @staticmethod
    def _free(handle):
        raise NotImplementedError

    def _ptr(self):
        if not self._handle:
            raise ValueError(f"the {self._kind} is closed")
        return self._handle

    def close(self):
        """Frees the handle now (a model's tasks keep working after it is closed)."""
        if self._handle:
            type(self)._free(self._handle)
            self._handle = None

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Model(_Handle):
    """A loaded encoder (safetensors). Thread-safe. `device`: "cpu", "cuda[:N]",
    "metal[:N]" or "auto"; `metadata`: {key: value} supplying/overriding `__metadata__`."""

    _kind = "model"

    @staticmethod
    def _free(handle):
        _lib.mgecl_model_free(handle)

    def __init__(self, path, device="cpu", metadata=None, *, max_image_side=0,
                 max_image_bytes=0, max_embed_bytes=0, _handle=None):
        """Loads a model file. `max_image_side` (pixels) and `max_image_bytes` bound the
        images it decodes; `max_embed_bytes` the activations of one embedding pass (batches
        are cut to fit; a model whose one image needs more raises STATUS_LIMIT_EXCEEDED);
        0 keeps the defaults (16384 px, 512 MiB, 1 GiB)."""
        self._handle = None
        if _handle is None:
            options, _entries = _load_options(device, metadata, max_image_side,
                                              max_image_bytes, max_embed_bytes)
            handle = c_void_p()
            _check(_lib.mgecl_model_load(os.fsencode(path), byref(options), byref(handle)))
            _handle = handle
        self._handle = _handle

    @classmethod
    def from_bytes(cls, data, device="cpu", metadata=None, *, max_image_side=0,
                   max_image_bytes=0, max_embed_bytes=0):
        """Loads a model from the bytes of a safetensors file (options as for `Model`)."""
        options, _entries = _load_options(device, metadata, max_image_side, max_image_bytes,
                                          max_embed_bytes)
        pointer, _owner = _u8_pointer(bytes(data))
        handle = c_void_p()
        _check(_lib.mgecl_model_load_bytes(pointer, len(data), byref(options), byref(handle)))
        return cls(None, _handle=handle)

    @property
    def info(self):
        """The full description: arch, widths, in_channels, image_size, feature_dim, mean,
        std, invert, device, fingerprint, metadata."""
        needed = c_size_t()
        status = _lib.mgecl_model_info_json(self._ptr(), None, 0, byref(needed))
        if status != STATUS_BUFFER_TOO_SMALL:  # noqa: F821
            _check(status)
        buffer = ctypes.create_string_buffer(needed.value)
        _check(_lib.mgecl_model_info_json(self._ptr(), buffer, needed.value, None))
        return json.loads(buffer.value.decode())

    @property
    def feature_dim(self):
        info = _ModelInfo()
        _check(_lib.mgecl_model_describe(self._ptr(), byref(info)))
        return info.feature_dim

    def _task_options(self):
        c = _TaskOptions()
        _check(_lib.mgecl_model_task_options(self._ptr(), byref(c)))
        return c

    @property
    def task_options(self):
        """The task options this model recommends (a dict, as Task.options): the defaults
        with the model's task_defaults metadata applied. Task(model) starts from them."""
        return _options_from_c(self._task_options())

    def embed(self, images):
        """Features of a list of images: (N, feature_dim) float32 numpy array (a list of
        lists without numpy), rows in input order, not L2-normalised."""
        array, n, _keep = _images(images)
        return _features(n, self.feature_dim,
                         lambda out, size: _lib.mgecl_model_embed(self._ptr(), array, n, out,
                                                                  size, None))


def _features(n, dim, fill):
    """An (n, dim) float32 array (a list of lists without numpy) that `fill(pointer, size)`
    writes, checking its status."""
    if np is not None:
        out = np.empty((n, dim), dtype=np.float32)
        pointer = out.ctypes.data_as(_P(c_float))
    else:
        out = (c_float * max(n * dim, 1))()
        pointer = out
    _check(fill(pointer, n * dim))
    if np is not None:
        return out
    return [list(out[i * dim:(i + 1) * dim]) for i in range(n)]


# --- Task ----------------------------------------------------------------------------------

class Prediction(NamedTuple):
    """The answer for one image; `label` is None when rejected by the threshold.

    `probability`: of the best class, given the image is of one of the task's classes
    (calibrated unless the task has raw_probabilities=True or the model has no calibration).
    `known_probability`: that the image is of one of the task's classes at all (the open-set
    score the threshold compares)."""
    label: object
    class_index: int
    probability: float
    known_probability: float


def _prediction(p):
    return Prediction(p.label.decode() if p.label is not None else None, p.class_index,
                      p.probability, p.known_probability)


_OPTION_NAMES = ("classifier", "alpha", "max_iterations", "gradient_tolerance", "temperature",
                 "augmented_copies", "augmentation", "augment_queries", "transductive",
                 "threshold", "max_classes", "max_rows", "raw_probabilities")


def _options_to_c(options, base=None):
    """`options` (a dict of task options) over `base` (C options; default: the library's)."""
    if base is None:
        base = _TaskOptions()
        _check(_lib.mgecl_task_options_init(byref(base), ctypes.sizeof(base)))
    c = base
    for key, value in options.items():
        if key not in _OPTION_NAMES:
            raise TypeError(f"unknown task option {key!r}")
        if key == "classifier":
            if value not in CLASSIFIERS:
                raise ValueError(f"classifier must be one of {sorted(CLASSIFIERS)}")
            c.classifier = CLASSIFIERS[value]
        elif key == "augmentation":
            if value not in AUGMENTATIONS:
                raise ValueError(f"augmentation must be one of {sorted(AUGMENTATIONS)}")
            c.augmentation = AUGMENTATIONS[value]
        elif key == "transductive":
            c.transductive = 1 if value else 0  # a uint64_t in the C struct
        elif key == "threshold":
            c.use_threshold = value is not None
            c.threshold = 0.0 if value is None else float(value)
        else:
            setattr(c, key, value)
    return c


def _options_from_c(c):
    names = {v: k for k, v in CLASSIFIERS.items()}
    augmentations = {v: k for k, v in AUGMENTATIONS.items()}
    return {"classifier": names.get(c.classifier, c.classifier), "alpha": c.alpha,
            "max_iterations": c.max_iterations, "gradient_tolerance": c.gradient_tolerance,
            "temperature": c.temperature, "augmented_copies": c.augmented_copies,
            "augmentation": augmentations.get(c.augmentation, c.augmentation),
            "augment_queries": c.augment_queries, "transductive": bool(c.transductive),
            "threshold": c.threshold if c.use_threshold else None,
            "max_classes": c.max_classes, "max_rows": c.max_rows,
            "raw_probabilities": c.raw_probabilities}


class Task(_Handle):
    """A few-shot task on a model. Use from one thread at a time.

    Options (keywords): classifier ("prototype", the default, or "logistic"), alpha,
    max_iterations, gradient_tolerance, temperature, augmented_copies (0..8 copies embedded
    with each example), augmentation ("rotate", the default, or "flip-shift": which copies),
    augment_queries (True: classify() also averages each image over its copies), transductive
    (True: the images of one classify_batch, label_csv, label_paths or label_next call refine
    the class prototypes before they are answered, so an image's answer depends on the others
    of its call; the answers are the prototype classifier's from the refined prototypes,
    calibrated as its are, whatever the classifier; known_probability is unchanged; calls with
    fewer than 2 images per class, and classify, classify_feature and top_k, which answer one
    image, get the usual answers), threshold
    (None or 0..1: answers whose known_probability is below it get label None), raw_probabilities (False: the model's
    calibrated probabilities; True: the classifier's raw ones, scikit-learn's for logistic),
    max_classes, max_rows (limits: one more class or row raises Error STATUS_LIMIT_EXCEEDED).
    Options not given take the model's recommended values (Model.task_options: these
    defaults unless the model file recommends e.g. test-time augmentation). A task of one
    class fits with the prototype classifier."""

    _kind = "task"

    @staticmethod
    def _free(handle):
        _lib.mgecl_task_free(handle)

    def __init__(self, model, *, _handle=None, **options):
        self._handle = None
        # The model's recommended options: what options not given take, here and in the
        # options setter.
        self._model = model
        if _handle is None:
            c_options = _options_to_c(options, model._task_options())
            handle = c_void_p()
            _check(_lib.mgecl_task_new(model._ptr(), byref(c_options), byref(handle)))
            _handle = handle
        self._handle = _handle

    @classmethod
    def from_folder(cls, model, path, **options):
        """A task on `model` fitted on the support folder `path`, as `mgecl classify --support`
        reads it: one sub-folder of example images per class, the sub-folder's name its label
        (classes sorted by name; names starting with a dot skipped), the image files directly
        inside it its examples (other files ignored). Options as for `Task`. Raises Error
        naming every image that cannot be used (STATUS_INVALID_IMAGE, or the one image's
        status)."""
        task = cls(model, **options)
        try:
            task.add_folder(path)
            task.fit()
        except BaseException:
            task.close()
            raise
        return task

    @classmethod
    def load(cls, path, model):
        """Loads a task saved with save() against `model`."""
        handle = c_void_p()
        _check(_lib.mgecl_task_load(os.fsencode(path), model._ptr(), byref(handle)))
        return cls(model, _handle=handle)

    @classmethod
    def from_bytes(cls, data, model):
        pointer, _owner = _u8_pointer(bytes(data))
        handle = c_void_p()
        _check(_lib.mgecl_task_load_bytes(pointer, len(data), model._ptr(), byref(handle)))
        return cls(model, _handle=handle)

    @property
    def options(self):
        c = _TaskOptions()
        _check(_lib.mgecl_task_get_options(self._ptr(), byref(c)))
        return _options_from_c(c)

    @options.setter
    def options(self, options):
        """Replaces the options (missing keys take the model's recommended values, as in
        the constructor); refit afterwards."""
        c = _options_to_c(options, self._model._task_options())
        _check(_lib.mgecl_task_set_options(self._ptr(), byref(c)))

    def add_class(self, label):
        _check(_lib.mgecl_task_add_class(self._ptr(), _text(label, "label")))

    def remove_class(self, label):
        _check(_lib.mgecl_task_remove_class(self._ptr(), _text(label, "label")))

    def add_example(self, label, image):
        """Embeds `image` and adds it to class `label`; returns the example id."""
        keep = []
        c_image = _image(image, keep)
        example_id = c_uint64()
        _check(_lib.mgecl_task_add_example(self._ptr(), _text(label, "label"), byref(c_image),
                                           byref(example_id)))
        return example_id.value

    def add_folder(self, path):
        """Adds the classes of the support folder `path` (see `from_folder`) with their
        images as examples; returns how many examples it added. Fit afterwards. On error the
        task is left without the folder's classes."""
        examples = c_size_t()
        _check(_lib.mgecl_task_add_folder(self._ptr(), os.fsencode(path), byref(examples)))
        return examples.value

    def add_example_feature(self, label, feature):
        pointer, n, _keep = _floats(feature)
        example_id = c_uint64()
        _check(_lib.mgecl_task_add_example_feature(self._ptr(), _text(label, "label"), pointer,
                                                   n, byref(example_id)))
        return example_id.value

    def remove_example(self, example_id):
        _check(_lib.mgecl_task_remove_example(self._ptr(), example_id))

    @property
    def classes(self):
        """Class labels in the order they were added."""
        n = c_size_t()
        _check(_lib.mgecl_task_class_count(self._ptr(), byref(n)))
        return [self._label(i) for i in range(n.value)]

    def _label(self, index):
        text = c_char_p()
        _check(_lib.mgecl_task_class_label(self._ptr(), index, byref(text)))
        return text.value.decode()

    def class_examples(self, index):
        """Example ids of class `index`."""
        needed = c_size_t()
        status = _lib.mgecl_task_class_examples(self._ptr(), index, None, 0, byref(needed))
        if status != STATUS_BUFFER_TOO_SMALL:  # noqa: F821
            _check(status)
        ids = (c_uint64 * max(needed.value, 1))()
        _check(_lib.mgecl_task_class_examples(self._ptr(), index, ids, needed.value, None))
        return list(ids[:needed.value])

    @property
    def is_fitted(self):
        fitted = c_bool()
        _check(_lib.mgecl_task_is_fitted(self._ptr(), byref(fitted)))
        return fitted.value

    def fit(self):
        """Fits the classifier; returns a dict (classifier, converged, gradient_max_abs,
        rows, classes)."""
        r = _FitReport()
        _check(_lib.mgecl_task_fit(self._ptr(), byref(r)))
        names = {v: k for k, v in CLASSIFIERS.items()}
        return {"classifier": names.get(r.classifier), "converged": r.converged,
                "gradient_max_abs": r.gradient_max_abs, "rows": r.rows, "classes": r.classes}

    def classify(self, image):
        """The best class of one image."""
        keep = []
        c_image = _image(image, keep)
        p = _Prediction()
        _check(_lib.mgecl_task_classify(self._ptr(), byref(c_image), byref(p)))
        return _prediction(p)

    def classify_batch(self, images):
        """Predictions for a list of images, embedded in one batch (and, with the
        transductive option, answered together)."""
        array, n, _keep = _images(images)
        out = (_Prediction * max(n, 1))()
        _check(_lib.mgecl_task_classify_batch(self._ptr(), array, n, out, n))
        return [_prediction(out[i]) for i in range(n)]

    def embed_queries(self, images):
        """Features of query images as classify() sees them: Model.embed's rows, or with
        augment_queries and augmented_copies the mean direction of each image's and its
        copies' features. Same shape as Model.embed; for classify_feature, label_next and
        label_csv."""
        array, n, _keep = _images(images)
        needed = c_size_t()
        status = _lib.mgecl_task_embed_queries(self._ptr(), array, n, None, 0, byref(needed))
        if status != STATUS_BUFFER_TOO_SMALL:  # noqa: F821
            _check(status)
        return _features(n, needed.value // max(n, 1),
                         lambda out, size: _lib.mgecl_task_embed_queries(
                             self._ptr(), array, n, out, size, None))

    def classify_feature(self, feature):
        pointer, n, _keep = _floats(feature)
        p = _Prediction()
        _check(_lib.mgecl_task_classify_feature(self._ptr(), pointer, n, byref(p)))
        return _prediction(p)

    def label_next(self, features, count):
        """The `count` rows of `features` (N x feature_dim, e.g. from Model.embed) most worth
        labelling next, best first, as [(row, score)]: rows the task cannot decide between two
        classes (uncertainty) that resemble many other rows (density), near-duplicates
        discounted. See `mgecl label`."""
        rows = list(features) if np is None else np.ascontiguousarray(features, dtype=np.float32)
        n = len(rows)
        dim = len(rows[0]) if n else 0
        pointer, size, _keep = _floats([v for row in rows for v in row] if np is None else rows)
        if size != n * dim:
            raise ValueError("features must be rows of equal length")
        wanted = max(min(count, n), 1)
        index = (c_size_t * wanted)()
        score = (c_double * wanted)()
        written = c_size_t()
        _check(_lib.mgecl_task_label_next(self._ptr(), pointer, n, dim, count, index, score,
                                          wanted, byref(written)))
        return [(index[i], score[i]) for i in range(written.value)]

    def label_csv(self, features, paths, review_below=0.8, label_next=20):
        """`mgecl label`'s CSV (a str) for feature rows (N x feature_dim, e.g. from
        Model.embed) and their N paths: header, then one row per image (label, probability,
        needs_review below `review_below`, runner-up, known-probability, rank among the
        `label_next` images to label next)."""
        rows = list(features) if np is None else np.ascontiguousarray(features, dtype=np.float32)
        n = len(rows)
        if len(paths) != n:
            raise ValueError(f"{len(paths)} paths for {n} feature rows")
        dim = len(rows[0]) if n else 0
        pointer, size, _keep = _floats([v for row in rows for v in row] if np is None else rows)
        if size != n * dim:
            raise ValueError("features must be rows of equal length")
        c_paths = (c_char_p * max(n, 1))(*[os.fsencode(p) for p in paths])
        args = (self._ptr(), pointer, n, dim, c_paths, float(review_below), label_next)
        needed = c_size_t()
        status = _lib.mgecl_task_label_csv(*args, None, 0, byref(needed))
        if status != STATUS["BUFFER_TOO_SMALL"]:
            _check(status)
        buffer = ctypes.create_string_buffer(needed.value)
        _check(_lib.mgecl_task_label_csv(*args, buffer, needed.value, None))
        return buffer.value.decode()

    def label_paths(self, paths, review_below=0.8, label_next=20):
        """`mgecl label`'s CSV (a str) for image files: as label_csv, but a file that cannot be
        read or decoded, or breaks the image limits, gets a row with only its path and the
        `error` column (saying why, naming the file) instead of failing the call."""
        if isinstance(paths, (str, bytes, os.PathLike)):
            raise TypeError("expected a list of paths")
        c_paths = (c_char_p * max(len(paths), 1))(*[os.fsencode(p) for p in paths])
        # Generous first: each call embeds every image again.
        size = 256 * (len(paths) + 1)
        while True:
            buffer = ctypes.create_string_buffer(size)
            needed = c_size_t()
            status = _lib.mgecl_task_label_paths_csv(self._ptr(), c_paths, len(paths),
                                                     float(review_below), label_next, buffer,
                                                     size, byref(needed))
            if status != STATUS["BUFFER_TOO_SMALL"]:
                _check(status)
                return buffer.value.decode()
            size = needed.value

    def top_k(self, image, k):
        """The k most probable classes of one image as [(label, probability)], best first."""
        keep = []
        c_image = _image(image, keep)
        index = (c_size_t * max(k, 1))()
        prob = (c_double * max(k, 1))()
        n = c_size_t()
        _check(_lib.mgecl_task_classify_top_k(self._ptr(), byref(c_image), k, index, prob,
                                              byref(n)))
        return [(self._label(index[i]), prob[i]) for i in range(n.value)]

    def save(self, path):
        """Saves the task atomically."""
        _check(_lib.mgecl_task_save(self._ptr(), os.fsencode(path)))
