//! `check --json`: the manifest's verdict and every diagnostic with named fields, for
//! editors and CI, on standard output whatever the verdict.

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use crate::diag::{DiagnosticRecord, InvalidInput, UsageError};
use crate::project::Project;

/// The version of the report's shape.
pub const CHECK_SCHEMA: u32 = 1;

#[derive(Serialize)]
struct CheckReport<'a> {
    schema: u32,
    manifest: &'a Path,
    valid: bool,
    nodes: Option<usize>,
    roles: Option<Vec<String>>,
    diagnostics: Vec<DiagnosticRecord<'a>>,
}

/// Prints the report of a manifest's load; exit status 0 when valid, 2 when the input
/// is invalid. Any other failure (a template folder that cannot be read) stays an error.
pub fn check_json(manifest: &Path, loaded: anyhow::Result<Project>) -> anyhow::Result<ExitCode> {
    let error = match loaded {
        Ok(project) => {
            print(&CheckReport {
                schema: CHECK_SCHEMA,
                manifest,
                valid: true,
                nodes: Some(project.cluster.nodes.len()),
                roles: Some(project.cluster.roles_in_use()),
                diagnostics: Vec::new(),
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(error) => error,
    };
    let diagnostics = if let Some(invalid) = error.downcast_ref::<InvalidInput>() {
        invalid.0.iter().map(|d| d.record()).collect()
    } else if let Some(usage) = error.chain().find_map(|c| c.downcast_ref::<UsageError>()) {
        vec![DiagnosticRecord {
            file: manifest,
            line: None,
            column: None,
            message: &usage.0,
            hint: None,
        }]
    } else {
        return Err(error);
    };
    print(&CheckReport {
        schema: CHECK_SCHEMA,
        manifest,
        valid: false,
        nodes: None,
        roles: None,
        diagnostics,
    })?;
    Ok(ExitCode::from(2))
}

fn print(report: &CheckReport<'_>) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(report)?);
    Ok(())
}
