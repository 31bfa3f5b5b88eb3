//! The reference cluster, `examples/reference-cluster.toml` as users get it (no MAC
//! addresses, data disks on nine nodes), built into a test folder: each role only in the
//! formats a test boots, on the layer cache the other build tests share.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use r2a::project::{Project, SecretsMode};

use super::{Output, repo, run_image_tool};

/// The built reference cluster.
pub struct Reference {
    /// The manifest: a copy of the example, so that its secrets file is the test's.
    pub manifest: PathBuf,
    /// The output folder.
    pub out: PathBuf,
    /// The loaded project.
    pub project: Project,
}

/// The roles a test boots and the formats each is built in.
const BUILDS: [(&str, &[&str]); 5] = [
    ("db", &["qcow2", "tar"]),
    ("fs", &["raw"]),
    ("api", &["iso"]),
    ("telephony", &["pxe"]),
    ("portal", &["pxe"]),
];

/// The reference cluster, built by the first test that asks for it.
pub fn reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        assert!(
            rustix::process::geteuid().is_root(),
            "the build tests need root: run `make test` (it uses sudo when needed)"
        );
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("r2a-reference-test");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = dir.join("reference-cluster.toml");
        std::fs::copy(repo().join("examples/reference-cluster.toml"), &manifest).unwrap();
        let out = dir.join("out");
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("r2a-test-cache");
        for (role, formats) in BUILDS {
            let mut argv = vec![
                "build",
                manifest.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--cache",
                cache.to_str().unwrap(),
                "--agent",
                env!("CARGO_BIN_EXE_r2a-node"),
                "--role",
                role,
            ];
            for format in formats {
                argv.extend(["--format", format]);
            }
            let output = run_image_tool(&argv, None);
            assert!(
                output.status.success(),
                "building the reference cluster's {role} role failed:\n{}",
                output.stderr
            );
        }
        let project = Project::load(&repo(), &manifest, SecretsMode::ReadOnly).unwrap();
        Reference {
            manifest,
            out,
            project,
        }
    })
}

impl Reference {
    /// `r2a-image boot --check` of `node` with extra arguments.
    pub fn boot(&self, node: &str, args: &[&str]) -> Output {
        let role = &self
            .project
            .cluster
            .node(node)
            .expect("a reference node")
            .role;
        let mut argv = vec![
            "boot",
            self.manifest.to_str().unwrap(),
            "--role",
            role,
            "--node",
            node,
            "--out",
            self.out.to_str().unwrap(),
            "--accel",
            "tcg",
            "--check",
            "--timeout",
            "900",
        ];
        argv.extend(args);
        run_image_tool(&argv, None)
    }

    /// `out/<cluster>/`.
    pub fn cluster_out(&self) -> PathBuf {
        self.out.join(&self.project.cluster.name)
    }
}
