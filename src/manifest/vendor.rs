//! Checks of the vendor package sources: `vendor = "skip"`, `[[vendor.apt]]` repositories
//! and `[[vendor.local]]` folders, and whether the roles in use need them.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::raw;
use super::resolve::Checker;
use super::{AptRepository, Node, Vendor};
use crate::role::RoleSet;

impl Checker<'_, '_> {
    pub(super) fn vendor(&mut self) -> Option<Vendor> {
        let Some(value) = self.doc.get("vendor") else {
            return Some(Vendor::Undeclared);
        };
        if let Some(text) = value.get_ref().as_str() {
            if text != "skip" {
                self.error(
                    Some(value.span()),
                    format!("vendor = \"{text}\" is not understood"),
                    "write vendor = \"skip\", or declare [[vendor.apt]] / [[vendor.local]] sources",
                );
            }
            return Some(Vendor::Skip);
        }
        let raw: raw::VendorSection = self.doc.decode(value, self.d)?;
        let base = self
            .doc
            .source
            .path
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let mut apt = Vec::new();
        for repo in raw.apt {
            let signing_key = base.join(repo.signing_key.get_ref());
            if !signing_key.is_file() {
                self.error(
                    Some(repo.signing_key.span()),
                    format!("signing key {} not found", signing_key.display()),
                    "give the path of the repository's OpenPGP key, relative to the manifest",
                );
            }
            for env in [&repo.username_env, &repo.password_env]
                .into_iter()
                .flatten()
            {
                if !is_env_name(env.get_ref()) {
                    self.error(Some(env.span()), format!("`{}` is not an environment variable name", env.get_ref()), "name the variable that holds the credential, e.g. VENDOR_TOKEN; never the credential itself");
                }
            }
            apt.push(AptRepository {
                name: self.label(&repo.name, "repository name"),
                uri: self.archive_url(&repo.uri, "repository"),
                suite: self.apt_word(&repo.suite, "suite"),
                components: match &repo.components {
                    Some(given) => given
                        .iter()
                        .map(|c| self.apt_word(c, "component"))
                        .collect(),
                    None => vec!["main".to_string()],
                },
                signing_key,
                username_env: repo.username_env.map(Spanned::into_inner),
                password_env: repo.password_env.map(Spanned::into_inner),
            });
        }
        let mut local = Vec::new();
        for folder in raw.local {
            let path: PathBuf = base.join(folder.path.get_ref());
            if !path.is_dir() {
                self.error(
                    Some(folder.path.span()),
                    format!("vendor folder {} not found", path.display()),
                    "give a folder of .deb files, relative to the manifest",
                );
            }
            local.push(path);
        }
        Some(Vendor::Sources { apt, local })
    }

    pub(super) fn vendor_needed(
        &mut self,
        raw: &[raw::NodeEntry],
        nodes: &[Node],
        vendor: &Option<Vendor>,
        roles: &RoleSet,
    ) {
        if !matches!(vendor, Some(Vendor::Undeclared)) {
            return;
        }
        for (name, role) in &roles.roles {
            if role.packages.vendor.is_empty() || !nodes.iter().any(|n| &n.role == name) {
                continue;
            }
            let span = raw
                .iter()
                .find(|e| e.role.get_ref() == name)
                .map(|e| e.role.span());
            let packages = role.packages.vendor.join(", ");
            self.error(span, format!("role {name} needs vendor packages ({packages}) but the manifest declares no vendor source"), "declare [[vendor.apt]] or [[vendor.local]] sources, or opt out with vendor = \"skip\"");
        }
    }
}

fn is_env_name(text: &str) -> bool {
    !text.is_empty()
        && !text.starts_with(|c: char| c.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}
