//! `r2a-image cluster MANIFEST <action>`: the command line of the harness, a thin wrapper
//! over [`Harness`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::Harness;
use crate::project::{Project, SecretsMode};

/// `r2a-image cluster`'s arguments.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// The cluster manifest.
    manifest: PathBuf,
    /// Where the build put OUT/<cluster>/<role>/rootfs.tar.gz.
    #[arg(long, value_name = "DIR", default_value = "out", global = true)]
    out: PathBuf,
    /// The harness's own folder: unpacked role trees, node overlays, consoles, the record
    /// of what runs (default: /var/lib/r2a-appliance/cluster/<cluster>).
    #[arg(long, value_name = "DIR", global = true)]
    state: Option<PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Boots the nodes (all, or --nodes) as containers on the lab bridge and waits until
    /// each has finished booting.
    Up {
        /// Only these nodes, comma-separated.
        #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
        nodes: Vec<String>,
        /// Return once the containers are started, without waiting for their boots.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for each boot, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 300)]
        timeout: u64,
    },
    /// Shows every node (process, addresses, systemd, join steps) and the etcd and
    /// Patroni members.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Powers a node off cleanly and waits until it has stopped; its state is kept.
    Stop {
        /// The node.
        node: String,
        /// How long the shutdown may take before the node is killed, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 120)]
        timeout: u64,
    },
    /// Kills a node at once (no shutdown), as a power loss; its state is kept.
    Kill {
        /// The node.
        node: String,
    },
    /// Boots a stopped or killed node again on the state it kept.
    Start {
        /// The node.
        node: String,
        /// Return once the container is started, without waiting for its boot.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the boot, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 300)]
        timeout: u64,
    },
    /// Runs a command inside a node; its output and exit status pass through.
    Exec {
        /// The node.
        node: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Removes every container, mount, namespace, veth and bridge of the cluster.
    Down,
}

/// Runs `r2a-image cluster`; the exit status is the command's for `exec`.
pub fn run(data: &Path, args: ClusterArgs) -> anyhow::Result<ExitCode> {
    let project = Project::load(data, &args.manifest, SecretsMode::ReadOnly)?;
    let cluster = &project.cluster;
    let state = args
        .state
        .unwrap_or_else(|| super::default_state_dir(&cluster.name));
    let harness = Harness::new(cluster, &args.out, &state)?;
    // After a failed start, what was made stays (and is recorded) for a look or a retry.
    let with_down_hint = |error: anyhow::Error| {
        if harness.has_resources().unwrap_or(false) {
            anyhow::anyhow!(
                "{error:#}\n  = hint: what was made is recorded in {}; `r2a-image cluster {} down` removes it",
                harness.state_dir().display(),
                args.manifest.display()
            )
        } else {
            error
        }
    };
    match args.action {
        Action::Up {
            nodes,
            no_wait,
            timeout,
        } => {
            let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
            harness.up(&names).map_err(with_down_hint)?;
            let started: Vec<String> = if names.is_empty() {
                cluster.nodes.iter().map(|n| n.name.clone()).collect()
            } else {
                nodes.clone()
            };
            if !no_wait {
                wait_all(&harness, &started, timeout)?;
            }
        }
        Action::Status { json } => {
            let status = harness.status()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.to_text());
            }
        }
        Action::Stop { node, timeout } => {
            harness.stop(&node, Duration::from_secs(timeout))?;
            println!("{node}: stopped");
        }
        Action::Kill { node } => {
            harness.kill(&node)?;
            println!("{node}: killed");
        }
        Action::Start {
            node,
            no_wait,
            timeout,
        } => {
            harness.start(&node).map_err(with_down_hint)?;
            if !no_wait {
                wait_all(&harness, std::slice::from_ref(&node), timeout)?;
            }
        }
        Action::Exec { node, command } => {
            let argv: Vec<&str> = command.iter().map(String::as_str).collect();
            let status = harness
                .exec_command(&node, &argv)?
                .status()
                .with_context(|| format!("running {argv:?} in {node}"))?;
            // A command killed by a signal has no code; report it as the shell would.
            let code = status
                .code()
                .or_else(|| std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + s))
                .unwrap_or(1);
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
        }
        Action::Down => {
            harness.down()?;
            println!("cluster {}: down", cluster.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn wait_all(harness: &Harness, nodes: &[String], timeout: u64) -> anyhow::Result<()> {
    for node in nodes {
        let state = harness.wait_booted(node, Duration::from_secs(timeout))?;
        println!("{node}: {state}");
    }
    Ok(())
}
