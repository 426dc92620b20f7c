# Type stub of mgecl, the Python binding (ctypes over the C library libmgecl).
# Checked against the runtime module by CI (`python3 -m mypy.stubtest mgecl`, .ci/run; no allowlist).

import os
from ctypes import c_void_p
from typing import (Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence,
                    Tuple, Union)

from typing_extensions import Final, Literal, Self, TypeAlias, TypedDict, Unpack

__all__ = ["Error", "Model", "Task", "Pixels", "Prediction", "version", "release_buffers",
           "set_buffer_idle_release",
           "library_path",
           "PIXEL_RGB8", "PIXEL_RGBA8", "PIXEL_GRAY8"]

# --- Stub-only aliases (they do not exist at runtime) -----------------------------------------

# A file path: anything os.fsencode accepts.
_Path: TypeAlias = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
# A bytes-like object holding the whole content (of a file or of raw pixels).
_Buffer: TypeAlias = Union[bytes, bytearray, memoryview]
# An image: a path to a PNG/JPEG file (str or os.PathLike; a bytes value is *not* a path), the
# encoded PNG/JPEG bytes, a Pixels value, or (with numpy) a uint8 array of shape (H, W),
# (H, W, 3) or (H, W, 4). numpy is optional, so arrays are typed as Any.
_ImageLike: TypeAlias = Union[str, "os.PathLike[str]", "os.PathLike[bytes]", bytes, bytearray,
                              memoryview, Pixels, Any]
# A feature vector of feature_dim floats: a sequence (len() is needed without numpy), or (with
# numpy) any array-like that flattens to one, e.g. a row of Model.embed's result.
_FeatureLike: TypeAlias = Union[Sequence[float], Any]
# Features of N images: a float32 numpy array of shape (N, feature_dim) when numpy is
# installed, else a List[List[float]]. numpy is optional, so this is Any.
_Features: TypeAlias = Any

_Classifier: TypeAlias = Literal["logistic", "prototype"]
_Augmentation: TypeAlias = Literal["rotate", "flip-shift"]

# Task.options as read back: every key is present.
class _TaskOptionsDict(TypedDict):
    classifier: str  # "logistic" or "prototype"
    alpha: float
    max_iterations: int
    gradient_tolerance: float
    temperature: float
    augmented_copies: int
    augmentation: str  # "rotate" or "flip-shift"
    augment_queries: bool
    transductive: bool
    threshold: Optional[float]
    max_classes: int
    max_rows: int
    raw_probabilities: bool

# Task options as given to Task(...) or to Task.options: missing keys take their defaults.
class _TaskOptionsInputDict(TypedDict, total=False):
    classifier: _Classifier
    alpha: float
    max_iterations: int
    gradient_tolerance: float
    temperature: float
    augmented_copies: int
    augmentation: _Augmentation
    augment_queries: bool
    transductive: bool
    threshold: Optional[float]
    max_classes: int
    max_rows: int
    raw_probabilities: bool

# What Task.fit() returns.
class _FitReportDict(TypedDict):
    classifier: Optional[str]  # "logistic" or "prototype" (None for an unknown code)
    converged: bool
    gradient_max_abs: float
    rows: int
    classes: int

# --- Module attributes -------------------------------------------------------------------------

# The numpy module when it is installed (and MGECL_PY_NO_NUMPY is unset), else None.
np: Any
# The path (or name) of the shared library that was loaded.
library_path: str

# mgecl_status codes (include/mgecl.h), by name without the STATUS_ prefix.
STATUS: Dict[str, int]
STATUS_OK: Final = 0
STATUS_INVALID_ARGUMENT: Final = 1
STATUS_NULL_ARGUMENT: Final = 2
STATUS_BUFFER_TOO_SMALL: Final = 3
STATUS_IO: Final = 4
STATUS_INVALID_MODEL: Final = 5
STATUS_INVALID_IMAGE: Final = 6
STATUS_LIMIT_EXCEEDED: Final = 7
STATUS_DEVICE_UNAVAILABLE: Final = 8
STATUS_NOT_FITTED: Final = 9
STATUS_INVALID_TASK: Final = 10
STATUS_DUPLICATE_LABEL: Final = 11
STATUS_UNKNOWN_LABEL: Final = 12
STATUS_UNKNOWN_EXAMPLE: Final = 13
STATUS_INVALID_TASK_FILE: Final = 14
STATUS_MODEL_MISMATCH: Final = 15
STATUS_BACKEND: Final = 16
STATUS_PANIC: Final = 17
STATUS_HEADER_TOO_NEW: Final = 18

# Classifier name -> mgecl_classifier code.
CLASSIFIERS: Dict[str, int]
AUGMENTATIONS: Dict[str, int]

# mgecl_image_kind codes.
IMAGE_FILE: Final = 1
IMAGE_ENCODED: Final = 2
IMAGE_PIXELS: Final = 3

# mgecl_pixel_format codes, for Pixels.format.
PIXEL_RGB8: Final = 1
PIXEL_RGBA8: Final = 2
PIXEL_GRAY8: Final = 3

def version() -> str: ...
def release_buffers() -> None: ...
def set_buffer_idle_release(seconds: Optional[float]) -> None: ...

# --- Errors ------------------------------------------------------------------------------------

class Error(Exception):
    status: int
    status_name: str
    message: str
    def __init__(self, status: int, message: str) -> None: ...

# --- Images ------------------------------------------------------------------------------------

class Pixels(NamedTuple):
    data: _Buffer  # `height` rows of `stride` bytes
    width: int
    height: int
    stride: int
    format: int  # PIXEL_RGB8, PIXEL_RGBA8 or PIXEL_GRAY8

# --- Handles -----------------------------------------------------------------------------------

class _Handle:
    def close(self) -> None: ...
    def __del__(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...

# --- Model -------------------------------------------------------------------------------------

class Model(_Handle):
    def __init__(
        self,
        path: _Path,
        device: str = "cpu",
        metadata: Optional[Union[Mapping[str, str], Iterable[Tuple[str, str]]]] = None,
        *,
        max_image_side: int = 0,
        max_image_bytes: int = 0,
        max_embed_bytes: int = 0,
    ) -> None: ...
    @classmethod
    def from_bytes(
        cls,
        data: _Buffer,
        device: str = "cpu",
        metadata: Optional[Union[Mapping[str, str], Iterable[Tuple[str, str]]]] = None,
        *,
        max_image_side: int = 0,
        max_image_bytes: int = 0,
        max_embed_bytes: int = 0,
    ) -> Self: ...
    # The parsed JSON description (arch, widths, in_channels, image_size, feature_dim, mean,
    # std, invert, device, fingerprint, metadata, ...).
    @property
    def info(self) -> Dict[str, Any]: ...
    @property
    def feature_dim(self) -> int: ...
    # A list (any iterable) of images, not a single image: a str, bytes, Pixels or array
    # argument raises TypeError at runtime.
    @property
    def task_options(self) -> _TaskOptionsDict: ...
    def embed(self, images: Iterable[_ImageLike]) -> _Features: ...

# --- Task --------------------------------------------------------------------------------------

class Prediction(NamedTuple):
    label: Optional[str]  # None when rejected by the task's threshold
    class_index: int
    probability: float
    known_probability: float

class Task(_Handle):
    # `_handle` is private (Task.load and Task.from_bytes pass it); it is listed only because the
    # runtime has it next to **options, which stubtest then requires.
    def __init__(
        self,
        model: Model,
        *,
        _handle: Optional[c_void_p] = None,
        **options: Unpack[_TaskOptionsInputDict],
    ) -> None: ...
    @classmethod
    def from_folder(
        cls, model: Model, path: _Path, **options: Unpack[_TaskOptionsInputDict]
    ) -> Self: ...
    @classmethod
    def load(cls, path: _Path, model: Model) -> Self: ...
    @classmethod
    def from_bytes(cls, data: _Buffer, model: Model) -> Self: ...
    # The setter also takes a partial dict; mypy < 1.16 checks assignments against the getter's
    # type instead, so there write `task.options = {**task.options, "classifier": "prototype"}`.
    @property
    def options(self) -> _TaskOptionsDict: ...
    @options.setter
    def options(self, options: Union[_TaskOptionsDict, _TaskOptionsInputDict]) -> None: ...
    def add_class(self, label: str) -> None: ...
    def remove_class(self, label: str) -> None: ...
    def add_example(self, label: str, image: _ImageLike) -> int: ...
    def add_folder(self, path: _Path) -> int: ...
    def add_example_feature(self, label: str, feature: _FeatureLike) -> int: ...
    def remove_example(self, example_id: int) -> None: ...
    @property
    def classes(self) -> List[str]: ...
    def class_examples(self, index: int) -> List[int]: ...
    @property
    def is_fitted(self) -> bool: ...
    def fit(self) -> _FitReportDict: ...
    def classify(self, image: _ImageLike) -> Prediction: ...
    def classify_batch(self, images: Iterable[_ImageLike]) -> List[Prediction]: ...
    def embed_queries(self, images: Iterable[_ImageLike]) -> _Features: ...
    def classify_feature(self, feature: _FeatureLike) -> Prediction: ...
    def label_next(self, features: Any, count: int) -> List[Tuple[int, float]]: ...
    def label_csv(self, features: Any, paths: Sequence[str], review_below: float = ...,
                  label_next: int = ...) -> str: ...
    def label_paths(self, paths: Sequence[_Path], review_below: float = ...,
                    label_next: int = ...) -> str: ...
    def top_k(self, image: _ImageLike, k: int) -> List[Tuple[str, float]]: ...
    def save(self, path: _Path) -> None: ...
