//! `r2a-node`, the first-boot agent inside every image: finds out which node of the
//! cluster it is, then brings the node to its configured state one idempotent step at
//! a time (DESIGN.md §4).
//!
//! - `r2a-node firstboot` (what `r2a-firstboot.service` runs): identify, record the
//!   identity, run [`steps::COMMON_STEPS`], write `/run/r2a/status.json`.
//! - `r2a-node join [--once]` (what `r2a-join.service` runs, after the network is
//!   online): the role's join steps ([`join`]), retried until each one is done.
//! - `r2a-node status [--json]`: every step, done, pending, waiting or failed.
//! - `r2a-node identify`: which node this is and how that was found.
//! - `r2a-node report`: the end-of-boot line `r2a-image boot --check` reads.
//! - `r2a-node install`: the ISO installer.
//!
//! Every path is resolved under `--root` (default `/`); external commands run only when
//! the root is `/`. Exit codes: 0 success, 1 failure (a retry may succeed), 2
//! configuration error (it will not; fix the manifest, seed or image).

pub mod config;
pub mod disk;
pub mod files;
pub mod firewall;
pub mod grow;
pub mod host;
pub mod hosts;
pub mod identity;
pub mod install;
pub mod join;
pub mod keep;
pub mod links;
pub mod markers;
pub mod names;
pub mod network;
pub mod pool;
pub mod report;
pub mod root;
pub mod seeded;
pub mod sources;
pub mod status;
pub mod steps;
#[cfg(test)]
mod testing;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use config::{Config, is_config_error};
use host::{DryRunHost, Host, LiveHost, OfflineHost};
use markers::now_utc;
use root::Root;
use status::{Failure, Report};
use steps::{COMMON_STEPS, Context, run_step};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "r2a-node",
    version,
    about = "First-boot agent of a Ring2All PBX node"
)]
pub struct Cli {
    /// An image tree to work on offline, as if it were `/`: files are written into it and
    /// no command runs (nft, mkfs, mount, ...). Leave it out on a node; any other name
    /// for this system's own `/` is refused.
    #[arg(long, global = true, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Identify this node and apply the common steps (run by r2a-firstboot.service).
    Firstboot {
        /// Stop after this step (r2a-early.service runs the steps that need no daemon,
        /// up to the network file, before systemd-networkd starts).
        #[arg(long, value_name = "STEP", value_parser = clap::builder::PossibleValuesParser::new(steps::step_names()))]
        until: Option<String>,
        /// Say what each step would change, and change nothing: no file, no command
        /// that alters the machine, no marker or status.
        #[arg(long, conflicts_with = "until")]
        dry_run: bool,
    },
    /// Run the role's join steps (etcd, Patroni, ...) until each is done (run by
    /// r2a-join.service once the network is online).
    Join {
        /// Try each step once and exit: 0 when all are done, 1 when one still waits.
        #[arg(long)]
        once: bool,
    },
    /// Print every step: done, pending, waiting or failed, when, and what it did.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Keep the node in step with the cluster while it runs: a telephony node's
    /// heartbeat in the pool (and its leaving on SIGTERM), and `/etc/hosts` (run by
    /// r2a-keep.service).
    Keep,
    /// Print which node this is and how that was found.
    Identify,
    /// Print the boot report line the console check reads (run by r2a-report.service).
    Report,
    /// Write the role's disk image from the ISO to a disk, as `r2a.install=` on the
    /// kernel command line asks, then reboot (run by r2a-install.service).
    Install,
}

/// Entry point of the `r2a-node` binary.
pub fn main() -> ExitCode {
    run(&Cli::parse())
}

/// Runs a parsed command line and reports an error on stderr.
pub fn run(cli: &Cli) -> ExitCode {
    let root = match Root::from_command_line(&cli.root) {
        Ok(root) => root,
        Err(error) => {
            eprintln!("r2a-node: configuration error: {error:#}");
            return ExitCode::from(2);
        }
    };
    let mut host: Box<dyn Host> = if root.is_system_root() {
        Box::new(LiveHost)
    } else {
        Box::new(OfflineHost {
            root: root.dir().to_path_buf(),
        })
    };
    let result = match &cli.command {
        Command::Firstboot { dry_run: true, .. } => {
            let mut observer = DryRunHost {
                inner: host.as_mut(),
            };
            firstboot_dry_run(&root, &mut observer).map(drop)
        }
        Command::Firstboot { until, .. } => {
            firstboot_until(&root, host.as_mut(), until.as_deref()).map(drop)
        }
        Command::Join { once } => run_joins(&root, host.as_mut(), *once),
        Command::Status { json } => print_status(&root, host.as_mut(), *json),
        Command::Keep => keep::run(&root, host.as_mut()),
        Command::Identify => print_identity(&root, host.as_mut()),
        Command::Report => report::print(&root, host.as_mut()),
        Command::Install => std::fs::read_to_string(root.path(sources::CMDLINE_FILE))
            .context("reading the kernel command line")
            .and_then(|cmdline| install::run(host.as_mut(), &cmdline)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if is_config_error(&error) => {
            eprintln!("r2a-node: configuration error: {error:#}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("r2a-node: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Identifies the node, records its identity, runs every common step in order and
/// stops at the first failure. The report of the run is saved to `/run/r2a/status.json`
/// either way.
pub fn firstboot(root: &Root, host: &mut dyn Host) -> anyhow::Result<Report> {
    firstboot_until(root, host, None)
}

/// [`firstboot`], stopping after the step named `until` when given.
pub fn firstboot_until(
    root: &Root,
    host: &mut dyn Host,
    until: Option<&str>,
) -> anyhow::Result<Report> {
    let mut failed_step = None;
    let result = apply_steps(root, host, until, &mut failed_step);
    let failure = result.as_ref().err().map(|error| Failure {
        step: failed_step.clone(),
        configuration: is_config_error(error),
        message: format!("{error:#}"),
        at: now_utc(),
    });
    let saved = Report::collect(root, failure).and_then(|report| {
        report.save(root)?;
        Ok(report)
    });
    match (result, saved) {
        (Ok(()), saved) => saved,
        (Err(error), saved) => {
            if let Err(save_error) = saved {
                eprintln!("r2a-node: error: could not save the status: {save_error:#}");
            }
            Err(match failed_step {
                Some(step) => error.context(format!("step {step}")),
                None => error,
            })
        }
    }
}

fn apply_steps(
    root: &Root,
    host: &mut dyn Host,
    until: Option<&str>,
    failed_step: &mut Option<String>,
) -> anyhow::Result<()> {
    if let Some(detail) = seeded::stage_node_data(root, host)? {
        println!("r2a-node: node data: {detail}");
    }
    let config = Config::load(root)?;
    let identity = identity::resolve(root, host, &config)?;
    identity::record(root, &identity)?;
    println!("r2a-node: {}", identity_line(&identity));
    let node = identified_node(&config, &identity)?;
    let mut context = Context::new(root, host, &config, node);
    for step in &COMMON_STEPS {
        // Saved before each step, so `status` shows progress while a step runs.
        Report::collect(root, None)?.save(root)?;
        *failed_step = Some(step.name.to_string());
        let (marker, changed) = run_step(step, &mut context)?;
        let verb = if changed { "changed" } else { "in place" };
        println!("r2a-node: {}: {verb}: {}", step.name, marker.detail);
        if until == Some(step.name) {
            break;
        }
    }
    *failed_step = None;
    Ok(())
}

/// `firstboot --dry-run`: identifies the node and says, step by step, what each common
/// step would change, judged against the machine as it is now; `host` must be a dry run.
/// Nothing is written: no file, marker, status or recorded identity.
pub fn firstboot_dry_run(
    root: &Root,
    host: &mut dyn Host,
) -> anyhow::Result<Vec<(&'static str, steps::Outcome)>> {
    anyhow::ensure!(
        host.dry_run(),
        "a dry run needs a host that changes nothing"
    );
    if !root.path(config::CLUSTER_FILE).exists() {
        println!(
            "r2a-node: node data: would unpack this node's files from its seed; the steps \
             depend on them, so the dry run stops here"
        );
        return Ok(Vec::new());
    }
    let config = Config::load(root)?;
    let identity = identity::resolve(root, host, &config)?;
    println!(
        "r2a-node: {} (dry run: nothing changes)",
        identity_line(&identity)
    );
    let node = identified_node(&config, &identity)?;
    let mut context = Context::new(root, host, &config, node);
    let mut outcomes = Vec::new();
    for step in &COMMON_STEPS {
        context.previous_marker = markers::read_marker(root, step.name)?;
        let outcome = (step.ensure)(&mut context).with_context(|| format!("step {}", step.name))?;
        // A changing outcome already says "would ...".
        let state = if outcome.changed { "" } else { "in place: " };
        println!("r2a-node: {}: {state}{}", step.name, outcome.detail);
        outcomes.push((step.name, outcome));
    }
    Ok(outcomes)
}

/// Which node this is and how that was found, as first boot says it.
fn identity_line(identity: &identity::Identity) -> String {
    format!(
        "this is {} of cluster {} (role {}), found by {}: {}",
        identity.node, identity.cluster, identity.role, identity.source, identity.evidence
    )
}

/// The identified node's entry in the cluster file.
fn identified_node<'c>(
    config: &'c Config,
    identity: &identity::Identity,
) -> anyhow::Result<&'c config::NodeView> {
    config
        .cluster
        .node(&identity.node)
        .context("the identified node is in cluster.json")
}

fn run_joins(root: &Root, host: &mut dyn Host, once: bool) -> anyhow::Result<()> {
    let options = join::RunOptions {
        once,
        ..join::RunOptions::default()
    };
    let status = join::run(root, host, options)?;
    match status.first_unfinished() {
        None => Ok(()),
        Some(step) => anyhow::bail!("join step {} is not done: {}", step.step, step.detail),
    }
}

fn print_status(root: &Root, host: &mut dyn Host, json: bool) -> anyhow::Result<()> {
    let report = Report::current(root)?;
    let gluster = live_gluster(root, host);
    if json {
        let mut value = serde_json::to_value(&report).context("encoding the status")?;
        if let Some(view) = gluster {
            value["gluster"] = match view {
                Ok(view) => serde_json::to_value(view).context("encoding the status")?,
                Err(reason) => serde_json::json!({ "unavailable": reason }),
            };
        }
        let text = serde_json::to_string_pretty(&value).context("encoding the status")?;
        println!("{text}");
    } else {
        print!("{}", report.to_table());
        match gluster {
            Some(Ok(view)) => print!("\ngluster\n{}", view.describe()),
            Some(Err(reason)) => println!("\ngluster: unavailable: {reason}"),
            None => {}
        }
    }
    Ok(())
}

/// On a running fs node, the pool, the volume and its heal state as glusterd reports
/// them now; `None` on other roles or under another root.
fn live_gluster(
    root: &Root,
    host: &mut dyn Host,
) -> Option<Result<join::gluster_view::PoolView, String>> {
    let config = Config::load(root).ok()?;
    if !host.is_live() || !config.role.join.iter().any(|step| step == "gluster") {
        return None;
    }
    Some(join::gluster_view::observe(host).map_err(|error| format!("{error:#}")))
}

fn print_identity(root: &Root, host: &mut dyn Host) -> anyhow::Result<()> {
    let config = Config::load(root)?;
    let identity = identity::resolve(root, host, &config)?;
    println!("{}", identity.node);
    println!(
        "address {}, role {}, cluster {}; found by {}: {}",
        identity.address, identity.role, identity.cluster, identity.source, identity.evidence
    );
    Ok(())
}

#[cfg(test)]
mod parser_properties;
#[cfg(test)]
#[path = "firstboot_tests.rs"]
mod tests;
