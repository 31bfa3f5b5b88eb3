//! `mke2fs -d` copies each file's access and change times from the tree, and those say
//! when the tree was assembled and read, not what it holds. This pins them, and the
//! creation times, to the build's source date with `debugfs`, and clamps modification
//! times to it as the tarball does, so the same tree gives the same file system bytes
//! whenever it is built.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::exec::CommandExt;

/// The times mke2fs takes from the tree or the clock: seconds and their extra field
/// (nanoseconds and epoch bits) each.
const FIELDS: [&str; 6] = [
    "atime",
    "atime_extra",
    "ctime",
    "ctime_extra",
    "crtime",
    "crtime_extra",
];

/// The debugfs commands that set every inode of `tree` (by its path in the file system)
/// to `epoch`. Paths debugfs cannot quote (not UTF-8, a `"` or a line break in a name)
/// are left out.
pub fn script(tree: &Path, epoch: i64) -> anyhow::Result<String> {
    let mut script = String::new();
    for entry in walkdir::WalkDir::new(tree).sort_by_file_name() {
        let entry = entry.with_context(|| format!("reading {}", tree.display()))?;
        let relative = entry.path().strip_prefix(tree)?;
        let Some(relative) = relative.to_str().filter(|path| !path.contains(['"', '\n'])) else {
            continue;
        };
        let path = format!("/{relative}");
        let modified = entry.metadata()?.mtime();
        if modified > epoch {
            let _ = writeln!(script, "sif \"{path}\" mtime @{epoch}");
            let _ = writeln!(script, "sif \"{path}\" mtime_extra 0");
        }
        for field in FIELDS {
            let value = if field.ends_with("_extra") {
                "0".to_string()
            } else {
                format!("@{epoch}")
            };
            let _ = writeln!(script, "sif \"{path}\" {field} {value}");
        }
    }
    Ok(script)
}

/// Runs the script on the ext4 file system at byte `offset` of `image`; the file
/// system's own times (the superblock's) are the source date too.
pub fn pin(tree: &Path, image: &Path, offset: u64, epoch: i64) -> anyhow::Result<()> {
    let script = script(tree, epoch)?;
    Command::new("debugfs")
        .arg("-w")
        .args(["-f", "-"])
        .arg(format!("{}?offset={offset}", image.display()))
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .run_with_input(script.as_bytes())
        .context("setting the file system's times with debugfs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_gets_every_time_and_unquotable_names_are_left_out() {
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir(tree.path().join("etc")).unwrap();
        std::fs::write(tree.path().join("etc/a b"), "").unwrap();
        std::fs::write(tree.path().join("etc/say\"hi\""), "").unwrap();
        let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        for path in ["", "etc"] {
            let file = std::fs::File::open(tree.path().join(path)).unwrap();
            file.set_modified(old).unwrap();
        }
        // "etc/a b" was written now, after the source date: its time is clamped.
        let script = script(tree.path(), 1_754_697_600).unwrap();
        assert!(!script.contains("say"), "{script}");
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines.len(), 3 * FIELDS.len() + 2, "/, /etc and /etc/a b");
        assert!(
            lines.contains(&"sif \"/etc/a b\" mtime @1754697600"),
            "{script}"
        );
        assert!(!script.contains("\"/etc\" mtime"), "{script}");
        assert_eq!(lines[0], "sif \"/\" atime @1754697600");
        assert!(
            lines.contains(&"sif \"/etc/a b\" crtime_extra 0"),
            "{script}"
        );
    }
}
