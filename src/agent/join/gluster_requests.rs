//! Join requests of fs nodes beyond the seeds: a node cannot probe itself into a Gluster
//! pool, so it leaves its address on the shared volume (`/.r2a/join/<name>`, through a
//! client mount) and every member's `r2a-node keep` reads the requests from its own
//! brick and probes the nodes not in the pool yet. Every fs node holds a certificate
//! of the cluster CA, the only way onto the volume.
//!
//! A request lands on the bricks of one replica set (the volume distributes files over
//! its sets), so the members of that set answer it; a probe that another member made
//! first is "already in peer list", which is fine.

use std::path::Path;

use anyhow::Context as _;

use super::gluster_cli::{gluster, parse_pool};
use crate::agent::host::{Host, Invocation};
use crate::agent::root::Root;
use crate::fsutil::write_atomic;

/// Where requests are, relative to the volume's root (and to each brick).
pub const REQUESTS_DIR: &str = ".r2a/join";
/// Where a node mounts the volume for a moment to leave its request.
const REQUEST_MOUNT: &str = "/run/r2a/volume-join";

/// A later fs node asking to be probed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// Its name.
    pub name: String,
    /// The address to probe.
    pub address: String,
}

impl JoinRequest {
    /// Leaves the request on the volume, through a client mount of the seeds' volume
    /// that is undone before returning.
    pub fn leave(
        &self,
        root: &Root,
        host: &mut dyn Host,
        seeds: &[&str],
        volume: &str,
    ) -> anyhow::Result<()> {
        let mount_point = root.path(REQUEST_MOUNT);
        std::fs::create_dir_all(&mount_point)
            .with_context(|| format!("creating {}", mount_point.display()))?;
        let (first, others) = seeds.split_first().context("the manifest has no fs seed")?;
        let options = format!("backup-volfile-servers={}", others.join(":"));
        let source = format!("{first}:/{volume}");
        let mount = Invocation::new(
            "mount",
            ["-t", "glusterfs", "-o", &options, &source, REQUEST_MOUNT],
        );
        host.run(&mount.with_timeout(90))?;
        let written = write_atomic(
            &mount_point.join(REQUESTS_DIR).join(&self.name),
            format!("{}\n", self.address).as_bytes(),
            0o644,
        );
        let unmounted = host.run(&Invocation::new("umount", [REQUEST_MOUNT]));
        written.and(unmounted.map(drop))
    }
}

/// The requests found on a brick.
pub fn read_requests(brick: &Path) -> anyhow::Result<Vec<JoinRequest>> {
    let folder = brick.join(REQUESTS_DIR);
    let entries = match std::fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("reading {}", folder.display())),
    };
    let mut requests = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", folder.display()))?;
        let name = entry.file_name().to_string_lossy().to_string();
        // The agent's own temporary files start with a dot.
        if name.starts_with('.') || !entry.file_type()?.is_file() {
            continue;
        }
        let address = std::fs::read_to_string(entry.path())?.trim().to_string();
        if address.parse::<std::net::Ipv4Addr>().is_ok() {
            requests.push(JoinRequest { name, address });
        }
    }
    requests.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(requests)
}

/// The requests whose node is not in the pool: the ones to probe.
pub fn to_probe<'a>(requests: &'a [JoinRequest], pool_hosts: &[String]) -> Vec<&'a JoinRequest> {
    requests
        .iter()
        .filter(|request| !pool_hosts.contains(&request.address))
        .collect()
}

/// On a member: probes every node that asked to join and is not in the pool; the
/// names of those it probed.
pub fn answer_requests(
    root: &Root,
    host: &mut dyn Host,
    brick: &str,
) -> anyhow::Result<Vec<String>> {
    let requests = read_requests(&root.path(brick))?;
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let pool: Vec<String> = parse_pool(&gluster(host, &["pool", "list"])?)?
        .into_iter()
        .map(|peer| peer.hostname)
        .collect();
    let mut probed = Vec::new();
    for request in to_probe(&requests, &pool) {
        gluster(host, &["peer", "probe", &request.address])?;
        probed.push(request.name.clone());
    }
    Ok(probed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_on_a_brick_are_read_and_only_newcomers_probed() {
        let brick = tempfile::tempdir().unwrap();
        let folder = brick.path().join(REQUESTS_DIR);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("fs5"), "10.77.0.25\n").unwrap();
        std::fs::write(folder.join("fs4"), "10.77.0.24\n").unwrap();
        std::fs::write(folder.join(".r2a-tmp"), "half").unwrap();
        std::fs::write(folder.join("junk"), "not an address").unwrap();
        let requests = read_requests(brick.path()).unwrap();
        let names: Vec<&str> = requests.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["fs4", "fs5"]);
        let pool = vec!["fs2".to_string(), "10.77.0.24".to_string()];
        let probe: Vec<&str> = to_probe(&requests, &pool)
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(probe, ["fs5"]);
        assert!(
            read_requests(&brick.path().join("none"))
                .unwrap()
                .is_empty()
        );
    }
}
