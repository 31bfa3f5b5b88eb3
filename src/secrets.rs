//! Cluster secrets: generated once per cluster beside the manifest (mode 0600), never
//! printed, and handed only to the roles that list them. The same file keeps the cluster
//! CA and the node certificates and keys (see [`crate::pki`]).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use aho_corasick::AhoCorasick;
use anyhow::Context;

use crate::diag::UsageError;
use crate::manifest::Cluster;
use crate::pki::Pki;
use crate::role::RoleSet;
use crate::signing::{self, Signer};

/// Characters of generated passwords: safe unquoted in YAML, HAProxy, libpq and shell.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Length of generated passwords (about 190 bits).
const LENGTH: usize = 32;

/// A secret value. Its `Debug` never shows the value, and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub(crate) fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The value, for rendering into a file that is then installed 0600.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What betrays the secret in a file: the whole value, or for a PEM key each line of
    /// its base64 body, so a key is found however a template indents or wraps it.
    pub fn fingerprints(&self) -> Vec<&[u8]> {
        if self.0.starts_with("-----BEGIN ") {
            self.0
                .lines()
                .map(str::trim)
                .filter(|line| !line.starts_with("-----") && line.len() >= 16)
                .map(str::as_bytes)
                .collect()
        } else if self.0.is_empty() {
            Vec::new()
        } else {
            vec![self.0.as_bytes()]
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Searches text for secrets, every fingerprint of every value in one pass over the text.
///
/// A short value (a hand-written password such as `pbx`) counts only where it stands as a
/// token of its own, not inside `pbx.example.com` or `pbxadmin`; a long one (generated
/// passwords, the lines of a key) counts wherever it is, escaped JSON strings included.
pub struct SecretFinder<'a> {
    names: Vec<&'a str>,
    /// For each pattern, the index of its secret in `names`.
    owners: Vec<usize>,
    automaton: AhoCorasick,
}

impl<'a> SecretFinder<'a> {
    fn new(values: impl Iterator<Item = (&'a str, &'a Secret)>) -> SecretFinder<'a> {
        let mut names = Vec::new();
        let mut owners = Vec::new();
        let mut patterns: Vec<&[u8]> = Vec::new();
        for (name, value) in values {
            for fingerprint in value.fingerprints() {
                owners.push(names.len());
                patterns.push(fingerprint);
            }
            names.push(name);
        }
        let automaton = AhoCorasick::new(patterns).expect("byte patterns always build");
        SecretFinder {
            names,
            owners,
            automaton,
        }
    }

    /// The names of the secrets in `content`, in the order the secrets file keeps them.
    pub fn found_in(&self, content: &[u8]) -> Vec<&'a str> {
        let mut found = std::collections::BTreeSet::new();
        for hit in self.automaton.find_overlapping_iter(content) {
            let outside = [
                hit.start().checked_sub(1).map(|at| content[at]),
                content.get(hit.end()).copied(),
            ];
            let long = hit.len() >= SHORT_SECRET;
            if long || !outside.into_iter().flatten().any(continues_a_token) {
                found.insert(self.owners[hit.pattern().as_usize()]);
            }
        }
        found.into_iter().map(|index| self.names[index]).collect()
    }
}

/// Values shorter than this are found as whole tokens only: by chance a few letters are
/// part of many words, sixteen random ones of none.
const SHORT_SECRET: usize = 16;

/// Whether a byte beside a match makes it part of a longer word, name or number.
fn continues_a_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')
}

/// Every secret of one cluster, by name, and the cluster's TLS material.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, Secret>,
    pki: Pki,
    /// Where they are kept.
    pub path: PathBuf,
}

impl Secrets {
    /// The secrets file that belongs to a manifest: `<stem>.secrets.toml` beside it.
    pub fn path_for(manifest: &Path) -> PathBuf {
        let stem = manifest.file_stem().unwrap_or_default().to_string_lossy();
        manifest.with_file_name(format!("{stem}.secrets.toml"))
    }

    /// Loads the cluster's secrets, generating (and saving, 0600) any that a role needs
    /// and the file lacks, the cluster CA if there is none, and each node's certificate
    /// where it is missing or no longer matches the node. Existing values are never changed.
    pub fn load_or_create(cluster: &Cluster, roles: &RoleSet) -> anyhow::Result<Secrets> {
        let path = Self::path_for(&cluster.manifest.path);
        let (mut values, mut pki) = Self::read(&path)?;
        let needed = roles
            .roles
            .values()
            .chain([&roles.base])
            .flat_map(|role| role.secrets.iter());
        let mut added = false;
        for name in needed {
            if !values.contains_key(name) {
                values.insert(name.clone(), Secret(generate()?));
                added = true;
            }
        }
        if !values.contains_key(signing::KEY_SECRET) {
            values.insert(
                signing::KEY_SECRET.to_string(),
                Secret(signing::generate_key()?),
            );
            added = true;
        }
        let issued = pki
            .ensure(cluster)
            .with_context(|| format!("keeping the cluster CA in {}", path.display()))?;
        let secrets = Secrets { values, pki, path };
        if added || issued {
            secrets.save()?;
        }
        Ok(secrets)
    }

    /// Loads the secrets without creating any (for commands that must not write).
    pub fn load_existing(manifest: &Path) -> anyhow::Result<Secrets> {
        let path = Self::path_for(manifest);
        let (values, pki) = Self::read(&path)?;
        Ok(Secrets { values, pki, path })
    }

    /// Fills secrets and TLS material that do not exist yet with visible placeholders, for
    /// read-only commands that render templates without creating the secrets file.
    pub fn with_placeholders(mut self, roles: &RoleSet, cluster: &Cluster) -> Secrets {
        self.pki = self.pki.with_placeholders(cluster);
        for name in roles
            .roles
            .values()
            .chain([&roles.base])
            .flat_map(|role| role.secrets.iter())
        {
            self.values
                .entry(name.clone())
                .or_insert_with(|| Secret(format!("r2a-not-generated-{name}")));
        }
        self
    }

    fn read(path: &Path) -> anyhow::Result<(BTreeMap<String, Secret>, Pki)> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok((BTreeMap::new(), Pki::default()));
            }
            Err(error) => {
                return Err(UsageError(format!(
                    "reading the secrets file {}: {error}",
                    path.display()
                ))
                .into());
            }
        };
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(UsageError(format!(
                "{} is readable by others (mode {:o}): run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            ))
            .into());
        }
        #[derive(serde::Deserialize)]
        struct File {
            secrets: BTreeMap<String, String>,
            #[serde(default)]
            pki: Pki,
        }
        // The parse error could quote a value: report only where it is.
        let file: File = toml::from_str(&text).map_err(|error| {
            let line = error
                .span()
                .map_or(0, |span| text[..span.start].matches('\n').count() + 1);
            UsageError(format!(
                "{}:{line}: not a valid secrets file (expected a [secrets] table of strings and the [pki] tables r2a-image writes)",
                path.display()
            ))
        })?;
        let values = file
            .secrets
            .into_iter()
            .map(|(name, value)| (name, Secret(value)))
            .collect();
        Ok((values, file.pki))
    }

    fn save(&self) -> anyhow::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut text = String::from(
            "# Cluster secrets, generated by r2a-image. Keep this file private (mode 0600) and out of\n# version control; images built from the manifest beside it embed these values (the\n# passwords and node keys, never the CA key).\n[secrets]\n",
        );
        for (name, value) in &self.values {
            text.push_str(&format!("{name} = \"{}\"\n", value.0));
        }
        text.push_str(&self.pki.to_toml()?);
        let mut file = tempfile::Builder::new()
            .prefix(".secrets")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        file.write_all(text.as_bytes())?;
        file.as_file().sync_all()?;
        file.persist(&self.path)
            .with_context(|| format!("writing {}", self.path.display()))?;
        Ok(())
    }

    /// The secrets a role lists, by name, for its templates.
    pub fn for_role<'a>(
        &'a self,
        names: &'a [String],
    ) -> impl Iterator<Item = (&'a str, &'a Secret)> + 'a {
        names
            .iter()
            .filter_map(|name| self.values.get(name).map(|value| (name.as_str(), value)))
    }

    /// A finder for every secret (passwords, the CA key, node keys); build it once and
    /// search many files with it.
    pub fn finder(&self) -> SecretFinder<'_> {
        SecretFinder::new(self.values())
    }

    /// A finder for the secrets a role's templates are given: the role's own (`names`)
    /// and, in a role with TLS, its nodes' keys. Rendered files can hold no others, and
    /// a thousand-node role need not search for the keys of every other role.
    pub fn finder_for_role<'a>(
        &'a self,
        names: &'a [String],
        tls_nodes: impl Iterator<Item = &'a str>,
    ) -> SecretFinder<'a> {
        let node_keys = tls_nodes.filter_map(|node| self.pki.node_key(node));
        SecretFinder::new(self.for_role(names).chain(node_keys))
    }

    /// Every value, the CA key and node keys included, for checks that no secret leaks
    /// into a public file or a log.
    pub fn values(&self) -> impl Iterator<Item = (&str, &Secret)> {
        self.values
            .iter()
            .map(|(name, value)| (name.as_str(), value))
            .chain(self.pki.private_keys())
    }

    /// The cluster CA and the node certificates and keys.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The key that signs the cluster's `SHA256SUMS`, once a build has made it.
    pub fn signer(&self, cluster: &str) -> anyhow::Result<Option<Signer>> {
        self.values
            .get(signing::KEY_SECRET)
            .map(|secret| {
                Signer::from_secret(secret, cluster)
                    .with_context(|| format!("in {}", self.path.display()))
            })
            .transpose()
    }
}

fn generate() -> anyhow::Result<String> {
    let mut password = String::with_capacity(LENGTH);
    let mut buffer = [0u8; 64];
    while password.len() < LENGTH {
        getrandom::fill(&mut buffer).map_err(|e| anyhow::anyhow!("reading random bytes: {e}"))?;
        // Rejection sampling keeps every character equally likely.
        let limit = 256 - 256 % ALPHABET.len();
        for byte in buffer.iter().filter(|b| usize::from(**b) < limit) {
            if password.len() < LENGTH {
                password.push(ALPHABET[usize::from(*byte) % ALPHABET.len()] as char);
            }
        }
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles() -> RoleSet {
        RoleSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("roles")).unwrap()
    }

    /// The reference cluster, its manifest copied to `c.toml` in `dir`.
    fn cluster_in(dir: &Path) -> Cluster {
        let manifest = dir.join("c.toml");
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/reference-cluster.toml");
        std::fs::copy(example, &manifest).unwrap();
        Cluster::load(&manifest, &roles()).unwrap()
    }

    #[test]
    fn generated_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = cluster_in(dir.path());
        let first = Secrets::load_or_create(&cluster, &roles()).unwrap();
        let path = dir.path().join("c.secrets.toml");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let second = Secrets::load_or_create(&cluster, &roles()).unwrap();
        let value = |s: &Secrets| s.values.get("app_database").unwrap().expose().to_string();
        assert_eq!(value(&first), value(&second));
        assert_eq!(value(&first).len(), LENGTH);
        assert!(!format!("{first:?}").contains(&value(&first)));
    }

    #[test]
    fn a_world_readable_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = cluster_in(dir.path());
        Secrets::load_or_create(&cluster, &roles()).unwrap();
        let path = dir.path().join("c.secrets.toml");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = Secrets::load_existing(&cluster.manifest.path)
            .unwrap_err()
            .to_string();
        assert!(error.contains("chmod 600"), "{error}");
    }

    #[test]
    fn a_pem_key_is_found_line_by_line() {
        let key = Secret::new(
            "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\nAwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"
                .to_string(),
        );
        let secrets = Secrets {
            values: [("k".to_string(), key)].into(),
            ..Secrets::default()
        };
        let finder = secrets.finder();
        let indented = b"key: |\n  MIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n";
        assert_eq!(finder.found_in(indented), ["k"]);
        assert!(finder.found_in(b"-----BEGIN PRIVATE KEY-----").is_empty());
    }

    #[test]
    fn a_short_value_is_found_only_as_a_token_of_its_own() {
        let secrets = Secrets {
            values: [
                ("short".to_string(), Secret::new("pbx".to_string())),
                (
                    "long".to_string(),
                    Secret::new("s3cretPassw0rd4u2".to_string()),
                ),
            ]
            .into(),
            ..Secrets::default()
        };
        let finder = secrets.finder();
        // (text, the secrets found in it)
        let table: [(&str, &[&str]); 10] = [
            ("password: pbx\n", &["short"]),
            ("postgres://app:pbx@db1/app", &["short"]),
            ("PASSWORD=\"pbx\"", &["short"]),
            ("host db1.pbx.example.com", &[]),
            ("user pbxadmin", &[]),
            ("10.77.0.1 pbx-node-01", &[]),
            ("api_pbx_key", &[]),
            ("a: pbx b: s3cretPassw0rd4u2", &["long", "short"]),
            // A long value is found inside other text: an escaped JSON string, a joined key.
            ("\"key\": \"x\\ns3cretPassw0rd4u2\\n\"", &["long"]),
            ("xs3cretPassw0rd4u2x", &["long"]),
        ];
        for (text, expected) in table {
            assert_eq!(finder.found_in(text.as_bytes()), expected, "{text}");
        }
    }
}
