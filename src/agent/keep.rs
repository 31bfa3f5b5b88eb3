//! `r2a-node keep`: what a node does for as long as it runs, after its join (run by
//! `r2a-keep.service` on db and fs nodes and database clients). A telephony node beats
//! its heart in the pool every [`HEARTBEAT_SECONDS`] and leaves the active set when the
//! unit is stopped cleanly; every node keeps the agent's block of `/etc/hosts` in step
//! with the nodes registered in the pool (a database client through its HAProxy, an fs
//! node as the pool's certificate-authenticated reader, a db node from its own server,
//! replica or primary); an fs node that is a member of the Gluster pool probes in the fs
//! nodes that asked to join.
//!
//! The database may be away for a while (a failover, a restart of the whole cluster):
//! a round that cannot reach it says so on stdout and the next one tries again.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::config::Config;
use super::host::Host;
use super::hosts::with_registered;
use super::identity;
use super::join::gluster_requests::answer_requests;
use super::markers::read_marker;
use super::pool::{self, HEARTBEAT_SECONDS};
use super::root::Root;
use crate::fsutil::{read_optional, write_atomic};

/// The join step whose marker says this node is registered in the pool.
const POOL_STEP: &str = "telephony-pool";
/// The join step whose marker says this fs node is a member of the Gluster pool.
const GLUSTER_STEP: &str = "gluster";
/// The join step that marks a db node (the pool's tables live in its server).
const SCHEMA_STEP: &str = "schema";
/// The file whose block [`with_registered`] keeps.
pub const HOSTS_FILE: &str = "/etc/hosts";

/// Runs until SIGTERM or SIGINT; then a registered telephony node leaves the pool.
pub fn run(root: &Root, host: &mut dyn Host) -> anyhow::Result<()> {
    let config = Config::load(root)?;
    let recorded = identity::read_recorded(root)?.ok_or_else(|| {
        super::config::config_error(
            "this node has no recorded identity yet: r2a-firstboot.service must run first",
        )
    })?;
    let name = recorded.identity.node;
    let in_pool = config.role.join.iter().any(|step| step == POOL_STEP);
    let gluster_brick = if config.role.join.iter().any(|step| step == GLUSTER_STEP) {
        Some(config.role.var("brick")?)
    } else {
        None
    };
    // systemd gives database clients their database settings, and fs nodes the pool
    // reader's (database.env).
    let settings_given = std::env::var_os("PGHOST").is_some();
    let pool_reader = match choose_pool_source(settings_given, &config.role.join) {
        Some(PoolSource::UnitSettings) => Some(PoolReader::Client),
        Some(PoolSource::OwnServer) => Some(PoolReader::LocalServer {
            database: config.role.var("database")?,
        }),
        None => None,
    };
    let duties = Duties {
        name: &name,
        in_pool,
        gluster_brick: gluster_brick.as_deref(),
        pool_reader,
    };
    crate::interrupt::install()?;
    let mut last_report = String::new();
    while crate::interrupt::check().is_ok() {
        let started = Instant::now();
        let report = one_round(root, host, &config, &duties);
        // Said once per change, not every ten seconds.
        if report != last_report {
            println!("r2a-node: keep: {report}");
            last_report = report;
        }
        let pause = Duration::from_secs(HEARTBEAT_SECONDS).saturating_sub(started.elapsed());
        let until = Instant::now() + pause;
        while Instant::now() < until && crate::interrupt::check().is_ok() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    if in_pool && registered(root)? {
        pool::query(host, &pool::leave_sql(&name)).context("leaving the telephony pool")?;
        println!("r2a-node: keep: {name} left the telephony pool (clean stop)");
    }
    Ok(())
}

/// What this node's keeper does each round.
struct Duties<'a> {
    name: &'a str,
    /// A telephony node: heartbeat.
    in_pool: bool,
    /// An fs node: its brick, where join requests land.
    gluster_brick: Option<&'a str>,
    /// How it reads the telephony pool for `/etc/hosts`, if it does.
    pool_reader: Option<PoolReader>,
}

/// Which way a node reads the pool, before the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PoolSource {
    /// With the database settings the unit was given.
    UnitSettings,
    /// From the node's own server.
    OwnServer,
}

/// How a node reads the pool: with the settings systemd gave it (database clients, fs
/// nodes), else from its own server when it is a db node; else not at all.
fn choose_pool_source(settings_given: bool, join: &[String]) -> Option<PoolSource> {
    if settings_given {
        Some(PoolSource::UnitSettings)
    } else if join.iter().any(|step| step == SCHEMA_STEP) {
        Some(PoolSource::OwnServer)
    } else {
        None
    }
}

/// Where a node reads the telephony pool.
enum PoolReader {
    /// psql with the unit's settings: a database client through its HAProxy, an fs
    /// node straight to the db nodes as the pool's read-only reader.
    Client,
    /// A db node: its own server (a replica answers too), as `postgres` over the local
    /// socket, in the application's database.
    LocalServer { database: String },
}

impl PoolReader {
    fn members(&self, host: &mut dyn Host) -> anyhow::Result<Vec<(String, std::net::Ipv4Addr)>> {
        let output = match self {
            PoolReader::Client => pool::query(host, pool::MEMBERS_SQL)?,
            PoolReader::LocalServer { database } => {
                super::join::schema::query(host, database, pool::MEMBERS_SQL)?
            }
        };
        pool::parse_members(&output)
    }
}

/// One round of every duty; what happened, in one line.
fn one_round(root: &Root, host: &mut dyn Host, config: &Config, duties: &Duties<'_>) -> String {
    let name = duties.name;
    let mut said = Vec::new();
    if let Some(brick) = duties.gluster_brick {
        // Only a member answers: its own join step is done.
        said.push(match read_marker(root, GLUSTER_STEP) {
            Ok(Some(_)) => match answer_requests(root, host, brick) {
                Ok(probed) if probed.is_empty() => "no fs node waits to join".to_string(),
                Ok(probed) => format!("probed {} into the pool", probed.join(", ")),
                Err(error) => format!("join requests not answered: {error:#}"),
            },
            Ok(None) => "not a member of the Gluster pool yet".to_string(),
            Err(error) => format!("{error:#}"),
        });
    }
    let Some(reader) = &duties.pool_reader else {
        return said.join("; ");
    };
    if duties.in_pool {
        said.push(match registered(root) {
            Ok(true) => match pool::query(host, &pool::heartbeat_sql(name)) {
                Ok(_) => "heartbeat sent".to_string(),
                Err(error) => format!("heartbeat failed: {error:#}"),
            },
            Ok(false) => "not registered yet (r2a-join.service registers the node)".to_string(),
            Err(error) => format!("{error:#}"),
        });
    }
    said.push(
        match sync_hosts(root, host, reader, &config.cluster.domain) {
            Ok(true) => "/etc/hosts updated from the pool".to_string(),
            Ok(false) => "/etc/hosts in step with the pool".to_string(),
            Err(error) => format!("/etc/hosts not updated: {error:#}"),
        },
    );
    said.join("; ")
}

fn registered(root: &Root) -> anyhow::Result<bool> {
    Ok(read_marker(root, POOL_STEP)?.is_some())
}

/// Rewrites the agent's block of `/etc/hosts` from the pool; whether it changed.
fn sync_hosts(
    root: &Root,
    host: &mut dyn Host,
    reader: &PoolReader,
    domain: &str,
) -> anyhow::Result<bool> {
    let members = reader.members(host)?;
    let path = root.path(HOSTS_FILE);
    let current = read_optional(&path)?.unwrap_or_default();
    let wanted = with_registered(&current, &members, domain);
    if wanted == current {
        return Ok(false);
    }
    write_atomic(&path, wanted.as_bytes(), 0o644)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_reads_the_pool_its_own_way() {
        let steps = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        // (settings given by the unit, the role's join steps, reader)
        let table = [
            (
                true,
                steps(&["shared-volume", "freeswitch", "telephony-pool"]),
                Some(PoolSource::UnitSettings),
            ),
            (true, steps(&[]), Some(PoolSource::UnitSettings)),
            (true, steps(&["gluster"]), Some(PoolSource::UnitSettings)),
            (
                false,
                steps(&["etcd", "patroni", "schema"]),
                Some(PoolSource::OwnServer),
            ),
            (false, steps(&["gluster"]), None),
            (false, steps(&[]), None),
        ];
        for (settings, join, reader) in table {
            assert_eq!(
                choose_pool_source(settings, &join),
                reader,
                "{settings} {join:?}"
            );
        }
    }
}
