//! Property tests of what the agent reads from outside: thousands of generated kernel
//! command lines, NoCloud meta-data and instance data, `.network` files, console lines,
//! `lsblk` and `blkid` output. None may panic, and a node named among the noise is found.

use proptest::prelude::*;

use crate::agent::config::Config;
use crate::agent::host::ScriptedHost;
use crate::agent::identity::resolve;
use crate::agent::sources::{CMDLINE_FILE, INSTANCE_DATA_FILE, NOCLOUD_SEED_FILES, Source};
use crate::agent::testing::FakeRoot;

/// Words a kernel command line could hold, `r2a.node=` with odd values among them.
fn cmdline_word() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_.]{1,10}(=[a-zA-Z0-9/,:=\"._-]{0,12})?",
        "r2a\\.(node|install|medium)(=[^ ]{0,10})?",
        any::<String>(),
    ]
}

/// Meta-data lines: keys, comments, indented lines, quotes, anything.
fn meta_data_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_-]{1,14}: ?[\"']?[a-zA-Z0-9 #._-]{0,14}[\"']?",
        "[ \\t#][^\\n]{0,20}",
        "[^\\n]{0,30}",
    ]
}

/// Identifies the fake db image's node, offline.
fn identify(fake: &FakeRoot) -> anyhow::Result<crate::agent::identity::Identity> {
    let config = Config::load(&fake.root)?;
    resolve(&fake.root, &mut ScriptedHost::new(false), &config)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any command line identifies a node or fails with an error; `r2a.node=db2` among
    /// other words (the last `r2a.node=` wins, as with the kernel's own) names db2.
    #[test]
    fn a_kernel_command_line_never_panics_and_its_last_r2a_node_wins(
        before in prop::collection::vec(cmdline_word(), 0..8),
        after in prop::collection::vec(cmdline_word(), 0..8),
    ) {
        let after: Vec<String> = after
            .into_iter()
            .filter(|word| !word.split_whitespace().any(|w| w.starts_with("r2a.node=")))
            .collect();
        let fake = FakeRoot::db();
        fake.write(CMDLINE_FILE, &before.join(" "));
        let _ = identify(&fake);
        let line = format!("{} r2a.node=db2 {}\n", before.join(" "), after.join(" "));
        fake.write(CMDLINE_FILE, &line);
        let identity = identify(&fake);
        prop_assert!(identity.is_ok(), "{line:?}: {identity:?}");
        let identity = identity.unwrap();
        prop_assert_eq!(identity.node.as_str(), "db2");
        prop_assert_eq!(identity.source, Source::KernelCommandLine);
    }

    /// Any NoCloud seed or instance data identifies a node or fails with an error; a seed
    /// whose `r2a-node:` line stands among comments, blank lines and other keys names that
    /// node. (An indented line after it would, in YAML, continue its value.)
    #[test]
    fn nocloud_data_never_panics_and_a_named_node_is_found(
        lines in prop::collection::vec(meta_data_line(), 0..10),
        noise in prop::collection::vec("#[ -~¡-ÿ]{0,20}| {0,3}", 0..6),
        keys in prop::collection::btree_map("[a-z_]{1,10}", "[a-zA-Z0-9 ._-]{0,12}", 0..4),
        instance_data in prop_oneof![any::<String>(), "\\{\"ds\": \\{\"meta_data\": \\{\"[a-z_-]{1,14}\": [^}]{0,12}\\}\\}\\}"],
    ) {
        let fake = FakeRoot::db();
        fake.write(NOCLOUD_SEED_FILES[0], &lines.join("\n"));
        let _ = identify(&fake);
        fake.write(INSTANCE_DATA_FILE, &instance_data);
        let _ = identify(&fake);

        let fake = FakeRoot::db();
        let keys: Vec<String> = keys
            .iter()
            .filter(|(key, _)| !["r2a", "r2a_node", "local_hostname"].contains(&key.as_str()))
            .map(|(key, value)| format!("{key}: '{value}'"))
            .collect();
        let seed = format!(
            "{}\n{}\nr2a-node: db3\n{}\n",
            noise.join("\n"),
            keys.join("\n"),
            noise.join("\n")
        );
        fake.write(NOCLOUD_SEED_FILES[0], &seed);
        let identity = identify(&fake);
        prop_assert!(identity.is_ok(), "{seed:?}: {identity:?}");
        prop_assert_eq!(identity.unwrap().node, "db3");
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The pure readers take any text without panicking; a meta-data value is never
    /// empty and never spans lines.
    #[test]
    fn the_text_readers_take_any_input(text in prop_oneof![
        any::<String>(),
        prop::collection::vec(meta_data_line(), 0..8).prop_map(|lines| lines.join("\n")),
        prop::collection::vec(cmdline_word(), 0..8).prop_map(|words| words.join(" ")),
    ]) {
        let _ = crate::agent::install::Request::from_cmdline(&text);
        for key in ["r2a-node", "local-hostname", "instance-id"] {
            if let Some(value) = crate::agent::sources::meta_data_value(&text, key) {
                prop_assert!(!value.is_empty() && !value.contains('\n'), "{value:?}");
            }
        }
        let _ = crate::agent::links::MatchSection::parse(&text);
        let _ = crate::agent::report::BootReport::parse_line(&text);
        let _ = crate::agent::pool::parse_members(&text);
        let _ = crate::agent::install::parse_lsblk(&text);
        let _ = crate::agent::disk::Signature::parse(&text);
        let _ = crate::agent::disk::Filesystem::parse(&text);
    }
}
