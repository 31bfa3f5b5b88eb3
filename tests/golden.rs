//! The rendered overlay of one node of each role of the reference cluster, compared file
//! by file (content, mode, owner) with `tests/golden/<node>/`. After an intended change,
//! regenerate with `UPDATE_GOLDEN=1 cargo test --test golden` and review the diff.
//! Passwords are fixed; the cluster CA and node certificates are not made (read-only
//! load), so they render as stable placeholders.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use r2a::project::{Project, SecretsMode};
use r2a::role::RoleSet;

const NODES: &[&str] = &[
    "pg-node-01",
    "fs-node-01",
    "admin-node-01",
    "portal-node-01",
    "switch-node-01",
    "api-node-01",
    "tele-node-01",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The reference manifest beside a secrets file with fixed values, so output is stable.
fn reference_with_fixed_secrets() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("reference-cluster.toml");
    std::fs::copy(repo().join("examples/reference-cluster.toml"), &manifest).unwrap();
    let roles = RoleSet::load(&repo().join("roles")).unwrap();
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for role in roles.roles.values() {
        names.extend(role.secrets.iter().map(String::as_str));
    }
    let mut text = String::from("[secrets]\n");
    for name in names {
        text.push_str(&format!("{name} = \"golden-{name}\"\n"));
    }
    let secrets = dir.path().join("reference-cluster.secrets.toml");
    std::fs::write(&secrets, text).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, manifest)
}

#[test]
fn rendered_overlays_match_the_golden_files() {
    let (_dir, manifest) = reference_with_fixed_secrets();
    let project = Project::load(&repo(), &manifest, SecretsMode::ReadOnly).unwrap();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for node in NODES {
        let role = &project.cluster.node(node).unwrap().role;
        let files = project.render(role).unwrap().node_view(node);
        let golden = repo().join("tests/golden").join(node);
        let mut listing = String::new();
        for file in &files {
            listing.push_str(&format!(
                "{:04o} {}:{} {}\n",
                file.mode, file.owner, file.group, file.path
            ));
        }
        if update {
            let _ = std::fs::remove_dir_all(&golden);
            for file in &files {
                let path = golden.join("tree").join(file.path.trim_start_matches('/'));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &file.content).unwrap();
            }
            std::fs::write(golden.join("files.txt"), &listing).unwrap();
            continue;
        }
        compare(&golden.join("files.txt"), listing.as_bytes(), &mut failures);
        for file in &files {
            compare(
                &golden.join("tree").join(file.path.trim_start_matches('/')),
                &file.content,
                &mut failures,
            );
        }
    }
    assert!(
        failures.is_empty(),
        "differs from tests/golden (UPDATE_GOLDEN=1 to accept):\n{}",
        failures.join("\n")
    );
}

fn compare(expected: &Path, actual: &[u8], failures: &mut Vec<String>) {
    match std::fs::read(expected) {
        Ok(bytes) if bytes == actual => {}
        Ok(bytes) => failures.push(format!(
            "{}:\n--- expected\n{}\n--- rendered\n{}",
            expected.display(),
            String::from_utf8_lossy(&bytes),
            String::from_utf8_lossy(actual)
        )),
        Err(_) => failures.push(format!("{} is missing", expected.display())),
    }
}

#[test]
fn node_files_differ_only_where_nodes_differ() {
    let (_dir, manifest) = reference_with_fixed_secrets();
    let project = Project::load(&repo(), &manifest, SecretsMode::ReadOnly).unwrap();
    let db = project.render("db").unwrap();
    assert_eq!(
        db.per_node.len(),
        3,
        "each db node has its own etcd and Patroni settings"
    );
    let paths: BTreeSet<&str> = db.per_node["pg-node-02"]
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    assert!(paths.contains("/etc/patroni/config.yml"), "{paths:?}");
    assert!(paths.contains("/etc/default/etcd"), "{paths:?}");
    assert!(
        db.shared.iter().any(|f| f.path == "/etc/hosts"),
        "/etc/hosts is the same on every node"
    );
    let image: Vec<String> = db.image_files().into_iter().map(|f| f.path).collect();
    assert!(
        image.contains(&"/usr/lib/r2a/nodes/pg-node-03/etc/patroni/config.yml".to_string()),
        "{image:?}"
    );
    // Each node's TLS key, private to the user that reads it; the CA certificate is shared.
    for (path, owner) in [
        ("/etc/r2a/tls/node.key", "root"),
        ("/etc/r2a/tls/etcd.key", "etcd"),
        ("/etc/r2a/tls/postgres.key", "postgres"),
    ] {
        let key = db.per_node["pg-node-02"]
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} is per node"));
        assert_eq!((key.mode, key.owner.as_str()), (0o600, owner), "{path}");
        assert_eq!(key.content, b"r2a-not-generated-tls-key-pg-node-02\n");
    }
    assert!(db.shared.iter().any(|f| f.path == "/etc/r2a/tls/ca.crt"));
}

#[test]
fn node_keys_reach_only_roles_with_tls_in_private_files() {
    let (_dir, manifest) = reference_with_fixed_secrets();
    let project = Project::load(&repo(), &manifest, SecretsMode::ReadOnly).unwrap();
    for role in project.cluster.roles_in_use() {
        let with_tls = project.roles.get(&role).unwrap().tls;
        for file in project.render(&role).unwrap().image_files() {
            let text = String::from_utf8_lossy(&file.content);
            if text.contains("r2a-not-generated-tls-key-") {
                assert!(with_tls, "{role}: {} holds a node key", file.path);
                assert_eq!(
                    file.mode & 0o077,
                    0,
                    "{role}: {} holds a node key",
                    file.path
                );
            }
        }
    }
}

#[test]
fn secrets_reach_only_the_roles_that_list_them() {
    let (_dir, manifest) = reference_with_fixed_secrets();
    let project = Project::load(&repo(), &manifest, SecretsMode::ReadOnly).unwrap();
    for role in project.cluster.roles_in_use() {
        let allowed = &project.roles.get(&role).unwrap().secrets;
        for file in project.render(&role).unwrap().image_files() {
            let text = String::from_utf8_lossy(&file.content);
            for (name, _) in project.secrets.values() {
                if text.contains(&format!("golden-{name}")) {
                    assert!(
                        allowed.iter().any(|a| a == name),
                        "{role}: {} holds {name}",
                        file.path
                    );
                    assert_eq!(
                        file.mode & 0o007,
                        0,
                        "{role}: {} holds {name} but is mode {:o}",
                        file.path,
                        file.mode
                    );
                }
            }
        }
    }
}

/// Synchronous replication is on unless the manifest's `[database] synchronous` turns it
/// off, and Patroni's settings follow.
#[test]
fn synchronous_replication_is_on_by_default_and_the_manifest_turns_it_off() {
    let (_dir, manifest) = reference_with_fixed_secrets();
    let patroni_setting = |manifest: &Path| {
        let project = Project::load(&repo(), manifest, SecretsMode::ReadOnly).unwrap();
        let db = project.render("db").unwrap();
        let config = db.per_node["pg-node-01"]
            .iter()
            .find(|f| f.path == "/etc/patroni/config.yml")
            .expect("pg-node-01 has Patroni settings");
        let text = String::from_utf8(config.content.clone()).unwrap();
        text.lines()
            .find_map(|line| line.trim().strip_prefix("synchronous_mode: "))
            .expect("synchronous_mode is set")
            .to_string()
    };
    assert_eq!(patroni_setting(&manifest), "true");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(
        !text.contains("synchronous"),
        "the reference takes the default"
    );
    std::fs::write(
        &manifest,
        format!("{text}\n[database]\nsynchronous = false\n"),
    )
    .unwrap();
    assert_eq!(patroni_setting(&manifest), "false");
}
