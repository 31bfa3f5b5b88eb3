//! Looking into built images: a tarball unpacked, scripts run inside an unpacked tree, and
//! what its files say.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use r2a::pipeline::chroot::Chroot;

/// A rootfs.tar.gz unpacked into a temporary folder (owners kept).
pub fn unpacked(tarball: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let status = Command::new("tar")
        .args(["-xzf"])
        .arg(tarball)
        .args(["--numeric-owner", "-C"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "unpacking {}", tarball.display());
    dir
}

/// Runs a shell script inside an unpacked image, in a network namespace of its own (only
/// loopback: nothing a check connects to can be outside this machine); panics with its
/// output if it fails.
pub fn in_image(root: &Path, script: &str) {
    let lines = Mutex::new(Vec::new());
    let chroot = Chroot::new(root).with_isolated_network();
    // Refuse to run anything unless the namespace really has no link but loopback.
    let guarded = format!(
        "test \"$(ip -o link show | wc -l)\" = 1 || {{ echo 'not in an isolated network namespace' >&2; exit 99; }}\n{script}"
    );
    let result = chroot.run(&["sh", "-ec", &guarded], &|line| {
        lines.lock().unwrap().push(line.to_string())
    });
    if let Err(error) = result {
        panic!(
            "`{script}` failed in the image: {error:#}\n{}",
            lines.into_inner().unwrap().join("\n")
        );
    }
}

/// The uid of `user` in the image's /etc/passwd.
pub fn passwd_uid(root: &Path, user: &str) -> u32 {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    passwd
        .lines()
        .find_map(|line| {
            line.strip_prefix(&format!("{user}:x:"))
                .and_then(|rest| rest.split(':').next()?.parse().ok())
        })
        .unwrap()
}

/// Asserts that a folder of the image is empty or absent.
pub fn assert_empty_or_absent(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        let names: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert!(names.is_empty(), "{} holds {names:?}", dir.display());
    }
}
