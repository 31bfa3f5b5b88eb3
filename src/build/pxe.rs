//! The PXE set: kernel, initramfs and squashfs for HTTP or TFTP boot, an iPXE script that
//! hands each node its own script (keyed by MAC, naming the node on the kernel command
//! line), and a GRUB netboot menu. Paths in the scripts are relative, so the folder can
//! be served from anywhere; the squashfs travels as an extra initramfs file.

use std::path::Path;

use super::live::{self, INITRAMFS_SQUASHFS, KernelFiles};
use crate::manifest::Node;

/// The files of the set, relative to its folder, besides the per-node scripts.
pub const FILES: [&str; 5] = [
    "vmlinuz",
    "initrd.img",
    "rootfs.squashfs",
    "boot.ipxe",
    "grub.cfg",
];

/// A MAC address as the per-node file names spell it (iPXE's `${mac:hexhyp}`).
pub fn mac_file_stem(mac: &str) -> String {
    mac.to_ascii_lowercase().replace(':', "-")
}

/// The iPXE script every machine loads first.
pub fn boot_script(title: &str) -> String {
    let cmdline = live::kernel_command_line(None, &[]);
    let squashfs = INITRAMFS_SQUASHFS.trim_start_matches('/');
    format!(
        "#!ipxe\n\
         # r2a-appliance: {title}. A node listed with its MAC gets nodes/<mac>.ipxe, which\n\
         # names it on the kernel command line; any other machine boots the role and is\n\
         # named by cloud-init data or its hostname.\n\
         chain --autofree nodes/${{net0/mac:hexhyp}}.ipxe || echo r2a: no script for ${{net0/mac}}\n\
         kernel vmlinuz {cmdline} initrd=initrd.img\n\
         initrd initrd.img\n\
         initrd rootfs.squashfs {squashfs}\n\
         boot\n"
    )
}

/// One node's iPXE script, in `nodes/`.
pub fn node_script(title: &str, node: &str) -> String {
    let node_arg = format!("r2a.node={node}");
    let cmdline = live::kernel_command_line(None, &[&node_arg]);
    let squashfs = INITRAMFS_SQUASHFS.trim_start_matches('/');
    format!(
        "#!ipxe\n\
         # r2a-appliance: {title}, node {node}.\n\
         echo r2a: booting node {node}\n\
         kernel ../vmlinuz {cmdline} initrd=initrd.img\n\
         initrd ../initrd.img\n\
         initrd ../rootfs.squashfs {squashfs}\n\
         boot\n"
    )
}

/// The GRUB netboot menu: files are found beside it (`$config_directory`), a listed MAC
/// names its node.
pub fn grub_menu(title: &str, nodes: &[&Node]) -> String {
    let cmdline = live::kernel_command_line(None, &[]);
    let squashfs = INITRAMFS_SQUASHFS.trim_start_matches('/');
    let mut text = format!(
        "# r2a-appliance: {title}, GRUB netboot.\n{}\
         set timeout=3\n\
         set r2a_node=\"\"\n",
        super::grub::SERIAL_TERMINAL
    );
    for node in nodes {
        if let Some(mac) = &node.mac {
            text.push_str(&format!(
                "if [ \"$net_default_mac\" = \"{}\" ]; then set r2a_node=\"r2a.node={}\"; fi\n",
                mac.to_ascii_lowercase(),
                node.name
            ));
        }
    }
    text.push_str(&format!(
        "menuentry \"{title}: network boot\" {{\n\
         \tlinux $config_directory/vmlinuz {cmdline} $r2a_node\n\
         \tinitrd $config_directory/initrd.img newc:{squashfs}:$config_directory/rootfs.squashfs\n\
         }}\n"
    ));
    text
}

/// Writes the set into `dir`.
pub fn write(
    kernel: &KernelFiles,
    squashfs: &Path,
    title: &str,
    nodes: &[&Node],
    dir: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("nodes"))?;
    kernel.place_in(dir)?;
    live::link_or_copy(squashfs, &dir.join("rootfs.squashfs"))?;
    std::fs::write(dir.join("boot.ipxe"), boot_script(title))?;
    std::fs::write(dir.join("grub.cfg"), grub_menu(title, nodes))?;
    for node in nodes {
        if let Some(mac) = &node.mac {
            std::fs::write(
                dir.join("nodes")
                    .join(format!("{}.ipxe", mac_file_stem(mac))),
                node_script(title, &node.name),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, mac: Option<&str>) -> Node {
        Node {
            name: name.to_string(),
            role: "db".to_string(),
            address: "10.77.0.11".parse().unwrap(),
            mac: mac.map(str::to_string),
            vcpus: None,
            memory: None,
            disk: None,
            data_disk: None,
        }
    }

    #[test]
    fn scripts_chain_to_the_node_by_mac() {
        assert_eq!(mac_file_stem("52:54:00:AB:00:11"), "52-54-00-ab-00-11");
        let boot = boot_script("Ring2All db");
        assert!(boot.starts_with("#!ipxe\n"));
        assert!(boot.contains("chain --autofree nodes/${net0/mac:hexhyp}.ipxe || echo"));
        assert!(boot.contains("initrd rootfs.squashfs r2a.squashfs\n"));
        let node = node_script("Ring2All db", "db1");
        assert!(node.contains("kernel ../vmlinuz boot=r2a r2a.node=db1 "));
        assert!(node.contains("initrd ../rootfs.squashfs r2a.squashfs\n"));
    }

    #[test]
    fn the_grub_menu_names_listed_macs() {
        let db1 = node("db1", Some("52:54:00:00:00:11"));
        let db2 = node("db2", None);
        let menu = grub_menu("Ring2All db", &[&db1, &db2]);
        assert!(menu.contains(
            "if [ \"$net_default_mac\" = \"52:54:00:00:00:11\" ]; then set r2a_node=\"r2a.node=db1\"; fi"
        ));
        assert!(!menu.contains("db2"));
        assert!(menu.contains("newc:r2a.squashfs:$config_directory/rootfs.squashfs"));
    }

    #[test]
    fn the_set_holds_every_file() {
        let tree = tempfile::tempdir().unwrap();
        let kernel = KernelFiles {
            vmlinuz: tree.path().join("k"),
            initrd: tree.path().join("i"),
        };
        std::fs::write(&kernel.vmlinuz, "k").unwrap();
        std::fs::write(&kernel.initrd, "i").unwrap();
        let squashfs = tree.path().join("s");
        std::fs::write(&squashfs, "s").unwrap();
        let out = tree.path().join("pxe");
        let db1 = node("db1", Some("52:54:00:00:00:11"));
        write(&kernel, &squashfs, "t", &[&db1], &out).unwrap();
        for file in FILES {
            assert!(out.join(file).is_file(), "{file}");
        }
        assert!(out.join("nodes/52-54-00-00-00-11.ipxe").is_file());
    }
}
