//! For crates built on candle (the training crate): the candle device a [`DeviceChoice`]
//! names. Behind the `candle-interop` feature because its types are candle-core's: they follow
//! candle's version, outside this crate's semver promise; the rest of the API names no candle
//! type.

use candle_core::Device;

use crate::{DeviceChoice, Result};

/// Opens the candle device of a choice.
///
/// # Errors
/// [`Error::DeviceUnavailable`](crate::Error::DeviceUnavailable) when the backend was not
/// compiled in (build with `--features cuda` or `--features metal`) or the device cannot be
/// opened.
pub fn open_device(choice: DeviceChoice) -> Result<Device> {
    choice.open()
}

/// Human-readable name of an opened device (`cpu`, `cuda:0`, `metal:0`).
pub fn device_name(device: &Device) -> String {
    crate::device::device_name(device)
}
