//! Deterministic `rootfs.tar.gz`: entries sorted by path, numeric owners from the tree,
//! no user or group names, times clamped to `SOURCE_DATE_EPOCH`, hard links kept as links,
//! file capabilities kept as PAX xattrs, and a gzip header without a time or a name.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::Context;
use tar::{EntryType, Header};

use super::chunked_gzip::{ChunkStats, ChunkedGzip};

/// Extended attributes worth keeping; others (e.g. SELinux labels of the build host) are not.
const KEPT_XATTRS: &[&str] = &["security.capability"];

/// Writes `root` as a gzipped tarball to `out`, compressing through the member cache in
/// `chunks` (see [`ChunkedGzip`]); `progress` is told each file's size.
pub fn write(
    root: &Path,
    out: &Path,
    epoch: i64,
    chunks: &Path,
    progress: &dyn Fn(u64),
) -> anyhow::Result<ChunkStats> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let gzip = ChunkedGzip::new(BufWriter::with_capacity(1 << 20, file), chunks)?;
    let mut archive = Archive {
        builder: tar::Builder::new(gzip),
        first_path_of_inode: HashMap::new(),
        epoch,
    };
    archive.builder.follow_symlinks(false);
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        crate::interrupt::check()?;
        let entry = entry.with_context(|| format!("walking {}", root.display()))?;
        let relative = entry
            .path()
            .strip_prefix(root)
            .expect("walkdir stays below its root");
        let name = if relative.as_os_str().is_empty() {
            "./".to_string()
        } else {
            format!("./{}", relative.to_string_lossy())
        };
        let size = archive
            .append(entry.path(), &name)
            .with_context(|| format!("archiving {}", entry.path().display()))?;
        archive.builder.get_mut().entry_end(&name)?;
        progress(size);
    }
    let gzip = archive
        .builder
        .into_inner()
        .context("finishing the tar stream")?;
    let (writer, stats) = gzip.finish().context("finishing the gzip stream")?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(stats)
}

struct Archive<W: std::io::Write> {
    builder: tar::Builder<W>,
    first_path_of_inode: HashMap<(u64, u64), String>,
    epoch: i64,
}

impl<W: std::io::Write> Archive<W> {
    /// Appends one path (not following links); returns the bytes of content it added.
    fn append(&mut self, path: &Path, name: &str) -> anyhow::Result<u64> {
        let metadata = path.symlink_metadata()?;
        let file_type = metadata.file_type();
        let mut header = Header::new_gnu();
        header.set_mode(metadata.mode() & 0o7777);
        header.set_uid(u64::from(metadata.uid()));
        header.set_gid(u64::from(metadata.gid()));
        header.set_mtime(metadata.mtime().clamp(0, self.epoch.max(0)) as u64);
        header.set_size(0);

        let xattrs = kept_xattrs(path);
        if !xattrs.is_empty() {
            let pax: Vec<(String, &[u8])> = xattrs
                .iter()
                .map(|(key, value)| (format!("SCHILY.xattr.{key}"), value.as_slice()))
                .collect();
            self.builder
                .append_pax_extensions(pax.iter().map(|(key, value)| (key.as_str(), *value)))?;
        }
        if file_type.is_file() && metadata.nlink() > 1 {
            let inode = (metadata.dev(), metadata.ino());
            if let Some(target) = self.first_path_of_inode.get(&inode) {
                header.set_entry_type(EntryType::Link);
                self.builder
                    .append_link(&mut header, name, target.trim_start_matches("./"))?;
                return Ok(0);
            }
            self.first_path_of_inode.insert(inode, name.to_string());
        }
        if file_type.is_dir() {
            header.set_entry_type(EntryType::Directory);
            self.builder
                .append_data(&mut header, name, std::io::empty())?;
        } else if file_type.is_file() {
            header.set_entry_type(EntryType::Regular);
            header.set_size(metadata.len());
            self.builder
                .append_data(&mut header, name, File::open(path)?)?;
            return Ok(metadata.len());
        } else if file_type.is_symlink() {
            header.set_entry_type(EntryType::Symlink);
            self.builder
                .append_link(&mut header, name, std::fs::read_link(path)?)?;
        } else {
            let (kind, device) = if file_type.is_char_device() {
                (EntryType::Char, Some(metadata.rdev()))
            } else if file_type.is_block_device() {
                (EntryType::Block, Some(metadata.rdev()))
            } else if file_type.is_fifo() {
                (EntryType::Fifo, None)
            } else {
                // Sockets have no place in an image.
                return Ok(0);
            };
            header.set_entry_type(kind);
            if let Some(device) = device {
                header.set_device_major(rustix::fs::major(device))?;
                header.set_device_minor(rustix::fs::minor(device))?;
            }
            self.builder
                .append_data(&mut header, name, std::io::empty())?;
        }
        Ok(0)
    }
}

/// The kept extended attributes of a path (not following links). A filesystem without
/// xattr support simply has none.
fn kept_xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    KEPT_XATTRS
        .iter()
        .filter_map(|key| {
            xattr::get(path, key)
                .ok()
                .flatten()
                .map(|value| (key.to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/b")).unwrap();
        std::fs::write(root.join("etc/z.conf"), "z").unwrap();
        std::fs::write(root.join("etc/a.conf"), "a").unwrap();
        std::fs::hard_link(root.join("etc/a.conf"), root.join("etc/b/a-link")).unwrap();
        std::os::unix::fs::symlink("../z.conf", root.join("etc/b/z")).unwrap();
        dir
    }

    #[test]
    fn same_tree_same_bytes_sorted_and_clamped() {
        let tree = sample_tree();
        let out = tempfile::tempdir().unwrap();
        write(
            tree.path(),
            &out.path().join("1.tar.gz"),
            1000,
            out.path(),
            &|_| {},
        )
        .unwrap();
        // A later touch must not change the archive: times are clamped.
        std::fs::write(tree.path().join("etc/z.conf"), "z").unwrap();
        write(
            tree.path(),
            &out.path().join("2.tar.gz"),
            1000,
            out.path(),
            &|_| {},
        )
        .unwrap();
        let first = std::fs::read(out.path().join("1.tar.gz")).unwrap();
        assert_eq!(first, std::fs::read(out.path().join("2.tar.gz")).unwrap());

        let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(first.as_slice()));
        let entries: Vec<(String, EntryType, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type(),
                    e.header().mtime().unwrap(),
                )
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "./",
                "etc",
                "etc/a.conf",
                "etc/b",
                "etc/b/a-link",
                "etc/b/z",
                "etc/z.conf"
            ]
        );
        assert!(entries.iter().all(|e| e.2 <= 1000));
        assert_eq!(entries[4].1, EntryType::Link);
        assert_eq!(entries[5].1, EntryType::Symlink);
    }
}
