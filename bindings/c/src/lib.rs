//! The C ABI: the model and task API as C functions over opaque
//! handles. A thin shell over the Rust API — marshalling, NULL/UTF-8 checks, panic catching and
//! buffer-size checks live here, nothing else. `include/mgecl.h` is generated from this crate by
//! cbindgen (see `tests/c_header.rs`); the doc comments of its items become the header's.
//!
//! Conventions: every fallible function returns [`mgecl_status`] (0 = OK) and writes its
//! outputs through out-pointers only on success; the calling thread's last error message is
//! kept for [`mgecl_last_error_message`]; every entry point checks its pointers and UTF-8 and
//! catches panics ([`mgecl_status::Panic`]), so no unwinding crosses the ABI.
#![allow(non_camel_case_types)]
// Every exported function documents its pointer requirements in prose for C readers.
#![allow(clippy::missing_safety_doc)]

mod args;
mod error;
mod image;
mod model;
mod task;
#[cfg(feature = "test-hooks")]
mod test_hooks;
mod types;
mod versioned;

pub use error::*;
pub use image::*;
pub use model::*;
pub use task::*;
#[cfg(feature = "test-hooks")]
pub use test_hooks::*;
pub use types::*;

/// Major version of the library this header belongs to.
pub const MGECL_VERSION_MAJOR: u32 = 0;
/// Minor version of the library this header belongs to.
pub const MGECL_VERSION_MINOR: u32 = 4;
/// Patch version of the library this header belongs to.
pub const MGECL_VERSION_PATCH: u32 = 0;

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;
    use crate::error::guard;
    use crate::types::options_to_config;
    use sdk::task::TaskConfig;

    #[test]
    fn version_macros_match_the_crate_version() {
        let expected = format!("{MGECL_VERSION_MAJOR}.{MGECL_VERSION_MINOR}.{MGECL_VERSION_PATCH}");
        assert_eq!(expected, env!("CARGO_PKG_VERSION"));
        let version = unsafe { CStr::from_ptr(mgecl_version()) };
        assert_eq!(version.to_str().unwrap(), expected);
    }

    #[test]
    fn every_status_has_its_header_name_and_value() {
        // The header cbindgen generated (include/mgecl.h, checked against these sources by
        // tests/c_header.rs) is the independent list: `MGECL_STATUS_X = n,` per enumerator.
        let header = include_str!("../../../include/mgecl.h");
        let enumerators: Vec<(String, i32)> = header
            .lines()
            .filter_map(|line| {
                let (name, value) = line.trim().trim_end_matches(',').split_once(" = ")?;
                let name = name
                    .strip_prefix("MGECL_STATUS_")
                    .map(|_| name.to_string())?;
                Some((name, value.parse().ok()?))
            })
            .collect();
        assert_eq!(enumerators.len(), mgecl_status::ALL.len());
        for (name, value) in &enumerators {
            let got = unsafe { CStr::from_ptr(mgecl_status_name(*value)) };
            assert_eq!(got.to_str().unwrap(), name);
        }
        for (i, status) in mgecl_status::ALL.iter().enumerate() {
            assert_eq!(*status as usize, i, "ALL is in code order, without gaps");
        }
        for unknown in [-1, 19, 1000, i32::MIN] {
            let got = unsafe { CStr::from_ptr(mgecl_status_name(unknown)) };
            assert_eq!(got.to_str().unwrap(), "MGECL_STATUS_UNKNOWN");
        }
    }

    #[test]
    fn default_options_round_trip() {
        let mut options = std::mem::MaybeUninit::<mgecl_task_options>::uninit();
        let size = std::mem::size_of::<mgecl_task_options>();
        let status = unsafe { mgecl_task_options_init(options.as_mut_ptr(), size) };
        assert_eq!(status, mgecl_status::Ok);
        let options = unsafe { options.assume_init() };
        assert_eq!(options.struct_size, size);
        let config = options_to_config(&options).ok().unwrap();
        assert_eq!(config, TaskConfig::default());
    }

    #[test]
    fn a_panic_in_a_guard_becomes_a_status_and_message() {
        let status = guard(|| panic!("boom"));
        assert_eq!(status, mgecl_status::Panic);
        let message = unsafe { CStr::from_ptr(mgecl_last_error_message()) };
        assert!(message.to_str().unwrap().contains("boom"));
    }
}
