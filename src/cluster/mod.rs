//! `r2a-image cluster`: a whole cluster on one machine. Every node of the manifest (or a
//! chosen few) boots its role's built tree under real systemd as a `systemd-nspawn`
//! container, on an overlay of its own over an unpacked tree of its role, identified by
//! its own NoCloud seed, on a bridge inside a network namespace of the harness's own (no
//! address or route of the cluster exists in the host's namespace).
//!
//! Each role tarball is unpacked once, into a tree named after its sha256 ([`trees`]), and
//! each node keeps the tree it was first booted on (its overlay's upper folder only fits
//! that one): a grown cluster's rebuilt image boots the new nodes (`up --nodes db4,db5`
//! with the new manifest and the same state folder) while the running ones are left
//! alone, and later boot again on their own tree.
//!
//! [`Harness`] is the API the cluster tests drive; the command line is a thin wrapper
//! ([`cli`]). Containers outlive the command that started them; everything the harness
//! creates is recorded first ([`state::Record`], by node name) so that [`Harness::down`]
//! removes it all, also after a failed `up` or a harness that was killed, and also for
//! nodes that the harness's manifest does not list (a larger or smaller manifest of the
//! same cluster may drive the same state folder).
//!
//! The state folder:
//!
//! ```text
//! state.json                      the record (state::Record)
//! lock                            held by commands that change anything
//! roles/<role>/<key>/tree         a role tarball unpacked (key: its sha256's first 16 hex)
//! roles/<role>/<key>/sha256       its whole sha256, written last
//! nodes/<node>/{upper,work,root}  the node's overlay (root: its mount point)
//! nodes/<node>/console.log        its console (kept by `down`)
//! nodes/<node>/nspawn.pid         its systemd-nspawn's id
//! nodes/<node>/data-disk.img      the file behind its data disk
//! ```

pub mod cgroup;
pub mod cli;
pub mod container;
mod lifecycle;
pub mod names;
pub mod network;
pub mod pools;
mod probe;
pub mod rootfs;
pub mod state;
pub mod status;
pub mod trees;

use std::collections::BTreeMap;
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

/// The inotify instances a cluster needs: every container's systemd, journald and
/// networkd hold a few each, and all of them count against root's one limit.
const INOTIFY_INSTANCES: u32 = 1024;
/// The host's limit of inotify instances per user.
const INOTIFY_LIMIT_FILE: &str = "/proc/sys/fs/inotify/max_user_instances";

/// Raises the host's inotify instance limit to `wanted` when it is lower: with the
/// kernel's default (128) the ninth container's systemd fails to start ("Too many open
/// files") and the container exits at once.
fn ensure_inotify_instances(wanted: u32) -> anyhow::Result<()> {
    let current = std::fs::read_to_string(INOTIFY_LIMIT_FILE)
        .with_context(|| format!("reading {INOTIFY_LIMIT_FILE}"))?;
    let current: u32 = current
        .trim()
        .parse()
        .with_context(|| format!("reading {INOTIFY_LIMIT_FILE}: `{}`", current.trim()))?;
    if current >= wanted {
        return Ok(());
    }
    eprintln!(
        "r2a-image: cluster: raising fs.inotify.max_user_instances from {current} to {wanted}"
    );
    std::fs::write(INOTIFY_LIMIT_FILE, wanted.to_string())
        .with_context(|| format!("writing {INOTIFY_LIMIT_FILE} (needs root)"))
}

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
        ensure_inotify_instances(INOTIFY_INSTANCES)?;
        let hierarchies = cgroup::Hierarchies::detect()?;
        let _lock = StateLock::acquire(&self.state_dir)?;
        let mut record = self.load_record()?;
        // The current tree of each role; nodes that booted before keep their own.
        let mut current: BTreeMap<&str, PathBuf> = BTreeMap::new();
        for node in &selected {
            if !current.contains_key(node.role.as_str()) {
                let tree = self.prepare_role(&record, &node.role)?;
                current.insert(&node.role, tree);
            }
        }
        self.ensure_lab(&mut record)?;
        for node in selected {
            if self.live_container(&record, &node.name).is_some() {
                continue;
            }
            self.boot(
                &mut record,
                node,
                &current[node.role.as_str()],
                &hierarchies,
            )
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
        current: &Path,
        hierarchies: &cgroup::Hierarchies,
    ) -> anyhow::Result<()> {
        let names = self.node_names(&node.name)?;
        let lower = self.lower_of(record, &node.name, current)?;
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

        let entry = record.node_mut(&node.name, &node.role);
        entry.tree = Some(lower.clone());
        entry.overlay = Some(dirs.root());
        record.save(&self.state_dir)?;
        rootfs::mount_overlay(&lower, &dirs)?;
        let seed_iso = rootfs::published_seed(&self.out, &self.cluster, node)?;
        rootfs::write_seed(&dirs.root(), &self.cluster, node, seed_iso.as_deref())?;

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
