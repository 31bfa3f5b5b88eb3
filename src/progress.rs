//! Stage progress: a bar or spinner per stage with its time on a terminal, plain
//! timestamped lines otherwise (CI logs, pipes).

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// How much a command says while it works (`--quiet`, `--verbose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// Warnings and failures only.
    Quiet,
    /// Each stage and its time.
    #[default]
    Normal,
    /// Each stage, and every line its tools print.
    Verbose,
}

/// Where stage progress goes.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    fancy: bool,
    verbosity: Verbosity,
}

impl Progress {
    /// Bars when stderr is a terminal (and not quiet), plain lines otherwise.
    pub fn detect(verbosity: Verbosity) -> Self {
        Progress {
            fancy: verbosity != Verbosity::Quiet && std::io::stderr().is_terminal(),
            verbosity,
        }
    }

    /// Starts a stage; it reports its time when finished, and failure when dropped unfinished.
    pub fn stage(&self, name: impl Into<String>) -> Stage {
        let name = name.into();
        let bar = self.fancy.then(|| {
            let bar = bars().add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner:.cyan} {prefix:.bold} {elapsed:>4} {wide_msg}",
                )
                .expect("static template"),
            );
            bar.set_prefix(name.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() && self.verbosity != Verbosity::Quiet {
            eprintln!("r2a-image: {name} ...");
        }
        Stage {
            name,
            bar,
            verbosity: self.verbosity,
            started: Instant::now(),
            finished: false,
            items: None,
            done: AtomicU64::new(0),
        }
    }
}

/// The terminal's bars: stages that run side by side (package layers) each keep a line.
fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

/// Takes a finished stage's bar away and prints the line that stays in its place, above
/// the bars still running.
fn retire(bar: ProgressBar, line: &str) {
    bar.finish_and_clear();
    bars().remove(&bar);
    if bars().println(line).is_err() {
        eprintln!("{line}");
    }
}

/// One running stage.
pub struct Stage {
    name: String,
    bar: Option<ProgressBar>,
    verbosity: Verbosity,
    started: Instant,
    finished: bool,
    /// The number of items of a counted stage ([`Stage::items`]).
    items: Option<u64>,
    /// Items or bytes done so far.
    done: AtomicU64,
}

impl Stage {
    /// Shows the latest line of the stage's tool (terminal only: logs would drown), or
    /// with `--verbose` prints every line.
    pub fn line(&self, text: &str) {
        if self.verbosity == Verbosity::Verbose {
            let line = format!("  {}: {}", self.name, text.trim_end());
            match &self.bar {
                Some(bar) => bar.println(line),
                None => eprintln!("{line}"),
            }
        } else if let Some(bar) = &self.bar {
            bar.set_message(text.trim().to_string());
        }
    }

    /// Says something that stays (on the terminal above the bar, else in the log).
    pub fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("  {}: {text}", self.name)),
            None => eprintln!("r2a-image: {}: {text}", self.name),
        }
    }

    /// Switches to a byte bar of `total` bytes.
    pub fn bytes(&self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {elapsed:>4} [{bar:30}] {bytes}/{total_bytes} {wide_msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
        }
    }

    /// Switches to a bar of `total` items (seeds, nodes). Without a terminal each tenth
    /// of the way is a line of its own, so that a log shows the stage moving.
    pub fn items(&mut self, total: u64) {
        self.items = Some(total);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner:.cyan} {prefix:.bold} {elapsed:>4} [{bar:30}] {pos}/{len} {wide_msg}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
        }
    }

    /// Advances the bar by bytes or items; stages run by several threads share it.
    pub fn advance(&self, amount: u64) {
        let before = self.done.fetch_add(amount, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(amount);
        } else if let Some(total) = self.items.filter(|&total| total > 0)
            && self.verbosity != Verbosity::Quiet
        {
            let after = before + amount;
            if before * 10 / total != after * 10 / total {
                eprintln!("r2a-image: {} {after}/{total}", self.name);
            }
        }
    }

    /// Counts the stage's time from now: it waited for its turn since it was shown.
    pub fn restart(&mut self) {
        self.started = Instant::now();
        if let Some(bar) = &self.bar {
            bar.reset_elapsed();
        }
    }

    /// Ends the stage with a note, e.g. "cached" or a size.
    pub fn finish(mut self, note: &str) {
        self.finished = true;
        let elapsed = self.started.elapsed().as_secs_f64();
        let line = format!(
            "{} done in {elapsed:.1}s{}",
            self.name,
            if note.is_empty() {
                String::new()
            } else {
                format!(" ({note})")
            }
        );
        if let Some(bar) = self.bar.take() {
            retire(bar, &format!("\u{2713} {line}"));
        } else if self.verbosity != Verbosity::Quiet {
            eprintln!("r2a-image: {line}");
        }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let line = format!(
            "\u{2717} {} failed after {:.1}s",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
        match self.bar.take() {
            Some(bar) => retire(bar, &line),
            None => eprintln!("{line}"),
        }
    }
}
