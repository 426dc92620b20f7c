//! Structs that may grow: each starts with `size_t struct_size`, the size of the struct in
//! the caller's header, and the library reads and writes only that many bytes of it.
//!
//! The rule for a new field (also in `include/mgecl.h` and ARCHITECTURE.md): it is appended,
//! never inserted, and it starts at or after the size the struct had without it, so that an
//! older header's struct is always a prefix of this library's (the unit tests check each
//! released layout). Then:
//! - a smaller `struct_size` is an older header: the fields it lacks take their defaults, and
//!   outputs are written only as far as it reaches;
//! - a larger one is a newer header: refused with `MGECL_STATUS_HEADER_TOO_NEW`, since this
//!   library cannot honour fields it does not know;
//! - a size no header can have had (0: the struct was never initialised; one that ends
//!   inside a field) is refused with `MGECL_STATUS_INVALID_ARGUMENT`.

use std::mem::{align_of, size_of};

use crate::error::{Failure, Res};

/// Where a field of a C struct lies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) offset: usize,
    pub(crate) size: usize,
    pub(crate) align: usize,
}

/// A `#[repr(C)]` struct whose first field is `struct_size: usize`; implemented by
/// [`versioned!`], which also checks at compile time that `struct_size` comes first.
///
/// # Safety
/// `fields()` lists every field of `Self` in declaration order, `struct_size` first at offset
/// 0, and every byte pattern a C caller can write into a prefix of it is a valid `Self`.
pub(crate) unsafe trait Versioned: Copy {
    /// The C name, for messages.
    const C_NAME: &'static str;
    fn fields() -> Vec<Field>;
}

/// Implements [`Versioned`] for a struct from the list of its fields.
macro_rules! versioned {
    ($ty:ident { $($field:ident),+ $(,)? }) => {
        const _: () = assert!(std::mem::offset_of!($ty, struct_size) == 0);
        // SAFETY: the fields are listed in declaration order (the unit tests check that they
        // tile the struct); the struct holds integers, floats, bools and pointers only.
        unsafe impl $crate::versioned::Versioned for $ty {
            const C_NAME: &'static str = stringify!($ty);
            fn fields() -> Vec<$crate::versioned::Field> {
                vec![$(
                    $crate::versioned::field(
                        stringify!($field),
                        std::mem::offset_of!($ty, $field),
                        |s: &$ty| &s.$field,
                    )
                ),+]
            }
        }
    };
}
pub(crate) use versioned;

/// A [`Field`] from its offset and an accessor that names its type.
pub(crate) fn field<S, F>(name: &'static str, offset: usize, _type_of: fn(&S) -> &F) -> Field {
    Field {
        name,
        offset,
        size: size_of::<F>(),
        align: align_of::<F>(),
    }
}

/// The size of the struct a header had whose last field was `fields[last]`: its end rounded
/// up to the largest alignment among the fields up to it, as a C compiler lays it out.
pub(crate) fn prefix_size(fields: &[Field], last: usize) -> usize {
    let end = fields[last].offset + fields[last].size;
    let align = fields[..=last].iter().map(|f| f.align).max().unwrap_or(1);
    end.div_ceil(align) * align
}

/// Checks a caller's `struct_size` against the layouts this library can read: its own, or an
/// older header's (a prefix whose size ends before the next field starts).
pub(crate) fn check_size<T: Versioned>(struct_size: usize) -> Res<()> {
    let full = size_of::<T>();
    if struct_size == full {
        return Ok(());
    }
    if struct_size > full {
        return Err(Failure::HeaderTooNew(format!(
            "{}.struct_size is {struct_size} bytes, but this library ({}) knows {full}: the \
             program was built against a newer mgecl.h than the library it runs with",
            T::C_NAME,
            env!("CARGO_PKG_VERSION"),
        )));
    }
    let fields = T::fields();
    let is_prefix = (0..fields.len() - 1).any(|last| {
        prefix_size(&fields, last) == struct_size && struct_size <= fields[last + 1].offset
    });
    if is_prefix {
        return Ok(());
    }
    let init = match T::C_NAME {
        "mgecl_load_options" | "mgecl_task_options" => {
            format!("{}_init(&s, sizeof s)", T::C_NAME)
        }
        _ => "`= { sizeof s }`".to_string(),
    };
    let cut = match fields.iter().rev().find(|f| f.offset < struct_size) {
        Some(f) if struct_size > size_of::<usize>() => format!(", ending within {}", f.name),
        _ => String::new(),
    };
    Err(Failure::Argument(format!(
        "{}.struct_size is {struct_size}{cut}, which no mgecl.h had (this library's is \
         {full}): initialise the struct with {init}",
        T::C_NAME
    )))
}

/// A caller's struct read at its `struct_size`: the fields it lacks keep `defaults`' values.
///
/// # Safety
/// `p` is NULL or points to a struct whose first `struct_size` bytes are readable.
pub(crate) unsafe fn read<T: Versioned>(p: *const T, defaults: T, name: &'static str) -> Res<T> {
    if p.is_null() {
        return Err(Failure::Null(name));
    }
    // SAFETY: `struct_size` is the first field (checked at compile time by `versioned!`).
    let struct_size = unsafe { p.cast::<usize>().read_unaligned() };
    check_size::<T>(struct_size)?;
    let mut out = defaults;
    // SAFETY: the caller's struct has `struct_size` bytes, at most `size_of::<T>()`.
    unsafe {
        std::ptr::copy_nonoverlapping(
            p.cast::<u8>(),
            (&mut out as *mut T).cast::<u8>(),
            struct_size,
        )
    };
    Ok(out)
}

/// Checks the caller's output struct before any work: not NULL, and a `struct_size` (already
/// set by the caller) this library can write.
///
/// # Safety
/// `p` is NULL or points to a struct whose `struct_size` field is readable.
pub(crate) unsafe fn check_out<T: Versioned>(p: *mut T, name: &'static str) -> Res<usize> {
    if p.is_null() {
        return Err(Failure::Null(name));
    }
    // SAFETY: `struct_size` is the first field (checked at compile time by `versioned!`).
    let struct_size = unsafe { p.cast::<usize>().read_unaligned() };
    check_size::<T>(struct_size)?;
    Ok(struct_size)
}

/// Writes `value` into the caller's struct as far as its `struct_size` (already set by the
/// caller) reaches; `struct_size` itself is left as it is.
///
/// # Safety
/// `p` is NULL or points to a struct whose first `struct_size` bytes are writable.
pub(crate) unsafe fn write<T: Versioned>(p: *mut T, value: T, name: &'static str) -> Res<()> {
    let struct_size = unsafe { check_out(p, name) }?;
    let skip = size_of::<usize>();
    // SAFETY: the caller's struct has `struct_size` bytes, at most `size_of::<T>()`.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&value as *const T).cast::<u8>().add(skip),
            p.cast::<u8>().add(skip),
            struct_size.saturating_sub(skip),
        )
    };
    Ok(())
}

/// Fills the caller's struct of `struct_size` bytes with `defaults` and sets its
/// `struct_size`: what the `*_init` functions do.
///
/// # Safety
/// `p` is NULL or points to at least `struct_size` writable bytes.
pub(crate) unsafe fn init<T: Versioned>(
    p: *mut T,
    struct_size: usize,
    defaults: T,
    name: &'static str,
) -> Res<()> {
    if p.is_null() {
        return Err(Failure::Null(name));
    }
    check_size::<T>(struct_size)?;
    // SAFETY: the caller gives `struct_size` writable bytes; `struct_size` comes first.
    unsafe { p.cast::<usize>().write_unaligned(struct_size) };
    unsafe { write(p, defaults, name) }
}

/// Checks `T`'s fields and that each layout a released header had (named by its last
/// field, oldest first) is still a prefix read as it was: its size ends before the next field
/// starts, and is accepted.
#[cfg(test)]
pub(crate) fn check_released_layouts<T: Versioned>(released: &[&str]) {
    let name = T::C_NAME;
    let fields = T::fields();
    assert_eq!(fields[0].name, "struct_size");
    assert_eq!((fields[0].offset, fields[0].size), (0, size_of::<usize>()));
    // The listed fields tile the struct in order: none left out, none overlapping.
    for pair in fields.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(
            a.offset + a.size <= b.offset,
            "{name}: {} overlaps {}",
            a.name,
            b.name
        );
        let gap = b.offset - (a.offset + a.size);
        assert!(gap < b.align, "{name}: a field missing before {}", b.name);
    }
    let full = prefix_size(&fields, fields.len() - 1);
    assert_eq!(full, size_of::<T>(), "{name}: a field missing at the end");
    for last_name in released {
        let last = fields
            .iter()
            .position(|f| f.name == *last_name)
            .unwrap_or_else(|| panic!("{name}: released field {last_name} is gone"));
        let size = prefix_size(&fields, last);
        if let Some(next) = fields.get(last + 1) {
            assert!(
                size <= next.offset,
                "{name}: {} starts at {}, inside the {size} bytes of the layout that ended at \
                 {last_name}: start it at {size} or later",
                next.name,
                next.offset
            );
        }
        assert!(check_size::<T>(size).is_ok(), "{name}: {size}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A struct that grew twice: by `added` (a u32 that starts inside the padding after
    /// `flag`, so the layout ending at `flag` is none a header may have had), then by `more`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Grown {
        struct_size: usize,
        count: u32,
        scale: f64,
        flag: bool,
        added: u32,
        more: u64,
    }
    versioned!(Grown {
        struct_size,
        count,
        scale,
        flag,
        added,
        more
    });

    fn value(struct_size: usize) -> Grown {
        Grown {
            struct_size,
            count: 7,
            scale: 2.5,
            flag: true,
            added: 9,
            more: 11,
        }
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn the_grown_struct_lays_out_as_c_does() {
        let spans: Vec<_> = Grown::fields().iter().map(|f| (f.offset, f.size)).collect();
        assert_eq!(spans, [(0, 8), (8, 4), (16, 8), (24, 1), (28, 4), (32, 8)]);
        check_released_layouts::<Grown>(&["scale", "added", "more"]);
    }

    #[test]
    #[should_panic(
        expected = "added starts at 28, inside the 32 bytes of the layout that ended at flag"
    )]
    fn a_field_that_starts_inside_an_older_layout_fails_the_check() {
        check_released_layouts::<Grown>(&["flag"]);
    }

    #[test]
    fn sizes_are_checked() {
        for ok in [8, 16, 24, 32, 40] {
            assert!(check_size::<Grown>(ok).is_ok(), "{ok}");
        }
        // 0 (never initialised), and sizes that end inside a field or its padding. (A header
        // whose struct ended at `flag` would have had 32 bytes, which is read as the layout
        // ending at `added`: that is why `added` had to start at 32 or later, and the
        // released-layout check below says so for the real structs.)
        for bad in [0, 4, 12, 20, 28, 39] {
            assert!(
                matches!(check_size::<Grown>(bad), Err(Failure::Argument(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            check_size::<Grown>(48),
            Err(Failure::HeaderTooNew(_))
        ));
    }

    #[test]
    fn an_older_struct_is_read_with_defaults_and_written_only_as_far_as_it_reaches() {
        let defaults = Grown {
            struct_size: 40,
            count: 1,
            scale: 1.0,
            flag: false,
            added: 2,
            more: 3,
        };
        // An older caller's struct: the layout that ended at `scale` (24 bytes), followed by
        // bytes that are not its own.
        let mut memory = [0xAAu8; 40];
        let caller = value(24);
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&caller as *const Grown).cast::<u8>(),
                memory.as_mut_ptr(),
                24,
            )
        };
        let read = unsafe { read(memory.as_ptr().cast::<Grown>(), defaults, "s") }
            .ok()
            .unwrap();
        assert_eq!((read.count, read.scale), (7, 2.5));
        assert_eq!((read.flag, read.added, read.more), (false, 2, 3));

        let mut out = [0xAAu8; 40];
        out[..8].copy_from_slice(&24usize.to_ne_bytes());
        unsafe { write(out.as_mut_ptr().cast::<Grown>(), value(40), "s") }
            .ok()
            .unwrap();
        assert_eq!(
            &out[..8],
            &24usize.to_ne_bytes(),
            "struct_size is the caller's"
        );
        assert_eq!(&out[8..12], &7u32.to_ne_bytes());
        assert_eq!(&out[16..24], &2.5f64.to_ne_bytes());
        assert!(
            out[24..].iter().all(|&b| b == 0xAA),
            "nothing past the caller's struct"
        );

        let mut fresh = [0xAAu8; 40];
        unsafe { init(fresh.as_mut_ptr().cast::<Grown>(), 16, value(40), "s") }
            .ok()
            .unwrap();
        assert_eq!(&fresh[..8], &16usize.to_ne_bytes());
        assert!(fresh[16..].iter().all(|&b| b == 0xAA));
    }

    #[test]
    fn null_and_newer_structs_are_refused() {
        let null = unsafe { read(std::ptr::null::<Grown>(), value(40), "options") };
        assert!(matches!(null, Err(Failure::Null("options"))));
        let mut newer = [0u8; 64];
        newer[..8].copy_from_slice(&48usize.to_ne_bytes());
        let got = unsafe { read(newer.as_ptr().cast::<Grown>(), value(40), "options") };
        assert!(matches!(got, Err(Failure::HeaderTooNew(_))));
    }
}
