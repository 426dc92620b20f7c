//! Status codes, the thread's last error message, panic catching, and the library-wide
//! functions (version, status names).

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use sdk::error::Error;

/// Result of every fallible function: `MGECL_STATUS_OK` (0) or what went wrong. Each
/// `mgecl::Error` variant of the Rust API maps to exactly one code; `NULL_ARGUMENT`,
/// `BUFFER_TOO_SMALL`, `PANIC` and `HEADER_TOO_NEW` come from the C layer itself. The message of the failure is
/// `mgecl_last_error_message()`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum mgecl_status {
    /// Success.
    Ok = 0,
    /// An argument cannot be used: bad option value, wrong feature length, empty batch,
    /// invalid UTF-8 in a string, bad pixel buffer, unknown enum value.
    InvalidArgument = 1,
    /// A required pointer argument was NULL.
    NullArgument = 2,
    /// A caller-owned output buffer is too small; the message (and the `needed` out-parameter
    /// where the function has one) says how large it must be.
    BufferTooSmall = 3,
    /// A file could not be read or written.
    Io = 4,
    /// A model file could not be loaded (the message names the problem and the tensor/key).
    InvalidModel = 5,
    /// An image could not be decoded or is unusable.
    InvalidImage = 6,
    /// An image, model or task file, or a task (classes, feature rows), exceeds a resource limit.
    LimitExceeded = 7,
    /// The requested device is not compiled in or not present.
    DeviceUnavailable = 8,
    /// The task must be fitted (again) before it can classify.
    NotFitted = 9,
    /// The task cannot be fitted as it stands (fewer than two classes, an empty class).
    InvalidTask = 10,
    /// The class label is already in the task.
    DuplicateLabel = 11,
    /// The class label is not in the task.
    UnknownLabel = 12,
    /// The example id is not in the task.
    UnknownExample = 13,
    /// A task file is not one, is truncated, or was modified after it was written.
    InvalidTaskFile = 14,
    /// A task file was made with a different model.
    ModelMismatch = 15,
    /// The numeric backend failed.
    Backend = 16,
    /// A bug: the library panicked inside the call. The panic was caught; the handles the call
    /// used may be inconsistent and should only be freed.
    Panic = 17,
    /// A struct's `struct_size` is larger than this library knows: the program was built
    /// against a newer `mgecl.h` than the library it runs with. Nothing was done.
    HeaderTooNew = 18,
}

impl mgecl_status {
    /// Every status, in code order (the unit tests check it against the generated header's
    /// enumerators, so that a code cannot be added without a name).
    pub(crate) const ALL: [mgecl_status; 19] = [
        mgecl_status::Ok,
        mgecl_status::InvalidArgument,
        mgecl_status::NullArgument,
        mgecl_status::BufferTooSmall,
        mgecl_status::Io,
        mgecl_status::InvalidModel,
        mgecl_status::InvalidImage,
        mgecl_status::LimitExceeded,
        mgecl_status::DeviceUnavailable,
        mgecl_status::NotFitted,
        mgecl_status::InvalidTask,
        mgecl_status::DuplicateLabel,
        mgecl_status::UnknownLabel,
        mgecl_status::UnknownExample,
        mgecl_status::InvalidTaskFile,
        mgecl_status::ModelMismatch,
        mgecl_status::Backend,
        mgecl_status::Panic,
        mgecl_status::HeaderTooNew,
    ];

    /// The C name of the code, derived from the variant's name as cbindgen derives the
    /// header's enumerators (`NotFitted` -> `MGECL_STATUS_NOT_FITTED`): no second table of
    /// names to drift from the enum.
    pub(crate) fn c_name(self) -> String {
        let mut name = String::from("MGECL_STATUS");
        for c in format!("{self:?}").chars() {
            if c.is_ascii_uppercase() {
                name.push('_');
            }
            name.push(c.to_ascii_uppercase());
        }
        name
    }
}

/// Why a call failed, before it becomes a status and a message.
pub(crate) enum Failure {
    Api(Error),
    Null(&'static str),
    Utf8(&'static str),
    Argument(String),
    HeaderTooNew(String),
    BufferTooSmall {
        what: &'static str,
        needed: usize,
        given: usize,
    },
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Api(e)
    }
}

pub(crate) type Res<T> = std::result::Result<T, Failure>;

/// The status code of each Rust error: an exhaustive match, so that a new variant cannot be
/// added without giving it a code.
pub(crate) fn status_of(error: &Error) -> mgecl_status {
    match error {
        Error::InvalidArgument(_) => mgecl_status::InvalidArgument,
        Error::Io { .. } => mgecl_status::Io,
        Error::InvalidModel { .. } => mgecl_status::InvalidModel,
        Error::InvalidImage(_) => mgecl_status::InvalidImage,
        Error::LimitExceeded(_) => mgecl_status::LimitExceeded,
        Error::DeviceUnavailable(_) => mgecl_status::DeviceUnavailable,
        Error::NotFitted => mgecl_status::NotFitted,
        Error::InvalidTask(_) => mgecl_status::InvalidTask,
        Error::DuplicateLabel(_) => mgecl_status::DuplicateLabel,
        Error::UnknownLabel(_) => mgecl_status::UnknownLabel,
        Error::UnknownExample(_) => mgecl_status::UnknownExample,
        Error::InvalidTaskFile(_) => mgecl_status::InvalidTaskFile,
        Error::ModelMismatch { .. } => mgecl_status::ModelMismatch,
        Error::Backend(_) => mgecl_status::Backend,
    }
}

impl Failure {
    fn status_and_message(self) -> (mgecl_status, String) {
        match self {
            Failure::Api(e) => (status_of(&e), e.to_string()),
            Failure::Null(name) => (
                mgecl_status::NullArgument,
                format!("argument {name} must not be NULL"),
            ),
            Failure::Utf8(name) => (
                mgecl_status::InvalidArgument,
                format!("argument {name} is not valid UTF-8"),
            ),
            Failure::Argument(message) => (mgecl_status::InvalidArgument, message),
            Failure::HeaderTooNew(message) => (mgecl_status::HeaderTooNew, message),
            Failure::BufferTooSmall {
                what,
                needed,
                given,
            } => (
                mgecl_status::BufferTooSmall,
                format!("{what} needs room for {needed} elements, the buffer holds {given}"),
            ),
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn set_last_error(message: String) {
    let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|last| *last.borrow_mut() = message);
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown payload".to_string());
    format!("internal error (panic): {text}")
}

/// Runs the body of an entry point: catches panics, turns failures into a status and the
/// thread's last error message.
pub(crate) fn guard(body: impl FnOnce() -> Res<()>) -> mgecl_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => mgecl_status::Ok,
        Ok(Err(failure)) => {
            let (status, message) = failure.status_and_message();
            set_last_error(message);
            status
        }
        Err(payload) => {
            set_last_error(panic_message(payload.as_ref()));
            mgecl_status::Panic
        }
    }
}

/// The library's version, e.g. `"0.2.0"` (static storage; never NULL). Compare with the
/// `MGECL_VERSION_*` macros to detect a header/library mismatch. Thread-safe.
#[no_mangle]
pub extern "C" fn mgecl_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last failed call on the calling thread (UTF-8, NUL-terminated; `""`
/// when no call has failed on this thread). Successful calls leave it unchanged. Owned by
/// the library: valid until the next failing call on this thread; copy it to keep it.
/// Never NULL. Thread-safe (each thread has its own message).
#[no_mangle]
pub extern "C" fn mgecl_last_error_message() -> *const c_char {
    LAST_ERROR.with(|last| last.borrow().as_ptr())
}

/// A constant name for a status code, e.g. `"MGECL_STATUS_NOT_FITTED"` (static storage;
/// `"MGECL_STATUS_UNKNOWN"` for a value that is no status). Thread-safe.
#[no_mangle]
pub extern "C" fn mgecl_status_name(status: i32) -> *const c_char {
    static NAMES: OnceLock<Vec<(i32, CString)>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        mgecl_status::ALL
            .iter()
            .map(|&s| (s as i32, CString::new(s.c_name()).unwrap_or_default()))
            .collect()
    });
    names
        .iter()
        .find(|(code, _)| *code == status)
        .map_or(c"MGECL_STATUS_UNKNOWN".as_ptr(), |(_, name)| name.as_ptr())
}
