//! Checks of the pointers, strings and buffers that C callers pass in.

use std::ffi::{c_char, CStr, CString};

use sdk::preprocess::{ImageSource, PixelBuffer, PixelFormat};

use crate::error::{Failure, Res};
use std::path::Path;

use crate::types::{mgecl_image, mgecl_image_kind, mgecl_pixel_format};

pub(crate) unsafe fn str_arg<'a>(p: *const c_char, name: &'static str) -> Res<&'a str> {
    if p.is_null() {
        return Err(Failure::Null(name));
    }
    unsafe { CStr::from_ptr(p).to_str().map_err(|_| Failure::Utf8(name)) }
}

/// A caller's array of `len` NUL-terminated UTF-8 strings (the array itself must not be
/// NULL, even when empty).
pub(crate) unsafe fn str_array_arg<'a>(
    p: *const *const c_char,
    len: usize,
    name: &'static str,
) -> Res<Vec<&'a str>> {
    if p.is_null() {
        return Err(Failure::Null(name));
    }
    unsafe { slice_arg(p, len, name) }?
        .iter()
        .map(|&s| unsafe { str_arg(s, name) })
        .collect()
}

pub(crate) unsafe fn ref_arg<'a, T>(p: *const T, name: &'static str) -> Res<&'a T> {
    unsafe { p.as_ref().ok_or(Failure::Null(name)) }
}

pub(crate) unsafe fn mut_arg<'a, T>(p: *mut T, name: &'static str) -> Res<&'a mut T> {
    unsafe { p.as_mut().ok_or(Failure::Null(name)) }
}

pub(crate) fn check_out<T>(p: *mut T, name: &'static str) -> Res<()> {
    if p.is_null() {
        Err(Failure::Null(name))
    } else {
        Ok(())
    }
}

pub(crate) fn check_len<T>(len: usize, name: &'static str) -> Res<()> {
    match len.checked_mul(std::mem::size_of::<T>().max(1)) {
        Some(bytes) if bytes <= isize::MAX as usize => Ok(()),
        _ => Err(Failure::Argument(format!("length of {name} is too large"))),
    }
}

/// A caller's input array; NULL is accepted only with length 0.
pub(crate) unsafe fn slice_arg<'a, T>(p: *const T, len: usize, name: &'static str) -> Res<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Failure::Null(name));
    }
    check_len::<T>(len, name)?;
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A caller's output array of `len` elements that must hold `needed`: writes `needed` to
/// `needed_out` (when not NULL) whether or not the buffer is large enough.
pub(crate) unsafe fn out_buffer<'a, T>(
    p: *mut T,
    len: usize,
    needed: usize,
    needed_out: *mut usize,
    what: &'static str,
) -> Res<&'a mut [T]> {
    if !needed_out.is_null() {
        unsafe { needed_out.write(needed) };
    }
    if len < needed {
        return Err(Failure::BufferTooSmall {
            what,
            needed,
            given: len,
        });
    }
    if needed == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(Failure::Null(what));
    }
    check_len::<T>(len, what)?;
    Ok(unsafe { std::slice::from_raw_parts_mut(p, needed) })
}

pub(crate) fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "\\0")).unwrap_or_default()
}

/// Writes `text` NUL-terminated into the caller's `buffer` of `buffer_len` bytes
/// ([`out_buffer`]'s contract: `needed` gets the size including the NUL).
pub(crate) unsafe fn out_text(
    text: &str,
    buffer: *mut c_char,
    buffer_len: usize,
    needed: *mut usize,
) -> Res<()> {
    let text = c_string(text);
    let bytes = text.as_bytes_with_nul();
    let out = unsafe { out_buffer(buffer, buffer_len, bytes.len(), needed, "buffer") }?;
    for (o, &b) in out.iter_mut().zip(bytes) {
        *o = b as c_char;
    }
    Ok(())
}

pub(crate) unsafe fn image_arg<'a>(
    image: &mgecl_image,
    name: &'static str,
) -> Res<ImageSource<'a>> {
    match image.kind {
        k if k == mgecl_image_kind::File as u32 => Ok(ImageSource::Path(Path::new(unsafe {
            str_arg(image.path, name)
        }?))),
        k if k == mgecl_image_kind::Encoded as u32 => {
            if image.data.is_null() {
                return Err(Failure::Null(name));
            }
            Ok(ImageSource::Encoded(unsafe {
                slice_arg(image.data, image.len, name)
            }?))
        }
        k if k == mgecl_image_kind::Pixels as u32 => {
            if image.data.is_null() {
                return Err(Failure::Null(name));
            }
            let format = match image.format {
                f if f == mgecl_pixel_format::Rgb8 as u32 => PixelFormat::Rgb8,
                f if f == mgecl_pixel_format::Rgba8 as u32 => PixelFormat::Rgba8,
                f if f == mgecl_pixel_format::Gray8 as u32 => PixelFormat::Gray8,
                other => {
                    return Err(Failure::Argument(format!(
                        "{name}: unknown pixel format {other}"
                    )))
                }
            };
            Ok(ImageSource::Pixels(PixelBuffer {
                data: unsafe { slice_arg(image.data, image.len, name) }?,
                width: image.width,
                height: image.height,
                stride: image.stride,
                format,
            }))
        }
        other => Err(Failure::Argument(format!(
            "{name}: unknown image kind {other}"
        ))),
    }
}

/// The caller's array of `count` images as image sources (`NULL` is `NULL_ARGUMENT`, even for
/// count 0; a bad element is named `images[i]`).
pub(crate) unsafe fn images_arg<'a>(
    images: *const mgecl_image,
    count: usize,
) -> Res<Vec<ImageSource<'a>>> {
    if images.is_null() {
        return Err(Failure::Null("images"));
    }
    let images = unsafe { slice_arg(images, count, "images") }?;
    images
        .iter()
        .map(|image| unsafe { image_arg(image, "images[i]") })
        .collect()
}

/// Writes the `count x dim` features that `embed` computes to the caller's `out` of `out_len`
/// floats (row-major); `needed` (may be NULL) receives `count x dim`. The buffer is checked
/// before `embed` runs, and written only when it succeeds.
pub(crate) unsafe fn features_out(
    out: *mut f32,
    out_len: usize,
    needed: *mut usize,
    (count, dim): (usize, usize),
    embed: impl FnOnce() -> Res<ndarray::Array2<f32>>,
) -> Res<()> {
    let total = count
        .checked_mul(dim)
        .ok_or_else(|| Failure::Argument("count x feature_dim overflows".into()))?;
    let out = unsafe { out_buffer(out, out_len, total, needed, "out") }?;
    let features = embed()?;
    for (o, &v) in out.iter_mut().zip(features.iter()) {
        *o = v;
    }
    Ok(())
}
