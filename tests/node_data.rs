//! `[build] node_data`, both settings, with every artifact searched for every secret of
//! the cluster (inside what it packs: gzip, qcow2, ISO, squashfs, cpio). With node data
//! in the image (the test cluster as it is), the portal's images in every format carry
//! its secrets and only root reads them; seeds carry none. With `node_data = "seed"`, no
//! role image and no shared PXE file holds a secret and all are world-readable; each seed
//! and each node's PXE archive holds only what its node needs and only root reads it; the
//! role image is the same bytes when the manifest lists one more node, whose seed is then
//! written without a rebuild; and portal1 boots from its seed drive and over PXE in QEMU,
//! and in the harness, its files and secrets in place.

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use r2a::cluster::Harness;
use r2a::cluster::status::AgentStatus;
use r2a::project::{Project, SecretsMode};
use support::search::Needles;
use support::{
    Lab, assert_nothing_left, derived_manifest, fixture, healthy_boot_report, repo, run_image_tool,
};

const BOOT_LIMIT: Duration = Duration::from_secs(300);
/// Every format.
const FORMATS: [&str; 5] = ["tar", "raw", "qcow2", "iso", "pxe"];
/// The portal's artifacts that hold its system, one per format.
const IMAGES: [&str; 5] = [
    "rootfs.tar.gz",
    "disk.raw",
    "disk.qcow2",
    "portal.iso",
    "pxe/rootfs.cpio",
];

#[test]
fn secrets_stay_out_of_role_images_under_node_data_seed() {
    let fx = fixture();
    let _build = fx.lock();
    let started = std::time::Instant::now();
    let phase = |name: &str| eprintln!("{name}: done at {:.0?}", started.elapsed());
    let needles = Needles::of(&fx.secrets());
    let portal_secrets = secrets_of_role(&fx.manifest, "portal");
    assert!(!portal_secrets.is_empty(), "the portal role lists secrets");

    // node_data = "image": the role images carry the secrets, readable by root only.
    let mut args = vec!["--role", "portal"];
    args.extend(FORMATS.iter().flat_map(|format| ["--format", format]));
    let built = fx.build(&args, None);
    assert!(built.status.success(), "{}", built.stderr);
    let seeded = run_image_tool(
        &[
            "seed",
            fx.manifest.to_str().unwrap(),
            "--all",
            "--out",
            fx.out.to_str().unwrap(),
        ],
        None,
    );
    assert!(seeded.status.success(), "{}", seeded.stderr);
    let cluster_out = fx.cluster_out();
    for artifact in role_artifacts(&cluster_out, "portal") {
        assert_eq!(mode(&artifact), 0o600, "{}", artifact.display());
    }
    for image in IMAGES {
        let artifact = cluster_out.join("portal").join(image);
        let found = names(needles.find_in(&artifact));
        assert_eq!(found, portal_secrets, "{}", artifact.display());
    }
    for seed in files_in(&cluster_out.join("seeds")) {
        assert_eq!(
            needles.find_in(&seed),
            BTreeSet::new(),
            "{}",
            seed.display()
        );
        assert_eq!(mode(&seed), 0o644, "{}", seed.display());
    }

    phase("image setting searched");
    // node_data = "seed", the same cluster under another name (same secrets).
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("r2a-node-data");
    let manifest = derived_manifest(fx, &dir, seed_setting);
    let out = dir.join("out");
    build(fx, &manifest, &out, &["portal"], &FORMATS);
    // The db role's tarball: the image of a role whose seeds carry node keys.
    build(fx, &manifest, &out, &["db"], &["tar"]);
    let seeded_out = out.join("r2a-seeded");
    support::seeds::write_seeds(&manifest, &out, &["--all"]);
    for role in ["portal", "db"] {
        for artifact in role_artifacts(&seeded_out, role) {
            let private = artifact.extension().is_some_and(|ext| ext == "cpio")
                && artifact.parent().unwrap().ends_with("pxe/nodes");
            if private {
                continue;
            }
            assert_eq!(
                needles.find_in(&artifact),
                BTreeSet::new(),
                "{}",
                artifact.display()
            );
            assert_eq!(mode(&artifact), 0o644, "{}", artifact.display());
        }
    }
    phase("seed setting built and images searched");
    // Each seed: its node's secrets only, readable by root only.
    let project = Project::load(&repo(), &manifest, SecretsMode::ReadOnly).unwrap();
    for node in &project.cluster.nodes {
        let seed = seeded_out.join("seeds").join(format!("{}.iso", node.name));
        let found = names(needles.find_in(&seed));
        let mut allowed = secrets_of_role(&manifest, &node.role);
        if project.roles.get(&node.role).unwrap().tls {
            allowed.insert(format!("pki.nodes.{}.key", node.name));
        }
        assert!(
            found.is_subset(&allowed),
            "{}: {found:?} beyond {allowed:?}",
            node.name
        );
        assert_eq!(mode(&seed), 0o600, "{}", seed.display());
        if node.role == "db" {
            assert!(
                found.contains(&format!("pki.nodes.{}.key", node.name)),
                "{found:?}"
            );
        }
    }
    // portal1's PXE archive: its secrets, root only.
    let archive = seeded_out.join("portal/pxe/nodes/52-54-00-77-00-31.cpio");
    let found = names(needles.find_in(&archive));
    assert_eq!(found, portal_secrets, "{}", archive.display());
    assert_eq!(mode(&archive), 0o600);

    phase("seeds searched");
    // One more portal node: the role image is the same bytes, the new node's seed is
    // written without a rebuild.
    let grown = derived_manifest(fx, &dir.join("grown"), |text| {
        format!(
            "{}\n[[nodes]]\nname = \"portal2\"\nrole = \"portal\"\naddress = \"10.77.0.32\"\n",
            seed_setting(text)
        )
    });
    let grown_out = dir.join("grown/out");
    build(fx, &grown, &grown_out, &["portal"], &["tar", "raw"]);
    for file in ["rootfs.tar.gz", "disk.raw"] {
        let (before, after) = (
            seeded_out.join("portal").join(file),
            grown_out.join("r2a-seeded/portal").join(file),
        );
        assert!(
            same_bytes(&before, &after),
            "portal/{file} changed when the manifest gained a node"
        );
    }
    support::seeds::write_seeds(&grown, &out, &["--node", "portal2"]);
    let seed = seeded_out.join("seeds/portal2.iso");
    assert_eq!(names(needles.find_in(&seed)), portal_secrets);

    phase("grown build compared");
    // portal1 boots three ways at once: from its seed drive and over PXE in QEMU, and in
    // the harness.
    std::thread::scope(|scope| {
        for format in ["qcow2", "pxe"] {
            let (manifest, out) = (&manifest, &out);
            scope.spawn(move || boot_seeded_portal_in_qemu(manifest, out, format));
        }
        scope.spawn(|| boot_seeded_portal_in_the_harness(&project, &out, &portal_secrets));
    });
    phase("boots");
    assert_nothing_left(
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("r2a-node-data-state"),
        "r2a-seeded",
        &[&dir],
    );
}

/// portal1 on a machine (QEMU, BIOS): the qcow2 with its seed drive, which the agent
/// mounts and reads, or PXE, where iPXE chains to the node's script, which names it on
/// the kernel command line and adds nodes/<mac>.cpio for the initramfs to hand on.
fn boot_seeded_portal_in_qemu(manifest: &Path, out: &Path, format: &str) {
    let (origin, identified_by) = match format {
        "qcow2" => ("r2a-node.tar on /dev/", "found by cloud-init NoCloud data"),
        _ => ("/run/r2a/node-data.tar", "found by kernel command line"),
    };
    let booted = run_image_tool(
        &[
            "boot",
            manifest.to_str().unwrap(),
            "--role",
            "portal",
            "--out",
            out.to_str().unwrap(),
            "--check",
            "--timeout",
            "900",
            "--format",
            format,
            "--firmware",
            "bios",
            "--accel",
            "tcg",
            "--memory",
            "3072",
        ],
        None,
    );
    let report = healthy_boot_report(&booted, "portal1");
    assert_eq!(report.addresses, ["10.77.0.31/24"], "{format}: {report:?}");
    let console_line = |text: &str| {
        booted
            .stdout
            .lines()
            .find(|line| line.contains(text))
            .unwrap_or_else(|| panic!("{format}: no `{text}` on the console"))
            .to_string()
    };
    let staged = console_line("r2a-node: node data: ");
    assert!(staged.contains(origin), "{format}: {staged}");
    console_line(identified_by);
    if format == "pxe" {
        let command_line = console_line("Command line: ");
        assert!(
            command_line.contains("boot=r2a r2a.node=portal1 "),
            "{command_line}"
        );
        assert!(
            command_line.contains(" initrd=52-54-00-77-00-31.cpio"),
            "{command_line}"
        );
        assert!(!command_line.contains("r2a.medium"), "{command_line}");
    }
}

/// portal1 in the harness, its node files and secrets from its published seed.
fn boot_seeded_portal_in_the_harness(
    project: &Project,
    out: &Path,
    portal_secrets: &BTreeSet<String>,
) {
    let state = Path::new(env!("CARGO_TARGET_TMPDIR")).join("r2a-node-data-state");
    let harness = Harness::new(&project.cluster, out, &state).unwrap();
    harness.down().unwrap();
    let lab = Lab(harness);
    let harness = &lab.0;
    harness.up(&["portal1"]).unwrap();
    let system = harness
        .wait_booted("portal1", BOOT_LIMIT)
        .unwrap_or_else(|error| panic!("portal1 did not boot: {error:#}"));
    assert!(
        system == "running" || system == "degraded",
        "portal1: {system}"
    );
    let status = exec(harness, &["r2a-node", "status", "--json"]);
    let agent = AgentStatus::parse(&status).unwrap();
    for step in ["node-files", "hostname", "hosts", "network", "firewall"] {
        assert_eq!(agent.step_state(step), Some("done"), "{step}:\n{status}");
    }
    let env = exec(harness, &["stat", "-c", "%a %U", "/etc/r2a/database.env"]);
    assert_eq!(env.trim(), "600 root");
    let env = exec(harness, &["cat", "/etc/r2a/database.env"]);
    let password = project
        .secrets
        .values()
        .find(|(name, _)| portal_secrets.contains(*name))
        .map(|(_, value)| value.expose().to_string())
        .unwrap();
    assert!(
        env.contains(&password),
        "database.env lacks the portal's password"
    );
    let hosts = exec(harness, &["cat", "/etc/hosts"]);
    assert!(
        hosts.contains("10.77.0.11") && hosts.contains("db1"),
        "{hosts}"
    );
    let journal = exec(
        harness,
        &["journalctl", "-b", "-u", "r2a-early", "--no-pager"],
    );
    assert!(
        journal.contains("node data: ") && journal.contains("r2a-node.tar"),
        "{journal}"
    );
    harness.down().unwrap();
}

/// The fixture's manifest under another cluster name, with node data in the seeds.
fn seed_setting(text: String) -> String {
    let renamed = text.replacen("name = \"r2a-test\"", "name = \"r2a-seeded\"", 1);
    assert_ne!(renamed, text);
    support::seeds::node_data_seed(renamed)
}

fn build(fx: &support::Fixture, manifest: &Path, out: &Path, roles: &[&str], formats: &[&str]) {
    let mut args = vec![
        "build",
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(["--cache", fx.cache.to_str().unwrap()]);
    args.extend(["--agent", env!("CARGO_BIN_EXE_r2a-node")]);
    args.extend(roles.iter().flat_map(|role| ["--role", role]));
    args.extend(formats.iter().flat_map(|format| ["--format", format]));
    let built = run_image_tool(&args, None);
    assert!(built.status.success(), "{}", built.stderr);
}

/// The secrets a role's templates see.
fn secrets_of_role(manifest: &Path, role: &str) -> BTreeSet<String> {
    let project = Project::load(&repo(), manifest, SecretsMode::ReadOnly).unwrap();
    let role = project.roles.get(role).unwrap();
    project
        .roles
        .base
        .secrets
        .iter()
        .chain(&role.secrets)
        .cloned()
        .collect()
}

/// Every file a role's build published (the SBOM aside: it lists packages).
fn role_artifacts(cluster_out: &Path, role: &str) -> Vec<PathBuf> {
    files_in(&cluster_out.join(role))
        .into_iter()
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name != "sbom.spdx.json")
        })
        .collect()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .map(Result::unwrap)
        .filter(|entry| entry.file_type().is_file())
        .map(|entry| entry.into_path())
        .collect();
    assert!(!files.is_empty(), "{} holds no file", dir.display());
    files
}

fn names(found: BTreeSet<(String, String)>) -> BTreeSet<String> {
    found.into_iter().map(|(name, _)| name).collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    r2a::hash::sha256_file(a).unwrap() == r2a::hash::sha256_file(b).unwrap()
}

fn exec(harness: &Harness, argv: &[&str]) -> String {
    let output = harness.exec("portal1", argv).unwrap();
    assert!(
        output.status.success(),
        "{argv:?} in portal1 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
