//! Test hook (only in builds with the `test-hooks` cargo feature, never in release
//! artefacts), apart from `error` so that the status layer depends on no argument helper.

use std::ffi::c_char;

use crate::args::str_arg;
use crate::error::{guard, mgecl_status};

/// Test hook (only in builds with the `test-hooks` cargo feature, never in release
/// artefacts): panics inside an entry point with `message` (may be NULL), to check that the
/// panic comes back as `MGECL_STATUS_PANIC` with the message in `mgecl_last_error_message()`.
#[no_mangle]
pub unsafe extern "C" fn mgecl_test_panic(message: *const c_char) -> mgecl_status {
    guard(|| {
        let message = if message.is_null() {
            "test panic"
        } else {
            // SAFETY: non-NULL, and the caller passes a NUL-terminated string (documented).
            unsafe { str_arg(message, "message") }?
        };
        panic!("{message}");
    })
}
