#!/bin/sh
# The C-ABI sequence fuzzer: tests/c/abi_sequence.c under libFuzzer, against a libmgecl.a whose
# Rust code carries coverage counters (the flags cargo-fuzz passes), with debug assertions and
# overflow checks on. Needs clang (libFuzzer's runtime). Run from anywhere:
#   fuzz/abi_sequence.sh [libFuzzer flags...]    e.g. -max_total_time=1800
# Writes the corpus to fuzz/corpus/abi_sequence/ and crashes to fuzz/artifacts/abi_sequence/.
set -eu
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=3 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
    cargo build --release -p mgecl-c --target "$target" --target-dir target/abi-fuzz
# --target keeps those flags off build scripts and proc macros, which have no libFuzzer.
bin=target/abi-fuzz/abi_sequence
clang -O1 -g -fsanitize=fuzzer -Iinclude tests/c/abi_sequence.c \
    "target/abi-fuzz/$target/release/libmgecl.a" -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc \
    -o "$bin"
mkdir -p fuzz/corpus/abi_sequence fuzz/artifacts/abi_sequence
MGECL_FUZZ_DATA=tests/data MGECL_FUZZ_TMP="${TMPDIR:-/tmp}" "$bin" \
    -artifact_prefix=fuzz/artifacts/abi_sequence/ -rss_limit_mb=4096 "$@" \
    fuzz/corpus/abi_sequence
