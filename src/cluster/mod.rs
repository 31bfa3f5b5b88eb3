//! `r2a-image cluster`: a whole cluster on one machine. Every node of the manifest (or a
//! chosen few) boots its role's built tree under real systemd as a `systemd-nspawn`
//! container, on an overlay of its own over one unpacked tree per role, identified by its
//! own NoCloud seed, on a bridge inside a network namespace of the harness's own (no
//! address or route of the cluster exists in the host's namespace).
//!
//! [`Harness`] is the API the cluster tests drive; the command line is a thin wrapper
//! ([`cli`]). Containers outlive the command that started them; everything the harness
//! creates is recorded first ([`state::Record`]) so that [`Harness::down`] removes it all,
//! also after a failed `up` or a harness that was killed.

pub mod cgroup;
pub mod cli;
pub mod container;
mod lifecycle;
pub mod names;
pub mod network;
mod probe;
pub mod rootfs;
pub mod state;
pub mod status;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::exec::{Tool, require_tools};
use crate::manifest::{Cluster, Node};
use names::NodeNames;
use rootfs::NodeDirs;
use state::{ProcessRecord, Record, StateLock};

/// Where a cluster's state folder is when none is given.
pub const DEFAULT_STATE_ROOT: &str = "/var/lib/r2a-appliance/cluster";

/// What the harness runs on the host.
const TOOLS: [Tool; 6] = [
    Tool {
        program: "systemd-nspawn",
        package: "systemd-container",
        reason: "boot the nodes as containers",
    },
    Tool {
        program: "ip",
        package: "iproute2",
        reason: "make the lab's namespaces, bridge and veths",
    },
    Tool {
        program: "nsenter",
        package: "util-linux",
        reason: "run commands inside the containers",
    },
    Tool {
        program: "setsid",
        package: "util-linux",
        reason: "detach the containers from the harness",
    },
    Tool {
        program: "losetup",
        package: "mount",
        reason: "give nodes with a data disk a block device",
    },
    Tool {
        program: "tar",
        package: "tar",
        reason: "unpack the role trees",
    },
];

/// The default state folder of `cluster`.
pub fn default_state_dir(cluster: &str) -> PathBuf {
    Path::new(DEFAULT_STATE_ROOT).join(cluster)
}

/// A cluster run on this machine.
pub struct Harness {
    cluster: Cluster,
    out: PathBuf,
    state_dir: PathBuf,
}

impl Harness {
    /// A harness for `cluster`, whose role images were built into `out` (the folder that
    /// holds `<cluster>/<role>/rootfs.tar.gz`), keeping its own files in `state_dir`
    /// (created if needed; it must not be inside `out`).
    pub fn new(cluster: &Cluster, out: &Path, state_dir: &Path) -> anyhow::Result<Harness> {
        let out =
            std::path::absolute(out).with_context(|| format!("resolving {}", out.display()))?;
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let state_dir = state_dir
            .canonicalize()
            .with_context(|| format!("resolving {}", state_dir.display()))?;
        let out_resolved = out.canonicalize().unwrap_or_else(|_| out.clone());
        if state_dir.starts_with(&out_resolved) {
            bail!(
                "the state folder {} is inside the output folder {}; keep it elsewhere",
                state_dir.display(),
                out.display()
            );
        }
        Ok(Harness {
            cluster: cluster.clone(),
            out,
            state_dir,
        })
    }

    /// The cluster.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The state folder.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Boots `nodes` (every node of the manifest when empty); nodes that run already are
    /// left alone. Returns without waiting for the boots ([`Harness::wait_booted`]).
    pub fn up(&self, nodes: &[&str]) -> anyhow::Result<()> {
        let selected = self.select(nodes)?;
        self.check_built(&selected)?;
        require_tools(&TOOLS)?;
        let hierarchies = cgroup::Hierarchies::detect()?;
        let _lock = StateLock::acquire(&self.state_dir)?;
        let mut record = self.load_record()?;
        let mut roles: Vec<&str> = selected.iter().map(|n| n.role.as_str()).collect();
        roles.sort_unstable();
        roles.dedup();
        for role in roles {
            self.prepare_role(&record, role)?;
        }
        self.ensure_lab(&mut record)?;
        for node in selected {
            if self.live_container(&record, &node.name).is_some() {
                continue;
            }
            self.boot(&mut record, node, &hierarchies)
                .with_context(|| format!("starting node {}", node.name))?;
        }
        Ok(())
    }

    /// Boots one node again on the state it kept; fails when it runs.
    pub fn start(&self, node: &str) -> anyhow::Result<()> {
        self.select(&[node])?;
        let record = self.load_record()?;
        if self.live_container(&record, node).is_some() {
            bail!("node {node} is running already");
        }
        self.up(&[node])
    }

    /// Runs `argv` inside a node's container; its output and status are returned whatever
    /// the status is.
    pub fn exec(&self, node: &str, argv: &[&str]) -> anyhow::Result<Output> {
        let mut command = self.exec_command(node, argv)?;
        command
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {argv:?} in {node}"))
    }

    /// The command that runs `argv` inside a node's container, stdio not chosen yet.
    pub fn exec_command(&self, node: &str, argv: &[&str]) -> anyhow::Result<Command> {
        anyhow::ensure!(!argv.is_empty(), "no command to run in {node}");
        self.select(&[node])?;
        let record = self.load_record()?;
        let Some(pid) = self.live_container(&record, node) else {
            bail!(
                "node {node} is not running; start it with `r2a-image cluster {} start {node}`",
                self.cluster.manifest.path.display()
            );
        };
        let init = container::container_init(pid)
            .with_context(|| format!("node {node}'s container has no init process yet"))?;
        Ok(container::exec_command(init, argv))
    }

    /// Waits until systemd inside a node has finished booting; returns its state
    /// (`running`, or `degraded` when a unit failed).
    pub fn wait_booted(&self, node: &str, limit: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + limit;
        let mut last = String::from("not started");
        loop {
            let record = self.load_record()?;
            let Some(pid) = self.live_container(&record, node) else {
                bail!(
                    "the container of {node} is not running (it exited?); its console:\n{}",
                    self.console_tail(node, 40)
                );
            };
            let left = deadline.saturating_duration_since(Instant::now()).as_secs();
            if let Some(init) = container::container_init(pid) {
                let wait = left.max(1).to_string();
                let argv = ["timeout", &wait, "systemctl", "is-system-running", "--wait"];
                if let Ok(output) = container::exec_command(init, &argv)
                    .stdin(Stdio::null())
                    .output()
                {
                    last = String::from_utf8_lossy(&output.stdout).trim().to_string();
                    if last == "running" || last == "degraded" {
                        return Ok(last);
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "{node} did not finish booting within {} s (systemd says `{last}`); its console:\n{}",
                    limit.as_secs(),
                    self.console_tail(node, 40)
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The last lines of a node's console.
    pub fn console_tail(&self, node: &str, lines: usize) -> String {
        container::console_tail(&NodeDirs::new(&self.state_dir, node).console(), lines)
    }

    /// Whether anything the harness made for the cluster still exists (per the record).
    pub fn has_resources(&self) -> anyhow::Result<bool> {
        Ok(!self.load_record()?.is_empty())
    }

    /// Whether a node's container runs.
    pub fn is_running(&self, node: &str) -> anyhow::Result<bool> {
        Ok(self.live_container(&self.load_record()?, node).is_some())
    }

    fn load_record(&self) -> anyhow::Result<Record> {
        Record::load(&self.state_dir, &self.cluster.name)
    }

    /// The chosen nodes, in manifest order; every unknown name is an error.
    fn select(&self, names: &[&str]) -> anyhow::Result<Vec<&Node>> {
        if names.is_empty() {
            return Ok(self.cluster.nodes.iter().collect());
        }
        let unknown: Vec<&str> = names
            .iter()
            .copied()
            .filter(|name| self.cluster.node(name).is_none())
            .collect();
        if !unknown.is_empty() {
            let known: Vec<&str> = self.cluster.nodes.iter().map(|n| n.name.as_str()).collect();
            bail!(
                "no node {} in {}; nodes: {}",
                unknown.join(", "),
                self.cluster.manifest.path.display(),
                known.join(", ")
            );
        }
        Ok(self
            .cluster
            .nodes
            .iter()
            .filter(|node| names.contains(&node.name.as_str()))
            .collect())
    }

    /// Fails, naming the build command, when a chosen node's role has no built tarball.
    fn check_built(&self, nodes: &[&Node]) -> anyhow::Result<()> {
        let mut missing: Vec<String> = Vec::new();
        for node in nodes {
            let tarball = rootfs::role_tarball(&self.out, &self.cluster.name, &node.role);
            if !tarball.is_file() && !missing.iter().any(|line| line.contains(&node.role)) {
                missing.push(format!(
                    "role {} is not built ({} is missing): run `r2a-image build {} --role {} --format tar --out {}`",
                    node.role,
                    tarball.display(),
                    self.cluster.manifest.path.display(),
                    node.role,
                    self.out.display()
                ));
            }
        }
        if !missing.is_empty() {
            bail!(missing.join("\n"));
        }
        Ok(())
    }

    /// Unpacks the role's tree when its tarball changed. The nodes of the role then start
    /// over from the new image: their overlays must not be mounted, and their old upper
    /// folders (made on the old image) go.
    fn prepare_role(&self, record: &Record, role: &str) -> anyhow::Result<()> {
        let tarball = rootfs::role_tarball(&self.out, &self.cluster.name, role);
        let sha256 = crate::hash::sha256_file(&tarball)?;
        if rootfs::role_tree_is_current(&self.state_dir, role, &sha256) {
            return Ok(());
        }
        let booted: Vec<&str> = record
            .nodes
            .iter()
            .filter(|(_, node)| node.role == role && node.overlay.is_some())
            .map(|(name, _)| name.as_str())
            .collect();
        if !booted.is_empty() {
            bail!(
                "the {role} image ({}) changed since {} booted from it; stop them or run \
                 `r2a-image cluster {} down` first",
                tarball.display(),
                booted.join(", "),
                self.cluster.manifest.path.display()
            );
        }
        for node in self.cluster.nodes_of(role) {
            let dirs = NodeDirs::new(&self.state_dir, &node.name);
            crate::fsutil::remove_tree(&dirs.upper())?;
            crate::fsutil::remove_tree(&dirs.work())?;
        }
        eprintln!("r2a-image: cluster: unpacking {}", tarball.display());
        rootfs::unpack_role_tree(&self.state_dir, role, &tarball, &sha256)
    }

    /// Makes the lab namespace and bridge unless they exist.
    fn ensure_lab(&self, record: &mut Record) -> anyhow::Result<()> {
        let lab = names::lab_names(&self.cluster.name);
        let recorded = record.lab_netns.as_deref() == Some(lab.netns.as_str());
        if recorded && network::lab_ready(&lab) {
            return Ok(());
        }
        if !recorded && network::netns_exists(&lab.netns) {
            bail!(foreign_netns(&lab.netns, &self.cluster.name));
        }
        record.lab_netns = Some(lab.netns.clone());
        record.save(&self.state_dir)?;
        // A namespace recorded but half made (a run stopped in the middle) is made anew.
        network::delete_netns(&lab.netns)?;
        network::create_lab(&lab)
    }

    /// The planned names of a node.
    fn node_names(&self, node: &str) -> anyhow::Result<NodeNames> {
        let all: Vec<&str> = self.cluster.nodes.iter().map(|n| n.name.as_str()).collect();
        names::node_names(&self.cluster.name, &all)?
            .into_iter()
            .find(|names| names.node == node)
            .with_context(|| format!("no node {node} in the manifest"))
    }

    /// Creates what one node needs, each recorded first, and starts its container.
    fn boot(
        &self,
        record: &mut Record,
        node: &Node,
        hierarchies: &cgroup::Hierarchies,
    ) -> anyhow::Result<()> {
        let names = self.node_names(&node.name)?;
        let lab = names::lab_names(&self.cluster.name);
        let dirs = NodeDirs::new(&self.state_dir, &node.name);
        std::fs::create_dir_all(&dirs.base)
            .with_context(|| format!("creating {}", dirs.base.display()))?;

        let entry = record.node_mut(&node.name, &node.role);
        let recorded = entry.netns.as_deref() == Some(names.netns.as_str());
        if !recorded && network::netns_exists(&names.netns) {
            bail!(foreign_netns(&names.netns, &self.cluster.name));
        }
        if !(recorded && network::node_link_ready(&names.netns)) {
            entry.netns = Some(names.netns.clone());
            record.save(&self.state_dir)?;
            network::delete_netns(&names.netns)?;
            network::create_node_link(&lab, &names, node.mac.as_deref())?;
        }

        // Fresh cgroups for every boot: see `remove_cgroups` for why none is reused.
        let folders = hierarchies.folders(&names.cgroup);
        record.node_mut(&node.name, &node.role).cgroups = folders.clone();
        record.save(&self.state_dir)?;
        for folder in &folders {
            cgroup::remove(folder)?;
        }
        cgroup::create(&folders)?;

        record.node_mut(&node.name, &node.role).overlay = Some(dirs.root());
        record.save(&self.state_dir)?;
        let tree = rootfs::role_tree(&self.state_dir, &node.role);
        rootfs::mount_overlay(&tree, &dirs)?;
        rootfs::write_seed(&dirs.root(), &self.cluster, node)?;

        let disk = match &node.data_disk {
            Some(device) => {
                record.node_mut(&node.name, &node.role).data_disk = Some(dirs.data_disk());
                record.save(&self.state_dir)?;
                let size = node.disk.unwrap_or(rootfs::DEFAULT_DATA_DISK_BYTES);
                let loop_device = rootfs::attach_data_disk(&dirs.data_disk(), size)?;
                Some((loop_device, device.clone()))
            }
            None => None,
        };

        let launch = container::Launch {
            machine: names.machine.clone(),
            hostname: node.name.clone(),
            root: dirs.root(),
            netns_path: network::netns_path(&names.netns),
            cgroup_procs: cgroup::procs_files(&folders),
            pid_file: dirs.pid_file(),
            console: dirs.console(),
            disk,
        };
        let _ = std::fs::remove_file(&launch.pid_file);
        record.node_mut(&node.name, &node.role).container = Some(ProcessRecord {
            pid_file: launch.pid_file.clone(),
            pid: None,
            start_ticks: None,
        });
        record.save(&self.state_dir)?;
        let pid = container::spawn(&launch)?;
        record.node_mut(&node.name, &node.role).container = Some(ProcessRecord {
            pid_file: launch.pid_file.clone(),
            pid: Some(pid),
            start_ticks: state::process_start_ticks(pid),
        });
        record.save(&self.state_dir)?;
        // A container that cannot start at all (a bad option, a busy root) ends at once.
        std::thread::sleep(Duration::from_millis(500));
        container::reap(pid);
        if !state::process_alive(pid) {
            bail!(
                "its container exited right away; console:\n{}",
                container::console_tail(&dirs.console(), 20)
            );
        }
        Ok(())
    }

    /// The id of a node's running `systemd-nspawn`, if the record names one that is still
    /// the process the harness started.
    fn live_container(&self, record: &Record, node: &str) -> Option<u32> {
        let process = record.nodes.get(node)?.container.as_ref()?;
        let dirs = NodeDirs::new(&self.state_dir, node);
        lifecycle::recorded_pid(process, &dirs).filter(|pid| {
            container::reap(*pid);
            state::process_alive(*pid)
        })
    }
}

fn foreign_netns(name: &str, cluster: &str) -> String {
    format!(
        "network namespace {name} exists but this state folder did not make it: another \
         harness of cluster {cluster} may be running (its state folder's `down` removes \
         it), or remove it with `ip netns del {name}`"
    )
}
