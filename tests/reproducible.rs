//! Reproducible artifacts (root needed): two builds of one role in every format, and the
//! seeds, give the same bytes in different environments with the package layers made
//! anew and beside another role; `verify --rebuild` names the file a changed artifact
//! differs in.

mod support;

use std::path::Path;

use support::{fixture, run_image_tool};

/// Two builds of the portal role in every format, and the seeds of every node, give the
/// same bytes in every file (the tarball, the raw and qcow2 disks, the ISO, the PXE set,
/// the SBOM, the seeds), the second under another umask, time zone, locale and host name,
/// with the cache at another path and the package layers made anew (the first build's
/// portal layer was made side by side with db's, the second's alone); and the portal's
/// tarball and SBOM are the same bytes again when db is built in the same run.
#[test]
fn two_builds_in_different_environments_give_the_same_bytes() {
    let fx = fixture();
    let _build = fx.lock();
    let formats = ["tar", "raw", "qcow2", "iso", "pxe"].map(|f| ["--format", f]);
    // `script` runs the r2a-image command it is given as its arguments.
    let run = |script: &str, args: &[&str]| {
        let output = std::process::Command::new("sh")
            .args(["-c", script, "r2a-image", env!("CARGO_BIN_EXE_r2a-image")])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{args:?}: {stderr}");
    };
    let manifest = fx.manifest.to_str().unwrap();
    let build_and_seed = |out: &Path, cache: &Path, script: &str, extra: &[&str]| {
        let (out, cache) = (out.to_str().unwrap(), cache.to_str().unwrap());
        let mut build = vec!["build", manifest, "--role", "portal", "--out", out];
        build.extend(["--cache", cache, "--agent", env!("CARGO_BIN_EXE_r2a-node")]);
        build.extend(formats.iter().flatten());
        build.extend(extra);
        run(script, &build);
        run(script, &["seed", manifest, "--all", "--out", out]);
    };
    let first = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    build_and_seed(first.path(), &fx.cache, "exec \"$@\"", &[]);
    // The second: the cache moved (and moved back, whatever happens), its package layers
    // made again from the packages (`--refresh`: the kernel's initramfs and everything
    // the packages' scripts generate made anew), and an environment that differs in
    // every way a build host can.
    let moved = fx.cache.with_file_name("r2a-test-cache-moved");
    let second = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    {
        let _back = support::MovedBack::new(&fx.cache, &moved);
        build_and_seed(
            second.path(),
            &moved,
            "umask 077; export TZ=Asia/Kathmandu LANG=de_DE.UTF-8 LC_ALL=de_DE.UTF-8; \
             exec unshare --uts sh -c 'hostname another-builder; exec \"$@\"' r2a-image \"$@\"",
            &["--refresh"],
        );
    }
    let cluster = |out: &Path| out.join("r2a-test");
    // The portal's artifacts and every node's seed, by path under out/<cluster>/.
    let files = |out: &Path| -> Vec<(String, String)> {
        let cluster = cluster(out);
        let mut files: Vec<(String, String)> = ["portal", "seeds"]
            .iter()
            .flat_map(|folder| walkdir::WalkDir::new(cluster.join(folder)))
            .map(Result::unwrap)
            .filter(|entry| entry.file_type().is_file())
            .map(|entry| {
                let name = entry
                    .path()
                    .strip_prefix(&cluster)
                    .unwrap()
                    .display()
                    .to_string();
                (name, r2a::hash::sha256_file(entry.path()).unwrap())
            })
            .collect();
        files.sort();
        files
    };
    let (one, two) = (files(first.path()), files(second.path()));
    let names: Vec<&str> = one.iter().map(|(name, _)| name.as_str()).collect();
    for expected in [
        "portal/rootfs.tar.gz",
        "portal/disk.raw",
        "portal/disk.qcow2",
        "portal/portal.iso",
        "portal/pxe/rootfs.cpio",
        "portal/sbom.spdx.json",
        "seeds/portal1.iso",
        "seeds/db1.iso",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} is missing: {names:?}"
        );
    }
    let differ: Vec<&str> = one
        .iter()
        .zip(&two)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.0.as_str())
        .collect();
    assert_eq!(one.len(), two.len(), "{one:?}\n{two:?}");
    assert!(
        differ.is_empty(),
        "these differ: {differ:?}\n{}",
        differ
            .iter()
            .map(|name| wherein(&cluster(first.path()), &cluster(second.path()), name))
            .collect::<String>()
    );
    // Built beside another role, in other formats, the portal's tarball and SBOM are the
    // same bytes: what a role's artifacts hold depends on that role's inputs only.
    let beside_db = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = beside_db.path().to_str().unwrap();
    let cache = fx.cache.to_str().unwrap();
    let agent = env!("CARGO_BIN_EXE_r2a-node");
    run(
        "exec \"$@\"",
        &[
            "build", manifest, "--role", "db", "--role", "portal", "--format", "tar", "--out", out,
            "--cache", cache, "--agent", agent,
        ],
    );
    for file in ["portal/rootfs.tar.gz", "portal/sbom.spdx.json"] {
        let (alone, beside) = (
            cluster(first.path()).join(file),
            cluster(beside_db.path()).join(file),
        );
        assert_eq!(
            r2a::hash::sha256_file(&alone).unwrap(),
            r2a::hash::sha256_file(&beside).unwrap(),
            "{file} changed when db was built in the same run"
        );
    }
    verify_rebuild_names_the_changed_file(fx, first.path());
}

/// `verify --rebuild` on the first build with one byte of `/etc/r2a/role.json` changed in
/// the tarball and in the raw disk: both are named down to that file, every other
/// artifact is the same bytes on rebuild, and the exit status says something differs.
fn verify_rebuild_names_the_changed_file(fx: &support::Fixture, out: &Path) {
    let portal = out.join("r2a-test/portal");
    let role_json = std::fs::read(
        support::unpacked(&portal.join("rootfs.tar.gz"))
            .path()
            .join("etc/r2a/role.json"),
    )
    .unwrap();
    let tarball = portal.join("rootfs.tar.gz");
    let tar = out.join("rootfs.tar");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(&tarball).unwrap()),
        &mut plain,
    )
    .unwrap();
    std::fs::write(&tar, plain).unwrap();
    support::search::flip_byte_in(&tar, &role_json, 10);
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&tarball).unwrap(),
        flate2::Compression::fast(),
    );
    std::io::copy(&mut std::fs::File::open(&tar).unwrap(), &mut encoder).unwrap();
    encoder.finish().unwrap();
    std::fs::remove_file(&tar).unwrap();
    support::search::flip_byte_in(&portal.join("disk.raw"), &role_json, 10);

    let verified = run_image_tool(
        &[
            "verify",
            fx.manifest.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--rebuild",
            "--cache",
            fx.cache.to_str().unwrap(),
            "--agent",
            env!("CARGO_BIN_EXE_r2a-node"),
        ],
        None,
    );
    assert_eq!(verified.status.code(), Some(1), "{}", verified.stderr);
    let differs = |artifact: &str| -> String {
        let prefix = format!("{artifact}: differs on rebuild; first difference: ");
        let line = verified
            .stderr
            .lines()
            .find_map(|line| line.strip_prefix(&prefix));
        line.unwrap_or_else(|| {
            panic!(
                "no difference reported for {artifact}:\n{}",
                verified.stderr
            )
        })
        .to_string()
    };
    assert_eq!(
        differs("portal/rootfs.tar.gz"),
        "etc/r2a/role.json (content, byte 10)"
    );
    let disk = differs("portal/disk.raw");
    assert!(
        disk.starts_with("partition-") && disk.ends_with(" > etc/r2a/role.json (content, byte 10)"),
        "{disk}"
    );
    for same in [
        "disk.qcow2",
        "portal.iso",
        "pxe/rootfs.cpio",
        "pxe/boot.ipxe",
        "sbom.spdx.json",
    ] {
        let line = format!("portal/{same}: same bytes on rebuild");
        assert!(
            verified.stdout.lines().any(|l| l == line),
            "{line}:\n{}",
            verified.stdout
        );
    }
    assert_eq!(
        support::hidden_entries(out),
        Vec::<std::ffi::OsString>::new(),
        "the rebuild's folder is left"
    );
}

/// Where the file `name` differs between the two folders: the tarball's entries (header
/// and content) and the SBOM's lines, the first 20 of each; other files' sizes.
fn wherein(one: &Path, two: &Path, name: &str) -> String {
    let parts = |folder: &Path| -> Vec<String> {
        let path = folder.join(name);
        if name.ends_with("rootfs.tar.gz") {
            let file = std::fs::File::open(&path).unwrap();
            let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(file));
            archive
                .entries()
                .unwrap()
                .map(|entry| {
                    let mut entry = entry.unwrap();
                    let header = format!("{:?}", entry.header());
                    let mut content = Vec::new();
                    std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
                    format!("{header} {}", r2a::hash::sha256_hex(&content))
                })
                .collect()
        } else if name.ends_with(".json") {
            std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect()
        } else {
            vec![format!("{} bytes", std::fs::metadata(&path).unwrap().len())]
        }
    };
    let (a, b) = (parts(one), parts(two));
    let only = |x: &[String], y: &[String]| -> Vec<String> {
        let y: std::collections::HashSet<&String> = y.iter().collect();
        x.iter()
            .filter(|part| !y.contains(part))
            .take(20)
            .cloned()
            .collect()
    };
    format!(
        "{name}: only in the first: {:#?}\nonly in the second: {:#?}\n",
        only(&a, &b),
        only(&b, &a)
    )
}
