//! Commands inside an image tree, in a private mount and PID namespace.
//!
//! `/proc`, `/sys`, `/dev`, `/run` and the shared apt archive are mounted inside a mount
//! namespace that dies with the command, so no mount can outlive it, whatever happens to
//! the builder (even SIGKILL); `--kill-child` takes every process of the tree with it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::exec::{CommandExt, Tool};

/// Host tools the chroot runner needs.
pub const TOOLS: &[Tool] = &[
    Tool {
        program: "unshare",
        package: "util-linux",
        reason: "run package installs in a private mount namespace",
    },
    Tool {
        program: "setpriv",
        package: "util-linux",
        reason: "end package installs with the build, however it ends",
    },
    Tool {
        program: "chroot",
        package: "coreutils",
        reason: "run commands inside image trees",
    },
];

/// A root filesystem tree to run commands in.
pub struct Chroot {
    root: PathBuf,
    apt_archives: Option<PathBuf>,
    isolated_network: bool,
    read_only: bool,
    shared_folder: Option<(PathBuf, String)>,
    env: Vec<(String, String)>,
}

impl Chroot {
    /// Commands will run with `root` as `/`.
    pub fn new(root: &Path) -> Self {
        Chroot {
            root: root.to_path_buf(),
            apt_archives: None,
            isolated_network: false,
            read_only: false,
            shared_folder: None,
            env: Vec::new(),
        }
    }

    /// Shows a host folder as the tree's `/var/cache/apt/archives`: the build's shared
    /// archive, or a layer's own archive linked from it.
    pub fn with_apt_archives(mut self, dir: &Path) -> Self {
        self.apt_archives = Some(dir.to_path_buf());
        self
    }

    /// Runs in a network namespace of its own, with only a loopback interface: programs
    /// that check a configuration by connecting to its addresses reach nothing outside.
    pub fn with_isolated_network(mut self) -> Self {
        self.isolated_network = true;
        self
    }

    /// Shows the tree read-only to the commands (the mounts of `/proc`, `/run`, `/tmp` and
    /// the shared folder stay writable): a tree whose files are links to a cached layer's
    /// can then never be written through.
    pub fn with_read_only_tree(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Gives the commands `SOURCE_DATE_EPOCH`, which tools that generate files in the
    /// tree (mkinitramfs, useradd) read instead of the clock.
    pub fn with_source_date_epoch(self, epoch: i64) -> Self {
        self.with_env(&[("SOURCE_DATE_EPOCH", &epoch.to_string())])
    }

    /// Shows the host folder `host` at `inside` (a folder under `/mnt`) for the run: a
    /// tmpfs on `/mnt` holds the mount point, so the tree itself is never written.
    pub fn with_shared_folder(mut self, host: &Path, inside: &str) -> Self {
        self.shared_folder = Some((host.to_path_buf(), inside.to_string()));
        self
    }

    /// Adds variables to the commands' environment.
    pub fn with_env(mut self, env: &[(&str, &str)]) -> Self {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// The `unshare` options: a mount and PID namespace always, a network one on request.
    fn namespaces(&self) -> Vec<&'static str> {
        let mut options = vec!["--mount", "--pid", "--fork", "--kill-child"];
        if self.isolated_network {
            options.push("--net");
        }
        options
    }

    /// Runs `argv` inside the tree; each line it prints goes to `on_line`.
    pub fn run(&self, argv: &[&str], on_line: &(dyn Fn(&str) + Sync)) -> anyhow::Result<()> {
        let root = self.root.to_str().context("image tree path is not UTF-8")?;
        let mut script = String::from("set -e\n");
        script.push_str("mount --make-rprivate /\n");
        if self.read_only {
            script.push_str("mount --bind \"$R\" \"$R\"\n");
            script.push_str("mount -o remount,bind,ro \"$R\"\n");
        }
        script.push_str("mount -t proc proc \"$R/proc\"\n");
        script.push_str("mount -t sysfs sysfs \"$R/sys\"\n");
        script.push_str("mount --rbind /dev \"$R/dev\"\n");
        script.push_str("mount -t tmpfs tmpfs \"$R/run\"\n");
        script.push_str("mount -t tmpfs tmpfs \"$R/tmp\"\n");
        if self.apt_archives.is_some() {
            script.push_str("mkdir -p \"$R/var/cache/apt/archives\" \"$ARCHIVES/partial\"\n");
            script.push_str("mount --bind \"$ARCHIVES\" \"$R/var/cache/apt/archives\"\n");
        }
        if let Some((_, inside)) = &self.shared_folder {
            debug_assert!(inside.starts_with("/mnt/"));
            script.push_str("mount -t tmpfs tmpfs \"$R/mnt\"\n");
            script.push_str("mkdir -p \"$R$SHARED_INSIDE\"\n");
            script.push_str("mount --bind \"$SHARED_HOST\" \"$R$SHARED_INSIDE\"\n");
        }
        script.push_str("exec chroot \"$R\" \"$@\"\n");
        let mut command = unshare(&self.namespaces());
        command
            .args(["sh", "-c", &script, "r2a-chroot"])
            .args(argv)
            .env("R", root)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("DEBCONF_NONINTERACTIVE_SEEN", "true")
            .env("LC_ALL", "C.UTF-8")
            // Packages' scripts that write a time write it in UTC, whatever the host's zone.
            .env("TZ", "UTC")
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            );
        if let Some(archives) = &self.apt_archives {
            command.env("ARCHIVES", archives);
        }
        if let Some((host, inside)) = &self.shared_folder {
            command
                .env("SHARED_HOST", host)
                .env("SHARED_INSIDE", inside);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
            .run_streaming(on_line)
            .with_context(|| format!("running `{}` in {}", argv.join(" "), self.root.display()))
    }
}

/// `unshare OPTIONS --`, ready for the program to run. With `--pid --fork --kill-child`
/// the program is the first process of a PID namespace, so when `unshare` ends, every
/// process of the tree ends with it (a tool that sets up a session of its own, as apt
/// does for dpkg, included). `unshare` itself ignores SIGTERM while it waits, so the
/// build's signal handling kills it after its grace time; and `setpriv --pdeathsig` ends
/// it if the build itself is killed (SIGKILL).
pub fn unshare(options: &[&str]) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--pdeathsig", "KILL", "--", "unshare"])
        .args(options)
        .arg("--");
    command
}

/// While alive, keeps services from starting inside a tree (Debian's `policy-rc.d`) and
/// gives the tree the host's resolver; both are undone on drop.
pub struct InstallGuard {
    root: PathBuf,
    saved_resolv: Option<PathBuf>,
}

impl InstallGuard {
    /// Prepares `root` for package installs.
    pub fn new(root: &Path) -> anyhow::Result<Self> {
        let policy = root.join("usr/sbin/policy-rc.d");
        std::fs::write(
            &policy,
            "#!/bin/sh\n# r2a-image: no service starts while the image is built.\nexit 101\n",
        )
        .with_context(|| format!("writing {}", policy.display()))?;
        crate::fsutil::set_mode(&policy, 0o755)?;
        let resolv = root.join("etc/resolv.conf");
        let saved = root.join("etc/resolv.conf.r2a-saved");
        let saved_resolv = if resolv.symlink_metadata().is_ok() {
            std::fs::rename(&resolv, &saved)
                .with_context(|| format!("moving {} aside", resolv.display()))?;
            Some(saved)
        } else {
            None
        };
        std::fs::copy("/etc/resolv.conf", &resolv)
            .with_context(|| format!("writing {}", resolv.display()))?;
        Ok(InstallGuard {
            root: root.to_path_buf(),
            saved_resolv,
        })
    }
}

impl Drop for InstallGuard {
    fn drop(&mut self) {
        // Best effort: the tree is discarded anyway when the build fails.
        let _ = std::fs::remove_file(self.root.join("usr/sbin/policy-rc.d"));
        let resolv = self.root.join("etc/resolv.conf");
        let _ = std::fs::remove_file(&resolv);
        if let Some(saved) = &self.saved_resolv {
            let _ = std::fs::rename(saved, &resolv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_isolated_run_gets_a_network_namespace_of_its_own() {
        let tree = Path::new("/nonexistent");
        assert!(!Chroot::new(tree).namespaces().contains(&"--net"));
        assert!(
            Chroot::new(tree)
                .with_isolated_network()
                .namespaces()
                .contains(&"--net")
        );
    }
}
