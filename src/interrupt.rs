//! Ctrl-C, SIGTERM and SIGHUP: stop the running tools, unwind, and let every guard clean up.
//!
//! Every tool we start runs in a process group of its own (see [`in_own_group`]), so a
//! terminal's Ctrl-C reaches only us and we decide what the tools get: on the first
//! signal, SIGTERM to each group, then SIGKILL to those still running after
//! [`GRACE`]; on a second signal, SIGKILL at once. The build then fails at its next
//! check with [`Interrupted`], its `Drop` guards remove staging and work folders, and the
//! exit status is 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM).

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// How long the tools get to stop on SIGTERM before they are killed: dpkg and apt hold
/// SIGTERM back during an unpack, and mmdebstrap waits for them.
pub const GRACE: Duration = Duration::from_secs(3);

/// The first signal that arrived, 0 while none has.
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// The process groups of the tools running now (each led by the tool we started).
static GROUPS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
static INSTALLED: OnceLock<()> = OnceLock::new();

/// The error a command ends with after a signal.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {}; partial work was removed", signal_name(*.signal))]
pub struct Interrupted {
    /// The signal's number.
    pub signal: i32,
}

impl Interrupted {
    /// The exit status that says which signal ended the command (the shell's convention).
    pub fn exit_status(&self) -> u8 {
        u8::try_from(128 + self.signal).unwrap_or(u8::MAX)
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT (Ctrl-C)",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// Installs the handler (once per process): a thread that waits for the signals.
pub fn install() -> anyhow::Result<()> {
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                on_signal(signal);
            }
        })?;
    let _ = INSTALLED.set(());
    Ok(())
}

fn on_signal(signal: i32) {
    let first = RECEIVED
        .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    let running = running_groups();
    if !first {
        // A second signal: the user does not want to wait for the tools.
        signal_groups(&running, Signal::KILL);
        return;
    }
    signal_groups(&running, Signal::TERM);
    // Only the tools that ran when the signal came: cleanup may start tools of its own.
    std::thread::spawn(move || {
        std::thread::sleep(GRACE);
        let still: Vec<u32> = running_groups()
            .into_iter()
            .filter(|group| running.contains(group))
            .collect();
        signal_groups(&still, Signal::KILL);
    });
}

fn running_groups() -> Vec<u32> {
    GROUPS
        .lock()
        .map(|groups| groups.iter().copied().collect())
        .unwrap_or_default()
}

fn signal_groups(groups: &[u32], signal: Signal) {
    for &group in groups {
        if let Some(pid) = i32::try_from(group).ok().and_then(Pid::from_raw) {
            // The group may already be gone; nothing to do then.
            let _ = kill_process_group(pid, signal);
        }
    }
}

/// Fails with [`Interrupted`] once a signal has arrived.
pub fn check() -> Result<(), Interrupted> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => Ok(()),
        signal => Err(Interrupted { signal }),
    }
}

/// Makes `command` start in a process group of its own, which [`ChildGuard`] signals as a
/// whole: the tool and every process it starts (mmdebstrap's apt and dpkg, say).
pub fn in_own_group(command: &mut Command) -> &mut Command {
    command.process_group(0)
}

/// Keeps a child's process group registered for signal forwarding while it runs; the
/// child must have been started by a command passed through [`in_own_group`].
pub struct ChildGuard(u32);

impl ChildGuard {
    /// Registers the group led by `pid` until the guard is dropped. A tool started just
    /// as a signal came is told at once, as if it had been running.
    pub fn register(pid: u32) -> ChildGuard {
        if let Ok(mut groups) = GROUPS.lock() {
            groups.insert(pid);
        }
        if check().is_err() {
            signal_groups(&[pid], Signal::TERM);
        }
        ChildGuard(pid)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(mut groups) = GROUPS.lock() {
            groups.remove(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_status_names_the_signal() {
        for (signal, status, name) in [
            (SIGINT, 130, "SIGINT"),
            (SIGTERM, 143, "SIGTERM"),
            (SIGHUP, 129, "SIGHUP"),
        ] {
            let interrupted = Interrupted { signal };
            assert_eq!(interrupted.exit_status(), status);
            assert!(interrupted.to_string().contains(name), "{interrupted}");
        }
    }
}
