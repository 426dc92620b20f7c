//! Support folders (one sub-folder of example images per class, named by its label) and the
//! tasks fitted on them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::ProgressBar;
use mgecl::{Error, Model, Task, TaskConfig};

/// Each class of a support folder: its label (the folder name) and its images.
pub type SupportClasses = Vec<(String, Vec<PathBuf>)>;

/// Support images per class folder of `support` (sorted by folder name).
pub fn classes(support: &Path) -> Result<SupportClasses, Error> {
    let mut class_dirs: Vec<PathBuf> = std::fs::read_dir(support)
        .map_err(|e| Error::io(support, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    class_dirs.sort();
    class_dirs
        .into_iter()
        .map(|dir| {
            let label = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok((label, images_in(&dir)?))
        })
        .collect()
}

/// How many example images `support` holds.
pub fn count(support: &Path) -> Result<usize, Error> {
    Ok(classes(support)?.iter().map(|(_, f)| f.len()).sum())
}

/// A task fitted on the class folders of `support`; also returns the classes' images.
pub fn fitted_task(
    model: Model,
    config: TaskConfig,
    support: &Path,
    bar: &ProgressBar,
) -> Result<(Task, SupportClasses), Error> {
    let mut task = Task::new(Arc::new(model), config)?;
    let classes = classes(support)?;
    for (label, images) in &classes {
        task.add_class(label)?;
        for image in images {
            task.add_example_path(label, image)?;
            bar.inc(1);
        }
    }
    let report = task.fit()?;
    if !report.converged {
        eprintln!(
            "warning: the classifier did not converge (gradient {:.2e})",
            report.gradient_max_abs
        );
    }
    Ok((task, classes))
}

/// Image files directly inside `dir`, sorted by name.
fn images_in(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_file() && mgecl::preprocess::is_image_file(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
