//! The first difference between two artifacts that should be the same bytes: the first
//! file, in path order, that differs in content, type, mode, owner, time or link target,
//! followed down through what the artifacts pack ([`crate::unpack`]): a disk to its
//! partitions, a file system to its files, an ISO to its squashfs and on.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use walkdir::WalkDir;

use crate::unpack::{self, Kind};

/// Where two artifacts first differ, as a chain of paths (`live/rootfs.squashfs > etc/hosts
/// (content)`); `None` when they are the same bytes. `scratch` holds what is unpacked.
pub fn first_difference(a: &Path, b: &Path, scratch: &Path) -> anyhow::Result<Option<String>> {
    let Some(offset) = first_differing_byte(a, b)? else {
        return Ok(None);
    };
    let kind = Kind::of(a)?;
    if !kind.is_packed() || Kind::of(b)? != kind {
        return Ok(Some(format!("byte {offset}")));
    }
    std::fs::create_dir_all(scratch)?;
    let level = tempfile::tempdir_in(scratch)?;
    let (left, right) = (level.path().join("a"), level.path().join("b"));
    unpack::unpack(a, kind, &left)?;
    unpack::unpack(b, kind, &right)?;
    let inner = level.path().join("inner");
    let found = match kind.single_file() {
        // A stream (gzip, qcow2) holds one file, which has no name worth showing.
        Some(name) => first_difference(&left.join(name), &right.join(name), &inner)?,
        None => compare_trees(&left, &right, &inner)?,
    };
    Ok(Some(found.unwrap_or_else(|| {
        format!("the {kind:?} container itself at byte {offset}, not a file in it")
    })))
}

/// The first path, in order, that differs between two unpacked trees.
fn compare_trees(a: &Path, b: &Path, scratch: &Path) -> anyhow::Result<Option<String>> {
    let (left, right) = (relative_paths(a)?, relative_paths(b)?);
    for path in left.union(&right) {
        let shown = path.display().to_string();
        let (pa, pb) = (a.join(path), b.join(path));
        let (ma, mb) = match (pa.symlink_metadata(), pb.symlink_metadata()) {
            (Ok(ma), Ok(mb)) => (ma, mb),
            (Ok(_), Err(_)) => return Ok(Some(format!("{shown} (only in the first)"))),
            (Err(_), _) => return Ok(Some(format!("{shown} (only in the second)"))),
        };
        if ma.file_type() != mb.file_type() {
            return Ok(Some(format!("{shown} (type)")));
        }
        if ma.mode() != mb.mode() {
            return Ok(Some(format!(
                "{shown} (mode {:o} and {:o})",
                ma.mode() & 0o7777,
                mb.mode() & 0o7777
            )));
        }
        if (ma.uid(), ma.gid()) != (mb.uid(), mb.gid()) {
            return Ok(Some(format!(
                "{shown} (owner {}:{} and {}:{})",
                ma.uid(),
                ma.gid(),
                mb.uid(),
                mb.gid()
            )));
        }
        if ma.file_type().is_symlink() {
            if std::fs::read_link(&pa)? != std::fs::read_link(&pb)? {
                return Ok(Some(format!("{shown} (link target)")));
            }
        } else if ma.is_file() {
            if let Some(inner) = first_difference(&pa, &pb, scratch)? {
                return Ok(Some(if inner.starts_with("byte ") {
                    format!("{shown} (content, {inner})")
                } else {
                    format!("{shown} > {inner}")
                }));
            }
            if ma.mtime() != mb.mtime() {
                return Ok(Some(format!(
                    "{shown} (time {} and {})",
                    ma.mtime(),
                    mb.mtime()
                )));
            }
        }
    }
    Ok(None)
}

fn relative_paths(root: &Path) -> anyhow::Result<BTreeSet<PathBuf>> {
    let mut paths = BTreeSet::new();
    for entry in WalkDir::new(root).min_depth(1) {
        let entry = entry.with_context(|| format!("listing {}", root.display()))?;
        paths.insert(entry.path().strip_prefix(root)?.to_path_buf());
    }
    Ok(paths)
}

/// The offset of the first byte that differs (the shorter file's length when one is the
/// other's start), or `None` when the files are equal.
pub fn first_differing_byte(a: &Path, b: &Path) -> anyhow::Result<Option<u64>> {
    let open = |path: &Path| -> anyhow::Result<std::io::BufReader<std::fs::File>> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(std::io::BufReader::with_capacity(1 << 20, file))
    };
    let (mut ra, mut rb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut ra, &mut ba)?;
        let nb = read_full(&mut rb, &mut bb)?;
        let common = na.min(nb);
        if let Some(at) = ba[..common]
            .iter()
            .zip(&bb[..common])
            .position(|(x, y)| x != y)
        {
            return Ok(Some(offset + at as u64));
        }
        if na != nb {
            return Ok(Some(offset + common as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        offset += na as u64;
    }
}

fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> anyhow::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..])? {
            0 => break,
            read => filled += read,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of a test archive: path, content, mode.
    type Entry<'a> = (&'a str, &'a str, u32);

    fn tarball(dir: &Path, name: &str, files: &[Entry<'_>]) -> PathBuf {
        let path = dir.join(name);
        let mut archive = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for (file, content, mode) in files {
            let mut header = tar::Header::new_ustar();
            header.set_size(content.len() as u64);
            header.set_mode(*mode);
            header.set_mtime(1_700_000_000);
            header.set_uid(0);
            header.set_gid(0);
            archive
                .append_data(&mut header, file, content.as_bytes())
                .unwrap();
        }
        archive.finish().unwrap();
        path
    }

    fn gzipped(path: &Path) -> PathBuf {
        let out = path.with_extension("tar.gz");
        let mut encoder = flate2::write::GzEncoder::new(
            std::fs::File::create(&out).unwrap(),
            flate2::Compression::fast(),
        );
        std::io::copy(&mut std::fs::File::open(path).unwrap(), &mut encoder).unwrap();
        encoder.finish().unwrap();
        out
    }

    #[test]
    fn the_first_differing_file_is_named_through_gzip_and_tar() {
        let dir = tempfile::tempdir().unwrap();
        let base = [
            ("etc/a", "same\n", 0o644),
            ("etc/hosts", "one\n", 0o644),
            ("etc/z", "x", 0o644),
        ];
        let mut changed = base;
        changed[1].1 = "two\n";
        changed[2].1 = "y";
        let cases: [(&str, &[Entry<'_>], Option<&str>); 4] = [
            ("same", &base, None),
            ("content", &changed, Some("etc/hosts (content, byte 0)")),
            (
                "mode",
                &[base[0], ("etc/hosts", "one\n", 0o600), base[2]],
                Some("etc/hosts (mode 644 and 600)"),
            ),
            (
                "missing",
                &[base[0], base[2]],
                Some("etc/hosts (only in the first)"),
            ),
        ];
        let first = gzipped(&tarball(dir.path(), "first.tar", &base));
        for (name, files, expected) in cases {
            let case_dir = dir.path().join(name);
            std::fs::create_dir(&case_dir).unwrap();
            let second = gzipped(&tarball(&case_dir, "second.tar", files));
            let found = first_difference(&first, &second, &dir.path().join("scratch")).unwrap();
            assert_eq!(found.as_deref(), expected, "{name}");
        }
    }

    #[test]
    fn plain_files_differ_at_a_byte() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        std::fs::write(&a, vec![7u8; 3 << 20]).unwrap();
        let mut other = vec![7u8; 3 << 20];
        other[(2 << 20) + 5] = 0;
        std::fs::write(&b, &other).unwrap();
        std::fs::write(&c, vec![7u8; 100]).unwrap();
        assert_eq!(first_differing_byte(&a, &a).unwrap(), None);
        assert_eq!(first_differing_byte(&a, &b).unwrap(), Some((2 << 20) + 5));
        assert_eq!(first_differing_byte(&a, &c).unwrap(), Some(100));
    }
}
