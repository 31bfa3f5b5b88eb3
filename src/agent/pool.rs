//! The telephony pool in the shared database: what a telephony node writes there to
//! register, to stay active and to leave, and how every client node turns the pool
//! into names it resolves.
//!
//! Everything goes through the node's HAProxy to the Patroni primary with the
//! application's credentials, which systemd hands the agent's units from
//! `/etc/r2a/database.env` (`EnvironmentFile=`): no password is ever on a command
//! line. Names and addresses come from the validated manifest; they are quoted as SQL
//! literals all the same.

use std::net::Ipv4Addr;

use anyhow::Context as _;

use super::host::{Host, Invocation};

/// What a telephony node registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Node name (also the dispatcher entry's description, which ties the two).
    pub name: String,
    /// Its address on the cluster network.
    pub address: Ipv4Addr,
    /// Its SIP port.
    pub sip_port: u16,
    /// Concurrent calls it carries.
    pub max_calls: u64,
    /// Extensions it carries.
    pub max_extensions: u64,
}

/// Dispatcher set of the telephony pool, as Kamailio's routing script selects it.
pub const DISPATCHER_SET: u32 = 1;
/// Seconds between two heartbeats; `telephony_pool` calls a node inactive after 30.
pub const HEARTBEAT_SECONDS: u64 = 10;

/// `text` as an SQL string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl Registration {
    /// One transaction: the node's row (created, or its address, port and capacity
    /// brought up to date, and active again) and its dispatcher entry.
    pub fn upsert_sql(&self) -> String {
        let name = literal(&self.name);
        let destination = literal(&format!("sip:{}:{}", self.address, self.sip_port));
        let attrs = literal(&format!("duid={};maxload={}", self.name, self.max_calls));
        format!(
            "BEGIN; \
             INSERT INTO telephony_nodes (name, address, sip_port, max_calls, max_extensions, \
             state, last_heartbeat) VALUES ({name}, {address}, {port}, {calls}, {extensions}, \
             'active', now()) ON CONFLICT (name) DO UPDATE SET address = EXCLUDED.address, \
             sip_port = EXCLUDED.sip_port, max_calls = EXCLUDED.max_calls, \
             max_extensions = EXCLUDED.max_extensions, state = 'active', last_heartbeat = now(); \
             DELETE FROM dispatcher WHERE description = {name} AND destination <> {destination}; \
             INSERT INTO dispatcher (setid, destination, flags, priority, attrs, description) \
             VALUES ({DISPATCHER_SET}, {destination}, 0, 0, {attrs}, {name}) \
             ON CONFLICT (setid, destination) DO UPDATE SET attrs = EXCLUDED.attrs, \
             description = EXCLUDED.description; \
             COMMIT;",
            address = literal(&self.address.to_string()),
            port = self.sip_port,
            calls = self.max_calls,
            extensions = self.max_extensions,
        )
    }
}

/// The heartbeat: the node is active, now. Zero rows when it is not registered.
pub fn heartbeat_sql(name: &str) -> String {
    format!(
        "UPDATE telephony_nodes SET state = 'active', last_heartbeat = now() WHERE name = {}",
        literal(name)
    )
}

/// A clean stop: the node leaves the active set at once.
pub fn leave_sql(name: &str) -> String {
    format!(
        "UPDATE telephony_nodes SET state = 'inactive' WHERE name = {}",
        literal(name)
    )
}

/// The node's state as the pool's readers see it (`telephony_pool`).
pub fn state_sql(name: &str) -> String {
    format!(
        "SELECT state FROM telephony_pool WHERE name = {}",
        literal(name)
    )
}

/// Every registered node, for `/etc/hosts`.
pub const MEMBERS_SQL: &str = "SELECT name, host(address) FROM telephony_pool ORDER BY name";

/// Whether the pool's schema (migration 3) is there.
pub const SCHEMA_READY_SQL: &str = "SELECT to_regclass('telephony_pool') IS NOT NULL";

/// Runs `sql` on the primary through HAProxy (the unit's environment says where and as
/// whom) and returns psql's unaligned, tuples-only output.
pub fn query(host: &mut dyn Host, sql: &str) -> anyhow::Result<String> {
    let psql = Invocation::new(
        "psql",
        [
            "--no-psqlrc",
            "--quiet",
            "--tuples-only",
            "--no-align",
            "--set=ON_ERROR_STOP=1",
            "--command",
            sql,
        ],
    )
    .with_timeout(30);
    host.run(&psql)
}

/// Parses [`MEMBERS_SQL`]'s output: `name|address` lines.
pub fn parse_members(output: &str) -> anyhow::Result<Vec<(String, Ipv4Addr)>> {
    output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (name, address) = line
                .split_once('|')
                .with_context(|| format!("reading the pool's member line `{line}`"))?;
            let address = address
                .trim()
                .parse()
                .with_context(|| format!("reading the address of {name}"))?;
            Ok((name.trim().to_string(), address))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_is_one_transaction_with_quoted_values() {
        let registration = Registration {
            name: "tel1".into(),
            address: Ipv4Addr::new(10, 77, 0, 51),
            sip_port: 5060,
            max_calls: 1500,
            max_extensions: 10000,
        };
        let sql = registration.upsert_sql();
        assert!(
            sql.starts_with("BEGIN;") && sql.ends_with("COMMIT;"),
            "{sql}"
        );
        assert!(sql.contains("VALUES ('tel1', '10.77.0.51', 5060, 1500, 10000, 'active', now())"));
        assert!(
            sql.contains(
                "VALUES (1, 'sip:10.77.0.51:5060', 0, 0, 'duid=tel1;maxload=1500', 'tel1')"
            )
        );
        assert_eq!(literal("o'brien"), "'o''brien'");
        assert_eq!(
            heartbeat_sql("tel1"),
            "UPDATE telephony_nodes SET state = 'active', last_heartbeat = now() WHERE name = 'tel1'"
        );
    }

    #[test]
    fn members_are_read_from_psql_lines() {
        assert_eq!(
            parse_members("tel1|10.77.0.51\ntel2|10.77.0.52\n\n").unwrap(),
            vec![
                ("tel1".to_string(), Ipv4Addr::new(10, 77, 0, 51)),
                ("tel2".to_string(), Ipv4Addr::new(10, 77, 0, 52)),
            ]
        );
        assert!(parse_members("tel1 10.77.0.51").is_err());
    }
}
