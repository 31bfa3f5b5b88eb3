//! What a new user starts from and what `make install` installs: `r2a-image init`'s
//! starter manifest, the man pages and the shell completions.

mod support;

use support::run_image_tool;

/// `init` writes a starter manifest that passes `check` and never overwrites a file.
#[test]
fn init_writes_a_starter_manifest_that_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("pbx.toml");
    let manifest = manifest.to_str().unwrap();
    let written = run_image_tool(&["init", manifest], None);
    assert!(written.status.success(), "{}", written.stderr);
    let checked = run_image_tool(&["check", manifest], None);
    assert!(checked.status.success(), "{}", checked.stderr);
    assert!(
        checked.stdout.contains("valid (12 nodes"),
        "{}",
        checked.stdout
    );
    std::fs::write(manifest, "kept\n").unwrap();
    let again = run_image_tool(&["init", manifest], None);
    assert_eq!(again.status.code(), Some(2), "{}", again.stderr);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert_eq!(std::fs::read_to_string(manifest).unwrap(), "kept\n");
}

/// The man pages (one per command) and the completion scripts `make install` installs.
#[test]
fn man_pages_and_completions_cover_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let man = run_image_tool(&["man", dir.path().to_str().unwrap()], None);
    assert!(man.status.success(), "{}", man.stderr);
    for page in [
        "r2a-image",
        "r2a-image-build",
        "r2a-image-cluster-up",
        "r2a-image-init",
    ] {
        let text = std::fs::read_to_string(dir.path().join(format!("{page}.1"))).unwrap();
        assert!(text.contains(&format!(".TH {page} 1")), "{page}:\n{text}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let script = run_image_tool(&["completions", shell], None);
        assert!(script.status.success(), "{shell}: {}", script.stderr);
        for command in ["build", "seed", "verify", "cluster", "init"] {
            assert!(script.stdout.contains(command), "{shell} lacks {command}");
        }
    }
}
