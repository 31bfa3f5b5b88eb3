//! Tests of the disk images: the layout's sizes and alignment, the ids, the root file
//! system's independence from the host (its listing order, its allocation).

use super::*;

/// Two trees with the same entries, made in opposite orders, one on tmpfs and one on
/// the disk (file systems that list a folder in different orders): the same root
/// file system, byte for byte.
#[test]
fn the_root_file_system_does_not_depend_on_the_hosts_listing_order() {
    let names = ["b", "B", "a", "Z", "_x", "é", "a-b", "a.b", "10", "9"];
    let trees = [
        tempfile::tempdir_in("/dev/shm").unwrap(),
        tempfile::tempdir().unwrap(),
    ];
    let layout = DiskLayout::new(256 * MIB).unwrap();
    let ids = DiskIds::derive("key");
    let image_dir = tempfile::tempdir().unwrap();
    let mut images = Vec::new();
    for (index, tree) in trees.iter().enumerate() {
        let etc = tree.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        let mut order = names.to_vec();
        if index == 1 {
            order.reverse();
        }
        for name in order {
            std::fs::write(etc.join(name), name).unwrap();
        }
        let image = image_dir.path().join(format!("{index}.img"));
        File::create(&image).unwrap().set_len(layout.size).unwrap();
        write_root(tree.path(), &image, &layout, &ids, 1_754_697_600).unwrap();
        images.push(std::fs::read(&image).unwrap());
    }
    assert!(images[0] == images[1], "the root file systems differ");
}

#[test]
fn partitions_are_aligned_and_fill_the_disk() {
    let layout = DiskLayout::new(2048 * MIB).unwrap();
    assert_eq!(layout.bios_boot.start_sector(), 2048);
    assert_eq!(layout.esp.start_sector(), 4096);
    assert_eq!(layout.root.start, 66 * MIB);
    assert_eq!(layout.root.start + layout.root.size + TAIL, layout.size);
    for extent in [layout.bios_boot, layout.esp, layout.root] {
        assert_eq!(extent.start % MIB, 0, "{extent:?} is MiB-aligned");
    }
    assert!(layout.esp.start >= layout.bios_boot.start + layout.bios_boot.size);
    assert!(layout.root.start >= layout.esp.start + layout.esp.size);
}

#[test]
fn sizes_are_checked() {
    assert!(DiskLayout::new(100 * MIB + 1).is_err());
    assert!(DiskLayout::new(64 * MIB).is_err());
    let tree = 900 * MIB;
    let default = DiskLayout::for_tree(tree, None).unwrap();
    assert_eq!(default.size % (64 * MIB), 0);
    assert!(default.root.size >= DiskLayout::root_minimum(tree) + 512 * MIB);
    let error = DiskLayout::for_tree(tree, Some(1024 * MIB)).unwrap_err();
    assert!(error.to_string().contains("--disk-size"), "{error}");
    assert_eq!(
        DiskLayout::for_tree(tree, Some(4096 * MIB)).unwrap().size,
        4096 * MIB
    );
}

#[test]
fn ids_are_stable_and_distinct() {
    let a = DiskIds::derive("key-a");
    assert_eq!(a, DiskIds::derive("key-a"));
    assert_ne!(a.root_fs, DiskIds::derive("key-b").root_fs);
    let all = [a.disk, a.bios_boot, a.esp, a.root_partition, a.root_fs];
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), all.len());
    assert_eq!(a.esp_uuid().len(), 9);
    assert_eq!(&a.esp_uuid()[4..5], "-");
}

#[test]
fn the_sfdisk_script_names_every_partition() {
    let layout = DiskLayout::new(2048 * MIB).unwrap();
    let ids = DiskIds::derive("key");
    let script = layout.sfdisk_script(&ids);
    assert!(script.starts_with("label: gpt\n"));
    assert!(script.contains("start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649"));
    assert!(script.contains("start=4096, size=131072, type=C12A7328-"));
    assert!(script.contains(&format!(
        "start=135168, size={}, type=4F68BCE3-",
        (2048 - 67) * 2048
    )));
    assert_eq!(script.lines().count(), 6);
}

/// The size a tree is given on disk, entry kind by entry kind, and the same for a tree
/// whose folder once held many entries (its host blocks stay) and for a sparse file.
#[test]
fn a_trees_size_is_its_content_not_the_hosts_allocation() {
    use std::os::unix::fs::symlink;
    let make = |tree: &Path, grown: bool| {
        let etc = tree.join("etc");
        std::fs::create_dir(&etc).unwrap();
        if grown {
            for index in 0..2000 {
                std::fs::write(etc.join(format!("a-long-file-name-{index:04}")), "").unwrap();
            }
            for index in 0..2000 {
                std::fs::remove_file(etc.join(format!("a-long-file-name-{index:04}"))).unwrap();
            }
        }
        std::fs::write(etc.join("one"), "1").unwrap();
        let big = File::create(etc.join("big")).unwrap();
        if grown {
            big.set_len(5000).unwrap();
        } else {
            (&big).write_all(&[0; 5000]).unwrap();
        }
        std::fs::hard_link(etc.join("big"), etc.join("big-link")).unwrap();
        symlink("one", etc.join("short")).unwrap();
        symlink("x".repeat(60), etc.join("long")).unwrap();
    };
    let trees = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    make(trees[0].path(), false);
    make(trees[1].path(), true);
    let grown_folder = std::fs::metadata(trees[1].path().join("etc")).unwrap();
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&grown_folder) > 8,
        "the grown folder keeps its blocks on the host"
    );
    // Files: 4 KiB for `one`, 8 KiB for `big` (its link counted once), 4 KiB for the long
    // link. Folders: 2 blocks. Entries: the tree (8 + its name), etc (12), one (12),
    // big (12), big-link (16), short (16), long (12), within one block.
    let expected = 4096 + 8192 + 4096 + 2 * 4096 + 4096;
    for tree in &trees {
        assert_eq!(content_size(tree.path()).unwrap(), expected);
    }
}
