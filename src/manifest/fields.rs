//! Checks of the free-text values that end up in the images' configs, each against what
//! the config it lands in accepts: mirror and repository URLs and apt's suites and
//! components (one-line apt sources), NTP servers (chrony), SSH public keys
//! (`authorized_keys`). A value these configs would misread is refused here, with its place.

use std::net::IpAddr;

use toml::Spanned;

use super::raw;
use super::resolve::Checker;

impl Checker<'_, '_> {
    /// An http(s) URL of a package archive, as apt's one-line sources take it: no spaces,
    /// no credentials (they would be written into every image), no query or fragment.
    pub(super) fn archive_url(&mut self, text: &Spanned<String>, what: &str) -> String {
        let value = text.get_ref();
        let problem = if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("has a space or a control character".to_string())
        } else {
            match url::Url::parse(value) {
                Err(error) => Some(format!("is not a URL ({error})")),
                Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                    Some("is not an http(s) URL".to_string())
                }
                Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                    Some("carries credentials, which would be written into every image".to_string())
                }
                Ok(url) if url.query().is_some() || url.fragment().is_some() => {
                    Some("has a query or fragment, which apt does not take".to_string())
                }
                Ok(_) => None,
            }
        };
        if let Some(problem) = problem {
            self.error(
                Some(text.span()),
                format!("{what} `{value}` {problem}"),
                "write the archive's http(s) URL, e.g. http://deb.debian.org/debian (vendor credentials go in username_env / password_env)",
            );
        }
        value.trim_end_matches('/').to_string()
    }

    /// A suite or component of an apt source: one word of apt's line format.
    pub(super) fn apt_word(&mut self, text: &Spanned<String>, what: &str) -> String {
        let value = text.get_ref();
        let valid = !value.is_empty()
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+~/-".contains(c));
        if !valid {
            self.error(
                Some(text.span()),
                format!("invalid {what} `{value}`"),
                "write one word of letters, digits and . _ + ~ / - such as main or trixie",
            );
        }
        value.clone()
    }

    /// An NTP server for chrony's `server` lines: an IP address or a host name.
    pub(super) fn time_server(&mut self, text: &Spanned<String>) -> String {
        let value = text.get_ref();
        if value.parse::<IpAddr>().is_err() && !is_host_name(value) {
            self.error(
                Some(text.span()),
                format!("invalid NTP server `{value}`"),
                "write a host name such as ntp.example.com or an IP address",
            );
        }
        value.clone()
    }

    /// The `[ssh]` keys, each parsed as an OpenSSH public key; none at all only when the
    /// manifest says so, since nobody could then log in.
    pub(super) fn ssh_keys(&mut self, raw: Option<raw::SshSection>) -> Vec<String> {
        let (keys, allow_no_keys) = raw.map_or((Vec::new(), false), |ssh| {
            (ssh.authorized_keys, ssh.allow_no_keys.unwrap_or(false))
        });
        if keys.is_empty() && !allow_no_keys {
            let span = self.doc.key_span("ssh");
            self.error(
                span,
                "no SSH key: nobody could log in to the nodes",
                "add [ssh] authorized_keys = [\"ssh-ed25519 AAAA... you@host\"], or say [ssh] allow_no_keys = true to log in by console only",
            );
        }
        for key in &keys {
            let line = key.get_ref();
            let problem = if line.contains(['\n', '\r']) {
                Some("spans more than one line".to_string())
            } else {
                ssh_key::PublicKey::from_openssh(line)
                    .err()
                    .map(|error| format!("is not an OpenSSH public key ({error})"))
            };
            if let Some(problem) = problem {
                self.error(
                    Some(key.span()),
                    format!("SSH key {problem}"),
                    "paste one line of a .pub file, e.g. `ssh-ed25519 AAAA... you@host`",
                );
            }
        }
        keys.into_iter().map(Spanned::into_inner).collect()
    }
}

/// A DNS host name: dot-separated labels of letters, digits and inner hyphens.
fn is_host_name(text: &str) -> bool {
    text.len() <= 253
        && text.trim_end_matches('.').split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}
