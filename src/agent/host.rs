//! Everything the agent does to the running machine beyond writing files: external
//! commands and the kernel's hostname, behind one small trait.
//!
//! On a node that is [`LiveHost`]. Under any other `--root`, [`OfflineHost`] refuses to
//! run commands, because `nft -f` or `mkfs` would act on the machine running the agent,
//! not on the tree under the root. Tests use [`ScriptedHost`], which answers from a
//! script and records every command, so they can assert on what would have run.

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::exec::describe;

/// How long a command may run unless its invocation says otherwise.
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 120;
/// The limit of commands that scale with a disk's size (mkfs, resize2fs).
pub const LONG_COMMAND_SECONDS: u32 = 1800;
/// `timeout` exits with this when the command ran out of time.
const TIMED_OUT: i32 = 124;

/// One external command: a program, its arguments and its time limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The program, looked up on `PATH`.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Seconds it may run before it is stopped (SIGTERM, then SIGKILL 5 s later).
    pub timeout_seconds: u32,
}

impl Invocation {
    /// `program` with `args`, limited to [`DEFAULT_TIMEOUT_SECONDS`].
    pub fn new<S: Into<String>>(program: &str, args: impl IntoIterator<Item = S>) -> Self {
        Invocation {
            program: program.to_string(),
            args: args.into_iter().map(Into::into).collect(),
            timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
        }
    }

    /// The same command with another time limit (mkfs of a large disk needs more).
    pub fn with_timeout(mut self, seconds: u32) -> Self {
        self.timeout_seconds = seconds;
        self
    }

    /// The command as it runs: under coreutils' `timeout`, so that a hung tool (a mount
    /// of an unreachable server, a stuck `systemctl`) cannot stall the agent.
    fn command(&self) -> Command {
        let mut command = Command::new("timeout");
        command
            .args(["--kill-after=5", &self.timeout_seconds.to_string()])
            .arg(&self.program)
            .args(&self.args);
        command
    }

    /// The error for a run that ended with `status`, if it ran out of time.
    fn timed_out(&self, status: std::process::ExitStatus) -> Option<anyhow::Error> {
        (status.code() == Some(TIMED_OUT)).then(|| {
            anyhow::anyhow!(
                "{self} did not finish within {} s and was stopped",
                self.timeout_seconds
            )
        })
    }
}

impl fmt::Display for Invocation {
    /// The command line, quoted as a shell would need it (without the time limit).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        f.write_str(&describe(&command))
    }
}

/// `blkid -p` (no signature) and `blkid -t` (no matching device) exit with 2: the
/// `absent_code` of [`Host::probe`] for them.
pub const BLKID_NOTHING_FOUND: i32 = 2;
/// `findmnt` exits with 1 when nothing is mounted there.
pub const FINDMNT_NOTHING_FOUND: i32 = 1;

/// The running machine, as the steps see it.
pub trait Host {
    /// Whether this is the machine the image booted on (so the kernel hostname, the
    /// network daemon and the firewall are ours to change).
    fn is_live(&self) -> bool;
    /// Runs a command that must succeed and returns its stdout.
    fn run(&mut self, invocation: &Invocation) -> anyhow::Result<String>;
    /// Runs a query that exits with `absent_code` when there is nothing to report
    /// (`blkid` without a signature, `findmnt` without a mount): `None` then, its
    /// stdout on success, an error otherwise.
    fn probe(
        &mut self,
        invocation: &Invocation,
        absent_code: i32,
    ) -> anyhow::Result<Option<String>>;
    /// The kernel's hostname.
    fn kernel_hostname(&mut self) -> anyhow::Result<String>;
    /// Sets the kernel's hostname.
    fn set_kernel_hostname(&mut self, name: &str) -> anyhow::Result<()>;
    /// Runs a command that only reads (`lsblk`) and returns its stdout; a dry run runs
    /// it too.
    fn query(&mut self, invocation: &Invocation) -> anyhow::Result<String> {
        self.run(invocation)
    }
    /// Whether this is `firstboot --dry-run`: steps then say what they would change and
    /// change nothing.
    fn dry_run(&self) -> bool {
        false
    }
}

/// `firstboot --dry-run`: sees the machine as `inner` does and changes nothing. Queries
/// (probes, [`Host::query`]) reach the machine; a command that would change it is an
/// error, since every step says what it would change before it gets that far.
pub struct DryRunHost<'a> {
    /// The host observed.
    pub inner: &'a mut dyn Host,
}

impl Host for DryRunHost<'_> {
    fn is_live(&self) -> bool {
        self.inner.is_live()
    }

    fn run(&mut self, invocation: &Invocation) -> anyhow::Result<String> {
        bail!("a dry run changes nothing, and `{invocation}` would")
    }

    fn probe(
        &mut self,
        invocation: &Invocation,
        absent_code: i32,
    ) -> anyhow::Result<Option<String>> {
        self.inner.probe(invocation, absent_code)
    }

    fn query(&mut self, invocation: &Invocation) -> anyhow::Result<String> {
        self.inner.query(invocation)
    }

    fn kernel_hostname(&mut self) -> anyhow::Result<String> {
        self.inner.kernel_hostname()
    }

    fn set_kernel_hostname(&mut self, name: &str) -> anyhow::Result<()> {
        bail!("a dry run changes nothing, and setting the kernel hostname to {name} would")
    }

    fn dry_run(&self) -> bool {
        true
    }
}

/// The machine the agent runs on, when `--root` is `/`.
#[derive(Debug, Default)]
pub struct LiveHost;

impl Host for LiveHost {
    fn is_live(&self) -> bool {
        true
    }

    fn run(&mut self, invocation: &Invocation) -> anyhow::Result<String> {
        Ok(self
            .probe(invocation, i32::MIN)?
            .expect("no exit code is i32::MIN"))
    }

    fn probe(
        &mut self,
        invocation: &Invocation,
        absent_code: i32,
    ) -> anyhow::Result<Option<String>> {
        let output = invocation
            .command()
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("starting {invocation}"))?;
        if let Some(error) = invocation.timed_out(output.status) {
            return Err(error);
        }
        if output.status.code() == Some(absent_code) {
            return Ok(None);
        }
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            bail!("{invocation} failed ({}): {}", output.status, stderr.trim());
        }
        String::from_utf8(output.stdout)
            .map(Some)
            .with_context(|| format!("reading output of {invocation}"))
    }

    fn kernel_hostname(&mut self) -> anyhow::Result<String> {
        Ok(rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned())
    }

    fn set_kernel_hostname(&mut self, name: &str) -> anyhow::Result<()> {
        rustix::system::sethostname(name.as_bytes())
            .with_context(|| format!("setting the kernel hostname to {name}"))
    }
}

/// A tree that is not the running system: nothing may touch the machine.
#[derive(Debug)]
pub struct OfflineHost {
    /// The `--root` in use, for messages.
    pub root: PathBuf,
}

impl OfflineHost {
    fn refuse(&self, what: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "not running {what}: it would change the machine running r2a-node, not the \
             tree under --root {} (only --root / runs commands)",
            self.root.display()
        )
    }
}

impl Host for OfflineHost {
    fn is_live(&self) -> bool {
        false
    }

    fn run(&mut self, invocation: &Invocation) -> anyhow::Result<String> {
        Err(self.refuse(&format!("`{invocation}`")))
    }

    fn probe(&mut self, invocation: &Invocation, _: i32) -> anyhow::Result<Option<String>> {
        Err(self.refuse(&format!("`{invocation}`")))
    }

    fn kernel_hostname(&mut self) -> anyhow::Result<String> {
        Err(self.refuse("uname"))
    }

    fn set_kernel_hostname(&mut self, _: &str) -> anyhow::Result<()> {
        Err(self.refuse("sethostname"))
    }
}

/// What a scripted command answers.
#[derive(Debug, Clone)]
enum Answer {
    Output(String),
    Absent,
    Failure(String),
}

/// A fake host for tests: commands get scripted answers, and every command (and every
/// hostname change) is recorded in order.
///
/// Answers for one command line are used in the order they were given; the last one
/// keeps answering, so "absent, then present after mkfs" is two calls. A command with
/// no scripted answer is an error, so a test notices a command it did not expect.
#[derive(Debug, Default)]
pub struct ScriptedHost {
    live: bool,
    answers: Vec<(String, VecDeque<Answer>)>,
    log: Vec<String>,
    hostname: String,
}

impl ScriptedHost {
    /// A fake that says it is the running system (`live`) or not.
    pub fn new(live: bool) -> Self {
        ScriptedHost {
            live,
            hostname: "localhost".to_string(),
            ..ScriptedHost::default()
        }
    }

    /// The kernel hostname starts as `name`.
    pub fn with_hostname(mut self, name: &str) -> Self {
        self.hostname = name.to_string();
        self
    }

    /// `command_line` prints `stdout` and succeeds.
    pub fn answer(&mut self, command_line: &str, stdout: &str) -> &mut Self {
        self.push(command_line, Answer::Output(stdout.to_string()))
    }

    /// `command_line` succeeds silently.
    pub fn succeed(&mut self, command_line: &str) -> &mut Self {
        self.answer(command_line, "")
    }

    /// `command_line` finds nothing (see [`Host::probe`]).
    pub fn absent(&mut self, command_line: &str) -> &mut Self {
        self.push(command_line, Answer::Absent)
    }

    /// `command_line` fails with `message`.
    pub fn fail(&mut self, command_line: &str, message: &str) -> &mut Self {
        self.push(command_line, Answer::Failure(message.to_string()))
    }

    /// Drops the answers scripted so far for `command_line`, to script it anew.
    pub fn forget(&mut self, command_line: &str) -> &mut Self {
        self.answers.retain(|(line, _)| line != command_line);
        self
    }

    /// Every command run so far, as command lines, plus `sethostname NAME` entries.
    pub fn log(&self) -> &[String] {
        &self.log
    }

    /// Forgets the recorded commands (the answers stay).
    pub fn clear_log(&mut self) {
        self.log.clear();
    }

    fn push(&mut self, command_line: &str, answer: Answer) -> &mut Self {
        match self
            .answers
            .iter_mut()
            .find(|(line, _)| line == command_line)
        {
            Some((_, queue)) => queue.push_back(answer),
            None => self
                .answers
                .push((command_line.to_string(), VecDeque::from([answer]))),
        }
        self
    }

    fn next_answer(&mut self, invocation: &Invocation) -> anyhow::Result<Answer> {
        let line = invocation.to_string();
        self.log.push(line.clone());
        let queue = self
            .answers
            .iter_mut()
            .find(|(scripted, _)| *scripted == line)
            .map(|(_, queue)| queue)
            .with_context(|| format!("no scripted answer for `{line}`"))?;
        let answer = if queue.len() > 1 {
            queue.pop_front()
        } else {
            queue.front().cloned()
        };
        answer.with_context(|| format!("no scripted answer for `{line}`"))
    }
}

impl Host for ScriptedHost {
    fn is_live(&self) -> bool {
        self.live
    }

    fn run(&mut self, invocation: &Invocation) -> anyhow::Result<String> {
        match self.next_answer(invocation)? {
            Answer::Output(stdout) => Ok(stdout),
            Answer::Absent => bail!("{invocation} failed (exit status: 1)"),
            Answer::Failure(message) => bail!("{invocation} failed: {message}"),
        }
    }

    fn probe(&mut self, invocation: &Invocation, _: i32) -> anyhow::Result<Option<String>> {
        match self.next_answer(invocation)? {
            Answer::Output(stdout) => Ok(Some(stdout)),
            Answer::Absent => Ok(None),
            Answer::Failure(message) => bail!("{invocation} failed: {message}"),
        }
    }

    fn kernel_hostname(&mut self) -> anyhow::Result<String> {
        Ok(self.hostname.clone())
    }

    fn set_kernel_hostname(&mut self, name: &str) -> anyhow::Result<()> {
        self.log.push(format!("sethostname {name}"));
        self.hostname = name.to_string();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_answers_are_used_in_order_and_the_last_one_stays() {
        let mut host = ScriptedHost::new(true);
        host.absent("blkid /dev/vdb")
            .answer("blkid /dev/vdb", "TYPE=ext4");
        let blkid = Invocation::new("blkid", ["/dev/vdb"]);
        assert_eq!(host.probe(&blkid, 2).unwrap(), None);
        assert_eq!(host.probe(&blkid, 2).unwrap().as_deref(), Some("TYPE=ext4"));
        assert_eq!(host.probe(&blkid, 2).unwrap().as_deref(), Some("TYPE=ext4"));
        assert_eq!(host.log().len(), 3);
    }

    #[test]
    fn an_unscripted_command_is_an_error() {
        let mut host = ScriptedHost::new(true);
        let error = host
            .run(&Invocation::new("mkfs.ext4", ["/dev/vdb"]))
            .unwrap_err();
        assert!(error.to_string().contains("mkfs.ext4 /dev/vdb"), "{error}");
    }

    #[test]
    fn the_offline_host_refuses_commands_and_says_why() {
        let mut host = OfflineHost {
            root: PathBuf::from("/tmp/tree"),
        };
        let error = host
            .run(&Invocation::new("nft", ["-f", "/etc/nftables.conf"]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("`nft -f /etc/nftables.conf`"), "{error}");
        assert!(error.contains("--root /tmp/tree"), "{error}");
    }

    #[test]
    fn the_live_host_tells_absent_from_failed() {
        let mut host = LiveHost;
        let absent = Invocation::new("sh", ["-c", "exit 2"]);
        assert_eq!(host.probe(&absent, 2).unwrap(), None);
        let found = Invocation::new("sh", ["-c", "echo TYPE=xfs"]);
        assert_eq!(
            host.probe(&found, 2).unwrap().as_deref(),
            Some("TYPE=xfs\n")
        );
        let broken = Invocation::new("sh", ["-c", "echo bad >&2; exit 8"]);
        let error = host.probe(&broken, 2).unwrap_err().to_string();
        assert!(
            error.contains("exit status: 8") && error.contains("bad"),
            "{error}"
        );
    }

    #[test]
    fn a_command_that_hangs_is_stopped_at_its_time_limit() {
        let started = std::time::Instant::now();
        let hung = Invocation::new("sleep", ["30"]).with_timeout(1);
        let error = LiveHost.run(&hung).unwrap_err().to_string();
        assert!(
            error.contains("sleep 30 did not finish within 1 s"),
            "{error}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
