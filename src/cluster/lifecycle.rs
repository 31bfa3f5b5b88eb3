//! Stopping containers and taking the lab apart: `stop` (a clean poweroff), `kill` (no
//! shutdown at all), and `down`, which undoes everything the record lists, each entry
//! cleared once its thing is gone, and keeps going past a failure so one stuck piece
//! does not keep the rest.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::Signal;

use super::rootfs::{self, NodeDirs};
use super::state::{self, ProcessRecord, Record, StateLock};
use super::{Harness, cgroup, container, names, network};

/// How long a killed container's processes get to disappear.
const KILL_GRACE: Duration = Duration::from_secs(20);

/// The id of a recorded container process when it is still the one the harness started:
/// the same start time, and a command line that names the node's own folder.
pub(super) fn recorded_pid(process: &ProcessRecord, dirs: &NodeDirs) -> Option<u32> {
    let pid = match process.pid {
        Some(pid) => pid,
        // Started, but the harness stopped before it recorded the id: the process wrote it.
        None => std::fs::read_to_string(&process.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?,
    };
    if process.start_ticks.is_some() && state::process_start_ticks(pid) != process.start_ticks {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    let names_node_folder = [dirs.root(), dirs.pid_file()]
        .iter()
        .any(|path| cmdline.contains(path.to_string_lossy().as_ref()));
    names_node_folder.then_some(pid)
}

impl Harness {
    /// Powers a node off cleanly (systemd-nspawn passes SIGTERM on to the container's
    /// systemd as an orderly shutdown) and waits until it has exited; after `limit` the
    /// container is killed and the stop reported as failed. The node keeps its state.
    pub fn stop(&self, node: &str, limit: Duration) -> anyhow::Result<()> {
        self.select(&[node])?;
        let _lock = StateLock::acquire(&self.state_dir)?;
        let mut record = self.load_record()?;
        if let Some(pid) = self.live_container(&record, node) {
            container::signal(pid, Signal::TERM)?;
            if !container::wait_exit(pid, limit) {
                self.kill_container(node, pid)?;
                self.release_node(&mut record, node)?;
                bail!(
                    "{node} did not power off within {} s and was killed; its console:\n{}",
                    limit.as_secs(),
                    self.console_tail(node, 30)
                );
            }
        }
        self.release_node(&mut record, node)
    }

    /// Kills a node's container outright (SIGKILL to its init and to systemd-nspawn, no
    /// shutdown); the node keeps its state, as a machine that lost power.
    pub fn kill(&self, node: &str) -> anyhow::Result<()> {
        self.select(&[node])?;
        let _lock = StateLock::acquire(&self.state_dir)?;
        let mut record = self.load_record()?;
        if let Some(pid) = self.live_container(&record, node) {
            self.kill_container(node, pid)?;
        }
        self.release_node(&mut record, node)
    }

    /// Removes every container process, mount, loop device, cgroup, veth, bridge and
    /// namespace the record lists, and the nodes' folders (their consoles stay, for a
    /// look afterwards), for every node of the record, whether the manifest lists it or not;
    /// the unpacked role trees stay for the next `up`. Idempotent.
    pub fn down(&self) -> anyhow::Result<()> {
        let _lock = StateLock::acquire(&self.state_dir)?;
        let mut record = self.load_record()?;
        let mut problems = Vec::new();
        let nodes: Vec<String> = record.nodes.keys().cloned().collect();
        for node in nodes {
            if let Err(error) = self.remove_node(&mut record, &node) {
                problems.push(format!("{node}: {error:#}"));
            }
        }
        if let Some(lab) = record.lab_netns.clone() {
            match network::delete_netns(&lab) {
                Ok(()) => {
                    record.lab_netns = None;
                    record.save(&self.state_dir)?;
                }
                Err(error) => problems.push(format!("{error:#}")),
            }
        }
        if !problems.is_empty() {
            bail!(
                "some of the cluster is left (the record in {} keeps it for another `down`):\n{}",
                self.state_dir.join(state::RECORD_FILE).display(),
                problems.join("\n")
            );
        }
        Ok(())
    }

    /// SIGKILLs a container's init (its whole pid namespace goes with it) and then
    /// systemd-nspawn, and waits until both are gone.
    fn kill_container(&self, node: &str, pid: u32) -> anyhow::Result<()> {
        if let Some(init) = container::container_init(pid) {
            container::signal(init, Signal::KILL)?;
        }
        container::signal(pid, Signal::KILL)?;
        if !container::wait_exit(pid, KILL_GRACE) {
            bail!("systemd-nspawn of {node} (pid {pid}) is still there after SIGKILL");
        }
        Ok(())
    }

    /// Waits until the node's cgroups hold no process, and removes them. The processes of
    /// a killed pid namespace take a moment to go; whatever is still there after that is
    /// SIGKILLed through `cgroup.kill`. A cgroup is never reused after a container: one
    /// that went through `cgroup.kill` kills the processes later forked into it.
    fn remove_cgroups(&self, record: &mut Record, node: &str) -> anyhow::Result<()> {
        let folders = record
            .nodes
            .get(node)
            .map(|n| n.cgroups.clone())
            .unwrap_or_default();
        let grace = Instant::now() + KILL_GRACE / 4;
        let deadline = Instant::now() + KILL_GRACE;
        let mut killed = false;
        loop {
            let left: Vec<u32> = folders.iter().flat_map(|f| cgroup::processes(f)).collect();
            if left.is_empty() {
                break;
            }
            left.iter().for_each(|pid| container::reap(*pid));
            if !killed && Instant::now() > grace {
                // The unified hierarchy comes first; cgroup.kill only exists there.
                cgroup::kill_all(&folders[0])?;
                killed = true;
            }
            if Instant::now() > deadline {
                bail!(
                    "processes {left:?} are still in {} after SIGKILL",
                    folders[0].display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for folder in &folders {
            cgroup::remove(folder)?;
            // r2a-cluster/<cluster>/<node>: the two parents go once no node uses them.
            cgroup::remove_empty_parents(folder, 2);
        }
        if let Some(entry) = record.nodes.get_mut(node) {
            entry.cgroups.clear();
        }
        record.save(&self.state_dir)
    }

    /// After the container has exited: clears it from the record, removes its cgroups,
    /// unmounts the overlay and removes what systemd-nspawn leaves when it is killed.
    fn release_node(&self, record: &mut Record, node: &str) -> anyhow::Result<()> {
        let Some(entry) = record.nodes.get_mut(node) else {
            return Ok(());
        };
        entry.container = None;
        record.save(&self.state_dir)?;
        self.remove_cgroups(record, node)?;
        if let Some(root) = record.nodes.get(node).and_then(|n| n.overlay.clone()) {
            rootfs::unmount(&root)?;
            if let Some(entry) = record.nodes.get_mut(node) {
                entry.overlay = None;
            }
            record.save(&self.state_dir)?;
        }
        // systemd-nspawn's own mount-propagation folder, removed by nspawn on a clean exit
        // only; empty once the container is gone. (By the node's name alone: the manifest
        // may no longer list it.)
        let names = names::names_of(&self.cluster.name, node);
        let _ = std::fs::remove_dir(Path::new(PROPAGATE_DIR).join(names.machine));
        Ok(())
    }

    /// Removes everything recorded for one node, then its folder; its tree is cleared from
    /// the record last, once no upper folder made on it is left.
    fn remove_node(&self, record: &mut Record, node: &str) -> anyhow::Result<()> {
        let dirs = NodeDirs::new(&self.state_dir, node);
        let process = record.nodes.get(node).and_then(|n| n.container.clone());
        if let Some(pid) = process.as_ref().and_then(|p| recorded_pid(p, &dirs)) {
            container::reap(pid);
            if state::process_alive(pid) {
                self.kill_container(node, pid)?;
            }
        }
        self.release_node(record, node)?;
        if let Some(file) = record.nodes.get(node).and_then(|n| n.data_disk.clone()) {
            rootfs::detach_data_disk(&file)?;
            if let Some(entry) = record.nodes.get_mut(node) {
                entry.data_disk = None;
            }
            record.save(&self.state_dir)?;
        }
        if let Some(netns) = record.nodes.get(node).and_then(|n| n.netns.clone()) {
            network::delete_netns(&netns)?;
            if let Some(entry) = record.nodes.get_mut(node) {
                entry.netns = None;
            }
            record.save(&self.state_dir)?;
        }
        remove_node_files(&dirs)?;
        if let Some(entry) = record.nodes.get_mut(node) {
            entry.tree = None;
        }
        record.prune();
        record.save(&self.state_dir)
    }
}

/// Where systemd-nspawn keeps a folder per machine for mount propagation.
const PROPAGATE_DIR: &str = "/run/systemd/nspawn/propagate";

/// Removes a node's folder but its console, once nothing is mounted in it.
fn remove_node_files(dirs: &NodeDirs) -> anyhow::Result<()> {
    if let Some(point) = rootfs::mounts_under(&dirs.base).first() {
        bail!(
            "{point} is still mounted; not removing {}",
            dirs.base.display()
        );
    }
    let Ok(entries) = std::fs::read_dir(&dirs.base) else {
        return Ok(());
    };
    for entry in entries.filter_map(Result::ok) {
        if entry.path() != dirs.console() {
            crate::fsutil::remove_any(&entry.path())
                .with_context(|| format!("cleaning {}", dirs.base.display()))?;
        }
    }
    Ok(())
}
