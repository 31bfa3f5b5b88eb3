//! Role layers: the base layer plus a role's Debian and vendor packages, cached under
//! their content key and never rebuilt for an overlay or template change.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use super::chroot::{Chroot, InstallGuard};
use super::draft::LayerDraft;
use super::layer::{self, LayerSpec};
use super::{BuildContext, WorkDir};
use crate::exec::CommandExt;
use crate::fsutil;
use crate::manifest::Vendor;
use crate::role::PrepareFile;

/// Where a local vendor folder is served from inside the tree during the install.
const LOCAL_REPO: &str = "/var/lib/r2a-vendor-local";

/// Returns a role's package layer, building it from the base unless it is cached.
pub fn role_layer(
    ctx: &BuildContext<'_>,
    base: &LayerSpec,
    role_name: &str,
) -> anyhow::Result<LayerSpec> {
    let role = ctx
        .project
        .roles
        .get(role_name)
        .with_context(|| format!("unknown role {role_name}"))?;
    let spec = layer::role_spec(&ctx.project.cluster, base, role)?;
    package_layer(ctx, base, &spec, &role.prepare, role_name)?;
    Ok(spec)
}

/// Makes the layer `spec` (the base, `prepare`'s files, then `spec`'s packages) unless
/// it is cached; `label` names it in the progress display. The install runs on a draft
/// over the base (see [`LayerDraft`]), so the base's files are linked, never copied.
pub fn package_layer(
    ctx: &BuildContext<'_>,
    base: &LayerSpec,
    spec: &LayerSpec,
    prepare: &[PrepareFile],
    label: &str,
) -> anyhow::Result<()> {
    let stage = ctx
        .progress
        .stage(format!("{label}: package layer {}", &spec.key[..12]));
    if !ctx.options.refresh && super::layer_is_usable(ctx, spec, &stage)? {
        stage.finish("cached");
        return Ok(());
    }
    let _lock = super::lock_cache(ctx, &stage)?;
    // Another build may have made the layer while this one waited for the lock.
    if !ctx.options.refresh && super::layer_is_usable(ctx, spec, &stage)? {
        stage.finish("cached, built by another build meanwhile");
        return Ok(());
    }
    let work = WorkDir::new(&ctx.layers.dir, &format!(".{}-", spec.name))?;
    let tree = work.path().join("rootfs");
    if !ctx.options.refresh
        && let Some(twin) = ctx.layers.twin(spec)?
    {
        // Cached trees are never written into, so hard links share them safely.
        fsutil::link_tree(&ctx.layers.tree(&twin), &tree)?;
        commit_layer(ctx, work, spec)?;
        stage.finish(&format!(
            "the same packages as the {} layer, shared",
            twin.name
        ));
        return Ok(());
    }
    let draft = LayerDraft::mount(
        &ctx.options.private_mounts,
        &ctx.layers.tree(base),
        work.path(),
    )?;
    let root = draft.root();
    for file in prepare {
        file.write_into(&root)?;
    }
    {
        let _guard = InstallGuard::new(&root)?;
        let vendor = VendorSetup::install(ctx, &root, !spec.vendor_packages.is_empty())?;
        let chroot = Chroot::new(&root)
            .with_apt_archives(&ctx.apt_archives)
            .with_source_date_epoch(spec.source_date_epoch);
        let mut packages = spec.packages.clone();
        packages.extend(spec.vendor_packages.iter().cloned());
        apt_install(&chroot, &packages, &|line| stage.line(line))?;
        vendor.remove(&root)?;
    }
    draft.finish(&tree)?;
    commit_layer(ctx, work, spec)?;
    stage.finish(&format!(
        "{} packages",
        spec.packages.len() + spec.vendor_packages.len()
    ));
    Ok(())
}

/// `apt-get update` and a non-interactive install without recommends, keeping the
/// configuration files a layer prepared.
pub fn apt_install(
    chroot: &Chroot,
    packages: &[String],
    on_line: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    // The indexes only, as mmdebstrap fetched them for the base: no translations.
    chroot.run(
        &["apt-get", "-o", "Acquire::Languages=none", "update"],
        on_line,
    )?;
    let mut argv = vec![
        "apt-get",
        "install",
        "--yes",
        "--no-install-recommends",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        // No fsync per file: a layer is committed whole after the install, or not at all.
        "-o",
        "Dpkg::Options::=--force-unsafe-io",
    ];
    argv.extend(packages.iter().map(String::as_str));
    // No `apt-get clean`: the archive is the shared cache, bind-mounted for the install.
    chroot.run(&argv, on_line)
}

/// Records the layer and moves its tree to its key's place in the cache.
pub fn commit_layer(ctx: &BuildContext<'_>, work: WorkDir, spec: &LayerSpec) -> anyhow::Result<()> {
    layer::record_contents(&work.path().join("rootfs"))?;
    let record = work.path().join("layer.json");
    std::fs::write(&record, serde_json::to_vec_pretty(spec)?)?;
    let target = ctx
        .layers
        .tree(spec)
        .parent()
        .expect("layer trees sit in a folder")
        .to_path_buf();
    fsutil::remove_tree(&target)?;
    std::fs::rename(work.path(), &target)
        .with_context(|| format!("moving the new layer to {}", target.display()))?;
    work.keep();
    ctx.layers.mark_used(spec)
}

/// Vendor sources added to a tree for one install, and removed after it: credentials and
/// the local repository never stay in a layer.
struct VendorSetup {
    added: Vec<String>,
}

impl VendorSetup {
    fn install(ctx: &BuildContext<'_>, root: &Path, needed: bool) -> anyhow::Result<VendorSetup> {
        let mut added = Vec::new();
        let Vendor::Sources { apt, local } = &ctx.project.cluster.vendor else {
            return Ok(VendorSetup { added });
        };
        if !needed {
            return Ok(VendorSetup { added });
        }
        for repo in apt {
            let key = format!("/etc/apt/keyrings/r2a-{}.gpg", repo.name);
            write_in(root, &key, &std::fs::read(&repo.signing_key)?, 0o644)?;
            let sources = format!(
                "Types: deb\nURIs: {}\nSuites: {}\nComponents: {}\nSigned-By: {key}\n",
                repo.uri,
                repo.suite,
                repo.components.join(" ")
            );
            write_in(
                root,
                &format!("/etc/apt/sources.list.d/r2a-{}.sources", repo.name),
                sources.as_bytes(),
                0o644,
            )?;
            if let (Some(user_env), Some(password_env)) = (&repo.username_env, &repo.password_env) {
                let user = std::env::var(user_env).with_context(|| {
                    format!("the vendor repository {} needs ${user_env}", repo.name)
                })?;
                let password = std::env::var(password_env).with_context(|| {
                    format!("the vendor repository {} needs ${password_env}", repo.name)
                })?;
                let host = repo
                    .uri
                    .split("://")
                    .nth(1)
                    .unwrap_or(&repo.uri)
                    .trim_end_matches('/');
                let auth = format!("/etc/apt/auth.conf.d/r2a-{}.conf", repo.name);
                write_in(
                    root,
                    &auth,
                    format!("machine {host} login {user} password {password}\n").as_bytes(),
                    0o600,
                )?;
                added.push(auth);
            }
        }
        if !local.is_empty() {
            let repo = root.join(LOCAL_REPO.trim_start_matches('/'));
            std::fs::create_dir_all(&repo)?;
            for folder in local {
                for deb in layer::debs_in(folder)? {
                    std::fs::copy(
                        &deb,
                        repo.join(deb.file_name().expect("a .deb file has a name")),
                    )?;
                }
            }
            let index = Command::new("apt-ftparchive")
                .arg("packages")
                .arg(".")
                .current_dir(&repo)
                .output_text()?;
            std::fs::write(repo.join("Packages"), index)?;
            let list = format!("deb [trusted=yes] file:{LOCAL_REPO} ./\n");
            write_in(
                root,
                "/etc/apt/sources.list.d/r2a-vendor-local.list",
                list.as_bytes(),
                0o644,
            )?;
            added.push(LOCAL_REPO.to_string());
            added.push("/etc/apt/sources.list.d/r2a-vendor-local.list".to_string());
        }
        Ok(VendorSetup { added })
    }

    fn remove(self, root: &Path) -> anyhow::Result<()> {
        for path in &self.added {
            let path = root.join(path.trim_start_matches('/'));
            if path.symlink_metadata().is_ok() {
                fsutil::remove_any(&path)?;
            }
        }
        Ok(())
    }
}

fn write_in(root: &Path, path: &str, content: &[u8], mode: u32) -> anyhow::Result<()> {
    let path = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().expect("absolute paths have a parent"))?;
    fsutil::write_atomic(&path, content, mode)
}
