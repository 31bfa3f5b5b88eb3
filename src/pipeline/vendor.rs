//! Vendor sources in a layer's tree for the length of its install: the repositories' keys,
//! sources and credentials, and a local `.deb` folder served as a repository; none of it
//! stays in the layer.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use super::BuildContext;
use super::layer;
use crate::exec::CommandExt;
use crate::fsutil;
use crate::manifest::Vendor;

/// Where a local vendor folder is served from inside the tree during the install.
const LOCAL_REPO: &str = "/var/lib/r2a-vendor-local";

/// Vendor sources added to a tree for one install, and removed after it: credentials and
/// the local repository never stay in a layer.
pub struct VendorSetup {
    added: Vec<String>,
}

impl VendorSetup {
    /// Adds the vendor sources to `root` when the layer installs vendor packages.
    pub fn install(
        ctx: &BuildContext<'_>,
        root: &Path,
        needed: bool,
    ) -> anyhow::Result<VendorSetup> {
        let mut added = Vec::new();
        let Vendor::Sources { apt, local } = &ctx.project.cluster.vendor else {
            return Ok(VendorSetup { added });
        };
        if !needed {
            return Ok(VendorSetup { added });
        }
        for repo in apt {
            let key = format!("/etc/apt/keyrings/r2a-{}.gpg", repo.name);
            write_in(root, &key, &std::fs::read(&repo.signing_key)?, 0o644)?;
            let sources = format!(
                "Types: deb\nURIs: {}\nSuites: {}\nComponents: {}\nSigned-By: {key}\n",
                repo.uri,
                repo.suite,
                repo.components.join(" ")
            );
            write_in(
                root,
                &format!("/etc/apt/sources.list.d/r2a-{}.sources", repo.name),
                sources.as_bytes(),
                0o644,
            )?;
            if let (Some(user_env), Some(password_env)) = (&repo.username_env, &repo.password_env) {
                let user = std::env::var(user_env).with_context(|| {
                    format!("the vendor repository {} needs ${user_env}", repo.name)
                })?;
                let password = std::env::var(password_env).with_context(|| {
                    format!("the vendor repository {} needs ${password_env}", repo.name)
                })?;
                let host = repo
                    .uri
                    .split("://")
                    .nth(1)
                    .unwrap_or(&repo.uri)
                    .trim_end_matches('/');
                let auth = format!("/etc/apt/auth.conf.d/r2a-{}.conf", repo.name);
                write_in(
                    root,
                    &auth,
                    format!("machine {host} login {user} password {password}\n").as_bytes(),
                    0o600,
                )?;
                added.push(auth);
            }
        }
        if !local.is_empty() {
            let repo = root.join(LOCAL_REPO.trim_start_matches('/'));
            std::fs::create_dir_all(&repo)?;
            for folder in local {
                for deb in layer::debs_in(folder)? {
                    std::fs::copy(
                        &deb,
                        repo.join(deb.file_name().expect("a .deb file has a name")),
                    )?;
                }
            }
            let index = Command::new("apt-ftparchive")
                .arg("packages")
                .arg(".")
                .current_dir(&repo)
                .output_text()?;
            std::fs::write(repo.join("Packages"), index)?;
            let list = format!("deb [trusted=yes] file:{LOCAL_REPO} ./\n");
            write_in(
                root,
                "/etc/apt/sources.list.d/r2a-vendor-local.list",
                list.as_bytes(),
                0o644,
            )?;
            added.push(LOCAL_REPO.to_string());
            added.push("/etc/apt/sources.list.d/r2a-vendor-local.list".to_string());
        }
        Ok(VendorSetup { added })
    }

    /// Removes what [`VendorSetup::install`] added.
    pub fn remove(self, root: &Path) -> anyhow::Result<()> {
        for path in &self.added {
            let path = root.join(path.trim_start_matches('/'));
            if path.symlink_metadata().is_ok() {
                fsutil::remove_any(&path)?;
            }
        }
        Ok(())
    }
}

fn write_in(root: &Path, path: &str, content: &[u8], mode: u32) -> anyhow::Result<()> {
    let path = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().expect("absolute paths have a parent"))?;
    fsutil::write_atomic(&path, content, mode)
}
