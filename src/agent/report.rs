//! `r2a-node report`: one line on the console once the boot is over, saying who the
//! node is, its addresses, whether `r2a-firstboot.service` succeeded and which units
//! failed. `r2a-report.service` runs it after `multi-user.target`; `r2a-image boot
//! --check` reads the line from the serial console.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::host::{Host, Invocation};
use super::identity::read_recorded;
use super::root::Root;

/// What starts the report line; the JSON follows on the same line.
pub const PREFIX: &str = "r2a-report: ";
/// How long the report waits for the boot's other jobs to finish.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

/// The state of the node at the end of its boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootReport {
    /// The node's name, once identified.
    pub node: Option<String>,
    /// Its role.
    pub role: Option<String>,
    /// How the name was found.
    pub identified_by: Option<String>,
    /// IPv4 addresses with prefix length, global scope.
    pub addresses: Vec<String>,
    /// Whether `multi-user.target` is active.
    pub multi_user: bool,
    /// `r2a-firstboot.service`'s result (`success`, `exit-code`, ...).
    pub firstboot: String,
    /// Seconds from the kernel's start to the end of `r2a-firstboot.service`.
    pub firstboot_done_seconds: Option<f64>,
    /// Units in the failed state.
    pub failed_units: Vec<String>,
    /// Size of the root file system in bytes (it grows to the disk on first boot).
    pub root_bytes: Option<u64>,
}

impl BootReport {
    /// Whether the boot is what `--check` wants: multi-user reached, firstboot
    /// succeeded, nothing failed.
    pub fn is_healthy(&self) -> bool {
        self.multi_user && self.firstboot == "success" && self.failed_units.is_empty()
    }

    /// The console line.
    pub fn line(&self) -> anyhow::Result<String> {
        Ok(format!("{PREFIX}{}", serde_json::to_string(self)?))
    }

    /// Finds the report in a console line, if it holds one.
    pub fn parse_line(line: &str) -> Option<BootReport> {
        let start = line.find(PREFIX)? + PREFIX.len();
        serde_json::from_str(line[start..].trim_end()).ok()
    }

    /// Collects the report, first waiting (up to two minutes) for the boot's other jobs.
    pub fn collect(root: &Root, host: &mut dyn Host) -> anyhow::Result<BootReport> {
        let started = Instant::now();
        while started.elapsed() < SETTLE_LIMIT && pending_jobs(host)? > 1 {
            std::thread::sleep(Duration::from_secs(1));
        }
        let recorded = read_recorded(root)?.map(|recorded| recorded.identity);
        let show = host.run(&Invocation::new(
            "systemctl",
            [
                "show",
                "--property=Result,ExecMainExitTimestampMonotonic",
                "r2a-firstboot.service",
            ],
        ))?;
        let property = |name: &str| {
            show.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or_default()
                .to_string()
        };
        let exited_us: u64 = property("ExecMainExitTimestampMonotonic")
            .parse()
            .unwrap_or(0);
        let multi_user = host
            .probe(
                &Invocation::new("systemctl", ["is-active", "--quiet", "multi-user.target"]),
                3,
            )?
            .is_some();
        let failed = host.run(&Invocation::new(
            "systemctl",
            [
                "list-units",
                "--failed",
                "--plain",
                "--no-legend",
                "--no-pager",
            ],
        ))?;
        let addresses = host.run(&Invocation::new(
            "ip",
            ["-4", "-oneline", "address", "show", "scope", "global"],
        ))?;
        let root_bytes = host
            .run(&Invocation::new(
                "findmnt",
                ["--bytes", "--noheadings", "--output", "SIZE", "/"],
            ))?
            .trim()
            .parse()
            .ok();
        Ok(BootReport {
            node: recorded.as_ref().map(|identity| identity.node.clone()),
            role: recorded.as_ref().map(|identity| identity.role.clone()),
            identified_by: recorded
                .as_ref()
                .map(|identity| identity.source.to_string()),
            addresses: parse_addresses(&addresses),
            multi_user,
            firstboot: property("Result"),
            firstboot_done_seconds: (exited_us > 0).then(|| exited_us as f64 / 1e6),
            failed_units: failed
                .lines()
                .filter_map(|line| line.split_whitespace().next())
                .map(str::to_string)
                .collect(),
            root_bytes,
        })
    }
}

/// Jobs systemd still has queued (the report's own job is one of them).
fn pending_jobs(host: &mut dyn Host) -> anyhow::Result<usize> {
    let jobs = host
        .run(&Invocation::new(
            "systemctl",
            ["list-jobs", "--plain", "--no-legend", "--no-pager"],
        ))
        .context("listing systemd's jobs")?;
    Ok(jobs.lines().filter(|line| !line.trim().is_empty()).count())
}

/// `ip -4 -oneline address show` lines: `2: ens3    inet 10.77.0.31/24 brd ...`.
fn parse_addresses(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|word| *word == "inet")?;
            words.next().map(str::to_string)
        })
        .collect()
}

/// Prints the report line and a sentence for people reading the console.
pub fn print(root: &Root, host: &mut dyn Host) -> anyhow::Result<()> {
    let report = BootReport::collect(root, host)?;
    println!(
        "r2a-node: node {} (role {}), addresses {}; r2a-firstboot {}; failed units: {}",
        report.node.as_deref().unwrap_or("not identified"),
        report.role.as_deref().unwrap_or("-"),
        if report.addresses.is_empty() {
            "none".to_string()
        } else {
            report.addresses.join(", ")
        },
        report.firstboot,
        if report.failed_units.is_empty() {
            "none".to_string()
        } else {
            report.failed_units.join(", ")
        },
    );
    println!("{}", report.line()?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::host::ScriptedHost;
    use crate::agent::testing::FakeRoot;

    fn booted_host(failed: &str) -> ScriptedHost {
        let mut host = ScriptedHost::new(true);
        host.answer("systemctl list-jobs --plain --no-legend --no-pager", "1 r2a-report.service start running\n")
            .answer(
                "systemctl show --property=Result,ExecMainExitTimestampMonotonic r2a-firstboot.service",
                "Result=success\nExecMainExitTimestampMonotonic=23456789\n",
            )
            .succeed("systemctl is-active --quiet multi-user.target")
            .answer("systemctl list-units --failed --plain --no-legend --no-pager", failed)
            .answer("findmnt --bytes --noheadings --output SIZE /", "2576980377\n")
            .answer(
                "ip -4 -oneline address show scope global",
                "2: ens3    inet 10.77.0.31/24 brd 10.77.0.255 scope global ens3\\       valid_lft forever preferred_lft forever\n",
            );
        host
    }

    #[test]
    fn a_clean_boot_is_healthy_and_reads_back_from_its_line() {
        let fake = FakeRoot::db();
        let mut host = booted_host("");
        let report = BootReport::collect(&fake.root, &mut host).unwrap();
        assert!(report.is_healthy(), "{report:?}");
        assert_eq!(report.addresses, ["10.77.0.31/24"]);
        assert_eq!(report.firstboot_done_seconds, Some(23.456789));
        assert_eq!(report.root_bytes, Some(2576980377));
        let line = format!("[   41.2] r2a-node[512]: {}", report.line().unwrap());
        assert_eq!(BootReport::parse_line(&line), Some(report));
        assert_eq!(BootReport::parse_line("r2a-node: node db1"), None);
    }

    #[test]
    fn a_failed_unit_makes_the_boot_unhealthy() {
        let fake = FakeRoot::db();
        let mut host =
            booted_host("cloud-final.service loaded failed failed Cloud-init: Final Stage\n");
        let report = BootReport::collect(&fake.root, &mut host).unwrap();
        assert_eq!(report.failed_units, ["cloud-final.service"]);
        assert!(!report.is_healthy());
    }
}
