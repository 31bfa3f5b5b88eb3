//! `r2a-node report`: one line on the console once the boot is over, saying who the
//! node is, its links and addresses, where its data disk is mounted, whether `r2a-firstboot.service` succeeded and which units
//! failed. `r2a-report.service` runs it after `multi-user.target`; `r2a-image boot
//! --check` reads the line from the serial console.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::config::Config;
use super::host::{FINDMNT_NOTHING_FOUND, Host, Invocation};
use super::identity::read_recorded;
use super::root::Root;
use super::status::{Report as StatusReport, State, StepStatus};

/// What starts the report line; the JSON follows on the same line.
pub const PREFIX: &str = "r2a-report: ";
/// How long the report waits for the first join step's first attempt.
const JOIN_SETTLE_LIMIT: Duration = Duration::from_secs(90);
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
    /// Every link but loopback, with its MAC and global IPv4 addresses.
    #[serde(default)]
    pub links: Vec<ReportedLink>,
    /// The node's data disk as mounted, when its role uses one.
    #[serde(default)]
    pub data_disk: Option<ReportedMount>,
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
    /// The role's join steps (done, waiting, ...), as `r2a-node status` shows them.
    #[serde(default)]
    pub join: Vec<StepStatus>,
}

/// A network link of the booted node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedLink {
    /// Kernel name (`ens3`, `host0`).
    pub name: String,
    /// MAC address.
    pub mac: String,
    /// Global IPv4 addresses with prefix length.
    pub addresses: Vec<String>,
}

/// A mounted file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedMount {
    /// The device mounted (`/dev/vdb`).
    pub device: String,
    /// Where.
    pub mount: String,
    /// Its type.
    pub filesystem: String,
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
        let links = parse_links(&host.run(&Invocation::new("ip", ["-json", "address", "show"]))?)?;
        let data_disk = match Config::load(root).ok().zip(recorded.as_ref()) {
            Some((config, identity)) => reported_data_disk(&config, &identity.node, host)?,
            None => None,
        };
        let join = settled_join_steps(root)?;
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
            addresses: links
                .iter()
                .flat_map(|link| link.addresses.iter().cloned())
                .collect(),
            links,
            data_disk,
            multi_user,
            firstboot: property("Result"),
            firstboot_done_seconds: (exited_us > 0).then(|| exited_us as f64 / 1e6),
            failed_units: failed
                .lines()
                .filter_map(|line| line.split_whitespace().next())
                .map(str::to_string)
                .collect(),
            root_bytes,
            join,
        })
    }
}

/// The join steps once `r2a-node join` has tried the first one (it starts beside the
/// report, after the network is online), waiting up to [`JOIN_SETTLE_LIMIT`].
fn settled_join_steps(root: &Root) -> anyhow::Result<Vec<StepStatus>> {
    let started = Instant::now();
    loop {
        let steps = StatusReport::current(root)?.join;
        let first_tried = steps
            .first()
            .is_none_or(|step| step.state != State::Pending);
        if first_tried || started.elapsed() > JOIN_SETTLE_LIMIT {
            return Ok(steps);
        }
        std::thread::sleep(Duration::from_secs(1));
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

/// `ip -json address show`: every link but loopback, with its global IPv4 addresses.
fn parse_links(json: &str) -> anyhow::Result<Vec<ReportedLink>> {
    #[derive(Deserialize)]
    struct IpLink {
        ifname: String,
        #[serde(default)]
        address: String,
        #[serde(default)]
        link_type: String,
        #[serde(default)]
        addr_info: Vec<IpAddress>,
    }
    #[derive(Deserialize)]
    struct IpAddress {
        family: String,
        local: String,
        prefixlen: u8,
        #[serde(default)]
        scope: String,
    }
    let links: Vec<IpLink> =
        serde_json::from_str(json).context("reading `ip -json address show`")?;
    Ok(links
        .into_iter()
        .filter(|link| link.link_type != "loopback")
        .map(|link| ReportedLink {
            addresses: link
                .addr_info
                .iter()
                .filter(|a| a.family == "inet" && a.scope == "global")
                .map(|a| format!("{}/{}", a.local, a.prefixlen))
                .collect(),
            name: link.ifname,
            mac: link.address,
        })
        .collect())
}

/// Where the node's data disk is mounted, if its role uses one and it is.
fn reported_data_disk(
    config: &Config,
    node: &str,
    host: &mut dyn Host,
) -> anyhow::Result<Option<ReportedMount>> {
    let Some(rule) = &config.role.data_disk else {
        return Ok(None);
    };
    if config
        .cluster
        .node(node)
        .and_then(|node| node.data_disk.as_ref())
        .is_none()
    {
        return Ok(None);
    }
    let found = host.probe(
        &Invocation::new(
            "findmnt",
            [
                "--noheadings",
                "--output",
                "SOURCE,FSTYPE",
                "--mountpoint",
                &rule.mount,
            ],
        ),
        FINDMNT_NOTHING_FOUND,
    )?;
    Ok(found.and_then(|line| {
        let mut words = line.split_whitespace();
        Some(ReportedMount {
            device: words.next()?.to_string(),
            filesystem: words.next()?.to_string(),
            mount: rule.mount.clone(),
        })
    }))
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

    /// What `ip -json address show` prints for loopback and one link (shortened).
    const IP_JSON: &str = r#"[{"ifindex":1,"ifname":"lo","link_type":"loopback","address":"00:00:00:00:00:00","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"}]},
        {"ifindex":2,"ifname":"ens3","link_type":"ether","address":"52:54:00:12:34:56","addr_info":[{"family":"inet","local":"10.77.0.31","prefixlen":24,"scope":"global"},{"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]}]"#;

    fn booted_host(failed: &str) -> ScriptedHost {
        let mut host = ScriptedHost::new(true);
        host.answer(
            "systemctl list-jobs --plain --no-legend --no-pager",
            "1 r2a-report.service start running\n",
        )
        .answer(
            "systemctl show '--property=Result,ExecMainExitTimestampMonotonic' r2a-firstboot.service",
            "Result=success\nExecMainExitTimestampMonotonic=23456789\n",
        )
        .succeed("systemctl is-active --quiet multi-user.target")
        .answer(
            "systemctl list-units --failed --plain --no-legend --no-pager",
            failed,
        )
        .answer(
            "findmnt --bytes --noheadings --output SIZE /",
            "2576980377\n",
        )
        .answer("ip -json address show", IP_JSON)
        .answer(
            "findmnt --noheadings --output SOURCE,FSTYPE --mountpoint /var/lib/postgresql",
            "/dev/vdb ext4\n",
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
        assert_eq!(
            report.links,
            [ReportedLink {
                name: "ens3".into(),
                mac: "52:54:00:12:34:56".into(),
                addresses: vec!["10.77.0.31/24".into()],
            }]
        );
        // The fake root has recorded no identity: no node, so no data disk to look for.
        assert_eq!(report.data_disk, None);
        assert_eq!(report.firstboot_done_seconds, Some(23.456789));
        assert_eq!(report.root_bytes, Some(2576980377));
        let line = format!("[   41.2] r2a-node[512]: {}", report.line().unwrap());
        assert_eq!(BootReport::parse_line(&line), Some(report));
        assert_eq!(BootReport::parse_line("r2a-node: node db1"), None);
    }

    #[test]
    fn an_identified_node_reports_where_its_data_disk_is_mounted() {
        let fake = FakeRoot::db();
        let identity = crate::agent::identity::Identity {
            cluster: "ring2all".into(),
            role: "db".into(),
            node: "db1".into(),
            address: "192.168.10.11".parse().unwrap(),
            source: crate::agent::sources::Source::NoCloud,
            evidence: "meta-data".into(),
        };
        crate::agent::identity::record(&fake.root, &identity).unwrap();
        let report = BootReport::collect(&fake.root, &mut booted_host("")).unwrap();
        assert_eq!(report.node.as_deref(), Some("db1"));
        assert_eq!(
            report.data_disk,
            Some(ReportedMount {
                device: "/dev/vdb".into(),
                mount: "/var/lib/postgresql".into(),
                filesystem: "ext4".into(),
            })
        );
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
