//! Bad manifests, each with the message (and place) it must produce. Every case starts from
//! one valid manifest and changes one thing, so each row shows exactly what is wrong; then
//! thousands of generated inputs (any bytes, random edits), none of which may panic.

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use r2a::diag::InvalidInput;

use r2a::manifest::Cluster;
use r2a::role::RoleSet;

#[path = "manifest_errors/cases.rs"]
mod cases;

use cases::{VALID, cases};

fn roles() -> RoleSet {
    RoleSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("roles"))
        .expect("the project's roles load")
}

fn load(text: &str) -> Result<Cluster, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lab.toml");
    std::fs::write(&path, text).unwrap();
    Cluster::load(&path, &roles()).map_err(|error| format!("{error:#}"))
}

#[test]
fn the_valid_manifest_is_valid() {
    let cluster = load(VALID).unwrap();
    assert_eq!(cluster.nodes.len(), 7);
    assert_eq!(cluster.nodes[0].mac.as_deref(), Some("52:54:00:00:00:11"));
    assert_eq!(cluster.nodes[6].memory, Some(8 * 1024 * 1024 * 1024));
}

#[test]
fn a_range_stands_for_its_nodes_in_order_with_counted_addresses() {
    let text = VALID.replacen("name = \"tel1\"", "name = \"tel-[098-101]\"", 1);
    let cluster = load(&text).unwrap();
    let tel: Vec<(&str, String, Option<u64>)> = cluster
        .nodes_of("telephony")
        .map(|n| (n.name.as_str(), n.address.to_string(), n.memory))
        .collect();
    let eight_gib = Some(8 << 30);
    assert_eq!(
        tel,
        [
            ("tel-098", "10.77.0.51".to_string(), eight_gib),
            ("tel-099", "10.77.0.52".to_string(), eight_gib),
            ("tel-100", "10.77.0.53".to_string(), eight_gib),
            ("tel-101", "10.77.0.54".to_string(), eight_gib),
        ]
    );
}

#[test]
fn no_ssh_key_is_accepted_when_the_manifest_says_so() {
    let text = VALID.replacen("authorized_keys = [", "allow_no_keys = true\nunused = [", 1);
    let text = text.replacen("unused = ", "authorized_keys = []\n# ", 1);
    let cluster = load(&text).unwrap();
    assert!(cluster.ssh_authorized_keys.is_empty());
}

#[test]
fn apt_sources_are_the_suite_its_updates_and_security_unless_turned_off() {
    let cluster = load(VALID).unwrap();
    assert_eq!(
        cluster.debian.sources,
        [
            "deb http://deb.debian.org/debian trixie main",
            "deb http://deb.debian.org/debian trixie-updates main",
            "deb http://deb.debian.org/debian-security trixie-security main",
        ]
    );
    let text = VALID.replacen(
        "[network]",
        "[debian]\nmirror = \"http://mirror.example/debian/\"\nsecurity = false\n\n[network]",
        1,
    );
    let cluster = load(&text).unwrap();
    assert_eq!(
        cluster.debian.sources,
        [
            "deb http://mirror.example/debian trixie main",
            "deb http://mirror.example/debian trixie-updates main"
        ]
    );
}

#[test]
fn every_bad_manifest_gets_its_message() {
    let cases = cases();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for (what, text, expected) in &cases {
        match load(text) {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(message) => {
                for needle in expected {
                    if !message.contains(needle) {
                        failures.push(format!("{what}: expected `{needle}` in:\n{message}"));
                    }
                }
                if !message.contains("= hint: ") {
                    failures.push(format!("{what}: no hint in:\n{message}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = VALID
        .replacen("role = \"fs\"", "role = \"files\"", 1)
        .replacen("address = \"10.77.0.12\"", "address = \"10.77.0.11\"", 1)
        .replacen("mac = \"52:54:00:00:00:11\"", "mac = \"zz\"", 1);
    let message = load(&text).unwrap_err();
    assert!(message.contains("unknown role `files`"), "{message}");
    assert!(message.contains("duplicate address"), "{message}");
    assert!(message.contains("invalid MAC address"), "{message}");
    assert!(
        message.contains("problems found; nothing was built"),
        "{message}"
    );
}

/// Loads `bytes` as a manifest: it must load, or fail as invalid input (exit status 2)
/// whose every problem names the file, at a line the file has.
fn loads_or_is_invalid_input(bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lab.toml");
    std::fs::write(&path, bytes).unwrap();
    let Err(error) = Cluster::load(&path, shared_roles()) else {
        return Ok(());
    };
    let invalid = error.downcast_ref::<InvalidInput>();
    prop_assert!(invalid.is_some(), "not invalid input: {error:#}");
    let problems = &invalid.unwrap().0;
    prop_assert!(!problems.is_empty());
    let lines = bytes.split(|&b| b == b'\n').count();
    for problem in problems {
        prop_assert_eq!(&problem.location.path, &path, "{}", problem);
        if let Some((line, _)) = problem.location.position {
            prop_assert!(
                (1..=lines).contains(&line),
                "line {} of {}: {}",
                line,
                lines,
                problem
            );
        }
    }
    Ok(())
}

fn shared_roles() -> &'static RoleSet {
    static ROLES: OnceLock<RoleSet> = OnceLock::new();
    ROLES.get_or_init(roles)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any bytes at all: binary, other encodings, TOML-like text.
    #[test]
    fn any_bytes_load_or_fail_as_invalid_input(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..600),
            "([a-z_.\\[\\]]{0,12}( ?= ?)?(\"[^\"]{0,10}\"|[0-9]{1,4}|\\[\\]|true|\\{\\})?\\n){0,12}"
                .prop_map(String::into_bytes),
        ]
    ) {
        loads_or_is_invalid_input(&bytes)?;
    }

    /// A valid manifest with a piece cut out and something put in its place: each must
    /// load or fail cleanly.
    #[test]
    fn any_edit_of_a_valid_manifest_loads_or_fails_as_invalid_input(
        at in 0..VALID.len(),
        cut in 0usize..48,
        insert in prop_oneof![
            "[\\[\\]{}=\",.#a-z0-9:/ \\n-]{0,16}",
            any::<Vec<u8>>().prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        ],
    ) {
        let mut bytes = VALID.as_bytes().to_vec();
        let end = (at + cut).min(bytes.len());
        bytes.splice(at..end, insert.into_bytes());
        loads_or_is_invalid_input(&bytes)?;
    }
}
