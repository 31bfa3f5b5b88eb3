//! What `r2a-image` writes about itself and for a new user: a starter manifest (`init`),
//! shell completions and man pages (`make install` installs both).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;

use super::Cli;
use crate::diag::UsageError;

/// The starter manifest: one node of each application role, three db and three fs nodes,
/// every table commented.
const STARTER: &str = include_str!("../../examples/starter.toml");

/// Writes the starter manifest to `path`, which must not exist.
pub fn init(path: &Path) -> anyhow::Result<()> {
    if path.symlink_metadata().is_ok() {
        return Err(UsageError(format!(
            "{} already exists; name a new file (init never overwrites)",
            path.display()
        ))
        .into());
    }
    crate::fsutil::write_atomic(path, STARTER.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", path.display()))
}

/// Prints the completion script of `shell` for `r2a-image`. A reader that stops early
/// (`| head`) ends the output, not the program with a panic.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "r2a-image", &mut script);
    match std::io::Write::write_all(&mut std::io::stdout(), &script) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(error).context("writing the completion script")
        }
        _ => Ok(()),
    }
}

/// Writes `r2a-image.1` and a page per command (`r2a-image-build.1`, and
/// `r2a-image-cluster-up.1` for the commands below those) into `dir`; returns them.
pub fn man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    write_pages(Cli::command(), "r2a-image", dir, &mut written)?;
    Ok(written)
}

fn write_pages(
    command: clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let command = command.name(name.to_string());
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    let path = dir.join(format!("{name}.1"));
    crate::fsutil::write_atomic(&path, &page, 0o644)?;
    written.push(path);
    for sub in command
        .get_subcommands()
        .filter(|sub| sub.get_name() != "help")
    {
        let sub_name = format!("{name}-{}", sub.get_name());
        write_pages(sub.clone(), &sub_name, dir, written)?;
    }
    Ok(())
}
