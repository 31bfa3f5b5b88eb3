//! Running external programs: one wrapper that puts the full command line and the tail of
//! stderr into every error, and a preflight check that names the Debian package to install.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};

/// How many lines of stderr an error keeps.
const STDERR_TAIL_LINES: usize = 25;

/// Extension methods on [`Command`] for running a tool to completion.
pub trait CommandExt {
    /// Runs the command; stdout is discarded, stderr is kept for the error.
    fn run(&mut self) -> anyhow::Result<()>;
    /// Runs the command and returns its stdout as text.
    fn output_text(&mut self) -> anyhow::Result<String>;
    /// Runs the command, calling `on_line` for each line it prints on stdout or stderr
    /// (for progress display); the tail of stderr goes into the error.
    fn run_streaming(&mut self, on_line: &(dyn Fn(&str) + Sync)) -> anyhow::Result<()>;
    /// Runs the command with `input` on its stdin (an sfdisk script, say).
    fn run_with_input(&mut self, input: &[u8]) -> anyhow::Result<()>;
}

impl CommandExt for Command {
    fn run(&mut self) -> anyhow::Result<()> {
        self.run_streaming(&|_| {})
    }

    fn output_text(&mut self) -> anyhow::Result<String> {
        let output = self
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("starting {}", describe(self)))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            bail!(failure(self, &output.status, &tail(stderr.lines())));
        }
        String::from_utf8(output.stdout)
            .with_context(|| format!("reading output of {}", describe(self)))
    }

    fn run_streaming(&mut self, on_line: &(dyn Fn(&str) + Sync)) -> anyhow::Result<()> {
        let mut child = crate::interrupt::in_own_group(self)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", describe(self)))?;
        let _registered = crate::interrupt::ChildGuard::register(child.id());
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let kept = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)));
        std::thread::scope(|scope| {
            let kept_lines = Arc::clone(&kept);
            scope.spawn(move || {
                for line in lines_of(stderr) {
                    on_line(&line);
                    let mut kept = kept_lines.lock().expect("stderr buffer lock");
                    if kept.len() == STDERR_TAIL_LINES {
                        kept.pop_front();
                    }
                    kept.push_back(line);
                }
            });
            for line in lines_of(stdout) {
                on_line(&line);
            }
        });
        let status = child
            .wait()
            .with_context(|| format!("waiting for {}", describe(self)))?;
        // A tool stopped by our signal fails: the signal is the news, not its failure.
        crate::interrupt::check()?;
        if !status.success() {
            let kept = kept.lock().expect("stderr buffer lock");
            bail!(failure(
                self,
                &status,
                &kept.iter().cloned().collect::<Vec<_>>().join("\n")
            ));
        }
        Ok(())
    }

    fn run_with_input(&mut self, input: &[u8]) -> anyhow::Result<()> {
        let mut child = crate::interrupt::in_own_group(self)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", describe(self)))?;
        let _registered = crate::interrupt::ChildGuard::register(child.id());
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // The input goes in from a thread of its own while the output is read here: a
        // tool that answers as it reads (debugfs) would otherwise fill its output pipe
        // and wait for us while we wait for it to take more input.
        let output = std::thread::scope(|scope| {
            scope.spawn(move || {
                // A command that exits early closes its stdin; its status tells why.
                let _ = std::io::Write::write_all(&mut stdin, input);
            });
            child.wait_with_output()
        })
        .with_context(|| format!("waiting for {}", describe(self)))?;
        crate::interrupt::check()?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            bail!(failure(self, &output.status, &tail(stderr.lines())));
        }
        Ok(())
    }
}

fn tail<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    let lines: Vec<&str> = lines.collect();
    lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n")
}

fn failure(command: &Command, status: &std::process::ExitStatus, stderr: &str) -> String {
    let mut message = format!("{} failed ({status})", describe(command));
    if !stderr.trim().is_empty() {
        message.push_str(":\n");
        message.push_str(stderr.trim_end());
    }
    message
}

/// Every line `reader` gives, to its end: read as bytes, so a line that is not UTF-8 (a
/// tool's Latin-1 message) is shown with replacement characters instead of ending the
/// reading, which would leave the tool blocked on a full pipe.
fn lines_of(reader: impl std::io::Read) -> impl Iterator<Item = String> {
    BufReader::new(reader)
        .split(b'\n')
        .map_while(Result::ok)
        .map(|line| {
            String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string()
        })
}

/// The command line as one shell-like string, for messages.
pub fn describe(command: &Command) -> String {
    let mut words = vec![quote(command.get_program())];
    words.extend(command.get_args().map(quote));
    words.join(" ")
}

/// A word as a POSIX shell reads it back.
fn quote(word: &OsStr) -> String {
    shell_words::quote(&word.to_string_lossy()).into_owned()
}

/// A host program a command needs, why, and the Debian package that provides it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    /// The program's name, looked up on `PATH`.
    pub program: &'static str,
    /// The Debian package to install.
    pub package: &'static str,
    /// What it is needed for.
    pub reason: &'static str,
}

/// Checks that every tool is installed, naming all missing ones and their packages at once.
pub fn require_tools(tools: &[Tool]) -> anyhow::Result<()> {
    let missing: Vec<&Tool> = tools
        .iter()
        .filter(|tool| find_program(tool.program).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut message = String::from("missing host tools:");
    for tool in &missing {
        message.push_str(&format!(
            "\n  {} (needed to {}): install the Debian package {}",
            tool.program, tool.reason, tool.package
        ));
    }
    let mut packages: Vec<&str> = missing.iter().map(|tool| tool.package).collect();
    packages.dedup();
    message.push_str(&format!(
        "\n  = hint: apt-get install {}",
        packages.join(" ")
    ));
    bail!(message)
}

/// The full path of a program found on `PATH` (or the sbin folders, which a non-login
/// root shell may lack).
pub fn find_program(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut folders: Vec<std::path::PathBuf> = std::env::split_paths(&path).collect();
    folders.extend(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(std::path::PathBuf::from));
    let search = std::env::join_paths(folders).ok()?;
    which::which_in(program, Some(search), "/").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line that is not UTF-8 is passed on, and the lines after it too (on both pipes);
    /// then the tool's 1 MiB of output after them is read to its end.
    #[test]
    fn a_line_that_is_not_utf8_does_not_stop_the_reading() {
        let seen = Mutex::new(Vec::new());
        Command::new("sh")
            .args([
                "-c",
                "printf 'a\\n\\377\\nb\\n'; printf 'e\\351\\n' >&2; head -c 1048576 /dev/zero",
            ])
            .run_streaming(&|line| seen.lock().unwrap().push(line.to_string()))
            .unwrap();
        let seen = seen.into_inner().unwrap();
        for expected in ["a", "\u{FFFD}", "b", "e\u{FFFD}"] {
            assert!(
                seen.iter().any(|line| line == expected),
                "{expected:?} in {seen:?}"
            );
        }
    }

    #[test]
    fn a_failure_names_the_command_and_keeps_the_stderr_tail() {
        let error = Command::new("sh")
            .args([
                "-c",
                "for i in $(seq 1 40); do echo line$i >&2; done; exit 3",
            ])
            .run()
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("sh -c 'for i in"), "{error}");
        assert!(error.contains("exit status: 3"), "{error}");
        assert!(error.contains("line40"), "{error}");
        assert!(
            !error.contains("line15\n"),
            "only the tail is kept: {error}"
        );
    }

    #[test]
    fn input_larger_than_a_pipe_reaches_a_tool_that_answers_as_it_reads() {
        // `cat` echoes each line at once: with the whole input written before any output
        // was read, both sides would wait on full pipes for ever.
        let input = "a line of input for the tool\n".repeat(100_000);
        Command::new("cat")
            .run_with_input(input.as_bytes())
            .unwrap();
    }

    #[test]
    fn output_text_returns_stdout() {
        let text = Command::new("sh")
            .args(["-c", "echo hello"])
            .output_text()
            .unwrap();
        assert_eq!(text, "hello\n");
    }

    #[test]
    fn missing_tools_are_named_with_their_package() {
        let error = require_tools(&[
            Tool {
                program: "sh",
                package: "dash",
                reason: "run scripts",
            },
            Tool {
                program: "r2a-no-such-tool",
                package: "r2a-nothing",
                reason: "test",
            },
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(
                "r2a-no-such-tool (needed to test): install the Debian package r2a-nothing"
            ),
            "{error}"
        );
        assert!(!error.contains("dash"), "{error}");
    }
}
