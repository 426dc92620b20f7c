//! `mgecl label`: propose a label for every image of a folder (the job is
//! [`crate::label_job`]) and say what to review and what to label next.

use std::path::PathBuf;

use clap::Args;

use crate::label_job::{self, LabelJob, LabelRun};
use crate::options::{ModelArgs, TaskArgs};
use crate::support;
use crate::terminal::progress;

/// Propose a label for every image under a folder (recursively) from a support folder of
/// class folders; write them as CSV (path relative to --images, label, probability,
/// needs_review, runner_up, runner_up_probability, known_probability, label_next, error), and
/// optionally an HTML report: the images to review, the ones to label next, every image
/// grouped by label. The images are answered together (transductively) unless --inductive.
#[derive(Args)]
pub struct LabelArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Folder of class folders (the folder name is the label).
    #[arg(long)]
    support: PathBuf,
    /// Folder of images to label, searched recursively: PNG, JPEG, WebP, BMP, GIF (first
    /// frame) and TIFF files are labelled; HEIC/HEIF/AVIF files get a row saying to
    /// convert them; other files are counted as skipped (--list-skipped names them).
    #[arg(long)]
    images: PathBuf,
    /// The CSV to write.
    #[arg(long)]
    out: PathBuf,
    /// Also write this self-contained HTML page.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Mark an image for review when its label's probability, or its probability of
    /// belonging to one of the support classes at all, is below this.
    #[arg(long, default_value_t = 0.8)]
    review_below: f64,
    /// How many images to suggest labelling next.
    #[arg(long, default_value_t = 20)]
    label_next: usize,
    /// Stop at the first file that cannot be read or decoded (or is over the image limits)
    /// with an error and no CSV. By default such a file gets a CSV row with an empty label
    /// and the reason in the `error` column, and the job goes on.
    #[arg(long)]
    strict: bool,
    /// Print the files under --images that are not images (they are counted either way).
    #[arg(long)]
    list_skipped: bool,
    /// Continue an interrupted run (Ctrl-C, kill, power loss) from the progress file
    /// beside --out (`OUT.progress`, appended and synced every 16 images, removed when the
    /// CSV is written): the CSV and report are the same as an uninterrupted run's. Without
    /// --resume a run starts over.
    #[arg(long)]
    resume: bool,
    /// Answer each image on its own. By default the images of a run are answered together
    /// (--transductive: the class means are refined with the unlabelled images first), which
    /// labels real folders better (docs/transductive.md) but makes an image's label
    /// depend on the rest of the folder.
    #[arg(long, conflicts_with = "transductive")]
    inductive: bool,
    #[command(flatten)]
    task: TaskArgs,
}

pub fn run(args: LabelArgs) -> anyhow::Result<()> {
    let model = args.model.load()?;
    let config = mgecl::TaskConfig {
        transductive: !args.inductive,
        ..args.task.config(&model)?
    };
    let bar = progress(support::count(&args.support)?, "examples");
    let (task, examples) = support::fitted_task(model, config, &args.support, &bar)?;
    bar.finish_and_clear();
    let job = LabelJob {
        support: args.support,
        images: args.images,
        out: args.out,
        report: args.report,
        options: mgecl::LabelOptions::new(args.review_below, args.label_next),
        strict: args.strict,
        resume: args.resume,
        examples,
    };
    let LabelRun {
        paths,
        labelling,
        skipped,
    } = label_job::run(&task, &job, &progress)?;
    let review = labelling.review_order();
    let failed = labelling.failed();
    if args.list_skipped {
        for (path, why) in &skipped {
            eprintln!("skipped {}: {why}", path.display());
        }
    }
    for &i in failed.iter().take(5) {
        eprintln!(
            "not labelled: {}",
            labelling.rows[i].error().unwrap_or_default()
        );
    }
    eprintln!(
        "labelled {} of {} images into {} classes: {} to review, {} failed (error column); \
         {} other files skipped; wrote {}{}",
        paths.len() - failed.len(),
        paths.len(),
        task.classes().len(),
        review.len(),
        failed.len(),
        skipped.len(),
        job.out.display(),
        job.report
            .as_ref()
            .map(|r| format!(" and {}", r.display()))
            .unwrap_or_default()
    );
    if !labelling.label_next.is_empty() {
        eprintln!("label next:");
        for s in labelling.label_next.iter().take(5) {
            eprintln!("  {}", paths[s.index]);
        }
    }
    Ok(())
}
