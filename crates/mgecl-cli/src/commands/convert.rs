//! `mgecl convert`: a PyTorch checkpoint to a model file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use mgecl::convert::{convert_checkpoint_file, ConvertOptions};

use crate::options::parse_meta;

/// Convert a PyTorch checkpoint (torch.save zip: a state dict, or a dict holding one as RFS
/// and MGECL save) to a model file: the encoder's tensors under RFS key names, float32,
/// with the metadata given; heads, counters and prefixes such as `module.` dropped.
#[derive(Args)]
pub struct ConvertArgs {
    /// The PyTorch checkpoint (.pth, .pt).
    input: PathBuf,
    /// The model file to write (safetensors).
    output: PathBuf,
    /// Metadata entry KEY=VALUE (repeatable); image_size, mean and std are required, e.g.
    /// --meta image_size=84 --meta mean=[0.485,0.456,0.406] --meta std=[0.229,0.224,0.225].
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// Dotted key of the state dict inside the checkpoint (e.g. model, state_dict), when
    /// it holds more than one encoder.
    #[arg(long)]
    key: Option<String>,
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let mut options = ConvertOptions::new(parse_meta(&args.meta)?);
    options.state_dict_key = args.key;
    let conversion = convert_checkpoint_file(&args.input, &args.output, &options)?;
    let info = &conversion.info;
    let from = match conversion.state_dict_key.as_str() {
        "" => "the top-level state dict".to_string(),
        key => format!("the state dict under {key:?}"),
    };
    let stripped = match conversion.prefix.as_str() {
        "" => String::new(),
        prefix => format!(" (prefix {prefix:?} stripped)"),
    };
    outln!(
        "{}: {} {:?}, {} channel(s) in, {} features; {} tensors from {from}{stripped}",
        args.output.display(),
        info.arch,
        info.widths,
        info.input.in_channels,
        info.feature_dim,
        conversion.kept.len(),
    );
    if !conversion.dropped.is_empty() {
        outln!(
            "left out {} tensors: {}",
            conversion.dropped.len(),
            summarise_keys(&conversion.dropped, &conversion.prefix)
        );
    }
    Ok(())
}

/// Keys grouped by their first component after `prefix`, with counts: `classifier.* (2),
/// num_batches_tracked (16)`.
fn summarise_keys(keys: &[String], prefix: &str) -> String {
    let mut counters = 0;
    let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
    for key in keys {
        let key = key.strip_prefix(prefix).unwrap_or(key);
        if key.ends_with("num_batches_tracked") {
            counters += 1;
        } else {
            *groups
                .entry(key.split('.').next().unwrap_or(key))
                .or_default() += 1;
        }
    }
    let mut parts: Vec<String> = groups
        .into_iter()
        .map(|(group, n)| format!("{group}.* ({n})"))
        .collect();
    if counters > 0 {
        parts.push(format!("num_batches_tracked ({counters})"));
    }
    parts.join(", ")
}
