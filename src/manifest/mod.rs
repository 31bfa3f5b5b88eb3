//! The cluster manifest: the validated model every stage reads.
//!
//! `Cluster::load` reads a manifest file, checks it against the role definitions and
//! returns either a `Cluster` or every problem found, each with file, line and a hint.

mod fields;
mod nodes;
mod ranges;
mod raw;
mod resolve;
mod vendor;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::diag::Source;
use crate::role::RoleSet;

/// The Debian release every image is built from.
pub const SUITE: &str = "trixie";
/// The default Debian mirror.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// The default mirror of Debian's security updates.
pub const DEFAULT_SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";
/// Debian 13's release day, the default clamp for file times when nothing else is set.
pub const DEFAULT_SOURCE_DATE_EPOCH: i64 = 1_754_697_600;

/// A whole cluster, as one manifest declares it.
#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    /// Short name; also the folder under `out/`.
    pub name: String,
    /// DNS domain of the nodes.
    pub domain: String,
    /// Where packages come from.
    pub debian: Debian,
    /// The cluster network.
    pub network: Network,
    /// Every node, in manifest order.
    pub nodes: Vec<Node>,
    /// Public keys allowed to log in as root.
    pub ssh_authorized_keys: Vec<String>,
    /// Where vendor packages (not in Debian) come from.
    pub vendor: Vendor,
    /// Build settings.
    pub build: BuildSettings,
    /// Replication settings of the db nodes.
    pub database: DatabaseSettings,
    /// The manifest file itself.
    pub manifest: ManifestFile,
}

/// The manifest file a cluster was read from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Its path.
    pub path: PathBuf,
    /// The sha256 of its bytes.
    pub sha256: String,
}

/// Debian archive settings.
#[derive(Debug, Clone, Serialize)]
pub struct Debian {
    /// Always `trixie`.
    pub suite: String,
    /// Mirror URL.
    pub mirror: String,
    /// Debian architecture name.
    pub architecture: String,
    /// Archive components.
    pub components: Vec<String>,
    /// Every apt source, one-line style: the suite, then `trixie-updates` and
    /// `trixie-security` unless the manifest turns them off.
    pub sources: Vec<String>,
}

/// The cluster network.
#[derive(Debug, Clone, Serialize)]
pub struct Network {
    /// The network, e.g. `192.168.10.0/24`.
    pub cidr: Ipv4Net,
    /// Prefix length of `cidr`, for templates.
    pub prefix_len: u8,
    /// Default gateway.
    pub gateway: Ipv4Addr,
    /// DNS resolvers.
    pub dns: Vec<IpAddr>,
    /// NTP servers for chrony; Debian's pool when empty.
    pub ntp: Vec<String>,
}

/// One server.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// Host name (RFC 1123 label).
    pub name: String,
    /// Role name, one of `roles/*.toml`.
    pub role: String,
    /// Address in the cluster network.
    pub address: Ipv4Addr,
    /// MAC address, lower case, when known.
    pub mac: Option<String>,
    /// Virtual CPUs.
    pub vcpus: Option<u32>,
    /// Memory in bytes.
    pub memory: Option<u64>,
    /// System disk size in bytes.
    pub disk: Option<u64>,
    /// Device of the dedicated data disk, e.g. `/dev/vdb`.
    pub data_disk: Option<String>,
}

/// Vendor package sources.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Vendor {
    /// The manifest said nothing: roles with vendor packages cannot be built.
    Undeclared,
    /// `vendor = "skip"`: vendor packages are left out and the image records it.
    Skip,
    /// Repositories and local folders.
    Sources {
        /// apt repositories.
        apt: Vec<AptRepository>,
        /// Folders of `.deb` files, turned into a temporary repository at build time.
        local: Vec<PathBuf>,
    },
}

/// One vendor apt repository.
#[derive(Debug, Clone, Serialize)]
pub struct AptRepository {
    /// Short name, used for the sources file.
    pub name: String,
    /// Repository URL.
    pub uri: String,
    /// Suite.
    pub suite: String,
    /// Components.
    pub components: Vec<String>,
    /// The OpenPGP key file that signs it.
    pub signing_key: PathBuf,
    /// Environment variable holding the user name, read at build time only.
    pub username_env: Option<String>,
    /// Environment variable holding the password, read at build time only.
    pub password_env: Option<String>,
}

/// How the db nodes replicate.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseSettings {
    /// Patroni's synchronous mode: a commit waits for one replica, so a failover loses
    /// no acknowledged commit (default on; off trades that for write latency).
    pub synchronous: bool,
}

/// How images are built.
#[derive(Debug, Clone, Serialize)]
pub struct BuildSettings {
    /// File times later than this are clamped to it.
    pub source_date_epoch: i64,
    /// The bootstrap tool of the base layer.
    pub bootstrap: Bootstrap,
    /// Formats built when the command line names none.
    pub formats: Vec<Format>,
    /// Where each node's own files (rendered configs, secrets, key and certificate) go.
    pub node_data: NodeData,
}

/// Where each node's own files go (`[build] node_data`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeData {
    /// Into the role image, one tree per node, so that an image boots with no seed (an
    /// ISO install, a PXE boot of an unlisted machine). The default.
    #[default]
    Image,
    /// Into each node's own seed (NoCloud, or a per-node PXE file): the role image holds no
    /// secret and no node, and is the same bytes whatever nodes the manifest lists.
    Seed,
}

impl NodeData {
    /// The setting's name, as the manifest spells it.
    pub fn name(self) -> &'static str {
        match self {
            NodeData::Image => "image",
            NodeData::Seed => "seed",
        }
    }
}

/// Tool that creates the base layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Bootstrap {
    /// mmdebstrap (fast, the default).
    Mmdebstrap,
    /// debootstrap.
    Debootstrap,
}

/// An output format, in the order a build writes them (qcow2 and the ISO start from
/// the raw disk).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `rootfs.tar.gz`, deterministic.
    Tar,
    /// `disk.raw`: a GPT disk image, bootable by UEFI and BIOS.
    Raw,
    /// `disk.qcow2`: the disk image, compressed.
    Qcow2,
    /// `<role>.iso`: hybrid ISO with a live and an install entry.
    Iso,
    /// `pxe/`: kernel, initramfs, squashfs and iPXE and GRUB scripts.
    Pxe,
}

impl Bootstrap {
    /// The command's name.
    pub fn command(self) -> &'static str {
        match self {
            Bootstrap::Mmdebstrap => "mmdebstrap",
            Bootstrap::Debootstrap => "debootstrap",
        }
    }
}

impl Format {
    /// The format's name, as the manifest and command line spell it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Tar => "tar",
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Iso => "iso",
            Format::Pxe => "pxe",
        }
    }

    /// The formats a build writes: the requested ones, else the manifest's, each once
    /// and in build order (the raw disk before qcow2 and the ISO made from it).
    pub fn chosen(requested: &[Format], manifest: &[Format]) -> Vec<Format> {
        let mut formats = if requested.is_empty() {
            manifest.to_vec()
        } else {
            requested.to_vec()
        };
        formats.sort();
        formats.dedup();
        formats
    }

    /// What the format writes into the role's output folder.
    pub fn output(self, role: &str) -> String {
        match self {
            Format::Tar => "rootfs.tar.gz".to_string(),
            Format::Raw => "disk.raw".to_string(),
            Format::Qcow2 => "disk.qcow2".to_string(),
            Format::Iso => format!("{role}.iso"),
            Format::Pxe => "pxe/".to_string(),
        }
    }

    /// Every format, for hints.
    pub const ALL: [Format; 5] = [
        Format::Tar,
        Format::Raw,
        Format::Qcow2,
        Format::Iso,
        Format::Pxe,
    ];
}

/// The error for a manifest that is not UTF-8 text (a binary file, or another encoding),
/// pointing at the first byte that is not.
fn not_utf8(path: &Path, error: &std::string::FromUtf8Error) -> crate::diag::InvalidInput {
    let offset = error.utf8_error().valid_up_to();
    let byte = error.as_bytes()[offset];
    let source = Source::new(path, String::from_utf8_lossy(error.as_bytes()));
    let mut d = crate::diag::Diagnostics::new();
    d.at(
        &source,
        Some(offset..offset + 1),
        format!("the manifest is not UTF-8 text: byte 0x{byte:02x} is not part of a character"),
        "a manifest is a TOML file in UTF-8: save it as UTF-8, or check that this is the manifest"
            .to_string(),
    );
    d.check().expect_err("one problem was recorded")
}

/// A manifest that cannot be read: invalid input, with what to give instead.
fn unreadable(path: &Path, error: &std::io::Error) -> anyhow::Error {
    let what = match error.kind() {
        std::io::ErrorKind::NotFound => format!(
            "there is no manifest at {}: give the path of a cluster manifest",
            path.display()
        ),
        std::io::ErrorKind::IsADirectory => format!(
            "{} is a folder: give the manifest's file inside it",
            path.display()
        ),
        _ => format!("reading the manifest {}: {error}", path.display()),
    };
    crate::diag::UsageError(what).into()
}

impl Cluster {
    /// Reads and validates a manifest; every problem is reported at once.
    pub fn load(path: &Path, roles: &RoleSet) -> anyhow::Result<Cluster> {
        let bytes = std::fs::read(path).map_err(|error| unreadable(path, &error))?;
        let text = match String::from_utf8(bytes.clone()) {
            Ok(text) => text,
            Err(error) => return Err(not_utf8(path, &error).into()),
        };
        let source = Source::new(path, text);
        let cluster = resolve::resolve(&source, &bytes, roles)?;
        Ok(cluster)
    }

    /// The time file times are clamped to: `$SOURCE_DATE_EPOCH` when set, else the
    /// manifest's `[build] source_date_epoch`, else Debian 13's release day.
    pub fn source_date_epoch(&self) -> anyhow::Result<i64> {
        match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(value) => value
                .trim()
                .parse()
                .with_context(|| format!("SOURCE_DATE_EPOCH={value} is not a number of seconds")),
            Err(_) => Ok(self.build.source_date_epoch),
        }
    }

    /// The nodes of one role, in manifest order.
    pub fn nodes_of<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.nodes.iter().filter(move |node| node.role == role)
    }

    /// The names of the roles that have nodes, in role-name order.
    pub fn roles_in_use(&self) -> Vec<String> {
        let mut roles: Vec<String> = self.nodes.iter().map(|node| node.role.clone()).collect();
        roles.sort();
        roles.dedup();
        roles
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|node| node.name == name)
    }

    /// The folder holding the manifest, against which its relative paths resolve.
    pub fn base_dir(&self) -> &Path {
        self.manifest.path.parent().unwrap_or(Path::new("."))
    }
}
