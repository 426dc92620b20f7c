//! Image descriptions (`mgecl_image`): files, encoded bytes and raw pixels.

use std::ffi::c_char;

use crate::types::{mgecl_image, mgecl_image_kind};

/// An image file (PNG or JPEG) at `path` (UTF-8, NUL-terminated; borrowed, must stay valid
/// while the image is used). Cannot fail: the path is checked when the image is used.
#[no_mangle]
pub extern "C" fn mgecl_image_file(path: *const c_char) -> mgecl_image {
    mgecl_image {
        kind: mgecl_image_kind::File as u32,
        path,
        data: std::ptr::null(),
        len: 0,
        width: 0,
        height: 0,
        stride: 0,
        format: 0,
    }
}

/// An encoded image (PNG or JPEG) in memory: `len` bytes at `data` (borrowed). Cannot fail:
/// the bytes are checked when the image is used.
#[no_mangle]
pub extern "C" fn mgecl_image_encoded(data: *const u8, len: usize) -> mgecl_image {
    mgecl_image {
        kind: mgecl_image_kind::Encoded as u32,
        data,
        len,
        ..mgecl_image_file(std::ptr::null())
    }
}

/// Raw pixels (e.g. a camera frame): `height` rows of `stride` bytes, each starting with
/// `width` pixels in `format` (an `mgecl_pixel_format`); `len` bytes at `data` (borrowed, at
/// least `stride * (height - 1) + width * bytes_per_pixel`). Cannot fail: checked when used.
#[no_mangle]
pub extern "C" fn mgecl_image_pixels(
    data: *const u8,
    len: usize,
    width: u32,
    height: u32,
    stride: usize,
    format: u32,
) -> mgecl_image {
    mgecl_image {
        kind: mgecl_image_kind::Pixels as u32,
        data,
        len,
        width,
        height,
        stride,
        format,
        path: std::ptr::null(),
    }
}
