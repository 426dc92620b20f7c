//! `mgecl report`: the HTML page of a labels CSV (drawn by [`crate::report`]).

use std::path::PathBuf;

use clap::Args;

use crate::report;
use crate::support;
use crate::terminal::progress;

/// Draw the HTML report of a labels CSV written by `mgecl label` (or
/// `python -m mgecl.ray label`): no model needed, the images and examples are read from
/// their folders.
#[derive(Args)]
pub struct ReportArgs {
    /// The labels CSV.
    #[arg(long)]
    csv: PathBuf,
    /// The support folder the CSV was labelled from.
    #[arg(long)]
    support: PathBuf,
    /// The images folder the CSV's paths are relative to.
    #[arg(long)]
    images: PathBuf,
    /// The HTML page to write.
    #[arg(long)]
    out: PathBuf,
    /// The --review-below the CSV was written with (for the page's explanation).
    #[arg(long, default_value_t = 0.8)]
    review_below: f64,
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.csv).map_err(|e| mgecl::Error::io(&args.csv, e))?;
    let examples = support::classes(&args.support)?;
    let images = report::write_from_csv(
        &text,
        &args.support,
        &args.images,
        &examples,
        args.review_below,
        &args.out,
        &progress,
    )?;
    eprintln!("wrote {} ({images} images)", args.out.display());
    Ok(())
}
