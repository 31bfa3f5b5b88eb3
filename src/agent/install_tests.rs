//! Tests of the installer: the command line, the choice of disk, the image writer.

use std::io::{Read, Seek, SeekFrom, Write};

use super::*;
use crate::agent::config::is_config_error;

const LSBLK: &str = r#"{"blockdevices": [
  {"path": "/dev/fd0", "type": "disk", "ro": false, "size": 1474560},
  {"path": "/dev/sr0", "type": "rom", "ro": true, "size": 723189760},
  {"path": "/dev/sr1", "type": "rom", "ro": true, "size": 374784},
  {"path": "/dev/vda", "type": "disk", "ro": false, "size": 8589934592},
  {"path": "/dev/vdb", "type": "disk", "ro": false, "size": 8589934592, "children": [
     {"path": "/dev/vdb1", "type": "part", "ro": false, "size": 8588886016}]},
  {"path": "/dev/sdc", "type": "disk", "ro": false, "size": 16000000000, "children": [
     {"path": "/dev/sdc1", "type": "part", "ro": false, "size": 723189760}]}
]}"#;

fn request(cmdline: &str) -> Request {
    Request::from_cmdline(cmdline).unwrap().unwrap()
}

fn choose(cmdline: &str, empty: &[&str]) -> anyhow::Result<(String, bool)> {
    let devices = parse_lsblk(LSBLK).unwrap();
    let mut is_empty = |device: &str| Ok(empty.contains(&device));
    choose_target(&request(cmdline), &devices, "/dev/sdc1", &mut is_empty)
}

#[test]
fn the_command_line_says_what_to_install_where() {
    assert_eq!(
        Request::from_cmdline("boot=r2a r2a.medium=R2A_DB").unwrap(),
        None
    );
    assert_eq!(
        request("boot=r2a r2a.medium=R2A_DB r2a.install=auto"),
        Request {
            target: None,
            force: false,
            medium: "R2A_DB".to_string()
        }
    );
    let forced = request("r2a.install=/dev/sda r2a.install.force r2a.medium=R2A_DB");
    assert_eq!(forced.target.as_deref(), Some("/dev/sda"));
    assert!(forced.force);
    let error = Request::from_cmdline("r2a.install=sda r2a.medium=X").unwrap_err();
    assert!(is_config_error(&error), "{error:#}");
    let error = Request::from_cmdline("r2a.install=auto").unwrap_err();
    assert!(format!("{error:#}").contains("r2a.medium"), "{error:#}");
}

#[test]
fn auto_takes_the_only_empty_disk() {
    assert_eq!(
        choose("r2a.install=auto r2a.medium=M", &["/dev/fd0", "/dev/vda"]).unwrap(),
        ("/dev/vda".to_string(), true)
    );
}

#[test]
fn auto_refuses_none_or_several_empty_disks() {
    let none = choose("r2a.install=auto r2a.medium=M", &[]).unwrap_err();
    assert!(format!("{none:#}").contains("no empty disk"), "{none:#}");
    let devices = parse_lsblk(
        r#"{"blockdevices": [{"path": "/dev/vda", "type": "disk", "size": 8589934592},
                             {"path": "/dev/vdb", "type": "disk", "size": 8589934592}]}"#,
    )
    .unwrap();
    let mut all_empty = |_: &str| Ok(true);
    let request = request("r2a.install=auto r2a.medium=M");
    let several = choose_target(&request, &devices, "/dev/sr0", &mut all_empty).unwrap_err();
    assert!(
        format!("{several:#}").contains("/dev/vda, /dev/vdb"),
        "{several:#}"
    );
}

#[test]
fn a_disk_with_data_is_refused_unless_forced() {
    let refused = choose("r2a.install=/dev/vdb r2a.medium=M", &[]).unwrap_err();
    assert!(is_config_error(&refused));
    assert!(
        format!("{refused:#}").contains("r2a.install.force"),
        "{refused:#}"
    );
    assert_eq!(
        choose("r2a.install=/dev/vdb r2a.install.force r2a.medium=M", &[]).unwrap(),
        ("/dev/vdb".to_string(), false)
    );
    let signature_only = choose("r2a.install=/dev/vda r2a.medium=M", &[]).unwrap_err();
    assert!(format!("{signature_only:#}").contains("holds data"));
}

#[test]
fn the_medium_and_unknown_devices_are_never_targets() {
    let medium = choose("r2a.install=/dev/sdc r2a.install.force r2a.medium=M", &[]).unwrap_err();
    assert!(
        format!("{medium:#}").contains("install medium"),
        "{medium:#}"
    );
    let unknown = choose("r2a.install=/dev/nvme0n1 r2a.medium=M", &[]).unwrap_err();
    assert!(
        format!("{unknown:#}").contains("no such disk"),
        "{unknown:#}"
    );
    let partition = choose("r2a.install=/dev/vdb1 r2a.medium=M", &[]).unwrap_err();
    assert!(format!("{partition:#}").contains("no such disk"));
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn the_image_lands_byte_for_byte_and_zeros_are_skipped_on_a_blank_disk() {
    let mut image = vec![0u8; 3 * CHUNK + 123];
    image[10] = 1;
    image[3 * CHUNK + 100] = 7;
    let compressed = gzip(&image);
    for blank in [true, false] {
        let mut disk = tempfile::tempfile().unwrap();
        disk.set_len(4 * CHUNK as u64).unwrap();
        let written = write_image(compressed.as_slice(), &mut disk, blank).unwrap();
        assert_eq!(written, image.len() as u64);
        let mut back = vec![0u8; image.len()];
        disk.seek(SeekFrom::Start(0)).unwrap();
        disk.read_exact(&mut back).unwrap();
        assert!(back == image, "blank={blank}");
    }
}

#[test]
fn a_forced_disk_gets_its_zeros_written() {
    let image = vec![0u8; CHUNK];
    let mut disk = tempfile::tempfile().unwrap();
    disk.write_all(&vec![0xEE; CHUNK]).unwrap();
    disk.seek(SeekFrom::Start(0)).unwrap();
    write_image(gzip(&image).as_slice(), &mut disk, false).unwrap();
    let mut back = Vec::new();
    disk.seek(SeekFrom::Start(0)).unwrap();
    disk.read_to_end(&mut back).unwrap();
    assert!(
        back.iter().all(|byte| *byte == 0),
        "old data was overwritten"
    );
}

#[test]
fn a_damaged_image_is_an_error() {
    let mut compressed = gzip(&vec![5u8; 1000]);
    let last = compressed.len() - 5;
    compressed[last] ^= 0xFF;
    let mut disk = tempfile::tempfile().unwrap();
    let error = write_image(compressed.as_slice(), &mut disk, true).unwrap_err();
    assert!(format!("{error:#}").contains("damaged"), "{error:#}");
}

#[test]
fn the_medium_is_the_iso9660_file_system_with_the_label() {
    let whole_disk = "DEVNAME=/dev/sda\nLABEL=R2A_DB\nTYPE=iso9660\nPTTYPE=gpt\n";
    let mac_partition = "DEVNAME=/dev/sda3\nLABEL=R2A_DB\nTYPE=hfsplus\n";
    assert!(is_medium(whole_disk, "R2A_DB"));
    assert!(!is_medium(mac_partition, "R2A_DB"));
    assert!(!is_medium(whole_disk, "R2A_PORTAL"));
    assert!(!is_medium(
        "DEVNAME=/dev/sr1\nLABEL=cidata\nTYPE=iso9660\n",
        "R2A_DB"
    ));
}
