//! A loaded project: the data folder (roles and overlays), one validated cluster manifest,
//! and its secrets. Every command starts by loading one.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::diag::{Diagnostics, InvalidInput};
use crate::manifest::Cluster;
use crate::overlay::{self, RenderedRole};
use crate::role::RoleSet;
use crate::secrets::Secrets;

/// Where `roles/` and `overlays/` are installed system-wide.
pub const SYSTEM_DATA_DIR: &str = "/usr/share/r2a-appliance";

/// The inputs of every command.
pub struct Project {
    /// The folder holding `roles/` and `overlays/`.
    pub data_dir: PathBuf,
    /// Every role.
    pub roles: RoleSet,
    /// The validated cluster.
    pub cluster: Cluster,
    /// The cluster's secrets.
    pub secrets: Secrets,
}

/// Whether loading may create the secrets file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretsMode {
    /// Generate missing secrets, the cluster CA and node certificates and save them
    /// (build, render).
    Create,
    /// Read what exists; missing secrets and certificates render as placeholders (plan,
    /// check).
    ReadOnly,
}

impl Project {
    /// Loads the data folder and a manifest, validating both and rendering every role's
    /// templates so that every problem is reported in one go.
    pub fn load(data_dir: &Path, manifest: &Path, secrets: SecretsMode) -> anyhow::Result<Project> {
        let roles = RoleSet::load(&data_dir.join("roles"))?;
        let cluster = Cluster::load(manifest, &roles)?;
        let secrets = match secrets {
            SecretsMode::Create => Secrets::load_or_create(&cluster, &roles)?,
            SecretsMode::ReadOnly => {
                Secrets::load_existing(manifest)?.with_placeholders(&roles, &cluster)
            }
        };
        let project = Project {
            data_dir: data_dir.to_path_buf(),
            roles,
            cluster,
            secrets,
        };
        project.check_templates()?;
        Ok(project)
    }

    /// Renders every role in use, gathering the problems of all templates.
    fn check_templates(&self) -> anyhow::Result<()> {
        let mut diagnostics = Diagnostics::new();
        for role in self.cluster.roles_in_use() {
            if let Err(error) = self.render(&role) {
                match error.downcast::<InvalidInput>() {
                    Ok(invalid) => invalid.0.into_iter().for_each(|d| diagnostics.push(d)),
                    Err(other) => return Err(other),
                }
            }
        }
        diagnostics.check()?;
        Ok(())
    }

    /// Loads the project to write seeds with. Under `node_data = "seed"` a seed carries
    /// the node's secrets and certificate, so missing ones are created (a node added to the
    /// manifest gets its certificate with its seed, no image rebuild); otherwise seeds hold
    /// no secret and nothing is written.
    pub fn load_for_seeds(data_dir: &Path, manifest: &Path) -> anyhow::Result<Project> {
        let project = Project::load(data_dir, manifest, SecretsMode::ReadOnly)?;
        if project.cluster.build.node_data == crate::manifest::NodeData::Seed {
            return Project::load(data_dir, manifest, SecretsMode::Create);
        }
        Ok(project)
    }

    /// The key that signs what is published for the cluster, once a build has made it.
    pub fn signer(&self) -> anyhow::Result<Option<crate::signing::Signer>> {
        self.secrets.signer(&self.cluster.name)
    }

    /// A role's overlay, rendered for each of its nodes.
    pub fn render(&self, role: &str) -> anyhow::Result<RenderedRole> {
        overlay::render_role(
            &overlay::Inputs {
                data_dir: &self.data_dir,
                cluster: &self.cluster,
                roles: &self.roles,
                secrets: &self.secrets,
            },
            role,
        )
    }

    /// The roles named on the command line (checked), or every role that has nodes.
    pub fn roles_to_build(&self, requested: &[String]) -> anyhow::Result<Vec<String>> {
        let in_use = self.cluster.roles_in_use();
        if requested.is_empty() {
            return Ok(in_use);
        }
        let mut roles = Vec::new();
        for role in requested {
            anyhow::ensure!(
                in_use.contains(role),
                crate::diag::UsageError(format!(
                    "role `{role}` has no nodes in {}; roles with nodes: {}",
                    self.cluster.manifest.path.display(),
                    in_use.join(", ")
                ))
            );
            if !roles.contains(role) {
                roles.push(role.clone());
            }
        }
        Ok(roles)
    }
}

/// Finds the data folder: `--data`, then `$R2A_DATA_DIR`, then a source checkout holding
/// the running binary (`target/<profile>/r2a-image`), then the system-wide folder.
pub fn find_data_dir(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("R2A_DATA_DIR") {
        return Ok(PathBuf::from(dir));
    }
    // A source checkout above the binary (target/release/), or `make install`'s
    // <prefix>/share/r2a-appliance beside <prefix>/bin.
    let exe = std::env::current_exe().context("finding the running binary")?;
    let found = exe
        .ancestors()
        .skip(1)
        .flat_map(|dir| [dir.to_path_buf(), dir.join("share/r2a-appliance")])
        .find(|dir| dir.join("roles/base.toml").is_file());
    if let Some(dir) = found {
        return Ok(dir);
    }
    let system = PathBuf::from(SYSTEM_DATA_DIR);
    anyhow::ensure!(
        system.join("roles/base.toml").is_file(),
        "no data folder with roles/ and overlays/ found; pass --data DIR or set R2A_DATA_DIR"
    );
    Ok(system)
}
