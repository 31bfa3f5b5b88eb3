//! The harness's record of what it created for a cluster (`state.json` in the state
//! folder): namespaces, cgroups, mounts, loop devices, container processes and the role
//! tree each node's overlay lies on, by node name (nodes the manifest no longer lists
//! included: `status` and `down` go by the record). Each entry
//! is written, atomically, before the thing it names is created and cleared after it is
//! removed, so `down` can undo everything from the record alone, also after a failed or
//! killed run. Commands that change anything hold a lock on the state folder.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::fsutil;

/// The record's file name in the state folder.
pub const RECORD_FILE: &str = "state.json";
/// The lock file's name in the state folder.
const LOCK_FILE: &str = "lock";

/// Everything the harness created for one cluster and has not removed yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The cluster this state folder belongs to.
    pub cluster: String,
    /// The lab's network namespace (the bridge lives and dies with it).
    pub lab_netns: Option<String>,
    /// Every node that has anything created, by name.
    pub nodes: BTreeMap<String, NodeRecord>,
}

/// What exists for one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's role.
    pub role: String,
    /// Its network namespace (holding `host0`; its veth peer goes with it).
    pub netns: Option<String>,
    /// Its cgroup folders, one per cgroup hierarchy.
    pub cgroups: Vec<PathBuf>,
    /// The overlay mount point its container boots from.
    pub overlay: Option<PathBuf>,
    /// The unpacked role tree its overlay lies on (`roles/<role>/<key>/tree`): recorded
    /// before the overlay is first mounted and kept as long as the node's folder, since
    /// its upper folder is only valid over this tree. `up` removes no tree named here.
    #[serde(default)]
    pub tree: Option<PathBuf>,
    /// The file backing its data disk's loop device.
    pub data_disk: Option<PathBuf>,
    /// Its container's `systemd-nspawn` process.
    pub container: Option<ProcessRecord>,
}

impl NodeRecord {
    /// Whether nothing is recorded for the node any more.
    pub fn is_empty(&self) -> bool {
        self.netns.is_none()
            && self.cgroups.is_empty()
            && self.overlay.is_none()
            && self.tree.is_none()
            && self.data_disk.is_none()
            && self.container.is_none()
    }
}

/// A process the harness started. The id is recorded once known; the process writes it
/// to `pid_file` itself before it becomes `systemd-nspawn`, so a harness killed between
/// the start and the record still leaves a way to find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Where the process writes its own id.
    pub pid_file: PathBuf,
    /// Its id.
    pub pid: Option<u32>,
    /// Its start time (clock ticks after boot, `/proc/<pid>/stat` field 22): a pid that
    /// has been reused by another process has another start time.
    pub start_ticks: Option<u64>,
}

impl Record {
    /// Reads the record of `state_dir`, or an empty one for `cluster`; a record of another
    /// cluster is refused.
    pub fn load(state_dir: &Path, cluster: &str) -> anyhow::Result<Record> {
        let path = state_dir.join(RECORD_FILE);
        let record = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str::<Record>(&text)
                .with_context(|| format!("parsing {}", path.display()))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Record {
                cluster: cluster.to_string(),
                ..Record::default()
            },
            Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
        };
        if record.cluster != cluster {
            bail!(
                "{} belongs to cluster {}, not {cluster}; give this cluster its own --state folder",
                path.display(),
                record.cluster
            );
        }
        Ok(record)
    }

    /// Writes the record atomically.
    pub fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        let mut json = serde_json::to_string_pretty(self).context("encoding the harness state")?;
        json.push('\n');
        fsutil::write_atomic(&state_dir.join(RECORD_FILE), json.as_bytes(), 0o600)
    }

    /// The node's entry, made when missing.
    pub fn node_mut(&mut self, node: &str, role: &str) -> &mut NodeRecord {
        self.nodes
            .entry(node.to_string())
            .or_insert_with(|| NodeRecord {
                role: role.to_string(),
                ..NodeRecord::default()
            })
    }

    /// Drops the entries of nodes that have nothing left.
    pub fn prune(&mut self) {
        self.nodes.retain(|_, node| !node.is_empty());
    }

    /// Whether nothing at all is recorded.
    pub fn is_empty(&self) -> bool {
        self.lab_netns.is_none() && self.nodes.values().all(NodeRecord::is_empty)
    }
}

/// An exclusive lock on a state folder, held while a command changes anything.
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Waits for the lock on `state_dir`.
    pub fn acquire(state_dir: &Path) -> anyhow::Result<StateLock> {
        let path = state_dir.join(LOCK_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(StateLock { _file: file })
    }
}

/// The start time of a process, `None` when it does not exist.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|stat| stat.start_ticks)
}

/// Whether a process exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| parse_stat(&stat))
        .is_some_and(|stat| stat.state != 'Z' && stat.state != 'X')
}

/// Whether the recorded process is still the one the harness started and is running.
pub fn recorded_process_alive(pid: u32, start_ticks: Option<u64>) -> bool {
    process_alive(pid) && (start_ticks.is_none() || process_start_ticks(pid) == start_ticks)
}

/// The fields of `/proc/<pid>/stat` the harness reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// State letter (R, S, D, Z, ...).
    pub state: char,
    /// Parent process id.
    pub parent: u32,
    /// Start time in clock ticks after boot.
    pub start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces and parentheses,
/// so the fields are counted from its last `)`.
pub fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field N is fields[N - 3].
    Some(Stat {
        state: fields.first()?.chars().next()?,
        parent: fields.get(1)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        // (line, state, parent, start)
        let table = [
            (
                "1234 (systemd-nspawn) S 1 1234 1234 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 987654 1000 10",
                'S',
                1,
                987654,
            ),
            (
                "77 (a (weird) name) Z 76 77 77 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42 0 0",
                'Z',
                76,
                42,
            ),
        ];
        for (line, state, parent, start) in table {
            let stat = parse_stat(line).unwrap();
            assert_eq!(
                (stat.state, stat.parent, stat.start_ticks),
                (state, parent, start)
            );
        }
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn this_process_is_alive_and_its_start_time_is_stable() {
        let pid = std::process::id();
        let start = process_start_ticks(pid);
        assert!(start.is_some());
        assert!(recorded_process_alive(pid, start));
        assert!(!recorded_process_alive(pid, start.map(|s| s + 1)));
    }

    #[test]
    fn a_record_round_trips_and_refuses_another_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = Record::load(dir.path(), "c1").unwrap();
        assert!(record.is_empty());
        record.lab_netns = Some("r2a-c1-lab".to_string());
        record.node_mut("db1", "db").netns = Some("r2a-c1.db1".to_string());
        record.save(dir.path()).unwrap();
        let again = Record::load(dir.path(), "c1").unwrap();
        assert_eq!(again, record);
        let error = Record::load(dir.path(), "c2").unwrap_err().to_string();
        assert!(error.contains("belongs to cluster c1, not c2"), "{error}");
        record.nodes.get_mut("db1").unwrap().netns = None;
        record.node_mut("db1", "db").tree = Some(PathBuf::from("/s/roles/db/0123/tree"));
        record.prune();
        assert!(!record.is_empty(), "a node's tree is kept with its folder");
        record.nodes.get_mut("db1").unwrap().tree = None;
        record.prune();
        assert!(record.nodes.is_empty());
    }

    #[test]
    fn a_record_of_an_older_harness_has_no_trees() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{"cluster":"c1","lab_netns":null,"nodes":{"db1":{"role":"db",
            "netns":"r2a-c1.db1","cgroups":[],"overlay":null,"data_disk":null,"container":null}}}"#;
        std::fs::write(dir.path().join(RECORD_FILE), old).unwrap();
        let record = Record::load(dir.path(), "c1").unwrap();
        assert_eq!(record.nodes["db1"].tree, None);
        assert_eq!(record.nodes["db1"].netns.as_deref(), Some("r2a-c1.db1"));
    }
}
