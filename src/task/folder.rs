//! Support folders: one sub-folder of example images per class, the sub-folder's name its
//! label. The one reading of these folders that the command-line tool, the C ABI
//! (`mgecl_task_add_folder`) and Python (`Task.from_folder`) share.
//!
//! ```no_run
//! use std::sync::Arc;
//! use mgecl::{LoadOptions, Model, Task, TaskConfig};
//! let model = Arc::new(Model::load("model.safetensors", &LoadOptions::default())?);
//! // support/cat/*.jpg, support/dog/*.jpg: two classes, "cat" and "dog", fitted.
//! let task = Task::from_folder(model, TaskConfig::default(), "support")?;
//! let answers = task.classify_paths(&["unknown.jpg"])?;
//! # Ok::<(), mgecl::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{check_label, Task, TaskConfig};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::preprocess::is_image_file;

/// Most unusable images a folder's error lists by name (the count says how many more).
const LISTED_FAILURES: usize = 20;

/// One class of a support folder: its label (the sub-folder's name) and its image files.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SupportClass {
    /// The sub-folder's name (a name that is not UTF-8 is read lossily).
    pub label: String,
    /// The image files directly inside the sub-folder, sorted by name.
    pub images: Vec<PathBuf>,
}

/// The classes of a support folder, sorted by label: one per sub-folder of `folder` whose
/// name does not start with a dot (`.git`, `.ipynb_checkpoints` are skipped), each with the
/// image files directly inside it (by extension, [`crate::preprocess::is_image_file`]:
/// other files and deeper folders are ignored), sorted by name. Files directly in
/// `folder` are ignored.
///
/// # Errors
/// [`Error::Io`] when a folder cannot be read; [`Error::InvalidArgument`] when `folder` has no
/// class sub-folder, or one of them holds no image file (naming it).
pub fn support_classes(folder: impl AsRef<Path>) -> Result<Vec<SupportClass>> {
    let folder = folder.as_ref();
    let mut class_dirs = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(|e| Error::io(folder, e))? {
        let path = entry.map_err(|e| Error::io(folder, e))?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if path.is_dir() && !hidden {
            class_dirs.push(path);
        }
    }
    if class_dirs.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{}: no class folders (a support folder holds one sub-folder of example images \
             per class, named by its label)",
            folder.display()
        )));
    }
    class_dirs.sort();
    class_dirs
        .into_iter()
        .map(|dir| {
            let label = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let images = images_in(&dir)?;
            if images.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "{}: the class folder holds no image file",
                    dir.display()
                )));
            }
            Ok(SupportClass { label, images })
        })
        .collect()
}

/// Image files directly inside `dir`, sorted by name.
fn images_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_file() && is_image_file(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

impl Task {
    /// A task on `model` with the classes of the support folder `folder`
    /// ([`support_classes`]: one sub-folder of example images per class, named by its label),
    /// fitted. [`Task::add_folder`] and [`Task::fit`] in one call.
    ///
    /// # Errors
    /// Those of [`Task::new`], [`Task::add_folder`] and [`Task::fit`].
    pub fn from_folder(
        model: Arc<Model>,
        config: TaskConfig,
        folder: impl AsRef<Path>,
    ) -> Result<Task> {
        let mut task = Task::new(model, config)?;
        task.add_folder(folder)?;
        task.fit()?;
        Ok(task)
    }

    /// Adds the classes of the support folder `folder` ([`support_classes`]), each with its
    /// images as examples, and returns them. Fit the task afterwards.
    ///
    /// # Errors
    /// Those of [`support_classes`]; [`Error::DuplicateLabel`] for a class the task already
    /// has, [`Error::InvalidArgument`] for a folder name that is no label, both before any
    /// image is read; [`Error::LimitExceeded`] past [`TaskConfig::max_classes`] or
    /// [`TaskConfig::max_rows`]; for images that cannot be used (unreadable, damaged,
    /// unsupported, over the image limits) the error of the one image ([`Error::Io`],
    /// [`Error::InvalidImage`], [`Error::LimitExceeded`]), or with several an
    /// [`Error::InvalidImage`] that names each (up to 20) and counts the rest: every image is
    /// tried, so one error lists all the files to fix. On error the task is left without the
    /// folder's classes (and unfitted).
    pub fn add_folder(&mut self, folder: impl AsRef<Path>) -> Result<Vec<SupportClass>> {
        self.add_folder_with(folder, |_| {})
    }

    /// [`Task::add_folder`] that calls `on_image` with each image's path once it is tried
    /// (e.g. to advance a progress bar).
    ///
    /// # Errors
    /// As [`Task::add_folder`].
    pub fn add_folder_with(
        &mut self,
        folder: impl AsRef<Path>,
        mut on_image: impl FnMut(&Path),
    ) -> Result<Vec<SupportClass>> {
        let classes = support_classes(folder.as_ref())?;
        for class in &classes {
            check_label(&class.label)?;
            if self.classes.iter().any(|c| c.label == class.label) {
                return Err(Error::DuplicateLabel(class.label.clone()));
            }
        }
        let added = self.add_classes(&classes, &mut on_image);
        if added.is_err() {
            for class in &classes {
                // Only the classes this call added are left to remove (their labels were new).
                let _ = self.remove_class(&class.label);
            }
        }
        added.map(|()| classes)
    }

    /// Adds `classes` and their examples; images that cannot be used are collected into one
    /// error, the others added.
    fn add_classes(
        &mut self,
        classes: &[SupportClass],
        on_image: &mut impl FnMut(&Path),
    ) -> Result<()> {
        let mut failures = Vec::new();
        for class in classes {
            self.add_class(&class.label)?;
            for image in &class.images {
                match self.add_example_path(&class.label, image) {
                    Ok(_) => {}
                    Err(e @ (Error::Io { .. } | Error::InvalidImage(_))) => failures.push(e),
                    // An image over the image limits: its message starts with its path (past
                    // max_rows, the task's limit, is no image's fault).
                    Err(Error::LimitExceeded(m)) if m.starts_with(&*image.to_string_lossy()) => {
                        failures.push(Error::LimitExceeded(m))
                    }
                    Err(other) => return Err(other),
                }
                on_image(image);
            }
        }
        match failures.len() {
            0 => Ok(()),
            1 => Err(failures.remove(0)),
            n => {
                let mut listed: Vec<String> = failures
                    .iter()
                    .take(LISTED_FAILURES)
                    .map(ToString::to_string)
                    .collect();
                if n > LISTED_FAILURES {
                    listed.push(format!("and {} more", n - LISTED_FAILURES));
                }
                Err(Error::InvalidImage(format!(
                    "{n} images of the support folder cannot be used: {}",
                    listed.join("; ")
                )))
            }
        }
    }
}
