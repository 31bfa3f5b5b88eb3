//! The firewall step: the cluster's nftables rules, rendered into the image by the
//! builder, are loaded in the kernel.
//!
//! `nftables.service` loads the same file at every boot; this step makes sure the rules
//! are in place before the node talks to its peers, and notices when they are not.

use anyhow::{Context as _, bail};

use super::config::config_error;
use super::host::Invocation;
use super::steps::{Context, Outcome};

/// The rules file.
pub const NFTABLES_FILE: &str = "/etc/nftables.conf";
/// The table the rules define (family and name, as `nft list table` takes them).
pub const TABLE: [&str; 2] = ["inet", "r2a"];

/// `nft list table` exits with 1 when the table does not exist.
const NFT_NO_SUCH_TABLE: i32 = 1;

/// Loads the rules unless the `inet r2a` table is already there.
pub fn ensure_firewall(context: &mut Context<'_>) -> anyhow::Result<Outcome> {
    let rules = context.root.path(NFTABLES_FILE);
    if !rules.is_file() {
        return Err(config_error(format!(
            "{} is missing: the image should carry the cluster's firewall rules",
            rules.display()
        )));
    }
    let table = TABLE.join(" ");
    if table_loaded(context)? {
        return Ok(Outcome::unchanged(format!("table {table} is loaded")));
    }
    if context.host.dry_run() {
        return Ok(Outcome::changed(format!(
            "would load {NFTABLES_FILE} (table {table})"
        )));
    }
    // Commands name image paths: they only ever run on the live system, where the
    // root is `/`.
    context
        .host
        .run(&Invocation::new("nft", ["-f", NFTABLES_FILE]))
        .context("loading the firewall rules")?;
    if !table_loaded(context)? {
        bail!("table {table} is not loaded after nft -f {NFTABLES_FILE}; does the file define it?");
    }
    Ok(Outcome::changed(format!(
        "loaded {NFTABLES_FILE} (table {table})"
    )))
}

fn table_loaded(context: &mut Context<'_>) -> anyhow::Result<bool> {
    let list = Invocation::new("nft", ["list", "table", TABLE[0], TABLE[1]]);
    Ok(context.host.probe(&list, NFT_NO_SUCH_TABLE)?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::{Config, is_config_error};
    use crate::agent::host::ScriptedHost;
    use crate::agent::testing::FakeRoot;

    fn run(fake: &FakeRoot, host: &mut ScriptedHost) -> anyhow::Result<Outcome> {
        let config = Config::load(&fake.root).unwrap();
        let node = config.cluster.node("db1").unwrap().clone();
        let mut context = Context::new(&fake.root, host, &config, &node);
        ensure_firewall(&mut context)
    }

    #[test]
    fn the_rules_are_loaded_once_and_verified() {
        let fake = FakeRoot::db();
        let mut host = ScriptedHost::new(true);
        host.absent("nft list table inet r2a")
            .answer("nft list table inet r2a", "table inet r2a {}")
            .succeed("nft -f /etc/nftables.conf");
        assert!(run(&fake, &mut host).unwrap().changed);
        assert_eq!(
            host.log(),
            [
                "nft list table inet r2a",
                "nft -f /etc/nftables.conf",
                "nft list table inet r2a"
            ]
        );
        host.clear_log();
        assert!(!run(&fake, &mut host).unwrap().changed);
        assert_eq!(host.log(), ["nft list table inet r2a"]);
    }

    #[test]
    fn rules_that_do_not_define_the_table_fail_the_step() {
        let fake = FakeRoot::db();
        let mut host = ScriptedHost::new(true);
        host.absent("nft list table inet r2a")
            .succeed("nft -f /etc/nftables.conf");
        let error = run(&fake, &mut host).unwrap_err().to_string();
        assert!(error.contains("not loaded after nft -f"), "{error}");
    }

    #[test]
    fn a_missing_rules_file_is_a_configuration_error() {
        let fake = FakeRoot::db();
        std::fs::remove_file(fake.root.path(NFTABLES_FILE)).unwrap();
        let error = run(&fake, &mut ScriptedHost::new(true)).unwrap_err();
        assert!(is_config_error(&error), "{error:#}");
    }
}
