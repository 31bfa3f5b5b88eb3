//! Signed checksums. A published cluster's `SHA256SUMS` is signed with the cluster's
//! ed25519 key (kept with the cluster secrets, 0600) in OpenSSH's SSHSIG format:
//! `SHA256SUMS.sig` beside it, and `allowed_signers` naming the key, so that
//! `ssh-keygen -Y verify -f allowed_signers -I r2a@<cluster> -n r2a-sha256sums -s
//! SHA256SUMS.sig < SHA256SUMS` checks it as well as `r2a-image verify`, which also
//! checks every sum and that no file is missing or extra. Ed25519 signatures are
//! deterministic and SSHSIG carries no time, so the same sums give the same bytes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::Context;
use ssh_key::private::Ed25519Keypair;
use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

use crate::hash::sha256_file;
use crate::secrets::Secret;

/// The checksums file of a published cluster.
pub const SUMS: &str = "SHA256SUMS";
/// Its signature.
pub const SIGNATURE: &str = "SHA256SUMS.sig";
/// The key that signs it, in `ssh-keygen -Y verify`'s format.
pub const ALLOWED_SIGNERS: &str = "allowed_signers";
/// The cluster's index (`manifest.json`), which the sums do not list.
pub const INDEX: &str = "manifest.json";
/// The SSHSIG namespace: a signature made for these sums is valid for nothing else.
pub const NAMESPACE: &str = "r2a-sha256sums";
/// The secret holding the private key: its 32-byte ed25519 seed in hex (one value the
/// secret checks find whole, where a PEM body shares lines with every other key).
pub const KEY_SECRET: &str = "signing_key";

/// A new private key's seed, in hex.
pub fn generate_key() -> anyhow::Result<String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).context("reading random bytes for the signing key")?;
    Ok(crate::hash::hex(&seed))
}

/// The cluster's signing key.
pub struct Signer {
    key: PrivateKey,
    identity: String,
}

impl Signer {
    /// The key kept in `secret`, for cluster `cluster`.
    pub fn from_secret(secret: &Secret, cluster: &str) -> anyhow::Result<Signer> {
        let hex = secret.expose();
        let seed: Option<Vec<u8>> = (hex.len() == 64)
            .then(|| {
                (0..64)
                    .step_by(2)
                    .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
                    .collect()
            })
            .flatten();
        let seed: [u8; 32] = seed.and_then(|seed| seed.try_into().ok()).context(
            "the signing key of the secrets file is not 64 hex digits (an ed25519 seed); \
                 remove it to have the next build make a new one",
        )?;
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
        Ok(Signer {
            key,
            identity: format!("r2a@{cluster}"),
        })
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// The armored signature of `sums`.
    pub fn sign(&self, sums: &[u8]) -> anyhow::Result<String> {
        let signature = self.key.sign(NAMESPACE, HashAlg::Sha512, sums)?;
        Ok(signature.to_pem(LineEnding::LF)?)
    }

    /// The `allowed_signers` line of the key.
    pub fn allowed_signers(&self) -> anyhow::Result<String> {
        Ok(format!(
            "{} namespaces=\"{NAMESPACE}\" {}\n",
            self.identity,
            self.public_key().to_openssh()?
        ))
    }
}

/// What `verify` found wrong, each naming its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `SHA256SUMS.sig` is absent.
    Unsigned,
    /// The signature does not match `SHA256SUMS` and the key.
    BadSignature(String),
    /// A line of `SHA256SUMS` is not `<sha256>  <path>`.
    BadLine(usize),
    /// A listed file is absent.
    Missing(String),
    /// A listed file's bytes have another sum.
    Changed(String),
    /// A file is there that `SHA256SUMS` does not list.
    Extra(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unsigned => write!(f, "{SIGNATURE}: missing; build again to sign"),
            Problem::BadSignature(why) => {
                write!(
                    f,
                    "{SIGNATURE}: does not match {SUMS} and the cluster's key ({why})"
                )
            }
            Problem::BadLine(line) => write!(f, "{SUMS}:{line}: not `<sha256>  <path>`"),
            Problem::Missing(path) => write!(f, "{path}: listed in {SUMS} but missing"),
            Problem::Changed(path) => write!(f, "{path}: its sha256 differs from {SUMS}"),
            Problem::Extra(path) => write!(f, "{path}: not listed in {SUMS}"),
        }
    }
}

/// Checks the published cluster in `cluster_out` against `key`: the signature, every
/// sum, and every file there. Returns the files checked, or every problem found.
pub fn verify(cluster_out: &Path, key: &PublicKey) -> anyhow::Result<Result<usize, Vec<Problem>>> {
    let sums_path = cluster_out.join(SUMS);
    let sums = std::fs::read(&sums_path)
        .with_context(|| format!("reading {}; is this a built cluster?", sums_path.display()))?;
    let mut problems = Vec::new();
    match std::fs::read_to_string(cluster_out.join(SIGNATURE)) {
        Ok(armored) => {
            let checked = armored
                .parse::<SshSig>()
                .map_err(anyhow::Error::from)
                .and_then(|signature| Ok(key.verify(NAMESPACE, &sums, &signature)?));
            if let Err(error) = checked {
                problems.push(Problem::BadSignature(error.to_string()));
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            problems.push(Problem::Unsigned);
        }
        Err(error) => return Err(error).context(format!("reading {SIGNATURE}")),
    }
    let mut listed = BTreeMap::new();
    for (index, line) in String::from_utf8_lossy(&sums).lines().enumerate() {
        match line.split_once("  ") {
            Some((sha256, path)) if sha256.len() == 64 && is_inside(path) => {
                listed.insert(path.to_string(), sha256.to_string());
            }
            _ => problems.push(Problem::BadLine(index + 1)),
        }
    }
    for (path, sha256) in &listed {
        let file = cluster_out.join(path);
        if !file.is_file() {
            problems.push(Problem::Missing(path.clone()));
        } else if sha256_file(&file)? != *sha256 {
            problems.push(Problem::Changed(path.clone()));
        }
    }
    for entry in walkdir::WalkDir::new(cluster_out).sort_by_file_name() {
        let entry = entry.with_context(|| format!("listing {}", cluster_out.display()))?;
        if entry.file_type().is_dir() {
            continue;
        }
        let relative = entry.path().strip_prefix(cluster_out)?.to_string_lossy();
        let index_file = [SUMS, SIGNATURE, ALLOWED_SIGNERS, INDEX].contains(&relative.as_ref());
        if !index_file && !listed.contains_key(relative.as_ref()) {
            problems.push(Problem::Extra(relative.into_owned()));
        }
    }
    Ok(if problems.is_empty() {
        Ok(listed.len())
    } else {
        Err(problems)
    })
}

/// Whether `path` names a file inside the folder: relative, without `..`.
fn is_inside(path: &str) -> bool {
    let path = Path::new(path);
    !path.as_os_str().is_empty()
        && path
            .components()
            .all(|part| matches!(part, std::path::Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let secret = Secret::new(generate_key().unwrap());
        Signer::from_secret(&secret, "lab").unwrap()
    }

    /// A published cluster of two files, signed by `signer`.
    fn published(signer: &Signer) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        std::fs::write(dir.path().join("db/disk.qcow2"), b"disk").unwrap();
        std::fs::write(dir.path().join("db/disk.raw"), b"raw").unwrap();
        // The index is there and not listed: no problem.
        std::fs::write(dir.path().join(INDEX), b"{}").unwrap();
        let sums = format!(
            "{}  db/disk.qcow2\n{}  db/disk.raw\n",
            crate::hash::sha256_hex(b"disk"),
            crate::hash::sha256_hex(b"raw")
        );
        std::fs::write(dir.path().join(SUMS), &sums).unwrap();
        let signature = signer.sign(sums.as_bytes()).unwrap();
        std::fs::write(dir.path().join(SIGNATURE), signature).unwrap();
        dir
    }

    #[test]
    fn the_same_sums_give_the_same_signature_and_it_verifies() {
        let signer = signer();
        assert_eq!(signer.sign(b"a\n").unwrap(), signer.sign(b"a\n").unwrap());
        let dir = published(&signer);
        assert_eq!(verify(dir.path(), signer.public_key()).unwrap(), Ok(2));
        let line = signer.allowed_signers().unwrap();
        assert!(
            line.starts_with("r2a@lab namespaces=\"r2a-sha256sums\" ssh-ed25519 "),
            "{line}"
        );
    }

    #[test]
    fn every_problem_is_found_and_named() {
        let signer = signer();
        let other = self::signer();
        // (what is done to the published folder, the key verify uses, problems)
        type Damage = fn(&Path);
        let table: [(Damage, bool, Vec<Problem>); 6] = [
            (|_| {}, false, vec![Problem::BadSignature(String::new())]),
            (
                |dir| std::fs::remove_file(dir.join(SIGNATURE)).unwrap(),
                true,
                vec![Problem::Unsigned],
            ),
            (
                |dir| std::fs::write(dir.join("db/disk.qcow2"), b"disK").unwrap(),
                true,
                vec![Problem::Changed("db/disk.qcow2".into())],
            ),
            (
                |dir| std::fs::remove_file(dir.join("db/disk.qcow2")).unwrap(),
                true,
                vec![Problem::Missing("db/disk.qcow2".into())],
            ),
            (
                |dir| std::fs::write(dir.join("db/stray"), b"").unwrap(),
                true,
                vec![Problem::Extra("db/stray".into())],
            ),
            (
                |dir| {
                    let sums = std::fs::read_to_string(dir.join(SUMS)).unwrap();
                    let sums = sums.replace("db/disk.qcow2", "db/other.qcow2") + &"0".repeat(64);
                    std::fs::write(dir.join(SUMS), sums + "  ../outside\n").unwrap();
                },
                true,
                vec![
                    Problem::BadSignature(String::new()),
                    Problem::BadLine(3),
                    Problem::Missing("db/other.qcow2".into()),
                    Problem::Extra("db/disk.qcow2".into()),
                ],
            ),
        ];
        for (damage, own_key, expected) in table {
            let dir = published(&signer);
            damage(dir.path());
            let key = if own_key { &signer } else { &other }.public_key();
            let found = verify(dir.path(), key).unwrap().unwrap_err();
            // The verifier's own words vary; the kind of problem and the file do not.
            let blank = |problems: Vec<Problem>| -> Vec<Problem> {
                problems
                    .into_iter()
                    .map(|p| match p {
                        Problem::BadSignature(_) => Problem::BadSignature(String::new()),
                        other => other,
                    })
                    .collect()
            };
            assert_eq!(blank(found), expected);
        }
    }

    #[test]
    fn a_key_that_is_not_a_hex_seed_is_refused() {
        for bad in [
            "not a key",
            &"0".repeat(63),
            &"g".repeat(64),
            &"0".repeat(66),
        ] {
            assert!(Signer::from_secret(&Secret::new(bad.to_string()), "lab").is_err());
        }
    }
}
