//! Tests of the cluster CA and the node certificates: what they name, that they verify
//! against the CA, that they are made once and kept, and that keys stay where they belong.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use x509_parser::prelude::ParsedExtension;

use super::*;
use crate::manifest::DEFAULT_SOURCE_DATE_EPOCH;
use crate::project::{Project, SecretsMode};
use crate::role::RoleSet;
use crate::secrets::Secrets;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn roles() -> RoleSet {
    RoleSet::load(&repo().join("roles")).unwrap()
}

/// The reference manifest, edited by `edit`, as `c.toml` in `dir`.
fn manifest_in(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("examples/reference-cluster.toml")).unwrap();
    let manifest = dir.join("c.toml");
    std::fs::write(&manifest, edit(text)).unwrap();
    manifest
}

fn cluster_in(dir: &Path, edit: impl Fn(String) -> String) -> Cluster {
    Cluster::load(&manifest_in(dir, edit), &roles()).unwrap()
}

fn unchanged(text: String) -> String {
    text
}

fn moved_pg_node_02(text: String) -> String {
    text.replacen("\"192.168.10.32\"", "\"192.168.10.42\"", 1)
}

fn with_cert<T>(pem: &str, check: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
    let pem = parse_pem(pem).unwrap();
    check(&pem.parse_x509().unwrap())
}

/// A certificate's addresses, then its DNS names, each sorted.
fn names_of(cert: &X509Certificate<'_>) -> Vec<String> {
    let (dns, ips) = alternative_names(cert);
    ips.iter().map(ToString::to_string).chain(dns).collect()
}

fn node_key<'a>(secrets: &'a Secrets, node: &str) -> &'a str {
    secrets
        .pki()
        .template_context(node, true)
        .unwrap()
        .node_key
        .unwrap()
}

#[test]
fn a_node_certificate_names_the_node_for_server_and_client_use_signed_by_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_in(dir.path(), unchanged);
    let secrets = Secrets::load_or_create(&cluster, &roles()).unwrap();
    let pki = secrets.pki();
    let ca_pem = parse_pem(pki.ca_cert().unwrap()).unwrap();
    let ca = ca_pem.parse_x509().unwrap();
    assert!(ca.is_ca());
    assert_eq!(
        ca.subject().to_string(),
        "CN=ring2all cluster CA",
        "named after the cluster"
    );
    ca.verify_signature(None).unwrap();

    with_cert(pki.node_cert("pg-node-02").unwrap(), |cert| {
        assert_eq!(cert.subject().to_string(), "CN=pg-node-02");
        assert_eq!(cert.issuer(), ca.subject());
        cert.verify_signature(Some(ca.public_key())).unwrap();
        assert!(!cert.is_ca());
        assert_eq!(
            names_of(cert),
            [
                "127.0.0.1",
                "192.168.10.32",
                "localhost",
                "pg-node-02",
                "pg-node-02.pbx.example.com"
            ]
        );
        let usage = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(usage.server_auth && usage.client_auth);
        let key_usage = cert.key_usage().unwrap().unwrap().value;
        assert!(key_usage.digital_signature());
        assert!(cert.extensions().iter().any(|extension| matches!(
            extension.parsed_extension(),
            ParsedExtension::AuthorityKeyIdentifier(_)
        )));
        let validity = cert.validity();
        assert_eq!(
            validity.not_before.timestamp(),
            DEFAULT_SOURCE_DATE_EPOCH,
            "not before the manifest's time, whatever the clock says"
        );
        let years = (validity.not_after.timestamp() - OffsetDateTime::now_utc().unix_timestamp())
            / (365 * 24 * 3600);
        assert!(years >= 9, "valid for about ten years, {years} left");
        assert!(validity.not_after <= ca.validity().not_after);
    });
    assert!(
        node_key(&secrets, "pg-node-02").starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "PKCS#8 PEM"
    );
    // Every node of the manifest has one, whatever its role.
    for node in &cluster.nodes {
        assert!(pki.node_cert(&node.name).is_some(), "{}", node.name);
    }
}

#[test]
fn the_material_is_made_once_kept_private_and_never_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_in(dir.path(), unchanged);
    Secrets::load_or_create(&cluster, &roles()).unwrap();
    let path = dir.path().join("c.secrets.toml");
    let first = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(first.contains("[pki.ca]\ncert = '''\n-----BEGIN CERTIFICATE-----\n"));
    assert!(first.contains("[pki.nodes.\"tele-node-02\"]\n"));

    let again = Secrets::load_or_create(&cluster, &roles()).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        first,
        "nothing reissued"
    );
    let loaded = Secrets::load_existing(&cluster.manifest.path).unwrap();
    assert_eq!(loaded.pki().ca_cert(), again.pki().ca_cert());
    assert_eq!(
        node_key(&loaded, "pg-node-01"),
        node_key(&again, "pg-node-01")
    );
}

#[test]
fn an_address_change_reissues_that_nodes_certificate_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let before = Secrets::load_or_create(&cluster_in(dir.path(), unchanged), &roles()).unwrap();
    let moved = cluster_in(dir.path(), moved_pg_node_02);
    let after = Secrets::load_or_create(&moved, &roles()).unwrap();
    let (old, new) = (before.pki(), after.pki());
    assert_eq!(old.ca_cert(), new.ca_cert(), "the CA is kept");
    assert_ne!(old.node_cert("pg-node-02"), new.node_cert("pg-node-02"));
    assert_eq!(
        node_key(&before, "pg-node-02"),
        node_key(&after, "pg-node-02")
    );
    with_cert(new.node_cert("pg-node-02").unwrap(), |cert| {
        let names = names_of(cert);
        assert!(names.contains(&"192.168.10.42".to_string()), "{names:?}");
        assert!(!names.contains(&"192.168.10.32".to_string()), "{names:?}");
    });
    for node in ["pg-node-01", "pg-node-03", "tele-node-01"] {
        assert_eq!(old.node_cert(node), new.node_cert(node), "{node} is kept");
    }
}

#[test]
fn a_new_ca_reissues_every_certificate_and_keeps_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_in(dir.path(), unchanged);
    let secrets = Secrets::load_or_create(&cluster, &roles()).unwrap();
    let mut pki = secrets.pki().clone();
    pki.ca = None;
    assert!(pki.ensure(&cluster).unwrap());
    let new_ca_pem = parse_pem(pki.ca_cert().unwrap()).unwrap();
    let new_ca = new_ca_pem.parse_x509().unwrap();
    with_cert(pki.node_cert("fs-node-01").unwrap(), |cert| {
        cert.verify_signature(Some(new_ca.public_key())).unwrap();
    });
    let old_key = secrets.pki().template_context("fs-node-01", true).unwrap();
    let new_key = pki.template_context("fs-node-01", true).unwrap();
    assert_eq!(old_key.node_key, new_key.node_key);
}

#[test]
fn read_only_commands_render_placeholders_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest_in(dir.path(), unchanged);
    let project = Project::load(repo(), &manifest, SecretsMode::ReadOnly).unwrap();
    assert!(!dir.path().join("c.secrets.toml").exists());
    let tls = project
        .secrets
        .pki()
        .template_context("pg-node-01", true)
        .unwrap();
    assert_eq!(tls.ca_cert, "r2a-not-generated-tls-ca-cert\n");
    assert_eq!(
        tls.node_cert,
        Some("r2a-not-generated-tls-cert-pg-node-01\n")
    );
    assert_eq!(tls.node_key, Some("r2a-not-generated-tls-key-pg-node-01\n"));
    assert!(
        project.secrets.pki().to_toml().is_err(),
        "placeholders are never saved"
    );

    // With the material made, a read-only load sees it; a moved node keeps its key and
    // gets a placeholder certificate until a build issues the new one.
    Project::load(repo(), &manifest, SecretsMode::Create).unwrap();
    let made = Secrets::load_existing(&manifest).unwrap();
    std::fs::write(
        &manifest,
        moved_pg_node_02(std::fs::read_to_string(&manifest).unwrap()),
    )
    .unwrap();
    let project = Project::load(repo(), &manifest, SecretsMode::ReadOnly).unwrap();
    let pki = project.secrets.pki();
    assert_eq!(pki.ca_cert(), made.pki().ca_cert());
    assert_eq!(
        pki.node_cert("pg-node-01"),
        made.pki().node_cert("pg-node-01")
    );
    assert_eq!(
        pki.node_cert("pg-node-02"),
        Some("r2a-not-generated-tls-cert-pg-node-02\n")
    );
    assert_eq!(
        node_key(&project.secrets, "pg-node-02"),
        node_key(&made, "pg-node-02")
    );
    assert_eq!(
        Secrets::load_existing(&manifest)
            .unwrap()
            .pki()
            .node_cert("pg-node-02"),
        made.pki().node_cert("pg-node-02"),
        "the read-only load wrote nothing"
    );
}

#[test]
fn keys_go_only_into_their_nodes_private_files_and_the_ca_key_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest_in(dir.path(), unchanged);
    let project = Project::load(repo(), &manifest, SecretsMode::Create).unwrap();
    let secrets = &project.secrets;
    let finder = secrets.finder();
    let ca_key = secrets
        .values()
        .find(|(name, _)| *name == CA_KEY_NAME)
        .map(|(_, key)| key.expose().to_string())
        .unwrap();
    let ca_key_line = ca_key.lines().nth(1).unwrap();
    for role in project.cluster.roles_in_use() {
        let rendered = project.render(&role).unwrap();
        for file in rendered.image_files() {
            let text = String::from_utf8_lossy(&file.content);
            assert!(
                !text.contains(ca_key_line),
                "{role}: {} holds the CA key",
                file.path
            );
        }
        let ca = rendered
            .shared
            .iter()
            .find(|f| f.path == "/etc/r2a/tls/ca.crt");
        let ca = ca.unwrap_or_else(|| panic!("{role} has the CA certificate for every node"));
        assert_eq!((ca.mode, ca.owner.as_str()), (0o644, "root"));
        assert_eq!(ca.content, secrets.pki().ca_cert().unwrap().as_bytes());
        // A key is only ever the key of a node of the role, in a file only its owner
        // reads; a role without `tls` holds none.
        let uses_tls = project.roles.get(&role).unwrap().tls;
        let own_keys: Vec<String> = project
            .cluster
            .nodes_of(&role)
            .map(|node| format!("pki.nodes.{}.key", node.name))
            .collect();
        for file in rendered.image_files() {
            let keys: Vec<&str> = finder
                .found_in(&file.content)
                .into_iter()
                .filter(|name| name.starts_with("pki."))
                .collect();
            for key in keys {
                assert!(uses_tls, "{role} has no tls but {} holds {key}", file.path);
                assert!(own_keys.iter().any(|own| own == key), "{role}: {key}");
                assert_eq!(file.mode, 0o600, "{role}: {} holds {key}", file.path);
            }
        }
    }

    let db = project.render("db").unwrap();
    let key = node_key(secrets, "pg-node-02").as_bytes();
    for (name, owner) in [("node", "root"), ("etcd", "etcd"), ("postgres", "postgres")] {
        let path = format!("/etc/r2a/tls/{name}.key");
        assert!(
            db.shared.iter().all(|f| f.path != path),
            "{path} is per node"
        );
        let file = db.per_node["pg-node-02"]
            .iter()
            .find(|f| f.path == path)
            .unwrap();
        assert_eq!((file.mode, file.owner.as_str()), (0o600, owner), "{path}");
        assert_eq!(file.group, owner, "{path}");
        assert_eq!(file.content, key, "{path}");
        let cert_path = format!("/etc/r2a/tls/{name}.crt");
        let cert = db.per_node["pg-node-02"]
            .iter()
            .find(|f| f.path == cert_path)
            .unwrap();
        assert_eq!(
            (cert.mode, cert.owner.as_str()),
            (0o644, "root"),
            "{cert_path}"
        );
        assert_eq!(
            cert.content,
            secrets.pki().node_cert("pg-node-02").unwrap().as_bytes()
        );
    }
    let image: Vec<String> = db.image_files().into_iter().map(|f| f.path).collect();
    assert!(image.contains(&"/usr/lib/r2a/nodes/pg-node-03/etc/r2a/tls/etcd.key".to_string()));
}

#[test]
fn a_node_key_in_a_world_readable_file_is_refused() {
    let data = tempfile::tempdir().unwrap();
    for tree in ["roles", "overlays"] {
        for entry in walkdir::WalkDir::new(repo().join(tree)) {
            let entry = entry.unwrap();
            let target = data.path().join(entry.path().strip_prefix(repo()).unwrap());
            if entry.file_type().is_dir() {
                std::fs::create_dir_all(&target).unwrap();
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    let db = data.path().join("roles/db.toml");
    let text = std::fs::read_to_string(&db).unwrap().replace(
        "path = \"/etc/r2a/tls/etcd.key\"\nmode = \"0600\"",
        "path = \"/etc/r2a/tls/etcd.key\"\nmode = \"0644\"",
    );
    std::fs::write(&db, text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest_in(dir.path(), unchanged);
    let error = Project::load(data.path(), &manifest, SecretsMode::Create)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("/etc/r2a/tls/etcd.key would carry the secret `pki.nodes.pg-node-01.key`"),
        "{error}"
    );
}

#[test]
fn debug_output_shows_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_in(dir.path(), unchanged);
    let secrets = Secrets::load_or_create(&cluster, &roles()).unwrap();
    let shown = format!("{secrets:?}");
    for (name, key) in secrets.values() {
        let line = key.expose().lines().nth(1).unwrap_or(key.expose());
        assert!(!shown.contains(line), "{name} shown");
    }
}
