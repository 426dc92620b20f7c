//! `mgecl label`: propose a label for every image of a folder from a support folder, write the
//! CSV (and the HTML report), say which images to review and which to label next.

use std::path::{Path, PathBuf};

use mgecl::{Error, LabelOptions, Labelling, Task};
use ndarray::{Array2, Axis};

use crate::report::{self, ReportInput};

/// Every PNG/JPEG file under `root`, recursively (symbolic links are not followed), sorted by
/// path.
pub fn images_under(root: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut found = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|e| Error::io(&folder, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&folder, e))?;
            let kind = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
            let path = entry.path();
            if kind.is_dir() {
                folders.push(path);
            } else if kind.is_file() && mgecl::preprocess::is_image_file(&path) {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// `path` relative to `root`, with `/` separators (the CSV's `path` column).
pub fn relative(path: &Path, root: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// What `mgecl label` was asked.
pub struct LabelArgs {
    pub support: PathBuf,
    pub images: PathBuf,
    pub out: PathBuf,
    pub report: Option<PathBuf>,
    pub options: LabelOptions,
    /// Each class's support images (shown in the report).
    pub examples: Vec<(String, Vec<PathBuf>)>,
}

/// Labels every image under `args.images` with `task` (fitted on `args.support`), writes the
/// CSV and the report. Returns the labelling and the relative paths.
pub fn run(
    task: &Task,
    args: &LabelArgs,
    progress: &dyn Fn(usize, &str) -> indicatif::ProgressBar,
) -> Result<(Vec<String>, Labelling), Error> {
    let files = images_under(&args.images)?;
    if files.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "no PNG or JPEG images under {}",
            args.images.display()
        )));
    }
    let paths: Vec<String> = files.iter().map(|f| relative(f, &args.images)).collect();
    let bar = progress(files.len(), "labelling");
    let mut features = Array2::<f32>::zeros((0, task.model().feature_dim()));
    for chunk in files.chunks(16) {
        // As the task classifies them: with each image's copies under augment_queries.
        let rows = task.embed_query_paths(chunk)?;
        features
            .append(Axis(0), rows.view())
            .map_err(|e| Error::Backend(format!("cannot collect features: {e}")))?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let labelling = task.label_features(features.view(), &args.options)?;
    let csv = labelling.csv(&paths)?;
    mgecl::__private::write_file(&args.out, csv.as_bytes())?;
    if let Some(report_path) = &args.report {
        // Drawn from the CSV as written (as `mgecl report` draws it): the same page either way.
        let rows = mgecl::task::LabelCsv::parse(&csv)?;
        let classes: Vec<String> = task.classes().into_iter().map(|c| c.label).collect();
        let html = report::html(
            &ReportInput {
                support: &args.support,
                images: &args.images,
                files: &files,
                paths: &rows.paths,
                proposals: &rows.proposals,
                label_next: &rows.label_next,
                classes: &classes,
                review_below: args.options.review_below,
                examples: &args.examples,
            },
            progress,
        )?;
        mgecl::__private::write_file(report_path, html.as_bytes())?;
    }
    Ok((paths, labelling))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_use_forward_slashes() {
        let root = Path::new("/data/images");
        assert_eq!(relative(&root.join("a").join("b.png"), root), "a/b.png");
    }
}
