//! Tests of the lock: drift as a table, updating layers, and reading `apt-cache policy`.

use super::*;

fn package(name: &str, version: &str, sha256: &str) -> LockedPackage {
    LockedPackage {
        name: name.into(),
        version: version.into(),
        architecture: "amd64".into(),
        sha256: sha256.into(),
    }
}

fn lock() -> Lock {
    Lock {
        layers: vec![
            LockedLayer {
                name: "base".into(),
                key: "k1".into(),
                packages: vec![package("bash", "5.2-1", "aa"), package("dash", "0.5-1", "")],
            },
            LockedLayer {
                name: "db".into(),
                key: "k2".into(),
                packages: vec![package("patroni", "4.0-1", "bb")],
            },
        ],
    }
}

/// What the sources offer of one package: name, version, sha256.
type Offer = (&'static str, &'static str, &'static str);

#[test]
fn drift_names_each_package_that_moved() {
    let available = |entries: &[Offer]| -> BTreeMap<String, (String, String)> {
        entries
            .iter()
            .map(|(name, version, sha)| (name.to_string(), (version.to_string(), sha.to_string())))
            .collect()
    };
    let both = BTreeSet::from(["base".to_string(), "db".to_string()]);
    // (what the sources give, the drift lines)
    let table: [(&[Offer], &[&str]); 5] = [
        (
            &[
                ("bash", "5.2-1", "aa"),
                ("dash", "0.5-1", "cc"),
                ("patroni", "4.0-1", "bb"),
            ],
            &[],
        ),
        (
            &[
                ("bash", "5.2-2", "ab"),
                ("dash", "0.5-1", "cc"),
                ("patroni", "4.0-1", "bb"),
            ],
            &["base: bash 5.2-1 (amd64) is locked; the mirror has 5.2-2"],
        ),
        (
            &[
                ("bash", "5.2-1", "ff"),
                ("dash", "0.5-1", "cc"),
                ("patroni", "4.0-1", "bb"),
            ],
            &[
                "base: bash 5.2-1 (amd64) is locked; the mirror has a file with another sha256 (ff instead of aa)",
            ],
        ),
        (
            &[("bash", "5.2-1", "aa"), ("dash", "0.5-1", "cc")],
            &["db: patroni 4.0-1 (amd64) is locked; the mirror does not have it"],
        ),
        (
            &[
                ("bash", "5.2-1", "aa"),
                ("dash", "0.6-1", "cc"),
                ("patroni", "4.0-1", "bb"),
            ],
            &["base: dash 0.5-1 (amd64) is locked; the mirror has 0.6-1"],
        ),
    ];
    for (sources, expected) in table {
        let lines: Vec<String> = drift(&lock(), &both, &available(sources), "the mirror")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(lines, expected, "{sources:?}");
    }
    // Only the layers asked about count.
    let base = BTreeSet::from(["base".to_string()]);
    let offered = available(&[("bash", "5.2-1", "aa"), ("dash", "0.5-1", "")]);
    assert!(drift(&lock(), &base, &offered, "the mirror").is_empty());
}

#[test]
fn update_replaces_layers_by_name_and_keeps_base_first() {
    let mut lock = lock();
    lock.update([
        LockedLayer {
            name: "portal".into(),
            key: "k3".into(),
            packages: vec![],
        },
        LockedLayer {
            name: "base".into(),
            key: "k4".into(),
            packages: vec![],
        },
    ]);
    let names: Vec<(&str, &str)> = lock
        .layers
        .iter()
        .map(|l| (l.name.as_str(), l.key.as_str()))
        .collect();
    assert_eq!(names, [("base", "k4"), ("db", "k2"), ("portal", "k3")]);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("lab.toml");
    lock.write(&manifest).unwrap();
    assert_eq!(Lock::read(&manifest).unwrap(), Some(lock));
    std::fs::write(path_for(&manifest), "[[layer]]\nname = 1\n").unwrap();
    let error = Lock::read(&manifest).unwrap_err();
    assert!(error.to_string().contains("r2a.lock"), "{error}");
}

#[test]
fn candidates_come_from_apt_cache_policy() {
    let policy = "bash:\n  Installed: (none)\n  Candidate: 5.2.37-2+b5\n  Version table:\n     5.2.37-2+b5 500\n\
                  gone:\n  Installed: (none)\n  Candidate: (none)\n\
                  libc6:amd64:\n  Installed: (none)\n  Candidate: 2.41-12\n";
    assert_eq!(
        mirror::candidates(policy),
        [
            ("bash".to_string(), "5.2.37-2+b5".to_string()),
            ("libc6".to_string(), "2.41-12".to_string())
        ]
    );
}
