//! Support folders (one sub-folder of example images per class, named by its label) and the
//! tasks fitted on them. The folder rules are the core's ([`mgecl::task::support_classes`]),
//! which the C ABI and Python share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::ProgressBar;
use mgecl::{Error, Model, Task, TaskConfig};

/// Each class of a support folder: its label (the folder name) and its images.
pub type SupportClasses = Vec<(String, Vec<PathBuf>)>;

/// Support images per class folder of `support` (sorted by folder name).
pub fn classes(support: &Path) -> Result<SupportClasses, Error> {
    Ok(mgecl::task::support_classes(support)?
        .into_iter()
        .map(|class| (class.label, class.images))
        .collect())
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
    let classes = task.add_folder_with(support, |_| bar.inc(1))?;
    let report = task.fit()?;
    if !report.converged {
        eprintln!(
            "warning: the classifier did not converge (gradient {:.2e})",
            report.gradient_max_abs
        );
    }
    let classes = classes
        .into_iter()
        .map(|class| (class.label, class.images))
        .collect();
    Ok((task, classes))
}
