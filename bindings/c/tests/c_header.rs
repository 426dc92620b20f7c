//! `include/mgecl.h` is generated from this crate (`bindings/c/src`) by cbindgen (the version
//! pinned in its Cargo.toml, configured by `bindings/c/cbindgen.toml`) and checked in: this test regenerates it and fails
//! on any difference. `MGECL_UPDATE_HEADER=1` rewrites the checked-in header instead.

use std::path::Path;

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn checked_in_header_matches_cbindgen_output() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_crate(crate_dir)
        .generate()
        .expect("cbindgen could not parse bindings/c/src");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let header = repo_root().join("include/mgecl.h");
    if std::env::var_os("MGECL_UPDATE_HEADER").is_some() {
        std::fs::write(&header, &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&header).unwrap_or_default();
    if checked_in != generated {
        let first = checked_in
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| checked_in.lines().count().min(generated.lines().count()));
        panic!(
            "include/mgecl.h is out of date with bindings/c/src (first difference at line {}).\n\
             Refresh it with:\n\n    MGECL_UPDATE_HEADER=1 cargo test --release --test c_header\n\n\
             and commit the result.",
            first + 1
        );
    }
}

#[test]
fn every_exported_function_is_documented() {
    let header = std::fs::read_to_string(repo_root().join("include/mgecl.h")).unwrap();
    let lines: Vec<&str> = header.lines().collect();
    let mut functions = 0;
    for (i, line) in lines.iter().enumerate() {
        let is_prototype = line.contains(" mgecl_")
            && line.contains('(')
            && !line.trim_start().starts_with('*')
            && !line.trim_start().starts_with("/*")
            && !line.starts_with("#define");
        if !is_prototype {
            continue;
        }
        functions += 1;
        let above = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap();
        assert!(
            above.trim_start().starts_with("*/") || above.trim() == "#if defined(MGECL_TEST_HOOKS)",
            "no doc comment above: {line}"
        );
    }
    assert!(functions >= 30, "found only {functions} prototypes");
}
