//! Booting an unpacked image under real systemd in a `systemd-nspawn` container, on a
//! bridge of the test's own with no uplink and no address, so nothing it sends can leave
//! this machine. The container and the bridge go away when the guard is dropped, also
//! when a test fails.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// A booted container.
pub struct Container {
    child: Option<Child>,
    bridge: String,
    console: PathBuf,
}

impl Container {
    /// Boots `root` as machine `name`, its console going to `console`.
    pub fn boot(root: &Path, name: &str, console: &Path) -> Container {
        for tool in ["systemd-nspawn", "ip"] {
            assert!(
                r2a::exec::find_program(tool).is_some(),
                "{tool} is missing: run `make deps` (package systemd-container / iproute2)"
            );
        }
        // Bridge names have at most 15 characters; the process id keeps runs apart.
        let bridge = format!("r2a-br{}", std::process::id() % 100_000_000);
        let _ = Command::new("ip")
            .args(["link", "del", &bridge])
            .stderr(Stdio::null())
            .status();
        run(&["ip", "link", "add", &bridge, "type", "bridge"]);
        run(&["ip", "link", "set", &bridge, "up"]);
        let log = File::create(console).unwrap();
        let child = Command::new("systemd-nspawn")
            .args(["--boot", "--register=no", "--keep-unit", "--quiet"])
            .arg(format!("--network-bridge={bridge}"))
            .arg(format!("--machine={name}"))
            .arg("--directory")
            .arg(root)
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting systemd-nspawn");
        Container {
            child: Some(child),
            bridge,
            console: console.to_path_buf(),
        }
    }

    /// Waits until the console shows `line`; panics with the console's tail on a time-out
    /// or when the container stops first.
    pub fn wait_for(&mut self, line: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.console();
            if text.contains(line) {
                return text;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "`{line}` never appeared on the console (exited: {exited:?}):\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The console so far, without terminal colours.
    pub fn console(&self) -> String {
        let raw =
            String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned();
        strip_escapes(&raw)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The first SIGTERM asks the container to shut down, a later one ends it.
            let pid = Pid::from_child(&child);
            let _ = kill_process(pid, Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

fn run(argv: &[&str]) {
    let status = Command::new(argv[0]).args(&argv[1..]).status().unwrap();
    assert!(status.success(), "{argv:?} failed");
}

/// Removes ANSI escape sequences (systemd colours its status lines).
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
