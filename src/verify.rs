//! `r2a-image verify`: the signature of `SHA256SUMS`, every sum and no file missing or
//! extra; with `--rebuild`, every published role built again into a temporary folder from
//! the same inputs and each artifact compared with the new one, naming the first file
//! that differs inside each artifact that is not the same bytes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::hash::sha256_file;
use crate::pipeline::{self, BuildOptions, ClusterIndex, WorkDir};
use crate::progress::Progress;
use crate::project::{Project, SecretsMode};

/// What a rebuild is made with, besides the manifest.
pub struct RebuildOptions {
    /// The layer cache (the packages the images were built from).
    pub cache: PathBuf,
    /// The `r2a-node` binary the images carry.
    pub agent: PathBuf,
    /// The disk size the images were built with, when one was given.
    pub disk_size: Option<u64>,
    /// Where the rebuilds' stages are shown.
    pub progress: Progress,
    /// The builder's own mount namespace.
    pub private_mounts: crate::pipeline::PrivateMounts,
}

/// Checks what is published for the cluster; every problem goes to stderr, one per line,
/// naming its file, and the exit status is 1 when there is any.
pub fn run(
    data: &Path,
    manifest: &Path,
    out: &Path,
    rebuild: Option<&RebuildOptions>,
) -> anyhow::Result<ExitCode> {
    let project = Project::load(data, manifest, SecretsMode::ReadOnly)?;
    let cluster_out = out.join(&project.cluster.name);
    let mut good = check_signature(&project, manifest, &cluster_out)?;
    if let Some(options) = rebuild {
        good &= compare_with_rebuild(&project, out, &cluster_out, options)?;
    }
    Ok(if good {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn check_signature(project: &Project, manifest: &Path, cluster_out: &Path) -> anyhow::Result<bool> {
    let signer = project.signer()?.with_context(|| {
        format!(
            "{} holds no signing key: `r2a-image build {}` makes it and signs what it publishes",
            project.secrets.path.display(),
            manifest.display()
        )
    })?;
    match crate::signing::verify(cluster_out, signer.public_key())? {
        Ok(files) => {
            println!(
                "{}: signature good, {files} files match {}, nothing extra",
                cluster_out.display(),
                crate::signing::SUMS
            );
            Ok(true)
        }
        Err(problems) => {
            for problem in problems {
                eprintln!("{}: {problem}", cluster_out.display());
            }
            Ok(false)
        }
    }
}

/// Builds every published role again (its own formats) into a temporary folder beside
/// `out` and compares each artifact and SBOM; prints one line per file.
fn compare_with_rebuild(
    project: &Project,
    out: &Path,
    cluster_out: &Path,
    options: &RebuildOptions,
) -> anyhow::Result<bool> {
    let index = ClusterIndex::read(cluster_out)?;
    anyhow::ensure!(
        !index.images().is_empty(),
        "{} lists no image to rebuild",
        cluster_out.join(crate::signing::INDEX).display()
    );
    let agent_sha256 = sha256_file(&options.agent)?;
    // Chroot and mount commands get absolute paths, whatever their working folder; the
    // folder is swept by the next build if this one is killed.
    let out = std::path::absolute(out).with_context(|| format!("resolving {}", out.display()))?;
    let work = WorkDir::new(&out, ".staging-verify-")?;
    let rebuilt_out = work.path().join("out");
    let mut good = true;
    for (role, record) in index.images() {
        if record.agent_sha256 != agent_sha256 {
            eprintln!(
                "{role}: the image carries another r2a-node (sha256 {}) than {} ({agent_sha256}); \
                 give the one it was built with (--agent)",
                record.agent_sha256,
                options.agent.display()
            );
        }
        let mut formats: Vec<_> = record.artifacts.iter().map(|a| a.format).collect();
        formats.dedup();
        let build_options = BuildOptions {
            roles: vec![role.clone()],
            formats,
            bootstrap: None,
            out: rebuilt_out.clone(),
            cache: options.cache.clone(),
            agent: options.agent.clone(),
            refresh: false,
            disk_size: options.disk_size,
            locked: false,
            private_mounts: options.private_mounts,
        };
        pipeline::build(project, &build_options, options.progress)
            .with_context(|| format!("rebuilding the {role} role"))?;
        let rebuilt_cluster = rebuilt_out.join(&project.cluster.name);
        for (path, _) in record.files() {
            let (published, rebuilt) = (cluster_out.join(path), rebuilt_cluster.join(path));
            let scratch = work.path().join("scratch");
            match crate::difference::first_difference(&published, &rebuilt, &scratch)
                .with_context(|| format!("comparing {path} with its rebuild"))?
            {
                None => println!("{path}: same bytes on rebuild"),
                Some(difference) => {
                    good = false;
                    eprintln!("{path}: differs on rebuild; first difference: {difference}");
                }
            }
            crate::fsutil::remove_tree(&scratch)?;
        }
    }
    Ok(good)
}
