//! The `r2a-image` command line: argument definitions and dispatch to the library.

mod boot;
mod generate;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::diag::{InvalidInput, UsageError};
use crate::interrupt::Interrupted;
use crate::manifest::{Bootstrap, Format};
use crate::pipeline::{self, BuildOptions, PrivateMounts};
use crate::progress::{Progress, Verbosity};
use crate::project::{Project, SecretsMode, find_data_dir};

/// Builds bootable Debian 13 appliance images, one per role of a Ring2All PBX cluster.
#[derive(Debug, Parser)]
#[command(name = "r2a-image", version, about)]
pub struct Cli {
    /// Folder holding roles/ and overlays/ (default: the source checkout or /usr/share/r2a-appliance).
    #[arg(long, global = true, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Say only what went wrong (and warnings).
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also print every line the build's tools print, under their stage.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes a commented starter manifest (three db and three fs nodes, one node of each
    /// other role) that passes `check`; never overwrites a file.
    Init {
        /// The manifest to write.
        path: PathBuf,
    },
    /// Prints the shell completion script for bash, zsh, fish, elvish or powershell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Writes the man pages of r2a-image and of each of its commands into a folder.
    Man {
        /// The folder (e.g. /usr/local/share/man/man1).
        dir: PathBuf,
    },
    /// Validates a manifest and renders every template; builds nothing.
    Check {
        /// The cluster manifest.
        manifest: PathBuf,
        /// Print JSON: `valid`, and every diagnostic's file, line, column, message and hint.
        #[arg(long)]
        json: bool,
    },
    /// Shows what a build would make: roles, nodes, packages, cache hits, outputs, capacity.
    Plan {
        /// The cluster manifest.
        manifest: PathBuf,
        #[command(flatten)]
        selection: Selection,
        /// The layer cache folder.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_CACHE)]
        cache: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Writes the overlay tree one node gets (shared and node files), for review.
    Render {
        /// The cluster manifest.
        manifest: PathBuf,
        /// The node.
        #[arg(long)]
        node: String,
        /// Where to write the tree (must not exist or be empty).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Writes cloud-init NoCloud seed images (label cidata) for nodes: OUT/<cluster>/seeds/<node>.iso.
    Seed {
        /// The cluster manifest.
        manifest: PathBuf,
        /// The nodes (repeatable).
        #[arg(long = "node", value_name = "NAME", required_unless_present = "all")]
        nodes: Vec<String>,
        /// Every node of the manifest.
        #[arg(long, conflicts_with = "nodes")]
        all: bool,
        /// Output folder.
        #[arg(long, value_name = "DIR", default_value = "out")]
        out: PathBuf,
    },
    /// Checks a published cluster: the signature of SHA256SUMS (with the cluster's key
    /// from the secrets file), every sum, and that no file is missing or extra.
    Verify {
        /// The cluster manifest.
        manifest: PathBuf,
        /// The output folder the cluster was built into.
        #[arg(long, value_name = "DIR", default_value = "out")]
        out: PathBuf,
        /// Also build every published role again into a temporary folder and compare each
        /// artifact, naming the first file that differs.
        #[arg(long)]
        rebuild: bool,
        /// The layer cache the rebuild uses.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_CACHE, requires = "rebuild")]
        cache: PathBuf,
        /// The r2a-node binary the images carry (default: the one beside r2a-image).
        #[arg(long, value_name = "FILE", requires = "rebuild")]
        agent: Option<PathBuf>,
        /// The disk size the images were built with, when one was given.
        #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "rebuild")]
        disk_size: Option<u64>,
    },
    /// Shows what the build cache holds, or removes the layers no recent build used.
    Cache {
        #[command(subcommand)]
        action: crate::cache::CacheAction,
    },
    /// Boots a built image in QEMU on a serial console, with a node's seed attached.
    Boot(boot::BootArgs),
    /// Runs a cluster on this machine: one systemd-nspawn container per node, on a
    /// private bridge (up, status, stop, kill, start, exec, down).
    Cluster(crate::cluster::cli::ClusterArgs),
    /// Builds role images.
    Build {
        /// The cluster manifest.
        manifest: PathBuf,
        #[command(flatten)]
        selection: Selection,
        /// Output folder; images go to OUT/<cluster>/<role>/.
        #[arg(long, value_name = "DIR", default_value = "out")]
        out: PathBuf,
        /// Cache folder for layers and downloaded packages.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_CACHE)]
        cache: PathBuf,
        /// The r2a-node binary to install (default: the one beside r2a-image).
        #[arg(long, value_name = "FILE")]
        agent: Option<PathBuf>,
        /// Rebuild package layers even when cached (to pick up newer packages).
        #[arg(long)]
        refresh: bool,
        /// Size of raw, qcow2 and ISO-installed disks, e.g. 8GiB (default: the tree plus
        /// 512 MiB; the root grows to the real disk on first boot).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        disk_size: Option<u64>,
        /// Build only if the sources give exactly the packages r2a.lock (beside the
        /// manifest) records; fail before any work, naming what moved, otherwise.
        #[arg(long, conflicts_with = "refresh")]
        locked: bool,
    },
}

fn parse_size(text: &str) -> Result<u64, String> {
    text.parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| format!("`{text}` is not a size; write one such as 8GiB or 4096MiB"))
}

/// What to build (or plan): the same options for `plan` and `build`.
#[derive(Debug, clap::Args)]
struct Selection {
    /// Only these roles (repeatable; default: every role with nodes).
    #[arg(long = "role", value_name = "ROLE")]
    roles: Vec<String>,
    /// Output formats (repeatable; default: the manifest's).
    #[arg(long = "format", value_enum)]
    formats: Vec<Format>,
    /// The base layer's bootstrap tool (default: the manifest's, else mmdebstrap).
    #[arg(long, value_enum)]
    bootstrap: Option<Bootstrap>,
}

/// The cache folder when `--cache` is not given.
pub const DEFAULT_CACHE: &str = "/var/cache/r2a-appliance";

/// Runs the command line; exit status 2 for invalid input, 128 + the signal's number after
/// a signal (130 for Ctrl-C, 143 for SIGTERM), 1 otherwise.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            if let Some(invalid) = error.downcast_ref::<InvalidInput>() {
                eprintln!("{invalid}");
                return ExitCode::from(2);
            }
            if error.chain().any(|cause| cause.is::<UsageError>()) {
                eprintln!("r2a-image: error: {error:#}");
                return ExitCode::from(2);
            }
            eprintln!("r2a-image: error: {error:#}");
            if let Some(interrupted) = error.downcast_ref::<Interrupted>() {
                return ExitCode::from(interrupted.exit_status());
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // The roles and overlays, for the commands that read them.
    let data = || find_data_dir(cli.data.as_deref());
    let progress = Progress::detect(match (cli.quiet, cli.verbose) {
        (true, _) => Verbosity::Quiet,
        (_, true) => Verbosity::Verbose,
        _ => Verbosity::Normal,
    });
    match cli.command {
        Command::Init { path } => {
            generate::init(&path)?;
            println!(
                "{} written; check it with `r2a-image check {}`",
                path.display(),
                path.display()
            );
        }
        Command::Completions { shell } => generate::completions(shell)?,
        Command::Man { dir } => {
            for page in generate::man_pages(&dir)? {
                println!("{}", page.display());
            }
        }
        Command::Cluster(args) => return crate::cluster::cli::run(&data()?, args),
        Command::Check { manifest, json } => {
            let loaded = Project::load(&data()?, &manifest, SecretsMode::ReadOnly);
            if json {
                return report::check_json(&manifest, loaded);
            }
            let project = loaded?;
            println!(
                "{}: valid ({} nodes, roles: {})",
                manifest.display(),
                project.cluster.nodes.len(),
                project.cluster.roles_in_use().join(", ")
            );
        }
        Command::Plan {
            manifest,
            selection,
            cache,
            json,
        } => {
            let project = Project::load(&data()?, &manifest, SecretsMode::ReadOnly)?;
            let Selection {
                roles,
                formats,
                bootstrap,
            } = selection;
            let plan = crate::plan::plan(&project, &roles, &formats, bootstrap, &cache)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print!("{}", plan.to_text());
            }
        }
        Command::Render {
            manifest,
            node,
            out,
        } => {
            let project = Project::load(&data()?, &manifest, SecretsMode::Create)?;
            let count = render_node(&project, &node, &out)?;
            println!("{count} files for {node} written to {}", out.display());
        }
        Command::Seed {
            manifest,
            nodes,
            all,
            out,
        } => {
            // Ctrl-C ends the packers and removes the staged seeds.
            crate::interrupt::install()?;
            let project = Project::load_for_seeds(&data()?, &manifest)?;
            let cluster = &project.cluster;
            let chosen: Vec<&crate::manifest::Node> = if all {
                cluster.nodes.iter().collect()
            } else {
                nodes
                    .iter()
                    .map(|name| find_node(&project, name))
                    .collect::<anyhow::Result<_>>()?
            };
            let signer = project.signer()?;
            let written =
                crate::seed::write_seeds(&project, &chosen, &out, signer.as_ref(), progress)?;
            for path in written {
                println!("{}", path.display());
            }
        }
        Command::Verify {
            manifest,
            out,
            rebuild,
            cache,
            agent,
            disk_size,
        } => {
            let rebuild = if rebuild {
                // Before any thread starts (the kernel's condition).
                let private_mounts = PrivateMounts::enter()?;
                crate::interrupt::install()?;
                Some(crate::verify::RebuildOptions {
                    private_mounts,
                    cache: absolute_dir(&cache)?,
                    agent: agent_or_sibling(agent)?,
                    disk_size,
                    progress,
                })
            } else {
                None
            };
            return crate::verify::run(&data()?, &manifest, &out, rebuild.as_ref());
        }
        Command::Cache { action } => crate::cache::run(&data()?, action)?,
        Command::Boot(args) => boot::boot(&data()?, args)?,
        Command::Build {
            manifest,
            selection,
            out,
            cache,
            agent,
            refresh,
            disk_size,
            locked,
        } => {
            let Selection {
                roles,
                formats,
                bootstrap,
            } = selection;
            // Before any thread starts (the kernel's condition); a manifest's problems are
            // still said first.
            let private_mounts = PrivateMounts::enter();
            crate::interrupt::install()?;
            let project = Project::load(&data()?, &manifest, SecretsMode::Create)?;
            // A role the manifest lacks is refused before any folder is made.
            project.roles_to_build(&roles)?;
            let private_mounts = private_mounts?;
            let agent = agent_or_sibling(agent)?;
            // Chroot and mount commands get absolute paths, whatever their working folder.
            let (out, cache) = (absolute_dir(&out)?, absolute_dir(&cache)?);
            let options = BuildOptions {
                roles,
                formats,
                bootstrap,
                out,
                cache,
                agent,
                refresh,
                disk_size,
                locked,
                private_mounts,
            };
            let records = pipeline::build(&project, &options, progress)?;
            for record in records {
                for artifact in &record.artifacts {
                    println!(
                        "{}  {}",
                        artifact.sha256,
                        options
                            .out
                            .join(&project.cluster.name)
                            .join(&artifact.path)
                            .display()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the files a node ends up with, as root:root with their modes (review copy).
fn render_node(project: &Project, node: &str, out: &Path) -> anyhow::Result<usize> {
    let found = find_node(project, node)?;
    let occupied = out
        .read_dir()
        .is_ok_and(|mut entries| entries.next().is_some());
    anyhow::ensure!(
        !occupied,
        UsageError(format!("{} is not empty; name a new folder", out.display()))
    );
    let rendered = project.render(&found.role)?;
    let files = rendered.node_view(node);
    for file in &files {
        let path = out.join(file.path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().expect("absolute paths have a parent"))?;
        crate::fsutil::write_atomic(&path, &file.content, file.mode)?;
    }
    Ok(files.len())
}

/// Creates a folder if needed and returns its absolute path.
fn absolute_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))
}

/// The node called `name`, or an error listing the manifest's nodes.
fn find_node<'a>(project: &'a Project, name: &str) -> anyhow::Result<&'a crate::manifest::Node> {
    project.cluster.node(name).ok_or_else(|| {
        let names: Vec<&str> = project
            .cluster
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        UsageError(format!(
            "no node `{name}` in {}; nodes: {}",
            project.cluster.manifest.path.display(),
            names.join(", ")
        ))
        .into()
    })
}

/// The `r2a-node` the command line names, else the one beside this binary.
fn agent_or_sibling(agent: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    agent.map_or_else(|| sibling_binary("r2a-node"), Ok)
}

/// A binary installed beside the running one (cargo puts both in target/<profile>/).
fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the running binary")?;
    let path = exe.with_file_name(name);
    anyhow::ensure!(
        path.is_file(),
        "{} not found; build it (cargo build --release) or pass --agent FILE",
        path.display()
    );
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
