//! The schema join step: versioned, idempotent migrations of the cluster's databases,
//! run on the primary only and recorded in `r2a_schema_version` (database `postgres`).
//!
//! The migrations are data: `/etc/r2a/schema/NNNN-name.sql`, rendered by the builder
//! from `overlays/db/etc/r2a/schema/` (one of them holds the application's password, so
//! the folder is readable by root and postgres only). psql runs each file as the
//! `postgres` superuser over the local socket; every statement in them is written to be
//! harmless when run again (`IF NOT EXISTS`, `\gexec` guards), so a migration cut short
//! before its version was recorded simply runs again. A replica never runs them: it
//! waits until the primary's record, streamed to it, reaches the newest version.

use anyhow::Context as _;

use super::Progress;
use crate::agent::config::config_error;
use crate::agent::host::{Host, Invocation};
use crate::agent::steps::Context;

/// Where the migrations are.
pub const MIGRATIONS_DIR: &str = "/etc/r2a/schema";
/// The table recording which migrations ran.
pub const VERSION_TABLE: &str = "r2a_schema_version";

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Its number, from the file name's prefix.
    pub version: u32,
    /// The file name without `.sql`.
    pub name: String,
}

/// Parses `NNNN-name.sql`; other names are not migrations.
pub fn parse_migration(file_name: &str) -> Option<Migration> {
    let name = file_name.strip_suffix(".sql")?;
    let (number, rest) = name.split_once('-')?;
    let valid_name = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid_name || number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(Migration {
        version: number.parse().ok()?,
        name: name.to_string(),
    })
}

/// The migrations not applied yet, in version order.
pub fn pending<'a>(all: &'a [Migration], applied: &[u32]) -> Vec<&'a Migration> {
    all.iter()
        .filter(|migration| !applied.contains(&migration.version))
        .collect()
}

/// One attempt: on the primary, apply what is pending; on a replica, wait for it.
pub fn attempt(context: &mut Context<'_>) -> anyhow::Result<Progress> {
    let migrations = migrations(context)?;
    let Some(newest) = migrations.last().map(|m| m.version) else {
        return Ok(Progress::in_place(format!(
            "no migrations in {MIGRATIONS_DIR}"
        )));
    };
    let in_recovery = match query(context.host, "postgres", "SELECT pg_is_in_recovery()") {
        Ok(answer) => answer.trim() == "t",
        Err(_) => {
            return Ok(Progress::waiting(
                "waiting for the local PostgreSQL to answer",
            ));
        }
    };
    let applied = applied_versions(context.host)?;
    if in_recovery {
        return Ok(if applied.contains(&newest) {
            Progress::in_place(format!(
                "replica; schema at version {newest}, applied on the primary"
            ))
        } else {
            Progress::waiting(format!(
                "replica; waiting for the primary to apply schema version {newest}"
            ))
        });
    }
    if !table_exists(context.host)? {
        query(
            context.host,
            "postgres",
            &format!(
                "CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version integer PRIMARY KEY, \
                 name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now()); \
                 GRANT SELECT ON {VERSION_TABLE} TO PUBLIC"
            ),
        )?;
    }
    let to_apply = pending(&migrations, &applied);
    for migration in &to_apply {
        let file = format!("{MIGRATIONS_DIR}/{}.sql", migration.name);
        context
            .host
            .run(&psql(["-d", "postgres", "-f", &file]))
            .with_context(|| format!("applying migration {}", migration.name))?;
        query(
            context.host,
            "postgres",
            &format!(
                "INSERT INTO {VERSION_TABLE} (version, name) VALUES ({}, '{}') \
                 ON CONFLICT (version) DO NOTHING",
                migration.version, migration.name
            ),
        )?;
    }
    Ok(if to_apply.is_empty() {
        Progress::in_place(format!("primary; schema at version {newest}"))
    } else {
        let names: Vec<&str> = to_apply.iter().map(|m| m.name.as_str()).collect();
        Progress::changed(format!(
            "primary; applied {} (schema at version {newest})",
            names.join(", ")
        ))
    })
}

/// The migrations of [`MIGRATIONS_DIR`], in version order; a file that is not named
/// like one, or two files with one number, is a configuration error.
fn migrations(context: &Context<'_>) -> anyhow::Result<Vec<Migration>> {
    let dir = context.root.path(MIGRATIONS_DIR);
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(error) => return Err(error).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let file_name = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .file_name();
        let file_name = file_name.to_string_lossy();
        let migration = parse_migration(&file_name).ok_or_else(|| {
            config_error(format!(
                "{}/{file_name} is not named like a migration (NNNN-name.sql, lower case)",
                dir.display()
            ))
        })?;
        found.push(migration);
    }
    found.sort_by_key(|m| m.version);
    if let Some(pair) = found
        .windows(2)
        .find(|pair| pair[0].version == pair[1].version)
    {
        return Err(config_error(format!(
            "migrations {} and {} have the same number",
            pair[0].name, pair[1].name
        )));
    }
    Ok(found)
}

/// The versions recorded so far (none before the table exists).
fn applied_versions(host: &mut dyn Host) -> anyhow::Result<Vec<u32>> {
    if !table_exists(host)? {
        return Ok(Vec::new());
    }
    let text = query(
        host,
        "postgres",
        &format!("SELECT version FROM {VERSION_TABLE} ORDER BY version"),
    )?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            line.trim()
                .parse()
                .with_context(|| format!("reading {VERSION_TABLE}: `{line}`"))
        })
        .collect()
}

fn table_exists(host: &mut dyn Host) -> anyhow::Result<bool> {
    let answer = query(
        host,
        "postgres",
        &format!("SELECT to_regclass('public.{VERSION_TABLE}') IS NOT NULL"),
    )?;
    Ok(answer.trim() == "t")
}

/// One SQL command through psql as `postgres` over the local socket; unaligned output.
pub fn query(host: &mut dyn Host, database: &str, sql: &str) -> anyhow::Result<String> {
    host.run(&psql(["-At", "-d", database, "-c", sql]))
}

fn psql<'a>(args: impl IntoIterator<Item = &'a str>) -> Invocation {
    let mut argv = vec![
        "-u",
        "postgres",
        "--",
        "psql",
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
    ];
    argv.extend(args);
    Invocation::new("runuser", argv).with_timeout(60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_names() {
        let cases = [
            ("0001-application.sql", Some((1, "0001-application"))),
            ("0002-telephony-pool.sql", Some((2, "0002-telephony-pool"))),
            ("0003-x.sql.dpkg-old", None),
            ("0003.sql", None),
            ("abc-def.sql", None),
            ("0004-Upper.sql", None),
            ("0005-semi;colon.sql", None),
        ];
        for (file, expected) in cases {
            let parsed = parse_migration(file).map(|m| (m.version, m.name));
            let expected = expected.map(|(v, n)| (v, n.to_string()));
            assert_eq!(parsed, expected, "{file}");
        }
    }

    #[test]
    fn pending_skips_what_was_applied() {
        let all: Vec<Migration> = ["0001-a.sql", "0002-b.sql", "0003-c.sql"]
            .iter()
            .filter_map(|f| parse_migration(f))
            .collect();
        let names = |list: Vec<&Migration>| list.iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(names(pending(&all, &[])), [1, 2, 3]);
        assert_eq!(names(pending(&all, &[1, 2])), [3]);
        assert!(pending(&all, &[1, 2, 3]).is_empty());
    }
}
