//! Rebuilds of the test cluster (root needed): what a rebuild reuses (every cached layer
//! and unchanged image) and what it redoes (an overlay edit, a damaged cached layer), and
//! what a failed or an invalid build leaves behind: nothing (stopped builds: `signals.rs`);
//! two builds in different environments, the second making its package layers anew, give
//! the same bytes, and `verify --rebuild`
//! names the file a changed artifact differs in.

mod support;

use std::path::Path;

use support::{fixture, run_image_tool};

#[test]
fn an_unchanged_rebuild_hits_every_cache_and_keeps_the_artifacts() {
    let fx = fixture();
    let _build = fx.lock();
    let before = std::fs::read_to_string(fx.cluster_out().join("SHA256SUMS")).unwrap();
    let output = fx.build(&["--role", "db", "--role", "portal"], None);
    assert!(output.status.success(), "{}", output.stderr);
    for stage in ["base layer", "db: package layer", "portal: package layer"] {
        assert!(
            output.hit_cache(stage),
            "{stage} was not a cache hit:\n{}",
            output.stderr
        );
    }
    assert_eq!(
        output.stderr.matches("unchanged, kept").count(),
        2,
        "{}",
        output.stderr
    );
    assert_eq!(
        before,
        std::fs::read_to_string(fx.cluster_out().join("SHA256SUMS")).unwrap()
    );

    let plan = fx.plan("db");
    assert_eq!(plan["base"]["cached"], true);
    assert_eq!(plan["roles"][0]["layer"]["cached"], true);

    // --quiet: nothing on stderr when nothing goes wrong.
    let quiet = fx.build(&["--role", "db", "--quiet"], None);
    assert!(quiet.status.success(), "{}", quiet.stderr);
    assert_eq!(quiet.stderr, "", "--quiet said something");
}

#[test]
fn an_overlay_change_rebuilds_the_image_but_no_package_layer() {
    let fx = fixture();
    let _build = fx.lock();
    let data = support::data_copy();
    std::fs::write(
        data.path().join("overlays/common/etc/motd"),
        "changed overlay\n",
    )
    .unwrap();
    let output = fx.build(&["--role", "portal"], Some(data.path()));
    assert!(output.status.success(), "{}", output.stderr);
    assert!(
        output.hit_cache("portal: package layer"),
        "{}",
        output.stderr
    );
    assert!(
        !output.stderr.contains("unchanged, kept"),
        "the image must be rebuilt:\n{}",
        output.stderr
    );
    let tree = fx.extracted("portal");
    assert_eq!(
        std::fs::read_to_string(tree.path().join("etc/motd")).unwrap(),
        "changed overlay\n"
    );
    // Put the project's own overlay back for the other tests; --verbose shows what the
    // tools print under their stage (systemctl enabling the role's units).
    let output = fx.build(&["--role", "portal", "--verbose"], None);
    assert!(output.status.success(), "{}", output.stderr);
    assert!(
        output
            .stderr
            .lines()
            .any(|line| line.starts_with("  portal: overlay: ") && line.contains("symlink")),
        "{}",
        output.stderr
    );
}

/// A cached layer with a file cut short and one removed is found damaged by its digest,
/// said so, and built again, never used, once, while a second build on the same cache
/// waits for it or finds it built; the new layer is whole.
#[test]
fn a_damaged_cached_layer_is_detected_and_built_again() {
    let fx = fixture();
    let _build = fx.lock();
    let licenses = fx.layer_tree("portal").join("usr/share/common-licenses");
    let gpl = std::fs::read(licenses.join("GPL-3")).unwrap();
    std::fs::write(licenses.join("GPL-3"), &gpl[..gpl.len() / 2]).unwrap();
    std::fs::remove_file(licenses.join("Apache-2.0")).unwrap();

    // Two builds on the one cache at once (publishing to two folders): one builds the
    // layer again, the other waits for it or finds it built; both succeed.
    let other_out = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let other = std::process::Command::new(env!("CARGO_BIN_EXE_r2a-image"))
        .args(["build", fx.manifest.to_str().unwrap(), "--role", "portal"])
        .args([
            "--format",
            "tar",
            "--out",
            other_out.path().to_str().unwrap(),
        ])
        .args(["--cache", fx.cache.to_str().unwrap()])
        .args(["--agent", env!("CARGO_BIN_EXE_r2a-node")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let output = fx.build(&["--role", "portal"], None);
    let other = other.wait_with_output().unwrap();
    let other_stderr = String::from_utf8_lossy(&other.stderr).into_owned();
    let both = format!("{}\n---\n{other_stderr}", output.stderr);
    assert!(output.status.success() && other.status.success(), "{both}");
    assert!(both.contains("cached layer damaged"), "{both}");
    // A build that made the layer ends its stage without "(cached".
    let built_layer = |stderr: &str| {
        stderr.lines().any(|line| {
            line.contains("portal: package layer")
                && line.contains(" done in ")
                && !line.contains("(cached")
        })
    };
    assert!(
        built_layer(&output.stderr) ^ built_layer(&other_stderr),
        "the layer is built once: {both}"
    );
    assert_eq!(std::fs::read(licenses.join("GPL-3")).unwrap(), gpl);
    assert!(licenses.join("Apache-2.0").is_file());

    let again = fx.build(&["--role", "portal"], None);
    assert!(again.status.success(), "{}", again.stderr);
    assert!(again.hit_cache("portal: package layer"), "{}", again.stderr);
}

#[test]
fn a_failed_build_leaves_no_partial_artifact_and_no_work_tree() {
    let fx = fixture();
    let _build = fx.lock();
    let before = std::fs::read_to_string(fx.cluster_out().join("SHA256SUMS")).unwrap();
    let data = support::data_copy();
    // A file owned by a user the image does not have fails the overlay stage.
    let role = data.path().join("roles/portal.toml");
    let text = std::fs::read_to_string(&role).unwrap()
        + "\n[[files]]\npath = \"/etc/hosts\"\nmode = \"0644\"\nowner = \"no-such-user\"\n";
    std::fs::write(&role, text).unwrap();
    let output = fx.build(&["--role", "portal"], Some(data.path()));
    assert!(!output.status.success());
    assert!(
        output
            .stderr
            .contains("user `no-such-user` does not exist in the image"),
        "{}",
        output.stderr
    );
    assert_eq!(
        before,
        std::fs::read_to_string(fx.cluster_out().join("SHA256SUMS")).unwrap()
    );
    let leftovers = support::hidden_entries(&fx.cluster_out());
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(
        std::fs::read_dir(fx.cache.join("work")).unwrap().count(),
        0,
        "work trees are removed"
    );
}

/// A build writes r2a.lock beside the manifest: every layer's packages with version and
/// sha256. `build --locked` takes the cached layers that match it, and refuses, before
/// any work and naming the package, a lock with one version changed: for a cached layer
/// (it holds another version) and for a layer it would build (the mirror gives another);
/// `plan` shows the same.
#[test]
fn a_locked_build_follows_the_lock_and_refuses_one_the_sources_do_not_match() {
    let fx = fixture();
    let _build = fx.lock();
    let path = fx.manifest.with_file_name("r2a.lock");
    let written = std::fs::read_to_string(&path).unwrap();
    let lock: r2a::lock::Lock = toml::from_str(&written).unwrap();
    // The boot tools' layer is there once a build made a format that boots.
    let names: Vec<&str> = lock.layers.iter().map(|l| l.name.as_str()).collect();
    let images: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| *n != "boot-tools")
        .collect();
    assert_eq!(images, ["base", "db", "portal"]);
    if let Some(tools) = lock.layers.iter().find(|l| l.name == "boot-tools") {
        assert!(
            tools
                .packages
                .iter()
                .any(|p| p.name == "grub-efi-amd64-bin"),
            "{tools:?}"
        );
    }
    let index_of = |name: &str| lock.layers.iter().position(|l| l.name == name).unwrap();
    let base = &lock.layers[index_of("base")].packages;
    let bash = base
        .iter()
        .find(|p| p.name == "bash")
        .expect("bash is locked");
    assert!(
        bash.sha256.len() == 64 && bash.version.starts_with("5."),
        "{bash:?}"
    );
    let portal = &lock.layers[index_of("portal")].packages;
    let vendor = portal
        .iter()
        .find(|p| p.name == "softswitch-portal")
        .unwrap();
    assert_eq!(vendor.sha256.len(), 64, "{vendor:?}");
    assert!(
        !portal.iter().any(|p| p.name == "bash"),
        "a role locks what it adds"
    );

    let locked = fx.build(&["--role", "portal", "--locked"], None);
    assert!(locked.status.success(), "{}", locked.stderr);
    assert!(
        locked.stderr.contains("layers as locked"),
        "{}",
        locked.stderr
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), written);

    let sums = std::fs::read_to_string(fx.cluster_out().join("SHA256SUMS")).unwrap();
    let moved = |layer: usize, package: &str| {
        let mut lock = lock.clone();
        let entry = lock.layers[layer]
            .packages
            .iter_mut()
            .find(|p| p.name == package)
            .unwrap();
        entry.version = "0.0-r2a-test".into();
        toml::to_string(&lock).unwrap()
    };
    // (which package moved, the layer to damage so that it is built, what is said)
    let portal_layer = index_of("portal");
    let cases = [
        (
            moved(index_of("base"), "bash"),
            false,
            "base: bash 0.0-r2a-test (amd64) is locked; the cached layer has 5.",
        ),
        (
            moved(portal_layer, "haproxy"),
            true,
            "portal: haproxy 0.0-r2a-test (amd64) is locked; the mirror has ",
        ),
    ];
    let stray = fx.layer_tree("portal").join("etc/r2a-lock-stray");
    for (text, damage, expected) in cases {
        std::fs::write(&path, &text).unwrap();
        if damage {
            std::fs::write(&stray, "makes the layer one to build\n").unwrap();
        }
        let refused = fx.build(&["--role", "portal", "--locked"], None);
        assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
        assert!(refused.stderr.contains(expected), "{}", refused.stderr);
        assert!(
            refused.stderr.contains("nothing was built"),
            "{}",
            refused.stderr
        );
        assert!(
            !refused.stderr.contains("r2a-image: portal:"),
            "no stage ran: {}",
            refused.stderr
        );
        let plan = run_image_tool(
            &[
                "plan",
                fx.manifest.to_str().unwrap(),
                "--cache",
                fx.cache.to_str().unwrap(),
                "--role",
                "portal",
            ],
            None,
        );
        assert!(plan.status.success(), "{}", plan.stderr);
        assert!(
            plan.stdout
                .contains("a build would not install what it locks")
                && plan.stdout.contains(expected),
            "{}",
            plan.stdout
        );
        assert_eq!(
            std::fs::read_to_string(fx.cluster_out().join("SHA256SUMS")).unwrap(),
            sums
        );
    }
    std::fs::remove_file(&stray).unwrap();
    std::fs::write(&path, &written).unwrap();
}

/// Two builds of the portal role in every format, and the seeds of every node, give the
/// same bytes in every file (the tarball, the raw and qcow2 disks, the ISO, the PXE set,
/// the SBOM, the seeds), the second under another umask, time zone, locale and host name,
/// with the cache at another path and the package layers made anew; and the portal's
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
    // The portal's artifacts and every node's seed, by path under out/<cluster>/.
    let files = |out: &Path| -> Vec<(String, String)> {
        let cluster = out.join("r2a-test");
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
    assert!(differ.is_empty(), "these differ: {differ:?}");
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
            first.path().join("r2a-test").join(file),
            beside_db.path().join("r2a-test").join(file),
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

#[test]
fn invalid_input_exits_2_and_writes_nothing() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("bad.toml");
    std::fs::write(
        &manifest,
        std::fs::read_to_string(&fx.manifest)
            .unwrap()
            .replace("role = \"portal\"", "role = \"portl\""),
    )
    .unwrap();
    let out = dir.path().join("out");
    let output = run_image_tool(
        &[
            "build",
            manifest.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--cache",
            fx.cache.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(2), "{}", output.stderr);
    assert!(
        output.stderr.contains("bad.toml:") && output.stderr.contains("unknown role `portl`"),
        "{}",
        output.stderr
    );
    assert!(!out.exists(), "nothing may be written for invalid input");
}
