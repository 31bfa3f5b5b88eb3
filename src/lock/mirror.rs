//! What the cluster's Debian sources give now: the host's apt, run on a private state
//! folder in the cache (its own sources, an empty dpkg status, Debian's archive keyring),
//! fetches the indexes and names each package's candidate; the sha256 comes from the
//! index. The vendor's local `.deb` folders are read directly.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::exec::{CommandExt, Tool};
use crate::manifest::{Cluster, Vendor};

/// Host tools the mirror check needs.
pub const TOOLS: &[Tool] = &[
    Tool {
        program: "apt-get",
        package: "apt",
        reason: "read the mirror's package indexes for the lock",
    },
    Tool {
        program: "dpkg-deb",
        package: "dpkg",
        reason: "read the vendor's local packages for the lock",
    },
];

/// The folder in the build cache where the host's apt keeps the sources' indexes.
pub const STATE_DIR: &str = "mirror-index";

/// The keyring that signs Debian's archive (mmdebstrap checks the bootstrap with it too).
const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// By package name: the version and sha256 an install from the sources would take now.
pub type Available = BTreeMap<String, (String, String)>;

/// Fetches the indexes of the cluster's sources into `state` and returns, for each of
/// `names`, what an install would take.
pub fn available(cluster: &Cluster, state: &Path, names: &[&str]) -> anyhow::Result<Available> {
    crate::exec::require_tools(TOOLS)?;
    for dir in [
        "etc/apt/apt.conf.d",
        "etc/apt/preferences.d",
        "etc/apt/sources.list.d",
    ] {
        std::fs::create_dir_all(state.join(dir))?;
    }
    for dir in [
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/lib/dpkg",
    ] {
        std::fs::create_dir_all(state.join(dir))?;
    }
    let sources: String = cluster
        .debian
        .sources
        .iter()
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(state.join("etc/apt/sources.list"), sources)?;
    std::fs::write(state.join("var/lib/dpkg/status"), "")?;
    apt("apt-get", state, &cluster.debian.architecture)
        .args(["-q", "update"])
        .run()
        .context("fetching the package indexes of the manifest's sources")?;
    let mut available = Available::new();
    if !names.is_empty() {
        let policy = apt("apt-cache", state, &cluster.debian.architecture)
            .arg("policy")
            .args(names)
            .output_text()?;
        let shas = index_sha256s(&state.join("var/lib/apt/lists"))?;
        for (name, version) in candidates(&policy) {
            let sha256 = shas
                .get(&(name.clone(), version.clone()))
                .cloned()
                .unwrap_or_default();
            available.insert(name, (version, sha256));
        }
    }
    if let Vendor::Sources { local, .. } = &cluster.vendor {
        for folder in local {
            for deb in crate::pipeline::layer::debs_in(folder)? {
                let fields = Command::new("dpkg-deb")
                    .args(["--show", "--showformat=${Package} ${Version}"])
                    .arg(&deb)
                    .output_text()?;
                if let Some((name, version)) = fields.trim().split_once(' ') {
                    let sha256 = crate::hash::sha256_file(&deb)?;
                    available.insert(name.to_string(), (version.to_string(), sha256));
                }
            }
        }
    }
    Ok(available)
}

/// `apt-get` or `apt-cache` on the private state folder.
fn apt(program: &str, state: &Path, architecture: &str) -> Command {
    let mut command = Command::new(program);
    command
        .arg("-o")
        .arg(format!("Dir={}", state.display()))
        .args(["-o", "Dir::State::status=var/lib/dpkg/status"])
        .arg("-o")
        .arg(format!("Dir::Etc::Trusted={DEBIAN_KEYRING}"))
        .arg("-o")
        .arg(format!("APT::Architecture={architecture}"))
        .arg("-o")
        .arg(format!("APT::Architectures={architecture}"))
        .args(["-o", "Acquire::Languages=none"])
        .env("LC_ALL", "C.UTF-8");
    command
}

/// `(name, candidate)` pairs from `apt-cache policy` output.
pub fn candidates(policy: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    for line in policy.lines() {
        if !line.starts_with(' ') {
            current = line
                .strip_suffix(':')
                .map(|name| name.split(':').next().unwrap_or(name).to_string());
        } else if let (Some(name), Some(candidate)) =
            (&current, line.trim().strip_prefix("Candidate: "))
            && candidate != "(none)"
        {
            found.push((name.clone(), candidate.to_string()));
        }
    }
    found
}

/// `(name, version) → sha256` of every stanza of the `*_Packages` index files in `lists`.
pub fn index_sha256s(lists: &Path) -> anyhow::Result<BTreeMap<(String, String), String>> {
    let mut shas = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(lists) else {
        return Ok(shas);
    };
    for entry in entries {
        let path = entry?.path();
        if !path.to_string_lossy().ends_with("_Packages") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
            };
            if let (Some(name), Some(version), Some(sha256)) =
                (field("Package"), field("Version"), field("SHA256"))
            {
                shas.entry((name.to_string(), version.to_string()))
                    .or_insert_with(|| sha256.to_string());
            }
        }
    }
    Ok(shas)
}
