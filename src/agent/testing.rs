//! Test fixtures: a fake root holding what the builder puts in a db image of a small
//! cluster, and a snapshot of every file under it for "nothing changed" assertions.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::config::{CLUSTER_FILE, ROLE_FILE};
use super::host::ScriptedHost;
use super::root::Root;

/// A cluster.json as the builder serializes `r2a::manifest::Cluster`, with fields the
/// agent does not read, so the tests also prove they are ignored.
pub const CLUSTER_JSON: &str = r#"{
  "name": "lab",
  "domain": "pbx.example.com",
  "debian": {"suite": "trixie", "mirror": "http://deb.debian.org/debian",
             "architecture": "amd64", "components": ["main"]},
  "network": {"cidr": "192.168.10.0/24", "prefix_len": 24, "gateway": "192.168.10.1",
              "dns": ["192.168.10.1", "192.168.10.2"], "ntp": []},
  "nodes": [
    {"name": "db1", "role": "db", "address": "192.168.10.11", "mac": "52:54:00:00:00:11",
     "vcpus": 4, "memory": 17179869184, "disk": null, "data_disk": "/dev/vdb"},
    {"name": "db2", "role": "db", "address": "192.168.10.12", "mac": null,
     "vcpus": 4, "memory": null, "disk": null, "data_disk": "/dev/vdb"},
    {"name": "db3", "role": "db", "address": "192.168.10.13", "mac": "52:54:00:00:00:13",
     "vcpus": null, "memory": null, "disk": null, "data_disk": null},
    {"name": "fs1", "role": "fs", "address": "192.168.10.21", "mac": "52:54:00:00:00:21",
     "vcpus": null, "memory": null, "disk": null, "data_disk": "/dev/vdb"}
  ],
  "ssh_authorized_keys": [],
  "vendor": {"kind": "skip"},
  "build": {"source_date_epoch": 1754697600, "bootstrap": "mmdebstrap", "formats": ["tar"]},
  "manifest": {"path": "lab.toml", "sha256": "00"}
}"#;

/// role.json of the db role.
pub const DB_ROLE_JSON: &str = r#"{
  "name": "db", "description": "Database node", "secrets": [], "overlays": [],
  "data_disk": {"mount": "/var/lib/postgresql", "filesystem": "ext4", "mkfs_options": []},
  "services": {"enable": [], "disable": ["etcd.service"]}
}"#;

/// /etc/hosts as the builder renders it for the cluster.
pub const HOSTS: &str = "127.0.0.1 localhost\n\
    192.168.10.11 db1.pbx.example.com db1\n\
    192.168.10.12 db2.pbx.example.com db2\n\
    192.168.10.13 db3.pbx.example.com db3\n\
    192.168.10.21 fs1.pbx.example.com fs1\n";

/// A temp dir laid out like a db image.
pub struct FakeRoot {
    /// The root the agent is given.
    pub root: Root,
    _dir: tempfile::TempDir,
}

impl FakeRoot {
    /// A db image: cluster and role files, hosts, nftables rules, the image's hostname.
    pub fn db() -> FakeRoot {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let fake = FakeRoot {
            root: Root::new(dir.path()),
            _dir: dir,
        };
        fake.write(CLUSTER_FILE, CLUSTER_JSON);
        fake.write(ROLE_FILE, DB_ROLE_JSON);
        fake.write("/etc/hosts", HOSTS);
        fake.write("/etc/hostname", "debian\n");
        fake.write("/etc/nftables.conf", "table inet r2a {}\n");
        fake.write(
            "/etc/fstab",
            "# <file system> <mount point> <type> <options>\n",
        );
        // db1's data disk; the fake host answers for what is on it.
        fake.write("/dev/vdb", "");
        fake
    }

    /// Writes `text` at the image path `path`, creating folders.
    pub fn write(&self, path: &str, text: &str) {
        let path = self.root.path(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("creating folders");
        std::fs::write(&path, text).expect("writing a fixture file");
    }

    /// The text at the image path `path`.
    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.root.path(path))
            .unwrap_or_else(|error| panic!("reading {path}: {error}"))
    }

    /// Whether the image path `path` exists.
    pub fn exists(&self, path: &str) -> bool {
        self.root.path(path).exists()
    }

    /// Adds a network interface with a MAC address to the fake sysfs.
    pub fn add_interface(&self, name: &str, mac: &str) {
        self.write(
            &format!("/sys/class/net/{name}/address"),
            &format!("{mac}\n"),
        );
    }

    /// Every file under the root with its content, mode and modification time.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, (Vec<u8>, u32, i64, i64)> {
        walkdir::WalkDir::new(self.root.dir())
            .into_iter()
            .map(|entry| entry.expect("walking the fake root"))
            .filter(|entry| entry.file_type().is_file())
            .map(|entry| {
                let metadata = entry.metadata().expect("reading metadata");
                let content = std::fs::read(entry.path()).expect("reading a file");
                (
                    entry.path().to_path_buf(),
                    (
                        content,
                        metadata.mode(),
                        metadata.mtime(),
                        metadata.mtime_nsec(),
                    ),
                )
            })
            .collect()
    }
}

/// A live fake host on which every command firstboot runs for db1 succeeds: the disk is
/// blank until mkfs, the r2a table and the mount appear once made.
pub fn healthy_db1_host() -> ScriptedHost {
    let mut host = ScriptedHost::new(true);
    host.answer(
        "findmnt --noheadings --output SOURCE,FSTYPE,FSROOT /",
        "overlay overlay\n",
    );
    host.succeed("systemctl is-active --quiet systemd-networkd.service")
        .succeed("networkctl reload")
        .succeed("nft -f /etc/nftables.conf")
        .absent("nft list table inet r2a")
        .answer("nft list table inet r2a", "table inet r2a {\n}\n");
    host.absent("blkid -p -o export /dev/vdb").answer(
        "blkid -p -o export /dev/vdb",
        "DEVNAME=/dev/vdb\nUUID=0b1c2d3e-aaaa-bbbb-cccc-000000000001\nTYPE=ext4\nUSAGE=filesystem\n",
    );
    host.succeed("mkfs.ext4 -L r2a-data /dev/vdb");
    host.absent("findmnt --noheadings --output SOURCE,FSTYPE --mountpoint /var/lib/postgresql")
        .answer(
            "findmnt --noheadings --output SOURCE,FSTYPE --mountpoint /var/lib/postgresql",
            "/dev/vdb ext4\n",
        );
    host.succeed("mount -t ext4 'UUID=0b1c2d3e-aaaa-bbbb-cccc-000000000001' /var/lib/postgresql");
    host
}
