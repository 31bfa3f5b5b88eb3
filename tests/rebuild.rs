//! Rebuilds of the test cluster (root needed): what a rebuild reuses (every cached layer
//! and unchanged image) and what it redoes (an overlay edit, a damaged cached layer), and
//! what a failed or an invalid build leaves behind: nothing (stopped builds: `signals.rs`;
//! two builds giving the same bytes: `reproducible.rs`).

mod support;

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
    // Put the project's own overlay back for the other tests.
    let output = fx.build(&["--role", "portal"], None);
    assert!(output.status.success(), "{}", output.stderr);
}

/// A cached layer with a file cut short and one removed is found damaged by its digest,
/// said so, and built again, never used, once, while a second build on the same cache
/// waits for it or finds it built; the new layer is whole.
#[test]
fn a_damaged_cached_layer_is_detected_and_built_again() {
    let fx = fixture();
    let _build = fx.lock();
    // A layer shares the base's files as hard links: damage done inside a shared file
    // reaches every layer that has it (each then finds it). Here only the portal's layer is
    // damaged: a file of its own package cut short, one of the base's unlinked.
    let tree = fx.layer_tree("portal");
    let copyright = tree.join("usr/share/doc/haproxy/copyright");
    let text = std::fs::read(&copyright).unwrap();
    std::fs::write(&copyright, &text[..text.len() / 2]).unwrap();
    std::fs::remove_file(tree.join("usr/share/common-licenses/Apache-2.0")).unwrap();

    // Two builds on the one cache at once (publishing to two folders): one builds the
    // layer again, the other waits for it or finds it built; both succeed. Both are
    // verbose: the one that builds the layer shows apt's lines under the stage.
    let other_out = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let other = std::process::Command::new(env!("CARGO_BIN_EXE_r2a-image"))
        .args(["build", fx.manifest.to_str().unwrap(), "--role", "portal"])
        .args([
            "--verbose",
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
    let output = fx.build(&["--role", "portal", "--verbose"], None);
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
    let builder = if built_layer(&output.stderr) {
        &output.stderr
    } else {
        &other_stderr
    };
    assert!(
        builder.lines().any(
            |line| line.starts_with("  portal: package layer ") && line.contains("Setting up ")
        ),
        "--verbose showed no line of apt's: {builder}"
    );
    assert_eq!(std::fs::read(&copyright).unwrap(), text);
    assert!(tree.join("usr/share/common-licenses/Apache-2.0").is_file());
    // The damage stayed in the portal's layer: the base and the db layer are still whole.
    let db = fx.build(&["--role", "db"], None);
    for stage in ["base layer", "db: package layer"] {
        assert!(db.hit_cache(stage), "{stage}: {}", db.stderr);
    }

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
