//! The finalize stage: strip what must be made on the node (machine-id, SSH host keys,
//! database and cluster state, apt lists, logs).

use anyhow::Context;

use super::{BuildContext, ImageTree};
use crate::fsutil;

/// Applies the base's and the role's finalize rules.
pub fn finalize(ctx: &BuildContext<'_>, tree: &ImageTree, role_name: &str) -> anyhow::Result<()> {
    let stage = ctx.progress.stage(format!("{role_name}: finalize"));
    let roles = &ctx.project.roles;
    let role = roles.get(role_name).context("unknown role")?;
    let mut removed = 0;
    for pattern in roles
        .base
        .finalize
        .remove
        .iter()
        .chain(&role.finalize.remove)
    {
        for path in fsutil::glob_in(&tree.root, pattern)? {
            fsutil::remove_any(&path)?;
            removed += 1;
        }
    }
    for pattern in roles
        .base
        .finalize
        .truncate
        .iter()
        .chain(&role.finalize.truncate)
    {
        for path in fsutil::glob_in(&tree.root, pattern)? {
            fsutil::write_atomic(&path, b"", 0o444)
                .with_context(|| format!("emptying {}", path.display()))?;
        }
    }
    // File times are clamped by the writers of each format, not here: the tree shares
    // inodes with the cached layer, whose times must stay as the packages made them.
    stage.finish(&format!("{removed} paths removed"));
    Ok(())
}
