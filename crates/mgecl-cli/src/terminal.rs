//! What the commands show: results on stdout ([`outln!`]), progress bars and training
//! records on stderr.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use mgecl_train::Progress;

/// `println!` that reports a failed write (a closed pipe: `mgecl info | head -c 10`) as an
/// error instead of panicking; `main` exits quietly on a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        {
            use std::io::Write as _;
            writeln!(std::io::stdout(), $($arg)*)
                .map_err(|e| mgecl::Error::io("<stdout>", e))?
        }
    };
}

/// A progress bar on stderr, shown only for more than a handful of items.
pub fn progress(len: usize, what: &str) -> ProgressBar {
    if len <= 8 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Training progress on the terminal: a bar per phase, log records as lines above it. When
/// stderr is not a terminal (a run in the background, logging to a file) the bar is hidden,
/// so a status line is printed instead: at a phase's first step, then at most once a minute.
#[derive(Default)]
pub struct TerminalProgress {
    bar: Option<ProgressBar>,
    label: String,
    last_line: Option<Instant>,
}

/// How often a hidden bar's status line is printed.
const STATUS_LINE_EVERY: Duration = Duration::from_secs(60);

impl Progress for TerminalProgress {
    fn start(&mut self, label: &str, done: u64, total: u64) {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {msg} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        bar.set_position(done);
        self.bar = Some(bar);
        self.label = label.to_string();
        self.last_line = None;
    }

    fn step(&mut self, status: &str) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(status.to_string());
            let due = self
                .last_line
                .is_none_or(|t| t.elapsed() >= STATUS_LINE_EVERY);
            if bar.is_hidden() && due {
                let total = bar.length().unwrap_or(0);
                eprintln!("{} {}/{total} {status}", self.label, bar.position());
                self.last_line = Some(Instant::now());
            }
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn record(&mut self, record: &serde_json::Value) {
        match &self.bar {
            Some(bar) => bar.println(record.to_string()),
            None => eprintln!("{record}"),
        }
    }
}
