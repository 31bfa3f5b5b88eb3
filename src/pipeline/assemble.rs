//! The overlay stage: a work copy of the role layer, with the rendered overlay, the
//! `r2a-node` agent and the role's services switched on or off.

use std::path::Path;

use anyhow::Context;

use super::chroot::Chroot;
use super::layer::LayerSpec;
use super::{BuildContext, ImageTree, WorkDir};
use crate::fsutil;
use crate::overlay::RenderedRole;
use crate::userdb::UserDb;

/// Where the agent binary goes in every image.
pub const AGENT_PATH: &str = "/usr/bin/r2a-node";

/// Makes the image tree of a role from its layer and overlay.
pub fn assemble(
    ctx: &BuildContext<'_>,
    layer: &LayerSpec,
    overlay: &RenderedRole,
    role_name: &str,
) -> anyhow::Result<ImageTree> {
    let stage = ctx.progress.stage(format!("{role_name}: overlay"));
    let work = WorkDir::new(&ctx.work, &format!("{role_name}-"))?;
    let root = work.path().join("rootfs");
    // The work tree shares its files' inodes with the cached layer. Every change from here
    // on must replace a file (write_atomic) or unlink it, never write into it, and must not
    // touch the metadata of a file it did not create.
    fsutil::link_tree(&ctx.layers.tree(layer), &root)?;
    let users = UserDb::read(&root)?;
    let files = overlay.image_files();
    for file in &files {
        let path = root.join(file.path.trim_start_matches('/'));
        create_parents(&root, &path)?;
        fsutil::write_atomic(&path, &file.content, file.mode)?;
        users
            .chown(&path, &file.owner, &file.group)
            .with_context(|| format!("installing {} from {}", file.path, file.origin.display()))?;
    }
    apply_directory_rules(ctx, &root, role_name, &users)?;
    let agent = root.join(AGENT_PATH.trim_start_matches('/'));
    std::fs::copy(&ctx.options.agent, &agent)
        .with_context(|| format!("installing {} as {AGENT_PATH}", ctx.options.agent.display()))?;
    fsutil::set_mode(&agent, 0o755)?;
    set_services(ctx, &root, role_name, &|line| stage.line(line))?;
    stage.finish(&format!("{} files", files.len()));
    Ok(ImageTree {
        work,
        root,
        overlay: overlay.clone(),
    })
}

/// Creates missing parent folders as root:root 0755, the way packages would.
fn create_parents(root: &Path, path: &Path) -> anyhow::Result<()> {
    let parent = path.parent().expect("files in the tree have a parent");
    if !parent.exists() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let mut dir = parent;
        while dir != root && dir.starts_with(root) {
            fsutil::set_mode(dir, 0o755)?;
            dir = dir.parent().expect("below root");
        }
    }
    Ok(())
}

/// `[[files]]` rules that name folders (e.g. `/root/.ssh` 0700).
fn apply_directory_rules(
    ctx: &BuildContext<'_>,
    root: &Path,
    role_name: &str,
    users: &UserDb,
) -> anyhow::Result<()> {
    let roles = &ctx.project.roles;
    let role = roles.get(role_name).context("unknown role")?;
    for rule in roles.base.files.iter().chain(&role.files) {
        let path = root.join(rule.path.trim_start_matches('/'));
        if path.is_dir() {
            fsutil::set_mode(&path, rule.mode_bits().context("validated mode")?)?;
            users.chown(&path, &rule.owner, &rule.group)?;
        }
    }
    Ok(())
}

/// Enables and disables units with the image's own `systemctl`, which works offline in a
/// tree; units of packages that are absent (a skipped vendor package) are passed over.
fn set_services(
    ctx: &BuildContext<'_>,
    root: &Path,
    role_name: &str,
    on_line: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<()> {
    let roles = &ctx.project.roles;
    let role = roles.get(role_name).context("unknown role")?;
    let chroot = Chroot::new(root).with_source_date_epoch(ctx.source_date_epoch);
    for (verb, units) in [
        (
            "enable",
            [&roles.base.services.enable, &role.services.enable],
        ),
        (
            "disable",
            [&roles.base.services.disable, &role.services.disable],
        ),
    ] {
        let present: Vec<&str> = units
            .into_iter()
            .flatten()
            .map(String::as_str)
            .filter(|unit| unit_exists(root, unit))
            .collect();
        if present.is_empty() {
            continue;
        }
        let mut argv = vec!["systemctl", verb];
        argv.extend(present);
        chroot.run(&argv, on_line)?;
    }
    Ok(())
}

fn unit_exists(root: &Path, unit: &str) -> bool {
    [
        "etc/systemd/system",
        "usr/lib/systemd/system",
        "lib/systemd/system",
    ]
    .iter()
    .any(|dir| root.join(dir).join(unit).symlink_metadata().is_ok())
}
