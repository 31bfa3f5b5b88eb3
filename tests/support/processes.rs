//! Processes seen through `/proc`: those whose command line mentions something, the whole
//! tree below a process, and whether each of them has ended (a reused process id is not
//! mistaken for it).

use std::time::{Duration, Instant};

/// A process as `/proc` showed it.
#[derive(Debug, Clone)]
pub struct Process {
    /// Its id.
    pub pid: u32,
    /// Its command line, words joined by spaces.
    pub cmdline: String,
    /// When it started (clock ticks since boot): with the id, it names one process.
    started: u64,
}

/// `(parent, state, start time)` from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(u32, char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: read after the last one.
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    Some((
        fields.get(1)?.parse().ok()?,
        state,
        fields.get(19)?.parse().ok()?,
    ))
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect()
}

/// Every process below `root` (children, their children, ...), not `root` itself.
pub fn descendants(root: u32) -> Vec<Process> {
    let parents: Vec<(u32, u32, u64)> = all_pids()
        .into_iter()
        .filter_map(|pid| stat(pid).map(|(parent, _, started)| (pid, parent, started)))
        .collect();
    let mut found: Vec<Process> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, _, started) in parents.iter().filter(|(_, p, _)| *p == parent) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
                .unwrap_or_default();
            found.push(Process {
                pid,
                cmdline,
                started,
            });
            frontier.push(pid);
        }
    }
    found
}

impl Process {
    /// Whether it still runs (a zombie has ended: only its parent's wait is missing).
    pub fn is_running(&self) -> bool {
        stat(self.pid).is_some_and(|(_, state, started)| started == self.started && state != 'Z')
    }
}

/// The processes of `processes` still running after `within` (polled).
pub fn still_running_after(processes: &[Process], within: Duration) -> Vec<Process> {
    let deadline = Instant::now() + within;
    loop {
        let running: Vec<Process> = processes
            .iter()
            .filter(|process| process.is_running())
            .cloned()
            .collect();
        if running.is_empty() || Instant::now() >= deadline {
            return running;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Command lines of running processes that contain `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let own = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
                && entry.file_name() != own.as_str()
        })
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(needle))
        .collect()
}
