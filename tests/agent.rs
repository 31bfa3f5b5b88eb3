//! The `r2a-node` binary on an image-like tree: the files the builder really writes
//! (cluster.json and role.json serialized from the reference manifest and roles), the
//! command line, exit codes and what `status` prints.

use std::path::Path;
use std::process::{Command, Output};

use r2a::manifest::Cluster;
use r2a::role::RoleSet;

/// A temp dir laid out like the db image of the reference cluster.
struct Image {
    dir: tempfile::TempDir,
}

impl Image {
    fn reference_db() -> Image {
        let project = Path::new(env!("CARGO_MANIFEST_DIR"));
        let roles = RoleSet::load(&project.join("roles")).expect("loading roles/");
        let cluster = Cluster::load(&project.join("examples/reference-cluster.toml"), &roles)
            .expect("loading the reference manifest");
        let image = Image {
            dir: tempfile::tempdir().expect("creating a temp dir"),
        };
        let role = roles.get("db").expect("the db role");
        image.write(
            "etc/r2a/cluster.json",
            &serde_json::to_string(&cluster).unwrap(),
        );
        image.write("etc/r2a/role.json", &serde_json::to_string(role).unwrap());
        image.write("etc/nftables.conf", "table inet r2a {}\n");
        image.write("etc/hostname", "debian\n");
        image
    }

    fn write(&self, path: &str, text: &str) {
        let path = self.dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(path)).unwrap()
    }

    fn r2a_node(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_r2a-node"))
            .arg("--root")
            .arg(self.dir.path())
            .args(args)
            .output()
            .expect("running r2a-node")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn identify_reads_what_the_builder_serializes() {
    let image = Image::reference_db();
    image.write("proc/cmdline", "console=ttyS0 r2a.node=pg-node-02\n");
    let output = image.r2a_node(&["identify"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert_eq!(stdout.lines().next(), Some("pg-node-02"), "{stdout}");
    assert!(
        stdout.contains("address 192.168.10.32, role db, cluster ring2all"),
        "{stdout}"
    );
}

#[test]
fn a_node_of_another_role_exits_with_2_and_says_why() {
    let image = Image::reference_db();
    image.write(
        "var/lib/cloud/seed/nocloud/meta-data",
        "instance-id: x\nr2a-node: fs-node-01\n",
    );
    let output = image.r2a_node(&["identify"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("r2a-node: configuration error: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("names node fs-node-01, a fs node, but this is the db image"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pg-node-01, pg-node-02, pg-node-03"),
        "{stderr}"
    );
}

#[test]
fn status_of_a_fresh_image_lists_every_step_as_pending() {
    let image = Image::reference_db();
    let output = image.r2a_node(&["status", "--json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["identity"], serde_json::Value::Null);
    let steps: Vec<(&str, &str)> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| {
            (
                step["step"].as_str().unwrap(),
                step["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("node-files", "pending"),
            ("hostname", "pending"),
            ("hosts", "pending"),
            ("network", "pending"),
            ("firewall", "pending"),
            ("data-disk", "pending"),
            ("grow-root", "pending"),
        ]
    );
}

#[test]
fn firstboot_on_a_tree_writes_files_but_runs_no_command() {
    let image = Image::reference_db();
    image.write("proc/cmdline", "r2a.node=pg-node-03\n");
    image.write(
        "usr/lib/r2a/nodes/pg-node-03/etc/default/etcd",
        "ETCD_NAME=pg-node-03\n",
    );
    let output = image.r2a_node(&["firstboot"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stdout));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("step firewall: not running `nft list table inet r2a`"),
        "{stderr}"
    );

    assert_eq!(image.read("etc/hostname"), "pg-node-03\n");
    assert_eq!(image.read("etc/default/etcd"), "ETCD_NAME=pg-node-03\n");
    assert!(
        image
            .read("etc/hosts")
            .contains("192.168.10.36 fs-node-03.pbx.example.com fs-node-03\n")
    );
    let network = image.read("etc/systemd/network/05-r2a.network");
    assert!(
        network.contains("\nAddress=192.168.10.33/24\n"),
        "{network}"
    );
    assert!(network.contains("\nName=en* eth* host0\n"), "{network}");

    let status = image.r2a_node(&["status"]);
    let table = text(&status.stdout);
    assert!(
        table.starts_with("node pg-node-03 (192.168.10.33) of cluster ring2all, role db"),
        "{table}"
    );
    assert!(table.contains("\nnetwork     done "), "{table}");
    assert!(table.contains("\nfirewall    failed "), "{table}");
    assert!(table.contains("\ndata-disk   pending"), "{table}");
}

/// `firstboot --dry-run` says what the steps would change and leaves the tree as it was;
/// on a tree it stops at the first step that would have to ask the machine (nft).
#[test]
fn a_dry_run_on_a_tree_says_what_it_would_do_and_writes_nothing() {
    let image = Image::reference_db();
    image.write("proc/cmdline", "r2a.node=pg-node-03\n");
    image.write(
        "usr/lib/r2a/nodes/pg-node-03/etc/default/etcd",
        "ETCD_NAME=pg-node-03\n",
    );
    let listing = || -> Vec<String> {
        walkdir::WalkDir::new(image.dir.path())
            .into_iter()
            .map(|entry| entry.unwrap().path().display().to_string())
            .collect()
    };
    let before = listing();
    let output = image.r2a_node(&["firstboot", "--dry-run"]);
    let stdout = text(&output.stdout);
    for line in [
        "(dry run: nothing changes)",
        "r2a-node: node-files: would install 2 of 3 entries",
        "r2a-node: hostname: would write ",
        "r2a-node: network: would write ",
    ] {
        assert!(stdout.contains(line), "{line}:\n{stdout}");
    }
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        text(&output.stderr).contains("step firewall: not running `nft list table inet r2a`"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(listing(), before, "a dry run adds or removes nothing");
    assert_eq!(image.read("etc/hostname"), "debian\n");
}

/// `--root` that names this system's own `/` another way (`<tmp>/..`, a link to `/`) is
/// refused before anything is read or written: the agent would write into it as into an
/// offline tree.
#[test]
fn a_root_that_resolves_to_the_running_system_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("system");
    std::os::unix::fs::symlink("/", &link).unwrap();
    let parent_of_tmp = std::env::temp_dir().join("..");
    let status_file = Path::new("/run/r2a/status.json");
    let before = std::fs::metadata(status_file)
        .and_then(|m| m.modified())
        .ok();
    for root in [link.as_path(), parent_of_tmp.as_path()] {
        let output = Command::new(env!("CARGO_BIN_EXE_r2a-node"))
            .arg("--root")
            .arg(root)
            .arg("firstboot")
            .output()
            .expect("running r2a-node");
        assert_eq!(output.status.code(), Some(2), "{root:?}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("is this system's own `/`") && stderr.contains("leave --root out"),
            "{stderr}"
        );
    }
    let after = std::fs::metadata(status_file)
        .and_then(|m| m.modified())
        .ok();
    assert_eq!(before, after, "the agent wrote its status on this system");
}
