//! Runs QEMU with its serial console on a pipe and watches it: the boot report line ends
//! a check, a menu text can be answered with a key (the ISO's install entry), and a
//! time limit, QEMU's own exit or a stalled KVM start end it otherwise.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::qemu::Machine;
use crate::agent::report::BootReport;

/// Console lines kept for error messages.
const TAIL_LINES: usize = 40;
/// What the kernel prints first: a KVM start that has not printed it in time stalled.
const KERNEL_BANNER: &str = "Linux version";
/// What the kernel prints when it gives up.
const KERNEL_PANIC: &str = "Kernel panic - not syncing";
/// The prompt of the initramfs' rescue shell: the root was not mounted.
const INITRAMFS_SHELL: &str = "(initramfs) ";

/// What to watch for.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The whole run's time limit.
    pub timeout: Duration,
    /// When the console shows the first text, type the second (once).
    pub answer: Option<(String, String)>,
    /// With KVM from `--accel auto`: give up on KVM when the kernel has not started
    /// after this long.
    pub kvm_stall: Option<Duration>,
    /// Copy the console to stdout as it comes.
    pub echo: bool,
}

/// How a run ended.
#[derive(Debug)]
pub enum Ending {
    /// The node printed its boot report.
    Report(Box<BootReport>),
    /// QEMU exited (the guest powered off or rebooted).
    Exited(ExitStatus),
    /// The time limit passed.
    TimedOut,
    /// KVM was tried and the kernel never started.
    KvmStalled,
    /// The kernel panicked (QEMU is stopped at once, not left until the time limit).
    KernelPanic,
    /// The initramfs could not mount the root and opened its rescue shell.
    InitramfsShell,
}

/// One QEMU run.
#[derive(Debug)]
pub struct Run {
    /// How it ended.
    pub ending: Ending,
    /// The last console lines, without terminal escapes.
    pub tail: Vec<String>,
    /// The whole console, without terminal escapes.
    pub console: String,
    /// How long it ran.
    pub elapsed: Duration,
}

enum Event {
    Output(Vec<u8>),
    Closed,
}

/// Starts QEMU and watches its console until `watch` says the run is over; QEMU is
/// stopped (by its process id) whatever the ending.
pub fn run(machine: &Machine, watch: &Watch) -> anyhow::Result<Run> {
    let mut command = Command::new("qemu-system-x86_64");
    crate::interrupt::in_own_group(&mut command)
        .args(machine.args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", crate::exec::describe(&command)))?;
    let _registered = crate::interrupt::ChildGuard::register(child.id());
    let result = watch_child(&mut child, watch);
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}

fn watch_child(child: &mut Child, watch: &Watch) -> anyhow::Result<Run> {
    let (sender, events) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().expect("stdout is piped")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("stderr is piped")),
    ] {
        let sender = sender.clone();
        std::thread::spawn(move || forward(stream, &sender));
    }
    drop(sender);
    let mut stdin = child.stdin.take();
    let started = Instant::now();
    let mut console = Console::default();
    let mut answered = false;
    let mut open_streams = 2;
    let ending = loop {
        crate::interrupt::check()?;
        match events.recv_timeout(Duration::from_millis(200)) {
            Ok(Event::Output(bytes)) => {
                if watch.echo {
                    let mut stdout = std::io::stdout().lock();
                    let _ = stdout.write_all(&bytes);
                    let _ = stdout.flush();
                }
                if let Some(report) = console.push(&bytes) {
                    break Ending::Report(Box::new(report));
                }
            }
            Ok(Event::Closed) => open_streams -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => open_streams = 0,
        }
        if let (Some((text, keys)), false, Some(input)) = (&watch.answer, answered, &mut stdin)
            && console.recent.contains(text.as_str())
        {
            input.write_all(keys.as_bytes())?;
            input.flush()?;
            answered = true;
        }
        if open_streams == 0
            && let Some(status) = child.try_wait()?
        {
            break Ending::Exited(status);
        }
        if console.recent.contains(KERNEL_PANIC) {
            break Ending::KernelPanic;
        }
        if console.recent.contains(INITRAMFS_SHELL) {
            break Ending::InitramfsShell;
        }
        if started.elapsed() > watch.timeout {
            break Ending::TimedOut;
        }
        if watch
            .kvm_stall
            .is_some_and(|limit| started.elapsed() > limit && !console.text.contains(KERNEL_BANNER))
        {
            break Ending::KvmStalled;
        }
    };
    console.finish();
    Ok(Run {
        ending,
        tail: console.tail.into_iter().collect(),
        console: console.text,
        elapsed: started.elapsed(),
    })
}

fn forward(mut stream: Box<dyn Read + Send>, sender: &mpsc::Sender<Event>) {
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                if sender.send(Event::Output(buffer[..read].to_vec())).is_err() {
                    return;
                }
            }
        }
    }
    let _ = sender.send(Event::Closed);
}

/// The console so far: lines without terminal escapes, and the recent raw text (menus
/// are drawn with cursor moves, not lines).
#[derive(Default)]
struct Console {
    partial: Vec<u8>,
    text: String,
    tail: VecDeque<String>,
    recent: String,
}

impl Console {
    /// Takes more output; returns the boot report once a line holds one.
    fn push(&mut self, bytes: &[u8]) -> Option<BootReport> {
        let plain = strip_ansi_escapes::strip_str(String::from_utf8_lossy(bytes));
        self.recent.push_str(&plain);
        if self.recent.len() > 8192 {
            let cut = self.recent.len() - 4096;
            let cut = (cut..self.recent.len())
                .find(|i| self.recent.is_char_boundary(*i))
                .unwrap_or(0);
            self.recent.drain(..cut);
        }
        let mut report = None;
        for byte in bytes {
            if *byte == b'\n' {
                let line = std::mem::take(&mut self.partial);
                report = report.or(self.add_line(&line));
            } else {
                self.partial.push(*byte);
            }
        }
        report
    }

    fn add_line(&mut self, raw: &[u8]) -> Option<BootReport> {
        let line = strip_ansi_escapes::strip_str(String::from_utf8_lossy(raw));
        let line = line.trim_end_matches('\r').to_string();
        self.text.push_str(&line);
        self.text.push('\n');
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        let report = BootReport::parse_line(&line);
        self.tail.push_back(line);
        report
    }

    fn finish(&mut self) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.add_line(&rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_found_across_chunks_and_escapes_are_dropped() {
        let report = BootReport {
            node: Some("portal1".into()),
            role: Some("portal".into()),
            identified_by: Some("kernel command line".into()),
            addresses: vec!["10.77.0.31/24".into()],
            links: vec![],
            data_disk: None,
            multi_user: true,
            firstboot: "success".into(),
            firstboot_done_seconds: Some(30.5),
            failed_units: vec![],
            root_bytes: Some(1 << 30),
            join: Vec::new(),
        };
        let line = format!(
            "\x1b[0;32m[  OK  ]\x1b[0m booted\r\n[ 40.1] {}\r\n",
            report.line().unwrap()
        );
        let (first, second) = line.as_bytes().split_at(30);
        let mut console = Console::default();
        assert_eq!(console.push(first), None);
        assert_eq!(console.push(second), Some(report));
        assert_eq!(console.tail[0], "[  OK  ] booted");
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        let mut console = Console::default();
        for i in 0..100 {
            console.push(format!("line {i}\n").as_bytes());
        }
        console.push(b"no newline yet");
        console.finish();
        assert_eq!(console.tail.len(), TAIL_LINES);
        assert_eq!(console.tail.back().unwrap(), "no newline yet");
        assert!(console.text.starts_with("line 0\n"));
    }
}
