//! A node's container process: `systemd-nspawn --boot` detached from the harness (its own
//! session, stdin from /dev/null, console to a file), in the node's own cgroup and network
//! namespace; finding the container's init; signalling; and commands run inside it with
//! `nsenter`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::{Pid, Signal, WaitOptions, kill_process, waitpid};

use super::state::{parse_stat, process_alive};

/// The environment commands run with inside a container.
pub const CONTAINER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Writes the shell's own id to the pid file and the cgroups' `cgroup.procs`, then
/// becomes the command after `--`: the container starts in its cgroup, and its id is on
/// disk before it does anything.
const LAUNCH_SCRIPT: &str = r#"set -e
echo $$ > "$1"; shift
while [ "$1" != "--" ]; do echo $$ > "$1"; shift; done
shift
exec "$@"
"#;

/// How to start one container.
#[derive(Debug, Clone)]
pub struct Launch {
    /// `--machine` name.
    pub machine: String,
    /// Host name inside the container.
    pub hostname: String,
    /// The merged root.
    pub root: PathBuf,
    /// `/run/netns/<name>` of the node.
    pub netns_path: String,
    /// The cgroups' `cgroup.procs` files.
    pub cgroup_procs: Vec<PathBuf>,
    /// Where the process writes its own id.
    pub pid_file: PathBuf,
    /// The console log.
    pub console: PathBuf,
    /// A block device to show inside as (device on the host, path inside).
    pub disk: Option<(PathBuf, String)>,
}

/// The `systemd-nspawn` arguments of a launch.
pub fn nspawn_args(launch: &Launch) -> Vec<String> {
    let mut args = vec![
        "--boot".to_string(),
        "--register=no".to_string(),
        "--keep-unit".to_string(),
        "--quiet".to_string(),
        // The host's journal is none of the container's business.
        "--link-journal=no".to_string(),
        format!("--machine={}", launch.machine),
        format!("--hostname={}", launch.hostname),
        // Without --private-network, systemd-nspawn treats a joined namespace as the
        // host's network: it drops CAP_NET_ADMIN (networkd and nft fail) and shows the
        // host's links in /sys/class/net.
        "--private-network".to_string(),
        format!("--network-namespace-path={}", launch.netns_path),
        // Gluster's clients mount the shared volume through FUSE.
        "--bind=/dev/fuse".to_string(),
    ];
    if let Some((device, inside)) = &launch.disk {
        args.push(format!("--bind={}:{inside}", device.display()));
        // Under its own name too: with no udev in the container, `mount UUID=...` finds
        // the device by the name /proc/partitions gives it.
        args.push(format!("--bind={}", device.display()));
    }
    args.push(format!("--directory={}", launch.root.display()));
    args
}

/// Starts the container, detached so that it outlives the harness; returns its id.
pub fn spawn(launch: &Launch) -> anyhow::Result<u32> {
    let console = File::create(&launch.console)
        .with_context(|| format!("creating {}", launch.console.display()))?;
    let mut command = Command::new("setsid");
    command
        .args(["sh", "-c", LAUNCH_SCRIPT, "r2a-launch"])
        .arg(&launch.pid_file)
        .args(&launch.cgroup_procs)
        .arg("--")
        .arg("systemd-nspawn")
        .args(nspawn_args(launch))
        .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console);
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", crate::exec::describe(&command)))?;
    // setsid(1) execs in place (the child leads no process group yet), and so do sh and
    // exec: this id is systemd-nspawn's. The handle is dropped: the container must
    // outlive this process, and `reap` collects it when this process is still there.
    Ok(child.id())
}

/// Collects the exit status of `pid` if it is a child of this process that has exited,
/// so that it does not stay a zombie; does nothing otherwise.
pub fn reap(pid: u32) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = waitpid(Some(pid), WaitOptions::NOHANG);
    }
}

/// The container's init: the child of `nspawn` that lives in another pid namespace.
pub fn container_init(nspawn: u32) -> Option<u32> {
    let own_ns = std::fs::read_link(format!("/proc/{nspawn}/ns/pid")).ok()?;
    let entries = std::fs::read_dir("/proc").ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .is_some_and(|stat| stat.parent == nspawn && stat.state != 'Z')
        })
        .find(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/pid"))
                .is_ok_and(|namespace| namespace != own_ns)
        })
}

/// Sends `signal` to `pid`; a process that is gone already is fine.
pub fn signal(pid: u32, signal: Signal) -> anyhow::Result<()> {
    let Some(target) = Pid::from_raw(pid as i32) else {
        bail!("{pid} is not a process id");
    };
    match kill_process(target, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(error) => Err(error).with_context(|| format!("signalling process {pid}")),
    }
}

/// Waits until `pid` has exited (reaping it when it is this process's child); false when
/// it is still running after `limit`.
pub fn wait_exit(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        reap(pid);
        if !process_alive(pid) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A command that runs `argv` inside the container whose init is `init`: in all its
/// namespaces, at its root, with a plain environment. The caller picks stdio.
pub fn exec_command(init: u32, argv: &[impl AsRef<std::ffi::OsStr>]) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--target={init}"))
        .args(["--all", "--root", "--wd", "--"])
        .args(argv)
        .env_clear()
        .env("PATH", CONTAINER_PATH)
        .env("LANG", "C.UTF-8")
        .env("HOME", "/root")
        .env(
            "TERM",
            std::env::var("TERM").unwrap_or_else(|_| "dumb".to_string()),
        );
    command
}

/// The last `lines` lines of a console log, without terminal escapes.
pub fn console_tail(console: &Path, lines: usize) -> String {
    let raw = std::fs::read(console).unwrap_or_default();
    let text = String::from_utf8_lossy(&strip_ansi_escapes::strip(raw)).into_owned();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nspawn_boots_the_merged_root_in_the_node_namespace() {
        let launch = Launch {
            machine: "c-db1".to_string(),
            hostname: "db1".to_string(),
            root: PathBuf::from("/s/nodes/db1/root"),
            netns_path: "/run/netns/r2a-c.db1".to_string(),
            cgroup_procs: vec![],
            pid_file: PathBuf::from("/s/nodes/db1/nspawn.pid"),
            console: PathBuf::from("/s/nodes/db1/console.log"),
            disk: Some((PathBuf::from("/dev/loop3"), "/dev/vdb".to_string())),
        };
        assert_eq!(
            nspawn_args(&launch),
            [
                "--boot",
                "--register=no",
                "--keep-unit",
                "--quiet",
                "--link-journal=no",
                "--machine=c-db1",
                "--hostname=db1",
                "--private-network",
                "--network-namespace-path=/run/netns/r2a-c.db1",
                "--bind=/dev/fuse",
                "--bind=/dev/loop3:/dev/vdb",
                "--bind=/dev/loop3",
                "--directory=/s/nodes/db1/root",
            ]
        );
    }

    #[test]
    fn the_launch_script_records_its_id_and_becomes_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let procs = dir.path().join("procs");
        let output = Command::new("sh")
            .args(["-c", LAUNCH_SCRIPT, "r2a-launch"])
            .arg(&pid_file)
            .arg(&procs)
            .args(["--", "sh", "-c", "echo $$"])
            .output()
            .unwrap();
        assert!(output.status.success());
        let pid = String::from_utf8(output.stdout).unwrap();
        assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), pid);
        assert_eq!(std::fs::read_to_string(&procs).unwrap(), pid);
    }
}
