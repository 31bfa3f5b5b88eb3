//! Opening artifacts: what a file packs (a gzip stream, a tar archive, a qcow2 or GPT
//! disk, a FAT or ext4 file system, an ISO 9660 image, a squashfs, a newc archive),
//! recognised by its magic bytes and unpacked into a folder with the tools that made it,
//! owners, modes and times kept. `verify --rebuild` compares artifacts with it, and the
//! tests search them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use crate::exec::{CommandExt, Tool};

/// Tools that open what the formats pack (the builder's own tools).
pub const TOOLS: [Tool; 5] = [
    Tool {
        program: "qemu-img",
        package: "qemu-utils",
        reason: "open qcow2 disks",
    },
    Tool {
        program: "sfdisk",
        package: "fdisk",
        reason: "read a disk's partitions",
    },
    Tool {
        program: "debugfs",
        package: "e2fsprogs",
        reason: "read ext4 file systems without mounting them",
    },
    Tool {
        program: "xorriso",
        package: "xorriso",
        reason: "read ISO images",
    },
    Tool {
        program: "unsquashfs",
        package: "squashfs-tools",
        reason: "read squashfs file systems",
    },
];

/// The file a gzip stream unpacks to.
const GZIP_CONTENT: &str = "content";
/// The file a qcow2 disk unpacks to.
const QCOW2_CONTENT: &str = "disk.raw";

/// What a file is, as far as opening it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A gzip stream: one file inside.
    Gzip,
    /// A qcow2 disk: one raw disk inside.
    Qcow2,
    /// A tar archive.
    Tar,
    /// A disk with a GPT: its partitions and the areas around them.
    GptDisk,
    /// A FAT file system.
    Fat,
    /// An ext2/3/4 file system.
    Ext4,
    /// An ISO 9660 image.
    Iso,
    /// A squashfs file system.
    Squashfs,
    /// A newc (initramfs) archive.
    Cpio,
    /// Anything else: compared and searched as bytes.
    Plain,
}

impl Kind {
    /// How many first bytes [`Kind::of_head`] looks at.
    pub const HEAD: usize = 0x8006;

    /// Recognises a file by its first bytes.
    pub fn of(file: &Path) -> anyhow::Result<Kind> {
        let mut head = Vec::with_capacity(Kind::HEAD);
        std::fs::File::open(file)
            .with_context(|| format!("opening {}", file.display()))?
            .take(Kind::HEAD as u64)
            .read_to_end(&mut head)
            .with_context(|| format!("reading {}", file.display()))?;
        Ok(Kind::of_head(&head))
    }

    /// Recognises what starts with `head` (its first [`Kind::HEAD`] bytes, or all of it).
    pub fn of_head(head: &[u8]) -> Kind {
        let at =
            |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
        if at(0, &[0x1f, 0x8b]) {
            Kind::Gzip
        } else if at(0, b"QFI\xfb") {
            Kind::Qcow2
        } else if at(0, b"hsqs") {
            Kind::Squashfs
        } else if at(0, b"070701") {
            Kind::Cpio
        } else if at(257, b"ustar") {
            Kind::Tar
        } else if at(0x8001, b"CD001") {
            // Before the GPT: a hybrid ISO carries one too.
            Kind::Iso
        } else if at(512, b"EFI PART") {
            Kind::GptDisk
        } else if at(1080, &[0x53, 0xef]) {
            Kind::Ext4
        } else if at(510, &[0x55, 0xaa]) && (at(54, b"FAT1") || at(82, b"FAT32")) {
            Kind::Fat
        } else {
            Kind::Plain
        }
    }

    /// Whether the kind holds files to open.
    pub fn is_packed(self) -> bool {
        self != Kind::Plain
    }

    /// The one file a stream unpacks to, for the kinds that are a stream.
    pub fn single_file(self) -> Option<&'static str> {
        match self {
            Kind::Gzip => Some(GZIP_CONTENT),
            Kind::Qcow2 => Some(QCOW2_CONTENT),
            _ => None,
        }
    }
}

/// Unpacks `file` (of `kind`) into the new folder `into`; returns the folder.
pub fn unpack(file: &Path, kind: Kind, into: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(into).with_context(|| format!("creating {}", into.display()))?;
    let opening = || format!("opening {} ({kind:?})", file.display());
    match kind {
        Kind::Gzip => {
            let mut stream = flate2::read::MultiGzDecoder::new(open(file)?);
            let mut out = std::fs::File::create(into.join(GZIP_CONTENT))?;
            std::io::copy(&mut stream, &mut out).with_context(opening)?;
        }
        Kind::Qcow2 => Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(file)
            .arg(into.join(QCOW2_CONTENT))
            .run()
            .with_context(opening)?,
        Kind::Tar => {
            let mut archive = tar::Archive::new(open(file)?);
            archive.set_preserve_permissions(true);
            archive.set_preserve_ownerships(true);
            archive.set_preserve_mtime(true);
            archive.set_unpack_xattrs(true);
            archive.unpack(into).with_context(opening)?;
        }
        Kind::GptDisk => unpack_disk(file, into).with_context(opening)?,
        Kind::Fat => Command::new("mcopy")
            .args(["-s", "-p", "-m", "-n", "-Q", "-i"])
            .arg(file)
            .arg("::/")
            .arg(into)
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("TZ", "UTC")
            .run()
            .with_context(opening)?,
        Kind::Ext4 => Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump / {}", into.display()))
            .arg(file)
            .run()
            .with_context(opening)?,
        Kind::Iso => Command::new("xorriso")
            .args(["-osirrox", "on", "-indev"])
            .arg(file)
            .args(["-extract", "/"])
            .arg(into)
            .run()
            .with_context(opening)?,
        Kind::Squashfs => Command::new("unsquashfs")
            .args(["-quiet", "-no-progress", "-force", "-d"])
            .arg(into)
            .arg(file)
            .run()
            .with_context(opening)?,
        Kind::Cpio => unpack_cpio(file, into).with_context(opening)?,
        Kind::Plain => anyhow::bail!("{} packs nothing", file.display()),
    }
    if matches!(kind, Kind::Gzip | Kind::Qcow2 | Kind::GptDisk) {
        // What these hold has no time of its own: the files made for it get one, the same
        // on every unpacking, so that comparing two unpackings sees only their contents.
        for entry in std::fs::read_dir(into)? {
            let file = std::fs::File::options().write(true).open(entry?.path())?;
            file.set_modified(std::time::UNIX_EPOCH)?;
        }
    }
    Ok(into.to_path_buf())
}

fn open(file: &Path) -> anyhow::Result<std::io::BufReader<std::fs::File>> {
    let opened =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    Ok(std::io::BufReader::with_capacity(1 << 20, opened))
}

/// Each partition as `partition-N`, and the disk's own sectors before the first partition
/// (MBR, GPT, BIOS boot code) as `head`.
fn unpack_disk(file: &Path, into: &Path) -> anyhow::Result<()> {
    let table = Command::new("sfdisk")
        .arg("--json")
        .arg(file)
        .output_text()?;
    let table: serde_json::Value = serde_json::from_str(&table)?;
    let sector = table["partitiontable"]["sectorsize"]
        .as_u64()
        .unwrap_or(512);
    let partitions = table["partitiontable"]["partitions"]
        .as_array()
        .context("sfdisk lists no partitions")?;
    let mut source = std::fs::File::open(file)?;
    let mut first = u64::MAX;
    for (index, partition) in partitions.iter().enumerate() {
        let start = partition["start"]
            .as_u64()
            .context("a partition without a start")?;
        let size = partition["size"]
            .as_u64()
            .context("a partition without a size")?;
        first = first.min(start);
        copy_range(
            &mut source,
            start * sector,
            size * sector,
            &into.join(format!("partition-{}", index + 1)),
        )?;
    }
    copy_range(&mut source, 0, first.min(2048) * sector, &into.join("head"))?;
    Ok(())
}

fn copy_range(
    source: &mut std::fs::File,
    offset: u64,
    length: u64,
    to: &Path,
) -> anyhow::Result<()> {
    use std::io::Seek as _;
    source.seek(std::io::SeekFrom::Start(offset))?;
    let mut out = std::fs::File::create(to)?;
    std::io::copy(&mut source.take(length), &mut out)?;
    Ok(())
}

/// Each entry at its name, with its mode and time: folders, files and links (device nodes are
/// left out). An initramfs may go on past the archive's trailer (a compressed archive
/// after an uncompressed early one): that rest is not opened.
fn unpack_cpio(file: &Path, into: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Component;
    let mut reader = open(file)?;
    loop {
        let mut entry = cpio::newc::Reader::new(reader)?;
        if entry.entry().is_trailer() {
            return Ok(());
        }
        let name = entry.entry().name().to_string();
        let mut relative = PathBuf::new();
        for part in Path::new(&name).components() {
            match part {
                Component::Normal(part) => relative.push(part),
                Component::CurDir | Component::RootDir => {}
                Component::ParentDir | Component::Prefix(_) => {
                    anyhow::bail!("the archive holds an entry named {name}")
                }
            }
        }
        let mode = entry.entry().mode();
        let path = into.join(&relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match mode & 0o170000 {
            _ if relative.as_os_str().is_empty() => {}
            0o040000 => std::fs::create_dir_all(&path)?,
            0o100000 => {
                let mut file = std::fs::File::create(&path)?;
                std::io::copy(&mut entry, &mut file)?;
                let time = std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(u64::from(entry.entry().mtime()));
                file.set_modified(time)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))?;
            }
            0o120000 => {
                let mut target = String::new();
                entry.read_to_string(&mut target)?;
                std::os::unix::fs::symlink(target, &path)?;
            }
            _ => {}
        }
        reader = entry.finish()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(program: &str, args: &[&str], dir: &Path) {
        Command::new(program)
            .args(args)
            .current_dir(dir)
            .env("MTOOLS_SKIP_CHECK", "1")
            .run()
            .unwrap_or_else(|error| panic!("{program}: {error:#}"));
    }

    /// Each kind, made by its own tool from a folder holding `etc/hello`, is recognised
    /// and unpacks to that file again.
    #[test]
    fn every_kind_is_recognised_and_unpacks_to_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let tree = d.join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/hello"), "hello\n").unwrap();
        run(
            "tar",
            &["--format=ustar", "-cf", "a.tar", "-C", "tree", "etc"],
            d,
        );
        run("sh", &["-c", "gzip -n -c a.tar > a.tar.gz"], d);
        run(
            "mksquashfs",
            &["tree", "a.squashfs", "-quiet", "-no-progress"],
            d,
        );
        run(
            "xorriso",
            &["-as", "mkisofs", "-quiet", "-R", "-o", "a.iso", "tree"],
            d,
        );
        run("truncate", &["-s", "8M", "a.ext4"], d);
        run("mke2fs", &["-q", "-t", "ext4", "-d", "tree", "a.ext4"], d);
        run("truncate", &["-s", "8M", "a.fat"], d);
        run("mkfs.fat", &["a.fat"], d);
        run("mmd", &["-i", "a.fat", "::/etc"], d);
        run(
            "mcopy",
            &["-i", "a.fat", "tree/etc/hello", "::/etc/hello"],
            d,
        );
        run(
            "qemu-img",
            &["convert", "-f", "raw", "-O", "qcow2", "a.ext4", "a.qcow2"],
            d,
        );
        run("truncate", &["-s", "12M", "a.disk"], d);
        run(
            "sh",
            &[
                "-c",
                "echo 'label: gpt\nstart=2048, size=16384' | sfdisk -q a.disk",
            ],
            d,
        );
        run(
            "dd",
            &[
                "if=a.ext4",
                "of=a.disk",
                "bs=512",
                "seek=2048",
                "conv=notrunc",
                "status=none",
            ],
            d,
        );
        let mut cpio = Vec::new();
        let mut writer = cpio::newc::Builder::new("etc/hello")
            .mode(0o100644)
            .write(&mut cpio, 6);
        std::io::Write::write_all(&mut writer, b"hello\n").unwrap();
        cpio::newc::trailer(writer.finish().unwrap()).unwrap();
        std::fs::write(d.join("a.cpio"), cpio).unwrap();

        let cases = [
            ("a.tar.gz", Kind::Gzip, "content"),
            ("a.tar", Kind::Tar, "etc/hello"),
            ("a.squashfs", Kind::Squashfs, "etc/hello"),
            ("a.iso", Kind::Iso, "etc/hello"),
            ("a.ext4", Kind::Ext4, "etc/hello"),
            ("a.fat", Kind::Fat, "etc/hello"),
            ("a.qcow2", Kind::Qcow2, "disk.raw"),
            ("a.disk", Kind::GptDisk, "partition-1"),
            ("a.cpio", Kind::Cpio, "etc/hello"),
            ("tree/etc/hello", Kind::Plain, ""),
        ];
        for (file, kind, inside) in cases {
            let path = d.join(file);
            assert_eq!(Kind::of(&path).unwrap(), kind, "{file}");
            if kind == Kind::Plain {
                continue;
            }
            let into = unpack(&path, kind, &d.join(format!("{file}.unpacked"))).unwrap();
            let found = into.join(inside);
            assert!(found.is_file(), "{file}: no {inside}");
            if inside.ends_with("hello") {
                assert_eq!(std::fs::read_to_string(found).unwrap(), "hello\n", "{file}");
            }
        }
        let partition = d.join("a.disk.unpacked/partition-1");
        assert_eq!(Kind::of(&partition).unwrap(), Kind::Ext4);
    }
}
