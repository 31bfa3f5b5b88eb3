//! The cluster's certificate authority and one TLS certificate per node, kept with the
//! cluster secrets: made once, so rebuilds embed the same files, and a node's certificate
//! is issued again only when its name, FQDN or address no longer match it.
//!
//! Keys are ECDSA P-256 in PKCS#8 PEM, which OpenSSL 3, Go (etcd), libpq and Python's ssl
//! (Patroni) all accept. The CA's key signs here and nowhere else: templates see only the
//! CA certificate and the rendered node's own certificate and key.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context as _, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{GeneralName, X509Certificate};

use crate::manifest::{Cluster, Node};
use crate::secrets::Secret;

/// How long the CA is valid (twenty years).
const CA_VALIDITY: Duration = Duration::days(20 * 365 + 5);
/// How long a node certificate is valid (ten years), never past the CA's end.
const NODE_VALIDITY: Duration = Duration::days(10 * 365 + 2);
/// The name the CA's key goes by in leak reports.
const CA_KEY_NAME: &str = "pki.ca.key";
/// Placeholder material of read-only commands starts with this.
const PLACEHOLDER: &str = "r2a-not-generated-tls";

/// The cluster CA and every node's certificate and key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "PkiFile")]
pub struct Pki {
    ca: Option<Authority>,
    nodes: BTreeMap<String, NodeTls>,
    /// Read-only commands fill gaps with placeholders; such a set is never saved.
    placeholders: bool,
}

#[derive(Debug, Clone)]
struct Authority {
    cert: String,
    key: Secret,
}

#[derive(Debug, Clone)]
struct NodeTls {
    cert: String,
    key: Secret,
    /// The key's name in leak reports: its table in the secrets file.
    key_name: String,
}

impl NodeTls {
    fn new(node: &str, cert: String, key: Secret) -> NodeTls {
        NodeTls {
            cert,
            key,
            key_name: format!("pki.nodes.{node}.key"),
        }
    }
}

/// What templates see as `tls`: the CA certificate always; the node's own certificate and
/// key only for roles with `tls = true`.
#[derive(Serialize)]
pub struct TlsContext<'a> {
    /// PEM of the cluster CA's certificate.
    pub ca_cert: &'a str,
    /// The first 16 hex digits of the CA certificate's sha256: public, and unique to the
    /// cluster because the CA's key is random (etcd's initial cluster token).
    pub ca_id: String,
    /// PEM of the rendered node's certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_cert: Option<&'a str>,
    /// PEM of the rendered node's private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_key: Option<&'a str>,
}

/// The `[pki]` tables of the secrets file.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PkiFile {
    ca: Option<PemPair>,
    #[serde(default)]
    nodes: BTreeMap<String, PemPair>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PemPair {
    cert: String,
    key: String,
}

impl From<PkiFile> for Pki {
    fn from(file: PkiFile) -> Pki {
        Pki {
            ca: file.ca.map(|pair| Authority {
                cert: pair.cert,
                key: Secret::new(pair.key),
            }),
            nodes: file
                .nodes
                .into_iter()
                .map(|(name, pair)| {
                    let node = NodeTls::new(&name, pair.cert, Secret::new(pair.key));
                    (name, node)
                })
                .collect(),
            placeholders: false,
        }
    }
}

impl Pki {
    /// Creates the CA when there is none and issues a certificate (with a new key, or the
    /// node's existing one) for every node whose certificate is missing or no longer
    /// matches. Returns whether anything changed.
    pub fn ensure(&mut self, cluster: &Cluster) -> anyhow::Result<bool> {
        anyhow::ensure!(
            !self.placeholders,
            "placeholder certificates cannot be completed"
        );
        let mut changed = false;
        if self.ca.is_none() {
            self.ca = Some(Authority::create(cluster).context("creating the cluster CA")?);
            changed = true;
        }
        let ca = self.ca.as_ref().expect("created above");
        let ca_pem = parse_pem(&ca.cert).context("reading the cluster CA certificate")?;
        let ca_cert = ca_pem
            .parse_x509()
            .map_err(|e| anyhow::anyhow!("reading the cluster CA certificate: {e}"))?;
        let ca_key = KeyPair::from_pem(ca.key.expose())
            .map_err(|e| anyhow::anyhow!("reading the cluster CA key: {e}"))?;
        anyhow::ensure!(
            ca_key.public_key_raw() == &ca_cert.public_key().subject_public_key.data[..],
            "the cluster CA key does not belong to the cluster CA certificate"
        );
        let ca_end = ca_cert.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key)
            .map_err(|e| anyhow::anyhow!("reading the cluster CA certificate: {e}"))?;
        for node in &cluster.nodes {
            let names = NodeNames::of(cluster, node);
            let existing = self.nodes.get(&node.name);
            if existing.is_some_and(|tls| names.match_cert(&tls.cert, &ca_cert)) {
                continue;
            }
            let key = match existing {
                Some(tls) => KeyPair::from_pem(tls.key.expose()).map_err(|e| {
                    anyhow::anyhow!("reading the TLS key of node {}: {e}", node.name)
                })?,
                None => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| anyhow::anyhow!("generating a key for node {}: {e}", node.name))?,
            };
            let cert = names
                .issue(cluster, &key, &issuer, ca_end)
                .with_context(|| format!("issuing the certificate of node {}", node.name))?;
            let tls = NodeTls::new(&node.name, cert, Secret::new(key.serialize_pem()));
            self.nodes.insert(node.name.clone(), tls);
            changed = true;
        }
        Ok(changed)
    }

    /// For commands that must not write: the CA and node material that exists and still
    /// matches, visible placeholders for the rest (a node whose certificate would be issued
    /// again keeps its key, as it will).
    pub fn with_placeholders(mut self, cluster: &Cluster) -> Pki {
        self.placeholders = true;
        let ca_pem = self.ca.as_ref().and_then(|ca| parse_pem(&ca.cert).ok());
        let ca_cert = ca_pem.as_ref().and_then(|pem| pem.parse_x509().ok());
        if ca_cert.is_none() {
            self.ca = Some(Authority {
                cert: format!("{PLACEHOLDER}-ca-cert\n"),
                key: Secret::new(format!("{PLACEHOLDER}-ca-key\n")),
            });
        }
        for node in &cluster.nodes {
            let names = NodeNames::of(cluster, node);
            let current = self.nodes.get(&node.name).is_some_and(|tls| {
                ca_cert
                    .as_ref()
                    .is_some_and(|ca| names.match_cert(&tls.cert, ca))
            });
            if current {
                continue;
            }
            let key = self.nodes.get(&node.name).map_or_else(
                || Secret::new(format!("{PLACEHOLDER}-key-{}\n", node.name)),
                |tls| tls.key.clone(),
            );
            let cert = format!("{PLACEHOLDER}-cert-{}\n", node.name);
            self.nodes
                .insert(node.name.clone(), NodeTls::new(&node.name, cert, key));
        }
        self
    }

    /// The `tls` object of a node's templates.
    pub fn template_context(
        &self,
        node: &str,
        with_node_key: bool,
    ) -> anyhow::Result<TlsContext<'_>> {
        let ca = self
            .ca
            .as_ref()
            .context("the cluster CA has not been created")?;
        let own = if with_node_key {
            Some(
                self.nodes
                    .get(node)
                    .with_context(|| format!("node {node} has no TLS certificate yet"))?,
            )
        } else {
            None
        };
        Ok(TlsContext {
            ca_cert: &ca.cert,
            ca_id: crate::hash::sha256_hex(ca.cert.as_bytes())[..16].to_string(),
            node_cert: own.map(|tls| tls.cert.as_str()),
            node_key: own.map(|tls| tls.key.expose()),
        })
    }

    /// A node's key, by name, when it has one.
    pub fn node_key(&self, node: &str) -> Option<(&str, &Secret)> {
        self.nodes
            .get(node)
            .map(|tls| (tls.key_name.as_str(), &tls.key))
    }

    /// The CA's key and every node's key, by name, for leak checks.
    pub fn private_keys(&self) -> impl Iterator<Item = (&str, &Secret)> {
        let ca = self.ca.iter().map(|ca| (CA_KEY_NAME, &ca.key));
        let nodes = self
            .nodes
            .values()
            .map(|tls| (tls.key_name.as_str(), &tls.key));
        ca.chain(nodes)
    }

    /// The CA certificate's PEM, when there is a CA.
    pub fn ca_cert(&self) -> Option<&str> {
        self.ca.as_ref().map(|ca| ca.cert.as_str())
    }

    /// A node's certificate PEM, when it has one.
    pub fn node_cert(&self, node: &str) -> Option<&str> {
        self.nodes.get(node).map(|tls| tls.cert.as_str())
    }

    /// The `[pki]` tables for the secrets file (TOML literal strings: PEM has no `'''`).
    pub fn to_toml(&self) -> anyhow::Result<String> {
        if self.placeholders {
            bail!("placeholder certificates are never saved");
        }
        let mut text = String::new();
        if let Some(ca) = &self.ca {
            text.push_str(
                "\n# The cluster CA: it signs the node certificates here and goes into no image.\n",
            );
            text.push_str("[pki.ca]\n");
            text.push_str(&pem_entry("cert", &ca.cert)?);
            text.push_str(&pem_entry("key", ca.key.expose())?);
        }
        for (name, tls) in &self.nodes {
            text.push_str(&format!("\n[pki.nodes.{}]\n", toml_key(name)));
            text.push_str(&pem_entry("cert", &tls.cert)?);
            text.push_str(&pem_entry("key", tls.key.expose())?);
        }
        Ok(text)
    }
}

impl Authority {
    fn create(cluster: &Cluster) -> anyhow::Result<Authority> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| anyhow::anyhow!("generating the CA key: {e}"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(&format!("{} cluster CA", cluster.name));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        let (not_before, not_after) = validity(cluster, CA_VALIDITY)?;
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params
            .self_signed(&key)
            .map_err(|e| anyhow::anyhow!("signing the CA certificate: {e}"))?;
        Ok(Authority {
            cert: cert.pem(),
            key: Secret::new(key.serialize_pem()),
        })
    }
}

/// The names a node's certificate carries: common name, DNS names and addresses.
struct NodeNames {
    common_name: String,
    dns: BTreeSet<String>,
    ips: BTreeSet<IpAddr>,
}

impl NodeNames {
    fn of(cluster: &Cluster, node: &Node) -> NodeNames {
        NodeNames {
            common_name: node.name.clone(),
            dns: [
                node.name.clone(),
                format!("{}.{}", node.name, cluster.domain),
                "localhost".to_string(),
            ]
            .into(),
            ips: [IpAddr::V4(node.address), IpAddr::V4(Ipv4Addr::LOCALHOST)].into(),
        }
    }

    /// Whether `cert` is this node's certificate, signed by `ca`.
    fn match_cert(&self, cert: &str, ca: &X509Certificate<'_>) -> bool {
        let Ok(pem) = parse_pem(cert) else {
            return false;
        };
        let Ok(cert) = pem.parse_x509() else {
            return false;
        };
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok());
        let (dns, ips) = alternative_names(&cert);
        common_name == Some(self.common_name.as_str())
            && dns == self.dns
            && ips == self.ips
            && cert.issuer() == ca.subject()
            && cert.verify_signature(Some(ca.public_key())).is_ok()
    }

    fn issue(
        &self,
        cluster: &Cluster,
        key: &KeyPair,
        issuer: &Issuer<'_, KeyPair>,
        ca_end: OffsetDateTime,
    ) -> anyhow::Result<String> {
        let names: Vec<String> = self
            .dns
            .iter()
            .cloned()
            .chain(self.ips.iter().map(IpAddr::to_string))
            .collect();
        let mut params = CertificateParams::new(names)
            .map_err(|e| anyhow::anyhow!("invalid certificate names: {e}"))?;
        params.distinguished_name = common_name(&self.common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Server for etcd, PostgreSQL and Patroni's REST API; client for etcd peers and
        // the etcd clients (Patroni, the agent).
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        let (not_before, not_after) = validity(cluster, NODE_VALIDITY)?;
        params.not_before = not_before;
        params.not_after = not_after.min(ca_end);
        let cert = params
            .signed_by(key, issuer)
            .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
        Ok(cert.pem())
    }
}

/// A certificate's DNS names and addresses.
fn alternative_names(cert: &X509Certificate<'_>) -> (BTreeSet<String>, BTreeSet<IpAddr>) {
    let (mut dns, mut ips) = (BTreeSet::new(), BTreeSet::new());
    if let Ok(Some(names)) = cert.subject_alternative_name() {
        for name in &names.value.general_names {
            match name {
                GeneralName::DNSName(dns_name) => {
                    dns.insert(dns_name.to_string());
                }
                GeneralName::IPAddress(bytes) => {
                    if let Ok(octets) = <[u8; 4]>::try_from(*bytes) {
                        ips.insert(IpAddr::from(octets));
                    } else if let Ok(octets) = <[u8; 16]>::try_from(*bytes) {
                        ips.insert(IpAddr::from(octets));
                    }
                }
                _ => {}
            }
        }
    }
    (dns, ips)
}

fn common_name(name: &str) -> DistinguishedName {
    let mut distinguished_name = DistinguishedName::new();
    distinguished_name.push(DnType::CommonName, name);
    distinguished_name
}

/// A certificate's validity. It starts at the manifest's `source_date_epoch` (not the
/// clock, so it says nothing about when it was made), or now if that lies in the future;
/// it lasts `length` from whichever is later, so an old epoch does not shorten it.
fn validity(
    cluster: &Cluster,
    length: Duration,
) -> anyhow::Result<(OffsetDateTime, OffsetDateTime)> {
    let epoch = cluster.build.source_date_epoch;
    let from_manifest = OffsetDateTime::from_unix_timestamp(epoch)
        .with_context(|| format!("source_date_epoch {epoch} is not a valid time"))?;
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond");
    Ok((from_manifest.min(now), from_manifest.max(now) + length))
}

/// A random positive serial number of 16 bytes: two certificates of the same key (after
/// an address change) must not share one.
fn random_serial() -> anyhow::Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("reading random bytes: {e}"))?;
    // Positive and without a leading zero byte, so it encodes in exactly 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn parse_pem(text: &str) -> anyhow::Result<x509_parser::pem::Pem> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?;
    Ok(pem)
}

fn pem_entry(name: &str, pem: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        !pem.contains("'''") && pem.starts_with("-----BEGIN "),
        "the {name} to save is not PEM"
    );
    Ok(format!("{name} = '''\n{pem}'''\n"))
}

fn toml_key(name: &str) -> String {
    toml::Value::String(name.to_string()).to_string()
}

#[cfg(test)]
#[path = "pki_tests.rs"]
mod tests;
