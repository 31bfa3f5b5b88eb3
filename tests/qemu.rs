//! The bootable formats of one role (portal), built from the mirror and booted in QEMU
//! with `r2a-image boot --check` (software emulation unless KVM works; user networking
//! with restrict=on, PXE over QEMU's own TFTP): qcow2 under UEFI (under BIOS in
//! `node_data.rs`, with a seed that carries the node's files), the ISO's live
//! entry from a CD under UEFI (under BIOS in `matrix.rs`) and from a USB stick under
//! both, its install entry onto a blank disk
//! and that disk alone, and PXE for a node whose MAC the manifest lists with GRUB under
//! UEFI (iPXE under BIOS boots in `node_data.rs`, with the node's payload; `matrix.rs`
//! boots PXE without a listed MAC the other way round).
//! The artifacts' layout is checked with sfdisk, mtools and xorriso.

mod support;

use std::process::Command;
use std::sync::OnceLock;

use r2a::agent::report::BootReport;
use support::{Fixture, Output, fixture, healthy_boot_report, run_image_tool};

/// The node the boots are for: its seed names it and gives it this address.
const NODE: &str = "portal1";
const ADDRESS: &str = "10.77.0.31/24";

/// The test cluster with the portal role built in every format (the set `node_data.rs`
/// builds too, so that a run of both keeps the first build).
fn bootable() -> &'static Fixture {
    static BUILT: OnceLock<()> = OnceLock::new();
    let fx = fixture();
    BUILT.get_or_init(|| {
        let _build = fx.lock();
        let output = fx.build(
            &[
                "--role", "portal", "--format", "tar", "--format", "raw", "--format", "qcow2",
                "--format", "iso", "--format", "pxe",
            ],
            None,
        );
        assert!(
            output.status.success(),
            "the bootable build failed:\n{}",
            output.stderr
        );
    });
    fx
}

/// `r2a-image boot --check` of the portal role with extra arguments.
fn boot(fx: &Fixture, args: &[&str]) -> Output {
    let mut argv = vec![
        "boot",
        fx.manifest.to_str().unwrap(),
        "--role",
        "portal",
        "--out",
        fx.out.to_str().unwrap(),
        "--check",
        "--timeout",
        "900",
    ];
    argv.extend(args);
    run_image_tool(&argv, None)
}

/// The boot report the console showed; the boot must have passed its check.
fn healthy_report(output: &Output) -> BootReport {
    let report = healthy_boot_report(output, NODE);
    assert_eq!(report.addresses, [ADDRESS], "{report:?}");
    report
}

/// The console line in which the agent says who the node is and how it knows.
fn identified_by(output: &Output, source: &str) {
    let wanted = format!("this is {NODE} of cluster r2a-test (role portal), found by {source}");
    assert!(
        output.stdout.contains(&wanted),
        "no `{wanted}` on the console"
    );
}

/// Size of the root partition in the published raw image, in bytes.
fn raw_root_partition_bytes(fx: &Fixture) -> u64 {
    let table = sfdisk_json(fx);
    table["partitiontable"]["partitions"][2]["size"]
        .as_u64()
        .unwrap()
        * 512
}

fn sfdisk_json(fx: &Fixture) -> serde_json::Value {
    let disk = fx.cluster_out().join("portal/disk.raw");
    let output = Command::new("sfdisk")
        .arg("-J")
        .arg(&disk)
        .output()
        .unwrap();
    assert!(output.status.success(), "sfdisk -J {}", disk.display());
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn qcow2_boots_under_uefi_and_its_root_grows_to_the_disk() {
    let fx = bootable();
    // `--accel auto`: KVM where it works; where it stalls, the boot falls back to TCG.
    let output = boot(
        fx,
        &["--format", "qcow2", "--firmware", "uefi", "--accel", "auto"],
    );
    let report = healthy_report(&output);
    identified_by(&output, "cloud-init NoCloud data");
    // The boot disk is 1 GiB bigger than the image: the root filled it.
    let root = report.root_bytes.expect("the root's size");
    assert!(
        root > raw_root_partition_bytes(fx) + (512 << 20),
        "root is {root} bytes, the image's partition {}",
        raw_root_partition_bytes(fx)
    );
}

/// (From a CD under BIOS: the api node in `matrix.rs`.)
#[test]
fn the_iso_live_entry_boots_from_a_cd_under_uefi() {
    let fx = bootable();
    let output = boot(
        fx,
        &["--format", "iso", "--firmware", "uefi", "--accel", "tcg"],
    );
    healthy_report(&output);
    assert!(
        output.stdout.contains("r2a: copying the system from"),
        "the live root was not copied to RAM"
    );
}

#[test]
fn the_hybrid_iso_boots_from_a_usb_stick_under_bios_and_uefi() {
    let fx = bootable();
    for firmware in ["bios", "uefi"] {
        let args = [
            "--format",
            "iso",
            "--usb",
            "--firmware",
            firmware,
            "--accel",
            "tcg",
        ];
        let output = boot(fx, &args);
        healthy_report(&output);
        assert!(
            output
                .stdout
                .contains("r2a: copying the system from /dev/sda to RAM"),
            "{firmware}: the live root did not come from the stick's ISO 9660 file system"
        );
    }
}

#[test]
fn the_iso_installs_onto_a_blank_disk_which_then_boots_alone() {
    let fx = bootable();
    let output = boot(
        fx,
        &[
            "--format",
            "iso",
            "--install",
            "--firmware",
            "uefi",
            "--accel",
            "tcg",
        ],
    );
    assert!(
        output.stdout.contains("r2a-node: installed ") && output.stdout.contains(" onto /dev/vda"),
        "the installer did not write /dev/vda"
    );
    let report = healthy_report(&output);
    // Installed onto an 8 GiB disk, the root grew to it.
    assert!(report.root_bytes.unwrap() > 7 << 30, "{report:?}");
}

#[test]
fn grub_netboot_under_uefi_names_the_node_its_mac_lists() {
    let fx = bootable();
    let output = boot(
        fx,
        &[
            "--format",
            "pxe",
            "--pxe-loader",
            "grub",
            "--firmware",
            "uefi",
            "--accel",
            "tcg",
            "--memory",
            "3072",
        ],
    );
    healthy_report(&output);
    assert!(
        output.stdout.contains("grubnetx64.efi"),
        "iPXE did not load GRUB's network boot image"
    );
    // grub.cfg matched $net_default_mac and put r2a.node= on the command line.
    identified_by(&output, "kernel command line");
}

#[test]
fn the_disk_has_a_gpt_with_bios_boot_esp_and_root_and_grub_for_both_firmwares() {
    let fx = bootable();
    let table = sfdisk_json(fx);
    let table = &table["partitiontable"];
    assert_eq!(table["label"], "gpt");
    let parts = table["partitions"].as_array().unwrap();
    let types: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "21686148-6449-6E6F-744E-656564454649",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
        ]
    );
    assert_eq!(parts[1]["start"], 4096);
    let disk = fx.cluster_out().join("portal/disk.raw");
    let esp = format!("{}@@{}", disk.display(), 4096 * 512);
    let listing = Command::new("mdir")
        .args(["-b", "-i", &esp, "::/EFI/BOOT"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).contains("BOOTX64.EFI"));
    let menu = Command::new("mtype")
        .args(["-i", &esp, "::/grub/grub.cfg"])
        .output()
        .unwrap();
    let menu = String::from_utf8_lossy(&menu.stdout);
    assert!(menu.contains("root=UUID="), "{menu}");
    assert!(menu.contains("console=ttyS0,115200"), "{menu}");
    // The MBR's code points at GRUB's core in the BIOS boot partition (LBA 2048).
    let bytes = std::fs::read(&disk).map(|b| b[..512].to_vec()).unwrap();
    assert_eq!(&bytes[0x5C..0x64], &2048u64.to_le_bytes());
    assert_eq!(&bytes[510..512], &[0x55, 0xAA]);
}

#[test]
fn the_iso_has_el_torito_images_for_bios_and_uefi_and_the_install_image() {
    let fx = bootable();
    let iso = fx.cluster_out().join("portal/portal.iso");
    let report = Command::new("xorriso")
        .args(["-indev"])
        .arg(&iso)
        .args(["-report_el_torito", "plain", "-find", "/", "-type", "f"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&report.stdout).into_owned()
        + &String::from_utf8_lossy(&report.stderr);
    assert!(text.contains("Volume id    : 'R2A_PORTAL'"), "{text}");
    assert!(text.contains("El Torito boot img :   1  BIOS"), "{text}");
    assert!(text.contains("El Torito boot img :   2  UEFI"), "{text}");
    for file in [
        "/live/vmlinuz",
        "/live/initrd.img",
        "/live/rootfs.squashfs",
        "/install/disk.img.gz",
        "/boot/grub/grub.cfg",
    ] {
        assert!(
            text.contains(&format!("'{file}'")),
            "{file} missing:\n{text}"
        );
    }
}

#[test]
fn every_artifact_is_in_sha256sums_and_manifest_json() {
    let fx = bootable();
    let out = fx.cluster_out();
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    for path in [
        "portal/disk.raw",
        "portal/disk.qcow2",
        "portal/portal.iso",
        "portal/pxe/vmlinuz",
        "portal/pxe/initrd.img",
        "portal/pxe/rootfs.cpio",
        "portal/pxe/grubnetx64.efi",
        "portal/pxe/grubnetpc.0",
        "portal/pxe/boot.ipxe",
        "portal/pxe/grub.cfg",
        "portal/pxe/nodes/52-54-00-77-00-31.ipxe",
    ] {
        assert!(
            sums.contains(&format!("  {path}\n")),
            "{path} not in SHA256SUMS"
        );
    }
    let check = Command::new("sha256sum")
        .args(["--check", "--quiet", "SHA256SUMS"])
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let formats: Vec<&str> = index["images"]["portal"]["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["format"].as_str().unwrap())
        .collect();
    for format in ["raw", "qcow2", "iso", "pxe"] {
        assert!(
            formats.contains(&format),
            "{format} not recorded: {formats:?}"
        );
    }
    // GRUB is the image release's: manifest.json names the version the boot tools' layer
    // holds, and that layer's grub-script-check takes the netboot menu.
    let version = index["images"]["portal"]["grub"]
        .as_str()
        .expect("manifest.json names GRUB's version");
    let tools = boot_tools_tree(fx, version);
    let grub = std::fs::read_to_string(out.join("portal/pxe/grub.cfg")).unwrap();
    let checked = Command::new("chroot")
        .arg(&tools)
        .arg("grub-script-check")
        .stdin(std::fs::File::open(out.join("portal/pxe/grub.cfg")).unwrap())
        .status()
        .unwrap();
    assert!(checked.success(), "GRUB rejects the netboot menu:\n{grub}");
}

/// The tree of the cached boot tools' layer whose GRUB is `version`.
fn boot_tools_tree(fx: &Fixture, version: &str) -> std::path::PathBuf {
    std::fs::read_dir(fx.cache.join("layers"))
        .unwrap()
        .map(|entry| entry.unwrap().path().join("rootfs"))
        .filter(|tree| {
            tree.parent()
                .and_then(|folder| folder.file_name())
                .is_some_and(|name| name.to_string_lossy().starts_with("boot-tools-"))
        })
        .find(|tree| {
            r2a::sbom::installed(tree).is_ok_and(|packages| {
                packages
                    .iter()
                    .any(|p| p.name == "grub-common" && p.version == version)
            })
        })
        .unwrap_or_else(|| panic!("no boot tools' layer holds GRUB {version}"))
}

#[test]
fn booting_an_artifact_that_was_not_built_says_how_to_build_it() {
    let fx = bootable();
    let output = boot(fx, &["--format", "pxe", "--node", "db1"]);
    assert!(!output.status.success());
    assert!(
        output.stderr.contains("node db1 has role db, not portal"),
        "{}",
        output.stderr
    );
    let mut argv = vec!["boot", fx.manifest.to_str().unwrap(), "--role", "db"];
    argv.extend([
        "--format",
        "qcow2",
        "--out",
        fx.out.to_str().unwrap(),
        "--check",
    ]);
    let output = run_image_tool(&argv, None);
    assert!(!output.status.success());
    assert!(
        output.stderr.contains("no qcow2 image of role db")
            && output.stderr.contains("--role db --format qcow2"),
        "{}",
        output.stderr
    );
}
