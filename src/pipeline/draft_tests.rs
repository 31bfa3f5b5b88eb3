//! Tests of the overlay merge: the decision for each change against what lies below, as a
//! table, and a merge of a hand-made upper folder into a linked tree (as root: whiteouts
//! are device nodes and overlayfs's attributes live in the `trusted` namespace).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

#[test]
fn each_change_clears_and_then_acts_as_overlayfs_means() {
    use {Below as B, Change as C, Then as T};
    let table = [
        (C::Whiteout, B::Nothing, false, T::Nothing),
        (C::Whiteout, B::Entry, true, T::Nothing),
        (C::Whiteout, B::Folder, true, T::Nothing),
        (C::OpaqueFolder, B::Nothing, false, T::Folder),
        (C::OpaqueFolder, B::Entry, true, T::Folder),
        (C::OpaqueFolder, B::Folder, true, T::Folder),
        (C::Folder, B::Nothing, false, T::Folder),
        (C::Folder, B::Entry, true, T::Folder),
        (C::Folder, B::Folder, false, T::Folder),
        (C::Entry, B::Nothing, false, T::MoveIn),
        (C::Entry, B::Entry, true, T::MoveIn),
        (C::Entry, B::Folder, true, T::MoveIn),
    ];
    for (change, below, clear, then) in table {
        assert_eq!(
            merge_step(change, below),
            (clear, then),
            "{change:?} over {below:?}"
        );
    }
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn whiteout(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).unwrap();
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn merging_an_upper_folder_applies_every_change_and_leaves_the_parent_alone() {
    let scratch = tempfile::tempdir().unwrap();
    let parent = scratch.path().join("parent");
    write(&parent.join("etc/kept"), "kept");
    write(&parent.join("etc/removed"), "removed");
    write(&parent.join("etc/changed"), "before");
    write(&parent.join("opt/old/file"), "old");
    write(&parent.join("srv"), "a file that becomes a folder");
    std::fs::create_dir_all(parent.join("var/gone/deep")).unwrap();

    let upper = scratch.path().join("upper");
    std::fs::create_dir_all(upper.join("etc")).unwrap();
    std::fs::set_permissions(upper.join("etc"), std::fs::Permissions::from_mode(0o750)).unwrap();
    set_xattr(&upper.join("etc"), "trusted.overlay.impure", b"y");
    whiteout(&upper.join("etc/removed"));
    write(&upper.join("etc/changed"), "after");
    write(&upper.join("etc/new"), "new");
    set_xattr(
        &upper.join("etc/changed"),
        "trusted.overlay.origin",
        b"\x00handle",
    );
    std::fs::create_dir_all(upper.join("opt/old")).unwrap();
    set_xattr(&upper.join("opt/old"), OPAQUE_XATTR, b"y");
    write(&upper.join("opt/old/fresh"), "fresh");
    write(&upper.join("srv/inside"), "inside");
    std::fs::create_dir_all(upper.join("var")).unwrap();
    whiteout(&upper.join("var/gone"));
    whiteout(&upper.join("never-was"));

    let tree = scratch.path().join("tree");
    fsutil::link_tree(&parent, &tree).unwrap();
    let merged = merge_changes(&upper, &tree).unwrap();

    assert_eq!(read(&tree.join("etc/kept")), "kept");
    assert!(!tree.join("etc/removed").exists());
    assert_eq!(read(&tree.join("etc/changed")), "after");
    assert_eq!(read(&tree.join("etc/new")), "new");
    assert!(
        !tree.join("opt/old/file").exists(),
        "an opaque folder hides the old content"
    );
    assert_eq!(read(&tree.join("opt/old/fresh")), "fresh");
    assert_eq!(read(&tree.join("srv/inside")), "inside");
    assert!(!tree.join("var/gone").exists());
    assert!(tree.join("var").is_dir());
    assert!(!tree.join("never-was").exists());
    let etc = tree.join("etc").symlink_metadata().unwrap();
    assert_eq!(
        etc.mode() & 0o7777,
        0o750,
        "a folder takes the change's mode"
    );
    for path in ["etc", "etc/changed"] {
        assert_eq!(
            xattr_names(&tree.join(path)).unwrap(),
            Vec::<Vec<u8>>::new(),
            "overlayfs's attributes of {path} stay out of the layer"
        );
    }
    assert_eq!(merged, 12);

    // The parent is as it was, and shares the files no change touched.
    assert_eq!(read(&parent.join("etc/changed")), "before");
    assert_eq!(read(&parent.join("etc/removed")), "removed");
    assert_eq!(read(&parent.join("opt/old/file")), "old");
    assert!(parent.join("var/gone/deep").is_dir());
    assert_eq!(
        parent.join("etc/kept").metadata().unwrap().ino(),
        tree.join("etc/kept").metadata().unwrap().ino()
    );
}
