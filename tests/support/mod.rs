//! Shared harness of the build tests: one test cluster built once per run, a lock so that
//! rebuilds never overlap, and helpers to open artifacts and run programs inside them.

#![allow(dead_code)] // each test crate uses a part of this harness

pub mod db_cluster;
pub mod image;
pub mod processes;
pub mod reference;
pub mod search;
pub mod seeds;

pub use image::unpacked;
pub use processes::processes_mentioning;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};

use r2a::secrets::Secrets;

/// The test cluster: three db nodes, three fs nodes, a portal and a telephony node on the
/// test network; vendor packages come from a local folder of .deb files.
const MANIFEST: &str = r#"[cluster]
name = "r2a-test"
domain = "test.r2a.internal"

[network]
cidr = "10.77.0.0/24"
gateway = "10.77.0.1"
dns = ["10.77.0.1"]

[ssh]
authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ8c0uD2Xb5wq4Yk0qY8pY3n1m4rZxP2w6b3l9s7u1aB test@r2a"]

[[vendor.local]]
path = "vendor"

[[nodes]]
name = "db1"
role = "db"
address = "10.77.0.11"
data_disk = "/dev/vdb"

[[nodes]]
name = "db2"
role = "db"
address = "10.77.0.12"

[[nodes]]
name = "db3"
role = "db"
address = "10.77.0.13"

[[nodes]]
name = "fs1"
role = "fs"
address = "10.77.0.21"
data_disk = "/dev/vdb"

[[nodes]]
name = "fs2"
role = "fs"
address = "10.77.0.22"
data_disk = "/dev/vdb"

[[nodes]]
name = "fs3"
role = "fs"
address = "10.77.0.23"
data_disk = "/dev/vdb"

[[nodes]]
name = "admin1"
role = "admin"
address = "10.77.0.41"

[[nodes]]
name = "portal1"
role = "portal"
address = "10.77.0.31"
mac = "52:54:00:77:00:31"

[[nodes]]
name = "tel1"
role = "telephony"
address = "10.77.0.51"
"#;

impl Output {
    /// Whether the stage named `stage` (e.g. "db: package layer") was served from the cache.
    pub fn hit_cache(&self, stage: &str) -> bool {
        self.stderr
            .lines()
            .any(|line| line.contains(stage) && line.contains("(cached)"))
    }
}

/// The built test cluster.
pub struct Fixture {
    /// The manifest.
    pub manifest: PathBuf,
    /// The output folder.
    pub out: PathBuf,
    /// The layer cache, kept between runs.
    pub cache: PathBuf,
    lock: Mutex<()>,
}

/// A finished run of `r2a-image`.
pub struct Output {
    /// Exit status.
    pub status: std::process::ExitStatus,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

/// The test cluster, built (db and portal roles) by the first test that asks for it.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        assert!(
            rustix::process::geteuid().is_root(),
            "the build tests need root: run `make test` (it uses sudo when needed)"
        );
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("r2a-build-test");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("vendor")).unwrap();
        std::fs::write(dir.join("cluster.toml"), MANIFEST).unwrap();
        make_vendor_debs(&dir.join("vendor"));
        let fixture = Fixture {
            manifest: dir.join("cluster.toml"),
            out: dir.join("out"),
            cache: Path::new(env!("CARGO_TARGET_TMPDIR")).join("r2a-test-cache"),
            lock: Mutex::new(()),
        };
        let output = fixture.build(&["--role", "db", "--role", "portal"], None);
        assert!(
            output.status.success(),
            "the first build failed:\n{}",
            output.stderr
        );
        fixture
    })
}

impl Fixture {
    /// Serializes builds: tests that rebuild hold this.
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `out/<cluster>/`.
    pub fn cluster_out(&self) -> PathBuf {
        self.out.join("r2a-test")
    }

    /// The arguments of `r2a-image build` for the test cluster.
    fn build_args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut argv = vec![
            "build",
            self.manifest.to_str().unwrap(),
            "--out",
            self.out.to_str().unwrap(),
        ];
        argv.extend([
            "--cache",
            self.cache.to_str().unwrap(),
            "--agent",
            env!("CARGO_BIN_EXE_r2a-node"),
        ]);
        argv.extend(extra);
        argv
    }

    /// The `r2a-image build` command for the test cluster, not started, output discarded.
    pub fn build_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_r2a-image"));
        command
            .args(self.build_args(args))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// Runs `r2a-image build` on the test cluster with extra arguments.
    pub fn build(&self, args: &[&str], data: Option<&Path>) -> Output {
        run_image_tool(&self.build_args(args), data)
    }

    /// `r2a-image plan --json` of one role, on the fixture's cache.
    pub fn plan(&self, role: &str) -> serde_json::Value {
        let plan = run_image_tool(
            &[
                "plan",
                self.manifest.to_str().unwrap(),
                "--cache",
                self.cache.to_str().unwrap(),
                "--role",
                role,
                "--json",
            ],
            None,
        );
        assert!(plan.status.success(), "{}", plan.stderr);
        serde_json::from_str(&plan.stdout).unwrap()
    }

    /// The tree of a role's cached package layer.
    pub fn layer_tree(&self, role: &str) -> PathBuf {
        let plan = self.plan(role);
        let key = plan["roles"][0]["layer"]["key"].as_str().unwrap();
        self.cache
            .join("layers")
            .join(format!("{role}-{}", &key[..16]))
            .join("rootfs")
    }

    /// The cluster's secrets.
    pub fn secrets(&self) -> Secrets {
        Secrets::load_existing(&self.manifest).unwrap()
    }

    /// A role's rootfs.tar.gz unpacked into a temporary folder (owners kept).
    pub fn extracted(&self, role: &str) -> tempfile::TempDir {
        unpacked(&self.cluster_out().join(role).join("rootfs.tar.gz"))
    }
}

/// The fixture's manifest as `edit` changes it (nodes added to it, say), written to
/// `dir` beside the fixture's secrets (same CA, same passwords) and vendor folder.
pub fn derived_manifest(fx: &Fixture, dir: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let manifest = dir.join("cluster.toml");
    let text = std::fs::read_to_string(&fx.manifest).unwrap();
    std::fs::write(&manifest, edit(text)).unwrap();
    let secrets = fx.manifest.with_file_name("cluster.secrets.toml");
    std::fs::copy(&secrets, dir.join("cluster.secrets.toml")).unwrap();
    let _ = std::fs::remove_dir_all(dir.join("vendor"));
    let copied = Command::new("cp")
        .arg("-a")
        .arg(fx.manifest.with_file_name("vendor"))
        .arg(dir)
        .status()
        .unwrap();
    assert!(copied.success(), "copying the vendor folder");
    manifest
}

/// `[[nodes]]` entries: (name, role, address, data disk).
pub fn node_entries(nodes: &[(&str, &str, &str, Option<&str>)]) -> String {
    nodes
        .iter()
        .map(|(name, role, address, disk)| {
            let disk = disk.map_or(String::new(), |disk| format!("data_disk = \"{disk}\"\n"));
            format!(
                "\n[[nodes]]\nname = \"{name}\"\nrole = \"{role}\"\naddress = \"{address}\"\n{disk}"
            )
        })
        .collect()
}

/// Builds `roles` of `manifest` as tarballs into `out` beside it, with the fixture's
/// cache and this build's agent; returns `out`.
pub fn build_tarballs(
    fx: &Fixture,
    manifest: &Path,
    roles: &[&str],
    data: Option<&Path>,
) -> PathBuf {
    build_images(fx, manifest, roles, "tar", data)
}

/// Builds `roles` of `manifest` in `format` into `out` beside it, with the fixture's
/// cache and this build's agent; returns `out`.
pub fn build_images(
    fx: &Fixture,
    manifest: &Path,
    roles: &[&str],
    format: &str,
    data: Option<&Path>,
) -> PathBuf {
    let out = manifest.with_file_name("out");
    let mut args = vec!["build", manifest.to_str().unwrap(), "--format", format];
    for role in roles {
        args.extend(["--role", role]);
    }
    args.extend([
        "--out",
        out.to_str().unwrap(),
        "--cache",
        fx.cache.to_str().unwrap(),
        "--agent",
        env!("CARGO_BIN_EXE_r2a-node"),
    ]);
    let built = run_image_tool(&args, data);
    assert!(built.status.success(), "{}", built.stderr);
    out
}

/// After `down`: no process, mount or network namespace of the harness in `state` for
/// the cluster `cluster` is left. The state folder then goes, with the test's `others`:
/// a passing test frees its disk for the next test file (a failing one keeps its folders
/// to be looked at, and the next run of the test starts by removing them).
pub fn assert_nothing_left(state: &Path, cluster: &str, others: &[&Path]) {
    assert_nothing_runs(state, cluster);
    for folder in std::iter::once(state).chain(others.iter().copied()) {
        if let Err(error) = std::fs::remove_dir_all(folder)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            panic!("removing {}: {error}", folder.display());
        }
    }
}

fn assert_nothing_runs(state: &Path, cluster: &str) {
    let state = state.to_str().unwrap();
    assert!(
        processes_mentioning(state).is_empty(),
        "no container process is left"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(state), "no mount is left");
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    assert!(!namespaces.contains(cluster), "{namespaces}");
}

/// What a command run in the host's own namespace prints; it must succeed.
pub fn host_output(argv: &[&str]) -> String {
    let output = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    assert!(output.status.success(), "{argv:?} failed on the host");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A cluster of the harness that is taken down when the test ends, also when it fails.
pub struct Lab(pub r2a::cluster::Harness);

impl Drop for Lab {
    fn drop(&mut self) {
        // A passing test removed the state folder after its own `down`: nothing is left.
        if !self.0.state_dir().exists() {
            return;
        }
        if let Err(error) = self.0.down() {
            eprintln!("taking the test cluster down failed: {error:#}");
        }
    }
}

/// The boot report of an `r2a-image boot --check` run, which must have passed its check
/// for `node`; on failure, the console's tail.
pub fn healthy_boot_report(output: &Output, node: &str) -> r2a::agent::report::BootReport {
    assert!(
        output.status.success(),
        "the boot check of {node} failed:\n{}\n--- console ---\n{}",
        output.stderr,
        console_tail(&output.stdout)
    );
    let report = output
        .stdout
        .lines()
        .find_map(r2a::agent::report::BootReport::parse_line)
        .expect("the console shows the boot report");
    assert!(report.is_healthy(), "{report:?}");
    assert_eq!(report.node.as_deref(), Some(node), "{report:?}");
    report
}

/// The last lines of a console.
pub fn console_tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}

/// The source checkout.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The reference manifest copied into a fresh folder (render writes secrets beside it).
pub fn reference_copy() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("reference-cluster.toml");
    std::fs::copy(repo().join("examples/reference-cluster.toml"), &manifest).unwrap();
    let path = manifest.to_str().unwrap().to_string();
    (dir, path)
}

/// A copy of the project's roles/ and overlays/, to change for one test.
pub fn data_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for folder in ["roles", "overlays"] {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
        let status = Command::new("cp")
            .arg("-a")
            .arg(source)
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "copying {folder}");
    }
    dir
}

/// The names of the hidden entries (staging and half-built folders) of a folder.
pub fn hidden_entries(dir: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.file_name())
        .filter(|name| name.to_string_lossy().starts_with('.'))
        .collect()
}

/// Runs `r2a-image` with `args`, optionally on another data folder.
pub fn run_image_tool(args: &[&str], data: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_r2a-image"));
    if let Some(data) = data {
        command.arg("--data").arg(data);
    }
    let output = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running r2a-image");
    Output {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Stand-ins for the vendor's web applications (the real ones are not public): a
/// package of the same name holding its version file.
fn make_vendor_debs(folder: &Path) {
    for package in [
        "softswitch-portal",
        "softswitch-admin",
        "softswitch-api",
        "softswitch-switchboard",
    ] {
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tree.path().join("DEBIAN")).unwrap();
        let share = tree.path().join("usr/share").join(package);
        std::fs::create_dir_all(&share).unwrap();
        std::fs::write(
            tree.path().join("DEBIAN/control"),
            format!(
                "Package: {package}\nVersion: 1.0.0\nArchitecture: all\n\
                 Maintainer: r2a tests <tests@r2a.invalid>\n\
                 Description: stand-in for the vendor package {package}\n"
            ),
        )
        .unwrap();
        std::fs::write(share.join("VERSION"), "1.0.0\n").unwrap();
        // A fixed date makes the same package every run, so the role layers that
        // install it stay cached.
        let status = Command::new("dpkg-deb")
            .env("SOURCE_DATE_EPOCH", "1767225600")
            .args(["--root-owner-group", "--build"])
            .arg(tree.path())
            .arg(folder.join(format!("{package}_1.0.0_all.deb")))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "dpkg-deb failed");
    }
}

/// Moves a folder away and back again when dropped.
pub struct MovedBack {
    home: std::path::PathBuf,
    away: std::path::PathBuf,
}

impl MovedBack {
    pub fn new(home: &Path, away: &Path) -> MovedBack {
        std::fs::rename(home, away).unwrap();
        MovedBack {
            home: home.to_path_buf(),
            away: away.to_path_buf(),
        }
    }
}

impl Drop for MovedBack {
    fn drop(&mut self) {
        std::fs::rename(&self.away, &self.home).unwrap();
    }
}
