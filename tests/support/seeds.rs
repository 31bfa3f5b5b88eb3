//! Manifests with `node_data = "seed"` and the seeds their nodes boot from.

use std::path::Path;

use super::run_image_tool;

/// A manifest's text with the nodes' files and secrets moved into their seeds
/// (`[build] node_data = "seed"`; the fixture's manifest has no `[build]` table).
pub fn node_data_seed(text: String) -> String {
    assert!(
        !text.contains("[build]"),
        "the manifest has a [build] table"
    );
    format!("{text}\n[build]\nnode_data = \"seed\"\n")
}

/// `r2a-image seed` of `manifest` into `out` for `which` nodes (`--all`, `--node N`).
pub fn write_seeds(manifest: &Path, out: &Path, which: &[&str]) {
    let mut args = vec![
        "seed",
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(which);
    let written = run_image_tool(&args, None);
    assert!(written.status.success(), "{}", written.stderr);
}
