//! `r2a-image cache status` and `cache prune`: what a build cache holds (each cached
//! layer's size and last use, the gzip members of published tarballs, the shared apt
//! archive, work folders a killed build left) and the removal of the layers no recent
//! build used. A layer's last use is the time of its `used` stamp, which every build that
//! makes or reuses it renews. The layers a given manifest uses are never removed.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;

use crate::pipeline::layer::{self, LayerSpec, LayerStore, USED_STAMP};
use crate::project::Project;

/// One cached layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerEntry {
    /// Its folder's name, `<layer>-<key prefix>`.
    pub folder: String,
    /// Bytes of its files.
    pub bytes: u64,
    /// When a build last made or used it.
    pub last_used: SystemTime,
    /// Whether the manifest given uses it.
    pub in_use: bool,
}

/// The folder of cached gzip members of published tarballs.
pub const GZIP_MEMBERS: &str = "gzip-members";

/// What the cache holds.
#[derive(Debug, Clone)]
pub struct CacheReport {
    /// The layers, most recently used first.
    pub layers: Vec<LayerEntry>,
    /// Bytes the layers take on disk: a file layers share as hard links (a role layer has
    /// the base's files) counts once.
    pub layers_on_disk: u64,
    /// Bytes of the gzip member cache.
    pub gzip_members: u64,
    /// Bytes of the shared apt archive.
    pub apt_archive: u64,
    /// Work folders of builds that did not finish (or run now), by name.
    pub unfinished: Vec<String>,
}

/// The layer folders `project` uses: its base layer, the boot tools' and every role's.
pub fn layers_in_use(project: &Project) -> anyhow::Result<BTreeSet<String>> {
    let cluster = &project.cluster;
    let base = layer::base_spec(cluster, &project.roles, cluster.build.bootstrap)?;
    let mut folders = BTreeSet::from([
        layer::folder_name(&base),
        layer::folder_name(&layer::boot_tools_spec(&base)),
    ]);
    for name in cluster.roles_in_use() {
        let role = project.roles.get(&name).context("a role in use exists")?;
        folders.insert(layer::folder_name(&layer::role_spec(cluster, &base, role)?));
    }
    Ok(folders)
}

/// Reads the cache at `cache`; `in_use` names the layer folders to mark.
pub fn status(cache: &Path, in_use: &BTreeSet<String>) -> anyhow::Result<CacheReport> {
    let store = LayerStore::new(cache);
    let mut layers = Vec::new();
    let mut unfinished = Vec::new();
    let mut seen = HashSet::new();
    let mut layers_on_disk = 0;
    if store.dir.is_dir() {
        for entry in std::fs::read_dir(&store.dir)
            .with_context(|| format!("reading {}", store.dir.display()))?
        {
            let entry = entry?;
            let folder = entry.file_name().to_string_lossy().into_owned();
            if folder.starts_with('.') {
                unfinished.push(folder);
                continue;
            }
            let path = entry.path();
            let record = path.join("layer.json");
            let Ok(spec) = std::fs::read(&record)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| Ok(serde_json::from_slice::<LayerSpec>(&bytes)?))
            else {
                // No whole record: not a layer a build would use.
                unfinished.push(folder);
                continue;
            };
            let used = std::fs::metadata(path.join(USED_STAMP))
                .or_else(|_| std::fs::metadata(&record))
                .and_then(|metadata| metadata.modified())
                .with_context(|| format!("reading the last use of {}", path.display()))?;
            let (bytes, not_seen_before) = bytes_under(&path, &mut seen)?;
            layers_on_disk += not_seen_before;
            layers.push(LayerEntry {
                in_use: in_use.contains(&folder) && layer::folder_name(&spec) == folder,
                folder,
                bytes,
                last_used: used,
            });
        }
    }
    layers.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.folder.cmp(&b.folder)));
    unfinished.sort();
    Ok(CacheReport {
        layers,
        layers_on_disk,
        gzip_members: bytes_under(&cache.join(GZIP_MEMBERS), &mut HashSet::new())?.0,
        apt_archive: bytes_under(
            &cache.join(crate::pipeline::APT_ARCHIVES_DIR),
            &mut HashSet::new(),
        )?
        .0,
        unfinished,
    })
}

/// Which layers a prune removes: those the manifest does not use, past the `keep` most
/// recently used of them. `layers` is most recently used first.
pub fn to_remove(layers: &[LayerEntry], keep: usize) -> Vec<&LayerEntry> {
    layers
        .iter()
        .filter(|entry| !entry.in_use)
        .skip(keep)
        .collect()
}

/// What a prune removed.
#[derive(Debug, Clone, Default)]
pub struct Pruned {
    /// The layers removed.
    pub layers: Vec<LayerEntry>,
    /// The bytes their removal freed on disk: a file a removed layer shares with one that
    /// stays is not freed.
    pub layers_freed: u64,
    /// How many gzip members were removed, and their bytes.
    pub members: (usize, u64),
}

/// Removes what [`to_remove`] names, then the gzip members no build used since the least
/// recently used layer that stays (every build that reuses a member renews its time).
/// Run it while no build uses the cache: a build may be reading what it would remove.
pub fn prune(cache: &Path, in_use: &BTreeSet<String>, keep: usize) -> anyhow::Result<Pruned> {
    let report = status(cache, in_use)?;
    let store = LayerStore::new(cache);
    let mut pruned = Pruned::default();
    let removed = to_remove(&report.layers, keep);
    for entry in &removed {
        crate::fsutil::remove_tree(&store.dir.join(&entry.folder))?;
        pruned.layers.push((*entry).clone());
    }
    let oldest_kept = report
        .layers
        .iter()
        .filter(|entry| !pruned.layers.iter().any(|gone| gone.folder == entry.folder))
        .map(|entry| entry.last_used)
        .min();
    pruned.members = prune_members(&cache.join(GZIP_MEMBERS), oldest_kept)?;
    if !pruned.layers.is_empty() {
        pruned.layers_freed = report
            .layers_on_disk
            .saturating_sub(status(cache, in_use)?.layers_on_disk);
    }
    Ok(pruned)
}

/// Removes the members last used before `since` (all of them when nothing is kept).
fn prune_members(members: &Path, since: Option<SystemTime>) -> anyhow::Result<(usize, u64)> {
    let mut removed = (0, 0);
    if !members.is_dir() {
        return Ok(removed);
    }
    for entry in walkdir::WalkDir::new(members) {
        let entry = entry.with_context(|| format!("reading {}", members.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let metadata = entry.metadata()?;
        if since.is_none_or(|since| metadata.modified().is_ok_and(|used| used < since)) {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
            removed.0 += 1;
            removed.1 += metadata.len();
        }
    }
    Ok(removed)
}

impl CacheReport {
    /// The report as a table.
    pub fn to_text(&self) -> String {
        let size = |bytes: u64| bytesize::ByteSize(bytes).display().iec().to_string();
        let mut text = format!("{:<36} {:>10}  {}\n", "layer", "size", "last used");
        for entry in &self.layers {
            let mark = if entry.in_use {
                "used by the manifest"
            } else {
                ""
            };
            let row = format!(
                "{:<36} {:>10}  {:<20}  {mark}",
                entry.folder,
                size(entry.bytes),
                utc_minute(entry.last_used),
            );
            text.push_str(row.trim_end());
            text.push('\n');
        }
        let layers: u64 = self.layers.iter().map(|entry| entry.bytes).sum();
        text.push_str(&format!(
            "{:<36} {:>10}  ({} on disk: layers share the files they have in common)\n",
            "layers in all",
            size(layers),
            size(self.layers_on_disk)
        ));
        text.push_str(&format!(
            "{:<36} {:>10}\n",
            "gzip members",
            size(self.gzip_members)
        ));
        text.push_str(&format!(
            "{:<36} {:>10}\n",
            "apt archive",
            size(self.apt_archive)
        ));
        for folder in &self.unfinished {
            text.push_str(&format!(
                "{folder}: work folder of a build that did not finish (or runs now)\n"
            ));
        }
        text
    }
}

fn utc_minute(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute()
    )
}

/// Bytes of the files under `path` (0 when it does not exist; links count as themselves),
/// and of those among them whose inode `seen` did not hold yet (it holds them now).
fn bytes_under(path: &Path, seen: &mut HashSet<(u64, u64)>) -> anyhow::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    if !path.exists() {
        return Ok((0, 0));
    }
    let (mut bytes, mut not_seen_before) = (0, 0);
    for entry in walkdir::WalkDir::new(path) {
        let entry = entry.with_context(|| format!("reading {}", path.display()))?;
        if !entry.file_type().is_dir() {
            let metadata = entry.metadata()?;
            bytes += metadata.len();
            if seen.insert((metadata.dev(), metadata.ino())) {
                not_seen_before += metadata.len();
            }
        }
    }
    Ok((bytes, not_seen_before))
}

/// `r2a-image cache`'s actions.
#[derive(Debug, clap::Subcommand)]
pub enum CacheAction {
    /// Each cached layer's size and last use, the gzip members and the apt archive; with
    /// a manifest, which layers it uses.
    Status {
        /// A cluster manifest whose layers to mark.
        manifest: Option<PathBuf>,
        /// The cache folder.
        #[arg(long, value_name = "DIR", default_value = crate::cli::DEFAULT_CACHE)]
        cache: PathBuf,
    },
    /// Removes every cached layer but the KEEP most recently used (and, with a manifest,
    /// the layers it uses). Run it while no build uses the cache.
    Prune {
        /// A cluster manifest whose layers to keep.
        manifest: Option<PathBuf>,
        /// The cache folder.
        #[arg(long, value_name = "DIR", default_value = crate::cli::DEFAULT_CACHE)]
        cache: PathBuf,
        /// How many of the other layers to keep, most recently used first.
        #[arg(long, value_name = "COUNT")]
        keep: usize,
    },
}

/// Runs `r2a-image cache status|prune`, printing the report or what was removed.
pub fn run(data: &Path, action: CacheAction) -> anyhow::Result<()> {
    let in_use = |manifest: Option<PathBuf>| -> anyhow::Result<_> {
        match manifest {
            Some(manifest) => {
                let project =
                    Project::load(data, &manifest, crate::project::SecretsMode::ReadOnly)?;
                layers_in_use(&project)
            }
            None => Ok(Default::default()),
        }
    };
    match action {
        CacheAction::Status { manifest, cache } => {
            let report = status(&cache, &in_use(manifest)?)?;
            print!("{}", report.to_text());
        }
        CacheAction::Prune {
            manifest,
            cache,
            keep,
        } => {
            let pruned = prune(&cache, &in_use(manifest)?, keep)?;
            for entry in &pruned.layers {
                println!("removed {}", entry.folder);
            }
            let (members, member_bytes) = pruned.members;
            println!(
                "{} layer(s) removed, {} freed; {members} gzip member(s) no kept build used, {}",
                pruned.layers.len(),
                bytesize::ByteSize(pruned.layers_freed).display().iec(),
                bytesize::ByteSize(member_bytes).display().iec()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(folder: &str, minutes_ago: u64, in_use: bool) -> LayerEntry {
        LayerEntry {
            folder: folder.to_string(),
            bytes: 1,
            last_used: SystemTime::now() - Duration::from_secs(60 * minutes_ago),
            in_use,
        }
    }

    #[test]
    fn prune_keeps_what_the_manifest_uses_and_the_most_recent_others() {
        let layers = [
            entry("db-new", 1, true),
            entry("db-old", 5, false),
            entry("portal-old", 9, false),
            entry("base-old", 20, true),
            entry("fs-old", 30, false),
        ];
        // (keep, removed)
        let table: [(usize, &[&str]); 4] = [
            (0, &["db-old", "portal-old", "fs-old"]),
            (1, &["portal-old", "fs-old"]),
            (2, &["fs-old"]),
            (9, &[]),
        ];
        for (keep, removed) in table {
            let chosen: Vec<&str> = to_remove(&layers, keep)
                .iter()
                .map(|e| e.folder.as_str())
                .collect();
            assert_eq!(chosen, removed, "keep {keep}");
        }
    }

    #[test]
    fn status_reads_layers_their_use_and_the_rest_and_prune_removes_the_oldest() {
        let cache = tempfile::tempdir().unwrap();
        let layer = |folder: &str, name: &str, key: &str, minutes_ago: u64| {
            let dir = cache.path().join("layers").join(folder);
            std::fs::create_dir_all(dir.join("rootfs/etc")).unwrap();
            std::fs::write(dir.join("rootfs/etc/file"), vec![0u8; 1000]).unwrap();
            let spec = serde_json::json!({
                "name": name, "key": key, "packages": [], "vendor_packages": [],
                "vendor_skipped": [], "tool": null, "parent": null
            });
            std::fs::write(dir.join("layer.json"), spec.to_string()).unwrap();
            let stamp = std::fs::File::create(dir.join(USED_STAMP)).unwrap();
            stamp
                .set_modified(SystemTime::now() - Duration::from_secs(60 * minutes_ago))
                .unwrap();
        };
        let key = |digit: char| digit.to_string().repeat(64);
        layer("base-1111111111111111", "base", &key('1'), 10);
        layer("db-2222222222222222", "db", &key('2'), 1);
        layer("db-3333333333333333", "db", &key('3'), 60);
        // A layer made on the base has the base's files as hard links.
        let shared = cache
            .path()
            .join("layers/db-2222222222222222/rootfs/etc/from-base");
        std::fs::hard_link(
            cache
                .path()
                .join("layers/base-1111111111111111/rootfs/etc/file"),
            &shared,
        )
        .unwrap();
        std::fs::create_dir_all(cache.path().join("layers/.db-x1")).unwrap();
        std::fs::create_dir_all(cache.path().join("apt-archives")).unwrap();
        std::fs::write(cache.path().join("apt-archives/a.deb"), vec![0u8; 300]).unwrap();
        let in_use = BTreeSet::from(["base-1111111111111111".to_string()]);

        let report = status(cache.path(), &in_use).unwrap();
        let folders: Vec<(&str, bool)> = report
            .layers
            .iter()
            .map(|e| (e.folder.as_str(), e.in_use))
            .collect();
        assert_eq!(
            folders,
            [
                ("db-2222222222222222", false),
                ("base-1111111111111111", true),
                ("db-3333333333333333", false),
            ]
        );
        assert!(report.layers.iter().all(|e| e.bytes > 1000), "{report:?}");
        let apparent: u64 = report.layers.iter().map(|e| e.bytes).sum();
        assert_eq!(apparent - report.layers_on_disk, 1000, "{report:?}");
        assert_eq!((report.apt_archive, report.gzip_members), (300, 0));
        assert_eq!(report.unfinished, [".db-x1"]);
        let text = report.to_text();
        assert!(text.contains("used by the manifest"), "{text}");
        assert!(text.contains(".db-x1: work folder"), "{text}");

        // Members: one used by the oldest kept build's time or later, one before it.
        let member = |name: &str, minutes_ago: u64| {
            let path = cache.path().join(GZIP_MEMBERS).join("ab").join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let file = std::fs::File::create(&path).unwrap();
            file.set_len(10).unwrap();
            file.set_modified(SystemTime::now() - Duration::from_secs(60 * minutes_ago))
                .unwrap();
            path
        };
        let recent = member("recent.gz", 5);
        let stale = member("stale.gz", 30);

        let pruned = prune(cache.path(), &in_use, 1).unwrap();
        let removed = &pruned.layers;
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].folder, "db-3333333333333333");
        assert_eq!(pruned.members, (1, 10));
        assert!(recent.exists() && !stale.exists());
        assert!(!cache.path().join("layers/db-3333333333333333").exists());
        assert!(cache.path().join("layers/db-2222222222222222").exists());
        assert!(
            cache.path().join("layers/.db-x1").exists(),
            "work folders stay"
        );
        assert_eq!(pruned.layers_freed, removed[0].bytes);

        // The db layer shares a file with the base, which stays: that file is not freed.
        let pruned = prune(cache.path(), &in_use, 0).unwrap();
        assert_eq!(pruned.layers.len(), 1);
        assert_eq!(pruned.layers[0].folder, "db-2222222222222222");
        assert_eq!(pruned.layers_freed, pruned.layers[0].bytes - 1000);
    }
}
