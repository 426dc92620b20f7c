//! Model handles: loading, describing and embedding.

use std::collections::BTreeMap;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use sdk::error::Error;
use sdk::model::{LoadOptions, Model};

use crate::args::{
    c_string, check_out, features_out, images_arg, out_text, ref_arg, slice_arg, str_arg,
};
use crate::error::{guard, mgecl_status, Failure, Res};
use crate::types::{default_load_options, mgecl_image, mgecl_load_options, mgecl_model_info};
use crate::versioned;

/// A loaded encoder (opaque). Immutable: one handle may be used by any number of threads at
/// once. Tasks keep their model alive, so the handle may be freed before its tasks.
pub struct mgecl_model {
    pub(crate) model: Arc<Model>,
    pub(crate) arch: CString,
    pub(crate) device: CString,
    pub(crate) fingerprint: CString,
}

impl mgecl_model {
    pub(crate) fn new(model: Model) -> Box<Self> {
        let info = model.info();
        Box::new(mgecl_model {
            arch: c_string(info.arch.name()),
            device: c_string(&info.device),
            fingerprint: c_string(&info.fingerprint),
            model: Arc::new(model),
        })
    }
}

/// Fills the caller's `options` with the defaults: CPU, no metadata overrides, and the
/// default limits written out (16384 px a side, 512 MiB to decode an image, 1 GiB of
/// activations per embedding pass). `struct_size` is `sizeof *options` in the caller's
/// header, e.g. `mgecl_load_options_init(&options, sizeof options)`; then change fields.
///
/// Errors: `NULL_ARGUMENT` (options), `INVALID_ARGUMENT` (a struct_size no header had),
/// `HEADER_TOO_NEW` (struct_size larger than this library's struct). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn mgecl_load_options_init(
    options: *mut mgecl_load_options,
    struct_size: usize,
) -> mgecl_status {
    guard(|| unsafe { versioned::init(options, struct_size, default_load_options(), "options") })
}

pub(crate) unsafe fn load_options(options: *const mgecl_load_options) -> Res<LoadOptions> {
    let mut out = LoadOptions::default();
    if options.is_null() {
        return Ok(out);
    }
    // SAFETY: the caller passes NULL or an options struct of `struct_size` bytes (documented).
    let options = unsafe { versioned::read(options, default_load_options(), "options") }?;
    if !options.device.is_null() {
        out.device = unsafe { str_arg(options.device, "options->device") }?.parse()?;
    }
    let entries =
        unsafe { slice_arg(options.metadata, options.metadata_len, "options->metadata") }?;
    let mut overrides = BTreeMap::new();
    for entry in entries {
        overrides.insert(
            unsafe { str_arg(entry.key, "options->metadata[i].key") }?.to_string(),
            unsafe { str_arg(entry.value, "options->metadata[i].value") }?.to_string(),
        );
    }
    out.metadata_overrides = overrides;
    if options.max_image_side != 0 {
        out.image_limits.max_width = options.max_image_side;
        out.image_limits.max_height = options.max_image_side;
    }
    if options.max_image_bytes != 0 {
        out.image_limits.max_decoded_bytes = options.max_image_bytes;
    }
    if options.max_embed_bytes != 0 {
        out.max_embed_bytes = options.max_embed_bytes;
    }
    Ok(out)
}

/// Loads a model file (safetensors) into a new handle written to `*out_model`.
///
/// `path`: UTF-8, NUL-terminated. `options`: NULL for the defaults (CPU, no metadata
/// overrides), or filled by `mgecl_load_options_init`. On success the caller owns
/// `*out_model` and releases it with `mgecl_model_free`.
///
/// Errors: `NULL_ARGUMENT` (path, out_model, an override key/value), `INVALID_ARGUMENT`
/// (UTF-8, unknown device name, a struct_size no header had), `HEADER_TOO_NEW` (options from
/// a newer header), `IO` (unreadable file), `LIMIT_EXCEEDED` (file over 2 GiB, or one image's
/// activations over `max_embed_bytes`), `INVALID_MODEL` (not safetensors, truncated, missing
/// tensor, wrong shape or dtype, non-finite weight, bad metadata), `DEVICE_UNAVAILABLE`,
/// `PANIC`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn mgecl_model_load(
    path: *const c_char,
    options: *const mgecl_load_options,
    out_model: *mut *mut mgecl_model,
) -> mgecl_status {
    guard(|| {
        let path = unsafe { str_arg(path, "path") }?;
        check_out(out_model, "out_model")?;
        let options = unsafe { load_options(options) }?;
        let model = Model::load(path, &options)?;
        unsafe { out_model.write(Box::into_raw(mgecl_model::new(model))) };
        Ok(())
    })
}

/// Loads a model from the `len` bytes of a safetensors file at `data` (borrowed for the call)
/// into a new handle written to `*out_model`; otherwise as `mgecl_model_load`.
///
/// Errors: `NULL_ARGUMENT` (data, out_model), otherwise as `mgecl_model_load` without `IO`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn mgecl_model_load_bytes(
    data: *const u8,
    len: usize,
    options: *const mgecl_load_options,
    out_model: *mut *mut mgecl_model,
) -> mgecl_status {
    guard(|| {
        if data.is_null() {
            return Err(Failure::Null("data"));
        }
        let bytes = unsafe { slice_arg(data, len, "data") }?;
        check_out(out_model, "out_model")?;
        let options = unsafe { load_options(options) }?;
        let model = Model::from_bytes(bytes, &options)?;
        unsafe { out_model.write(Box::into_raw(mgecl_model::new(model))) };
        Ok(())
    })
}

/// Releases a model handle. `NULL` is a no-op. Tasks created from the model keep working (they
/// hold their own reference). Do not use the handle afterwards, nor free it while another
/// thread uses it.
#[no_mangle]
pub unsafe extern "C" fn mgecl_model_free(model: *mut mgecl_model) {
    if !model.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(model) })));
    }
}

/// Describes the model into `*out_info`, whose `struct_size` the caller sets first
/// (`mgecl_model_info info = { sizeof info };`); its strings belong to the model handle (valid
/// until it is freed).
///
/// Errors: `NULL_ARGUMENT`, `INVALID_ARGUMENT` (a struct_size no header had),
/// `HEADER_TOO_NEW`. Thread-safe (the model is not changed).
#[no_mangle]
pub unsafe extern "C" fn mgecl_model_describe(
    model: *const mgecl_model,
    out_info: *mut mgecl_model_info,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { ref_arg(model, "model") }?;
        let info = handle.model.info();
        let described = mgecl_model_info {
            struct_size: std::mem::size_of::<mgecl_model_info>(),
            arch: handle.arch.as_ptr(),
            device: handle.device.as_ptr(),
            fingerprint: handle.fingerprint.as_ptr(),
            feature_dim: info.feature_dim,
            in_channels: info.input.in_channels,
            image_height: info.input.image_size.0,
            image_width: info.input.image_size.1,
            invert: info.input.invert,
        };
        unsafe { versioned::write(out_info, described, "out_info") }
    })
}

/// The full description of the model as a JSON object (arch, widths, in_channels,
/// image_size, feature_dim, mean, std, invert, device, fingerprint, metadata), NUL-terminated,
/// copied into the caller's `buffer` of `buffer_len` bytes.
///
/// `needed` (may be NULL) receives the bytes required including the NUL, on success and on
/// `BUFFER_TOO_SMALL`; call with `buffer_len` 0 (buffer may then be NULL) to ask the size.
///
/// Errors: `NULL_ARGUMENT` (model, or buffer when buffer_len > 0), `BUFFER_TOO_SMALL`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn mgecl_model_info_json(
    model: *const mgecl_model,
    buffer: *mut c_char,
    buffer_len: usize,
    needed: *mut usize,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { ref_arg(model, "model") }?;
        let json = serde_json::to_string(handle.model.info())
            .map_err(|e| Error::backend_caused_by("cannot serialise the model info", e))?;
        unsafe { out_text(&json, buffer, buffer_len, needed) }
    })
}

/// Embeds `count` images: writes `count x feature_dim` floats (row-major, one row per image,
/// in input order; the encoder's output, not L2-normalised) into the caller's `out` buffer of
/// `out_len` floats.
///
/// `needed` (may be NULL) receives `count x feature_dim`, on success and on
/// `BUFFER_TOO_SMALL` (which is checked before any work). `out` is written only on success.
///
/// Errors: `NULL_ARGUMENT` (model, images, out, an image's path/data), `INVALID_ARGUMENT`
/// (count 0, bad UTF-8 path, bad pixel buffer, unknown image kind or pixel format),
/// `BUFFER_TOO_SMALL`, `IO`, `INVALID_IMAGE`, `LIMIT_EXCEEDED`, `BACKEND`, `PANIC`.
/// Thread-safe: many threads may embed with one model at once.
#[no_mangle]
pub unsafe extern "C" fn mgecl_model_embed(
    model: *const mgecl_model,
    images: *const mgecl_image,
    count: usize,
    out: *mut f32,
    out_len: usize,
    needed: *mut usize,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { ref_arg(model, "model") }?;
        let sources = unsafe { images_arg(images, count) }?;
        let shape = (count, handle.model.feature_dim());
        unsafe {
            features_out(out, out_len, needed, shape, || {
                Ok(handle.model.embed(&sources)?)
            })
        }
    })
}

/// Frees the buffers the CPU engine keeps between embeddings for reuse: the activation pool
/// all threads share (at most 256 MiB) and the convolution scratch of the calling thread and
/// of the library's worker threads, and hands the memory back to the system. The next
/// embedding allocates again. The same happens by itself once no embedding has run for the
/// idle time (`mgecl_set_buffer_idle_release`, default 30 s). Returns `MGECL_STATUS_OK`.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn mgecl_release_buffers() -> mgecl_status {
    guard(|| {
        sdk::release_buffers();
        Ok(())
    })
}

/// Sets how long the kept buffers may go unused before they are released as by
/// `mgecl_release_buffers`: `milliseconds` (default 30000), or 0 for never. Process-wide.
/// Returns `MGECL_STATUS_OK`. Thread-safe.
#[no_mangle]
pub extern "C" fn mgecl_set_buffer_idle_release(milliseconds: u64) -> mgecl_status {
    guard(|| {
        let after = (milliseconds > 0).then(|| std::time::Duration::from_millis(milliseconds));
        sdk::set_buffer_idle_release(after);
        Ok(())
    })
}
