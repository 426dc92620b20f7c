//! Which device an encoder runs on: `cpu`, `cuda[:N]`, `metal[:N]` or `auto`.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::error::{Error, Result};

/// A device request. Parse one from text with [`str::parse`]: `"cpu"`, `"cuda"`, `"cuda:1"`,
/// `"metal"`, `"auto"` (best available: CUDA, then Metal, then CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DeviceChoice {
    /// The CPU; always available.
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal; needs the `cuda` feature.
    Cuda(usize),
    /// A Metal GPU by ordinal; needs the `metal` feature.
    Metal(usize),
    /// The best device compiled in and present, falling back to the CPU.
    Auto,
}

impl FromStr for DeviceChoice {
    type Err = Error;

    /// # Errors
    /// [`Error::InvalidArgument`] for anything but the forms listed on [`DeviceChoice`].
    fn from_str(text: &str) -> Result<Self> {
        let lower = text.trim().to_ascii_lowercase();
        let (name, ordinal) = match lower.split_once(':') {
            Some((name, n)) => {
                let n = n.parse::<usize>().map_err(|_| {
                    Error::InvalidArgument(format!("bad device ordinal in {text:?}"))
                })?;
                (name, Some(n))
            }
            None => (lower.as_str(), None),
        };
        match (name, ordinal) {
            ("cpu", None) => Ok(DeviceChoice::Cpu),
            ("auto", None) => Ok(DeviceChoice::Auto),
            ("cuda", n) => Ok(DeviceChoice::Cuda(n.unwrap_or(0))),
            ("metal", n) => Ok(DeviceChoice::Metal(n.unwrap_or(0))),
            _ => Err(Error::InvalidArgument(format!(
                "unknown device {text:?}: expected cpu, cuda[:N], metal[:N] or auto"
            ))),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::Metal(n) => write!(f, "metal:{n}"),
            DeviceChoice::Auto => write!(f, "auto"),
        }
    }
}

impl DeviceChoice {
    /// Opens the device.
    ///
    /// # Errors
    /// [`Error::DeviceUnavailable`] when the backend was not compiled in (build with
    /// `--features cuda` or `--features metal`) or the device cannot be opened.
    pub(crate) fn open(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(n) => {
                if !cfg!(feature = "cuda") {
                    return Err(Error::DeviceUnavailable(
                        "mgecl was built without CUDA support (rebuild with --features cuda)"
                            .into(),
                    ));
                }
                Device::new_cuda(n)
                    .map_err(|e| Error::DeviceUnavailable(format!("cannot open cuda:{n}: {e}")))
            }
            DeviceChoice::Metal(n) => {
                if !cfg!(feature = "metal") {
                    return Err(Error::DeviceUnavailable(
                        "mgecl was built without Metal support (rebuild with --features metal)"
                            .into(),
                    ));
                }
                Device::new_metal(n)
                    .map_err(|e| Error::DeviceUnavailable(format!("cannot open metal:{n}: {e}")))
            }
            DeviceChoice::Auto => {
                if candle_core::utils::cuda_is_available() {
                    if let Ok(device) = Device::new_cuda(0) {
                        return Ok(device);
                    }
                }
                if candle_core::utils::metal_is_available() {
                    if let Ok(device) = Device::new_metal(0) {
                        return Ok(device);
                    }
                }
                Ok(Device::Cpu)
            }
        }
    }
}

/// Human-readable name of an opened device (`cpu`, `cuda:0`, `metal:0`).
pub(crate) fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "CUDA".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(0)
        );
        assert_eq!(
            "cuda:2".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(2)
        );
        assert_eq!(
            "metal".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Metal(0)
        );
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert!("cpu:1".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn auto_always_opens_something() {
        assert!(DeviceChoice::Auto.open().is_ok());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_is_a_clear_error() {
        let err = DeviceChoice::Cuda(0).open().unwrap_err();
        assert!(matches!(err, Error::DeviceUnavailable(_)), "{err}");
        assert!(err.to_string().contains("--features cuda"));
    }
}
