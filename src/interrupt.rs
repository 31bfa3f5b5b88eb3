//! Ctrl-C and SIGTERM: stop the running tool, unwind, and let every guard clean up.
//!
//! The handler only records the signal and forwards SIGTERM to the children we started;
//! the build then fails at the next check, so `Drop` guards remove staging folders and
//! nothing half-written is left in `out/`.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::process::{Pid, Signal, kill_process};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static CHILDREN: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// The error a build ends with after Ctrl-C or SIGTERM.
#[derive(Debug, thiserror::Error)]
#[error("interrupted; partial work was removed")]
pub struct Interrupted;

/// Installs the handler (once per process).
pub fn install() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            // A second signal: the user does not want to wait for the cleanup.
            std::process::exit(130);
        }
        let children = CHILDREN.lock().map(|c| c.clone()).unwrap_or_default();
        for pid in children {
            if let Some(pid) = Pid::from_raw(pid as i32) {
                // The child may already be gone; nothing to do then.
                let _ = kill_process(pid, Signal::TERM);
            }
        }
    })?;
    Ok(())
}

/// Fails with [`Interrupted`] once a signal has arrived.
pub fn check() -> Result<(), Interrupted> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

/// Keeps a child's id registered for signal forwarding while it runs.
pub struct ChildGuard(u32);

impl ChildGuard {
    /// Registers `pid` until the guard is dropped.
    pub fn register(pid: u32) -> ChildGuard {
        if let Ok(mut children) = CHILDREN.lock() {
            children.insert(pid);
        }
        ChildGuard(pid)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(mut children) = CHILDREN.lock() {
            children.remove(&self.0);
        }
    }
}
