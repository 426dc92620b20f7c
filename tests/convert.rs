//! `mgecl::convert` against hostile and damaged checkpoints: every input gives a model or a
//! clear error, never a panic, a stack overflow or an allocation the bytes do not justify.
//! (Parity of converted models with PyTorch is in crates/mgecl-cli/tests/convert.rs.)

use mgecl_test_support as common;

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};

use common::data;
use mgecl::convert::{convert_checkpoint, ConvertOptions};
use mgecl::{Error, ModelProblem};

fn options() -> ConvertOptions {
    ConvertOptions::new(BTreeMap::from([
        ("image_size".to_string(), "28".to_string()),
        ("mean".to_string(), "[0.9]".to_string()),
        ("std".to_string(), "[0.25]".to_string()),
    ]))
}

fn checkpoint(name: &str) -> Vec<u8> {
    std::fs::read(data(&format!("convert/{name}.pth"))).unwrap()
}

/// The archive's entries, in order.
fn entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::with_config(
        zip::read::Config {
            archive_offset: zip::read::ArchiveOffset::Known(0),
        },
        Cursor::new(bytes),
    )
    .unwrap();
    (0..zip.len())
        .map(|i| {
            let mut entry = zip.by_index(i).unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            (entry.name().unwrap().into_owned(), data)
        })
        .collect()
}

/// A stored (uncompressed) zip of `entries`, as torch.save writes.
fn zip_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        writer.start_file(name.as_str(), stored).unwrap();
        writer.write_all(data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn with_pickle(pickle: &[u8]) -> Vec<u8> {
    zip_of(&[("archive/data.pkl".to_string(), pickle.to_vec())])
}

fn problem(result: mgecl::Result<mgecl::convert::Conversion>) -> String {
    match result {
        Ok(_) => panic!("converted"),
        Err(Error::InvalidModel { problem, detail }) => format!("{problem:?}: {detail}"),
        Err(e) => format!("{e}"),
    }
}

#[test]
fn a_rewritten_archive_still_converts() {
    // The helpers themselves: re-zipping a checkpoint unchanged keeps it convertible.
    let bytes = zip_of(&entries(&checkpoint("conv4_bare")));
    let conversion = convert_checkpoint(&bytes, &options()).unwrap();
    assert_eq!(conversion.kept.len(), 24);
    assert_eq!(conversion.info.widths, vec![32; 4]);
}

#[test]
fn truncated_checkpoints_are_errors() {
    let bytes = checkpoint("conv4_rfs");
    for len in (0..bytes.len()).step_by(401) {
        assert!(
            convert_checkpoint(&bytes[..len], &options()).is_err(),
            "{len} bytes"
        );
    }
}

#[test]
fn damaged_pickles_never_panic() {
    let original = entries(&checkpoint("conv4_rfs"));
    let pickle_len = original[0].1.len();
    assert!(original[0].0.ends_with("data.pkl"));
    let mut converted = 0;
    for at in (0..pickle_len).step_by(7) {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut damaged = original.clone();
            damaged[0].1[at] ^= flip;
            if convert_checkpoint(&zip_of(&damaged), &options()).is_ok() {
                converted += 1;
            }
        }
    }
    // Some flips land in strings that do not matter (the Namespace's values).
    assert!(converted < pickle_len / 7 * 3);
}

#[test]
fn deep_nesting_is_refused_before_it_overflows_the_stack() {
    let mut pickle = b"\x80\x02N".to_vec();
    pickle.extend(std::iter::repeat_n(0x85u8, 1_000_000)); // TUPLE1, a million deep
    pickle.push(b'.');
    let message = match convert_checkpoint(&with_pickle(&pickle), &options()) {
        Err(Error::LimitExceeded(m)) => m,
        other => panic!("{:?}", other.map(|c| c.kept)),
    };
    assert!(message.contains("nests objects"), "{message}");
}

#[test]
fn memo_copies_are_bounded() {
    // A list memoised, then 60 times: fetch it twice, pair the copies, memoise the pair:
    // 2^60 objects if nothing stops it.
    let mut pickle = b"\x80\x02]q\x00".to_vec();
    for _ in 0..60 {
        pickle.extend(b"h\x00h\x00\x86q\x00");
    }
    pickle.push(b'.');
    let message = match convert_checkpoint(&with_pickle(&pickle), &options()) {
        Err(Error::LimitExceeded(m)) => m,
        other => panic!("{:?}", other.map(|c| c.kept)),
    };
    assert!(message.contains("copies more than"), "{message}");
}

#[test]
fn lengths_and_integers_the_data_cannot_hold_are_refused() {
    // BINUNICODE declaring 2 GiB; LONG1 of 200 bytes.
    let long_string = b"\x80\x02X\xff\xff\xff\x7fabc.";
    let message = problem(convert_checkpoint(&with_pickle(long_string), &options()));
    assert!(message.contains("runs past the end"), "{message}");
    let mut long_int = b"\x80\x02\x8a\xc8".to_vec();
    long_int.extend([1u8; 200]);
    long_int.push(b'.');
    let message = problem(convert_checkpoint(&with_pickle(&long_int), &options()));
    assert!(message.contains("wider than 64 bits"), "{message}");
}

#[test]
fn short_or_missing_tensor_data_is_named() {
    let original = entries(&checkpoint("conv4_bare"));
    let storage = original
        .iter()
        .position(|(name, _)| name.ends_with("/data/0"))
        .unwrap();
    let mut short = original.clone();
    short[storage].1.truncate(10);
    let message = problem(convert_checkpoint(&zip_of(&short), &options()));
    assert!(message.starts_with("BadCheckpoint"), "{message}");
    assert!(message.contains("needs 1152 bytes"), "{message}");

    let mut missing = original.clone();
    missing.remove(storage);
    let message = problem(convert_checkpoint(&zip_of(&missing), &options()));
    assert!(message.contains("storage entry"), "{message}");

    let mut nan = original;
    nan[storage].1[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    let message = problem(convert_checkpoint(&zip_of(&nan), &options()));
    assert!(message.starts_with("NonFiniteWeight"), "{message}");
}

#[test]
fn the_state_dict_can_be_named_and_a_wrong_name_lists_the_candidates() {
    let bytes = checkpoint("conv4_nested_dataparallel");
    let found = convert_checkpoint(&bytes, &options()).unwrap();
    assert_eq!(found.state_dict_key, "checkpoint.state_dict");
    assert_eq!(found.prefix, "module.");
    let named = options().with_state_dict_key("checkpoint.state_dict");
    let again = convert_checkpoint(&bytes, &named).unwrap();
    assert_eq!(again.kept, found.kept);
    assert_eq!(again.info.fingerprint, found.info.fingerprint);
    let wrong = options().with_state_dict_key("model");
    let message = problem(convert_checkpoint(&bytes, &wrong));
    assert!(
        message.contains("checkpoint.state_dict (28 tensors)"),
        "{message}"
    );
}

#[test]
fn other_files_are_told_apart() {
    let message = problem(convert_checkpoint(b"hello", &options()));
    assert!(message.contains("not a PyTorch checkpoint"), "{message}");
    let model = std::fs::read(data("conv4_gray.safetensors")).unwrap();
    let message = problem(convert_checkpoint(&model, &options()));
    assert!(message.contains("safetensors"), "{message}");
    let message = problem(convert_checkpoint(&checkpoint("conv4_legacy"), &options()));
    assert!(message.contains("legacy"), "{message}");
    assert_eq!(
        ModelProblem::BadCheckpoint,
        match convert_checkpoint(&with_pickle(b"\x80\x02}."), &options()) {
            Err(Error::InvalidModel { problem, .. }) => problem,
            other => panic!("{:?}", other.map(|c| c.kept)),
        }
    );
}
