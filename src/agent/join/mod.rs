//! `r2a-node join`: the role's join steps (etcd, Patroni, schema, ...), run by
//! `r2a-join.service` after the network is online, retried with capped backoff until
//! each one is done.
//!
//! Every join step decides from what its peers report, acts through [`Host`] and says
//! where it stands: [`Progress::Done`], or [`Progress::Waiting`] with what it waits for.
//! A configuration error stops the run (exit 2) and is reported as failed; any other
//! error is retried like a wait. Where the steps stand is kept in [`JOIN_STATUS_FILE`]
//! for `r2a-node status`; a finished step leaves its done marker like the common steps.

pub mod backoff;
pub mod etcd;
pub mod freeswitch;
pub mod gluster;
pub mod gluster_cli;
pub mod gluster_requests;
pub mod gluster_view;
pub mod patroni;
pub mod schema;
pub mod shared_volume;
pub mod state;
pub mod telephony;

use std::time::Duration;

use anyhow::Context as _;

use super::config::{Config, is_config_error};
use super::host::{Host, Invocation};
use super::identity;
use super::markers::{now_utc, read_marker, write_marker};
use super::root::Root;
use super::steps::Context;
use backoff::Backoff;
pub use state::{JOIN_STATUS_FILE, JoinState, JoinStatus};

/// Where a join step stands after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The step reached its goal; `changed` says whether this attempt changed anything.
    Done {
        /// Whether anything changed.
        changed: bool,
        /// What it found or did.
        detail: String,
    },
    /// The step cannot go on yet; what it waits for, in one line.
    Waiting(String),
}

impl Progress {
    /// Done, and nothing had to change.
    pub fn in_place(detail: impl Into<String>) -> Progress {
        Progress::Done {
            changed: false,
            detail: detail.into(),
        }
    }

    /// Done by changing something.
    pub fn changed(detail: impl Into<String>) -> Progress {
        Progress::Done {
            changed: true,
            detail: detail.into(),
        }
    }

    /// Waiting for something.
    pub fn waiting(reason: impl Into<String>) -> Progress {
        Progress::Waiting(reason.into())
    }
}

/// One join step a role may list in `roles/<role>.toml`.
#[derive(Clone, Copy)]
pub struct JoinStep {
    /// Its name, as roles list it; also the name of its done marker.
    pub name: &'static str,
    /// One attempt at the step's goal.
    pub attempt: fn(&mut Context<'_>) -> anyhow::Result<Progress>,
}

/// Every join step the agent knows, by name.
pub const JOIN_STEPS: [JoinStep; 7] = [
    JoinStep {
        name: "etcd",
        attempt: etcd::attempt,
    },
    JoinStep {
        name: "freeswitch",
        attempt: freeswitch::attempt,
    },
    JoinStep {
        name: "gluster",
        attempt: gluster::attempt,
    },
    JoinStep {
        name: "patroni",
        attempt: patroni::attempt,
    },
    JoinStep {
        name: "schema",
        attempt: schema::attempt,
    },
    JoinStep {
        name: "shared-volume",
        attempt: shared_volume::attempt,
    },
    JoinStep {
        name: "telephony-pool",
        attempt: telephony::attempt,
    },
];

/// The names a role's `join` list may use.
pub fn known_step_names() -> Vec<&'static str> {
    JOIN_STEPS.iter().map(|step| step.name).collect()
}

/// The step called `name`.
pub fn step_named(name: &str) -> Option<&'static JoinStep> {
    JOIN_STEPS.iter().find(|step| step.name == name)
}

/// How a run goes on.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Try each step once and return, instead of retrying until every step is done.
    pub once: bool,
    /// The longest pause between two attempts.
    pub max_pause: Duration,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            once: false,
            max_pause: Duration::from_secs(10),
        }
    }
}

/// Runs the role's join steps in order until all are done (or, with `once`, one round).
/// Returns the final status. A configuration error stops the run at once.
pub fn run(root: &Root, host: &mut dyn Host, options: RunOptions) -> anyhow::Result<JoinStatus> {
    let config = Config::load(root)?;
    let recorded = identity::read_recorded(root)?.ok_or_else(|| {
        super::config::config_error(
            "this node has no recorded identity yet: r2a-firstboot.service must run first",
        )
    })?;
    let node = config
        .cluster
        .node(&recorded.identity.node)
        .context("the recorded node is in cluster.json")?;
    let steps = role_steps(&config)?;
    let mut status = JoinStatus::new(steps.iter().map(|step| step.name));
    for step in &steps {
        if let Some(marker) = read_marker(root, step.name)? {
            status.set(step.name, JoinState::Done, marker.done_at, marker.detail);
        }
    }
    let mut backoff = Backoff::new(Duration::from_secs(1), options.max_pause);
    let mut context = Context::new(root, host, &config, node);
    'steps: for step in &steps {
        loop {
            context.previous_marker = read_marker(root, step.name)?;
            let outcome = (step.attempt)(&mut context);
            match outcome {
                Ok(Progress::Done { changed, detail }) => {
                    let marker = if changed || context.previous_marker.is_none() {
                        write_marker(root, step.name, &detail)?
                    } else {
                        context.previous_marker.clone().expect("checked above")
                    };
                    let verb = if changed { "changed" } else { "in place" };
                    println!("r2a-node: join {}: {verb}: {detail}", step.name);
                    status.set(step.name, JoinState::Done, marker.done_at, detail);
                    status.save(root)?;
                    backoff.reset();
                    continue 'steps;
                }
                Ok(Progress::Waiting(reason)) => {
                    println!("r2a-node: join {}: waiting: {reason}", step.name);
                    status.set(step.name, JoinState::Waiting, now_utc(), reason);
                }
                Err(error) if is_config_error(&error) => {
                    let message = format!("{error:#}");
                    status.set(step.name, JoinState::Failed, now_utc(), message);
                    status.save(root)?;
                    return Err(error.context(format!("join step {}", step.name)));
                }
                Err(error) => {
                    let reason = format!("retrying after an error: {error:#}");
                    println!("r2a-node: join {}: {reason}", step.name);
                    status.set(step.name, JoinState::Waiting, now_utc(), reason);
                }
            }
            status.save(root)?;
            if options.once {
                break 'steps;
            }
            std::thread::sleep(backoff.next_pause());
        }
    }
    Ok(status)
}

/// Starts `unit` unless it is active; returns whether it had to. `--no-block`: a unit
/// that waits for its peers must not hold the agent up (the step checks health next).
pub(crate) fn ensure_started(host: &mut dyn Host, unit: &str) -> anyhow::Result<bool> {
    // `is-active` exits 3 for a unit that is not active (inactive, failed, activating).
    let state = Invocation::new("systemctl", ["is-active", unit]);
    if host.probe(&state, SYSTEMCTL_NOT_ACTIVE)?.is_some() {
        return Ok(false);
    }
    host.run(&Invocation::new("systemctl", ["start", "--no-block", unit]))?;
    Ok(true)
}

/// `systemctl is-active` exits with this when the unit is not active.
pub(crate) const SYSTEMCTL_NOT_ACTIVE: i32 = 3;

/// The join steps of the image's role, in the order the role lists them. An unknown
/// name is a configuration error (`r2a-image check` refuses it before a build).
fn role_steps(config: &Config) -> anyhow::Result<Vec<&'static JoinStep>> {
    config
        .role
        .join
        .iter()
        .map(|name| {
            step_named(name).ok_or_else(|| {
                super::config::config_error(format!(
                    "role {} lists the join step `{name}`, which this agent does not know ({})",
                    config.role.name,
                    known_step_names().join(", ")
                ))
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "join_tests.rs"]
mod tests;
