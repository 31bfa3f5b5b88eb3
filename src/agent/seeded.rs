//! Node data from the seed (`node_data = "seed"`): an image built that way holds no
//! cluster file and no node tree, so before anything reads them the agent unpacks the
//! payload its seed carries ([`crate::payload`]). It looks, in order, where the live
//! root's initramfs keeps a PXE node's archive, in cloud-init's seed folders, and on a
//! drive labelled `cidata` (a NoCloud seed), mounted read-only for the moment it reads.
//! An image whose cluster file is in place (node data in the image, or a later boot) is
//! left alone.

use anyhow::Context as _;

use super::config::{CLUSTER_FILE, config_error};
use super::host::{Host, Invocation};
use super::root::Root;
use crate::fsutil::{Owner, write_atomic_owned};
use crate::payload::{self, FILE_NAME};
use crate::userdb::UserDb;

/// Where the live root's initramfs keeps the payload iPXE or GRUB added.
pub const PXE_PAYLOAD: &str = "/run/r2a/node-data.tar";
/// Where cloud-init's NoCloud seed folders would hold it.
pub const SEED_DIR_PAYLOADS: [&str; 2] = [
    "/var/lib/cloud/seed/nocloud/r2a-node.tar",
    "/var/lib/cloud/seed/nocloud-net/r2a-node.tar",
];
/// Labels of a NoCloud seed drive (ISO 9660 and FAT spellings).
const SEED_LABELS: [&str; 2] = ["cidata", "CIDATA"];
/// Where a seed drive is mounted while the payload is read.
const MOUNT_POINT: &str = "/run/r2a/seed-drive";
/// `blkid -t` exits with 2 when no device matches.
const BLKID_NOTHING_FOUND: i32 = 2;

/// Unpacks the node's payload when the image has no cluster file yet; says what it did.
pub fn stage_node_data(root: &Root, host: &mut dyn Host) -> anyhow::Result<Option<String>> {
    if root.path(CLUSTER_FILE).exists() {
        return Ok(None);
    }
    let Some((bytes, origin)) = find_payload(root, host)? else {
        return Err(config_error(format!(
            "{} is missing and no seed carries this node's files: the image was built with \
             node_data = \"seed\", so give the node its seed (`r2a-image seed MANIFEST --node NODE`, \
             attached as a drive; over PXE, list the node's MAC so that it gets \
             nodes/<mac>.cpio)",
            root.path(CLUSTER_FILE).display()
        )));
    };
    let files =
        payload::unpack(&bytes).with_context(|| format!("reading the node payload {origin}"))?;
    let users = UserDb::read(&root.path("/"))?;
    for file in &files {
        let (uid, gid) = users
            .ids(&file.owner, &file.group)
            .with_context(|| format!("owner of {} in the node payload {origin}", file.path))?;
        write_atomic_owned(
            &root.path(&file.path),
            &file.content,
            file.mode,
            Some(Owner { uid, gid }),
        )?;
    }
    Ok(Some(format!("{} files from {origin}", files.len())))
}

/// The payload's bytes and where they came from.
fn find_payload(root: &Root, host: &mut dyn Host) -> anyhow::Result<Option<(Vec<u8>, String)>> {
    for candidate in std::iter::once(PXE_PAYLOAD).chain(SEED_DIR_PAYLOADS) {
        let path = root.path(candidate);
        if path.is_file() {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            return Ok(Some((bytes, path.display().to_string())));
        }
    }
    if !host.is_live() {
        return Ok(None);
    }
    for label in SEED_LABELS {
        let query = Invocation::new("blkid", ["-t", &format!("LABEL={label}"), "-o", "device"]);
        let Some(found) = host.probe(&query, BLKID_NOTHING_FOUND)? else {
            continue;
        };
        let Some(device) = found.lines().map(str::trim).find(|line| !line.is_empty()) else {
            continue;
        };
        return read_from_drive(root, host, device);
    }
    Ok(None)
}

/// Reads the payload from a seed drive, which is unmounted again whatever the outcome.
fn read_from_drive(
    root: &Root,
    host: &mut dyn Host,
    device: &str,
) -> anyhow::Result<Option<(Vec<u8>, String)>> {
    let mount_point = root.path(MOUNT_POINT);
    std::fs::create_dir_all(&mount_point)
        .with_context(|| format!("creating {}", mount_point.display()))?;
    host.run(&Invocation::new(
        "mount",
        ["-o", "ro,nodev,nosuid,noexec", device, MOUNT_POINT],
    ))
    .with_context(|| format!("mounting the seed drive {device}"))?;
    let path = mount_point.join(FILE_NAME);
    let read = match std::fs::read(&path) {
        Ok(bytes) => Ok(Some((bytes, format!("{FILE_NAME} on {device}")))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading {FILE_NAME} on {device}")),
    };
    host.run(&Invocation::new("umount", [MOUNT_POINT]))
        .with_context(|| format!("unmounting the seed drive {device}"))?;
    read
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;
    use crate::agent::host::ScriptedHost;
    use crate::agent::testing::FakeRoot;
    use crate::overlay::OverlayFile;

    fn payload() -> Vec<u8> {
        let file = |path: &str, mode: u32| OverlayFile {
            path: path.to_string(),
            content: format!("content of {path}\n").into_bytes(),
            mode,
            owner: "root".to_string(),
            group: "root".to_string(),
            origin: "test".into(),
        };
        payload::pack(
            &[
                file(CLUSTER_FILE, 0o644),
                file("/usr/lib/r2a/nodes/db1/etc/r2a/database.env", 0o600),
            ],
            0,
        )
        .unwrap()
    }

    /// A root without the cluster file, as a seed-mode image has it.
    fn seeded_root() -> FakeRoot {
        let fake = FakeRoot::db();
        std::fs::remove_file(fake.root.path(CLUSTER_FILE)).unwrap();
        fake.write("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n");
        fake.write("/etc/group", "root:x:0:\n");
        fake
    }

    #[test]
    fn where_the_payload_comes_from_decides_what_is_asked_of_the_host() {
        struct Case {
            name: &'static str,
            file: Option<&'static str>,
            live: bool,
            drive: Option<&'static str>,
            origin: Option<&'static str>,
            commands: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "PXE archive, nothing asked",
                file: Some(PXE_PAYLOAD),
                live: true,
                drive: None,
                origin: Some("/run/r2a/node-data.tar"),
                commands: &[],
            },
            Case {
                name: "cloud-init seed folder",
                file: Some(SEED_DIR_PAYLOADS[0]),
                live: true,
                drive: None,
                origin: Some("nocloud/r2a-node.tar"),
                commands: &[],
            },
            Case {
                name: "seed drive, mounted and unmounted",
                file: None,
                live: true,
                drive: Some("/dev/sr1"),
                origin: Some("r2a-node.tar on /dev/sr1"),
                commands: &[
                    "blkid -t 'LABEL=cidata' -o device",
                    "mount -o ro,nodev,nosuid,noexec /dev/sr1 /run/r2a/seed-drive",
                    "umount /run/r2a/seed-drive",
                ],
            },
            Case {
                name: "no seed anywhere",
                file: None,
                live: true,
                drive: None,
                origin: None,
                commands: &[
                    "blkid -t 'LABEL=cidata' -o device",
                    "blkid -t 'LABEL=CIDATA' -o device",
                ],
            },
            Case {
                name: "offline root: no device is probed",
                file: None,
                live: false,
                drive: None,
                origin: None,
                commands: &[],
            },
        ];
        for case in cases {
            let fake = seeded_root();
            let mut host = ScriptedHost::new(case.live);
            if let Some(file) = case.file {
                let path = fake.root.path(file);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, payload()).unwrap();
            }
            match case.drive {
                Some(device) => {
                    host.answer("blkid -t 'LABEL=cidata' -o device", &format!("{device}\n"));
                    let mounted = fake.root.path(MOUNT_POINT).join(FILE_NAME);
                    std::fs::create_dir_all(mounted.parent().unwrap()).unwrap();
                    std::fs::write(mounted, payload()).unwrap();
                    host.succeed(&format!(
                        "mount -o ro,nodev,nosuid,noexec {device} /run/r2a/seed-drive"
                    ));
                    host.succeed("umount /run/r2a/seed-drive");
                }
                None => {
                    host.absent("blkid -t 'LABEL=cidata' -o device");
                    host.absent("blkid -t 'LABEL=CIDATA' -o device");
                }
            }
            let result = stage_node_data(&fake.root, &mut host);
            assert_eq!(host.log(), case.commands, "{}", case.name);
            match case.origin {
                Some(origin) => {
                    let detail = result.unwrap().unwrap();
                    assert!(
                        detail.starts_with("2 files from "),
                        "{}: {detail}",
                        case.name
                    );
                    assert!(detail.ends_with(origin), "{}: {detail}", case.name);
                    assert_eq!(
                        fake.read(CLUSTER_FILE),
                        "content of /etc/r2a/cluster.json\n"
                    );
                    let env = fake
                        .root
                        .path("/usr/lib/r2a/nodes/db1/etc/r2a/database.env");
                    let metadata = std::fs::metadata(env).unwrap();
                    assert_eq!(
                        metadata.permissions().mode() & 0o777,
                        0o600,
                        "{}",
                        case.name
                    );
                    assert_eq!((metadata.uid(), metadata.gid()), (0, 0), "{}", case.name);
                }
                None => {
                    let error = result.unwrap_err();
                    assert!(
                        super::super::config::is_config_error(&error),
                        "{}",
                        case.name
                    );
                    assert!(
                        format!("{error:#}").contains("r2a-image seed"),
                        "{}",
                        case.name
                    );
                }
            }
        }
    }

    #[test]
    fn an_image_with_its_cluster_file_is_left_alone() {
        let fake = FakeRoot::db();
        let before = fake.snapshot();
        let mut host = ScriptedHost::new(true);
        assert_eq!(stage_node_data(&fake.root, &mut host).unwrap(), None);
        assert!(host.log().is_empty());
        assert_eq!(fake.snapshot(), before);
    }

    #[test]
    fn an_owner_the_image_does_not_know_is_an_error_naming_it() {
        let fake = seeded_root();
        let file = OverlayFile {
            path: "/usr/lib/r2a/nodes/db1/etc/patroni/config.yml".to_string(),
            content: b"x".to_vec(),
            mode: 0o600,
            owner: "postgres".to_string(),
            group: "postgres".to_string(),
            origin: "test".into(),
        };
        let path = fake.root.path(PXE_PAYLOAD);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, payload::pack(&[file], 0).unwrap()).unwrap();
        let error = stage_node_data(&fake.root, &mut ScriptedHost::new(true)).unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.contains("postgres") && text.contains("config.yml"),
            "{text}"
        );
    }
}
