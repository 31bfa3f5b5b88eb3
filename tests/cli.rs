//! `r2a-image` as a user runs it, without building: `check`, `plan`, `render`, their exit
//! statuses and messages.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::{reference_copy, run_image_tool};

#[test]
fn check_accepts_the_reference_cluster() {
    let (_dir, manifest) = reference_copy();
    let json = run_image_tool(&["check", &manifest, "--json"], None);
    assert!(json.status.success(), "{}", json.stderr);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        (report["valid"].clone(), report["nodes"].clone()),
        (true.into(), 12.into())
    );
    assert_eq!(report["diagnostics"], serde_json::json!([]));
    let output = run_image_tool(&["check", &manifest], None);
    assert!(output.status.success(), "{}", output.stderr);
    assert!(
        output.stdout.contains(
            "valid (12 nodes, roles: admin, api, db, fs, portal, switchboard, telephony)"
        ),
        "{}",
        output.stdout
    );
}

#[test]
fn check_reports_bad_input_with_place_and_status_2() {
    let (dir, manifest) = reference_copy();
    let text = std::fs::read_to_string(&manifest).unwrap().replacen(
        "address = \"192.168.10.32\"",
        "address = \"192.168.11.32\"",
        1,
    );
    std::fs::write(&manifest, text).unwrap();
    let output = run_image_tool(&["check", &manifest], None);
    assert_eq!(output.status.code(), Some(2), "{}", output.stderr);
    let expected = format!(
        "{manifest}:45:11: error: address 192.168.11.32 of node pg-node-02 is outside the network 192.168.10.0/24"
    );
    assert!(output.stderr.contains(&expected), "{}", output.stderr);
    assert!(
        output.stderr.contains("1 problem found; nothing was built"),
        "{}",
        output.stderr
    );
    assert!(
        !dir.path().join("reference-cluster.secrets.toml").exists(),
        "check writes nothing"
    );
    // The same as JSON, on standard output, with the same status.
    let output = run_image_tool(&["check", &manifest, "--json"], None);
    assert_eq!(output.status.code(), Some(2), "{}", output.stderr);
    let report: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    assert_eq!(report["valid"], false);
    let diagnostic = &report["diagnostics"][0];
    assert_eq!(diagnostic["file"], manifest.as_str());
    assert_eq!(
        (diagnostic["line"].clone(), diagnostic["column"].clone()),
        (45.into(), 11.into())
    );
    assert!(
        diagnostic["message"]
            .as_str()
            .unwrap()
            .starts_with("address 192.168.11.32 of node pg-node-02 is outside"),
        "{diagnostic}"
    );
    assert!(diagnostic["hint"].is_string(), "{diagnostic}");
}

#[test]
fn requests_the_manifest_cannot_meet_exit_2_and_write_nothing() {
    let (dir, manifest) = reference_copy();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let render = dir.path().join("render");
    std::fs::create_dir_all(render.join("etc")).unwrap();
    let render = render.to_str().unwrap();
    // (the command line, what the error says)
    let cases: [(&[&str], &str); 7] = [
        (
            &["plan", &manifest, "--role", "nosuch"],
            "role `nosuch` has no nodes",
        ),
        (
            &["build", &manifest, "--role", "nosuch", "--out", out],
            "role `nosuch` has no nodes",
        ),
        (
            &["render", &manifest, "--node", "pg-node-09", "--out", out],
            "no node `pg-node-09`",
        ),
        (
            &["render", &manifest, "--node", "pg-node-01", "--out", render],
            "is not empty",
        ),
        (
            &[
                "boot", &manifest, "--role", "db", "--format", "tar", "--out", out,
            ],
            "[possible values: raw, qcow2, iso, pxe]",
        ),
        (
            &[
                "boot",
                &manifest,
                "--role",
                "db",
                "--node",
                "fs-node-01",
                "--out",
                out,
            ],
            "pick a node of role db",
        ),
        (
            &["boot", &manifest, "--role", "db", "--install", "--out", out],
            "are for the ISO",
        ),
    ];
    for (args, expected) in cases {
        let output = run_image_tool(args, None);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", output.stderr);
        assert!(
            output.stderr.contains(expected),
            "{args:?}: {}",
            output.stderr
        );
        assert!(!Path::new(out).exists(), "{args:?} wrote {out}");
    }
}

/// A secrets file to put beside the manifest: its text and mode.
type SecretsFile = Option<(&'static str, u32)>;

/// What a user may point the tools at by mistake, each refused with status 2 and a
/// message that says what to give instead: no file, a folder (by `check`, which reads no
/// secret, and by `render`), a secrets file that is not one, and one others can read.
#[test]
fn a_missing_manifest_a_folder_or_a_bad_secrets_file_exits_2() {
    let (dir, manifest) = reference_copy();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let missing = dir.path().join("missing.toml");
    let folder = dir.path().to_str().unwrap();
    let secrets = Path::new(&manifest).with_extension("secrets.toml");
    // (the secrets file, the manifest, the commands, what the error says)
    let cases: [(SecretsFile, &str, &[&str], &str); 4] = [
        (
            None,
            missing.to_str().unwrap(),
            &["check", "render"],
            "there is no manifest at",
        ),
        (
            None,
            folder,
            &["check", "render"],
            "is a folder: give the manifest's file",
        ),
        (
            Some(("secrets = [\n", 0o600)),
            &manifest,
            &["render"],
            "reference-cluster.secrets.toml:1: not a valid secrets file",
        ),
        (
            Some(("[secrets]\n", 0o644)),
            &manifest,
            &["render"],
            "is readable by others (mode 644): run `chmod 600",
        ),
    ];
    for (secrets_file, manifest, commands, expected) in cases {
        if let Some((text, mode)) = secrets_file {
            std::fs::write(&secrets, text).unwrap();
            std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        for command in commands {
            let args = match *command {
                "check" => vec!["check", manifest],
                _ => vec!["render", manifest, "--node", "pg-node-01", "--out", out],
            };
            let output = run_image_tool(&args, None);
            assert_eq!(output.status.code(), Some(2), "{args:?}: {}", output.stderr);
            assert!(
                output.stderr.contains(expected),
                "{args:?}: {}",
                output.stderr
            );
            assert!(!Path::new(out).exists(), "{args:?} wrote {out}");
        }
    }
}

#[test]
fn a_binary_or_non_utf8_manifest_is_invalid_input_with_status_2() {
    let (_dir, manifest) = reference_copy();
    let text = std::fs::read(&manifest).unwrap();
    let line_3 = text
        .iter()
        .enumerate()
        .filter(|(_, byte)| **byte == b'\n')
        .nth(1)
        .map(|(at, _)| at + 1)
        .unwrap();
    // (what the file is, its bytes, the place of the first byte that is not text)
    let cases: [(&str, Vec<u8>, &str); 2] = [
        (
            "Latin-1 text",
            [&text[..line_3], b"# caf\xe9\n", &text[line_3..]].concat(),
            ":3:6: error: the manifest is not UTF-8 text: byte 0xe9",
        ),
        (
            "a gzip file",
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03".to_vec(),
            ":1:2: error: the manifest is not UTF-8 text: byte 0x8b",
        ),
    ];
    for (what, bytes, expected) in cases {
        std::fs::write(&manifest, bytes).unwrap();
        let output = run_image_tool(&["check", &manifest], None);
        assert_eq!(output.status.code(), Some(2), "{what}: {}", output.stderr);
        assert!(
            output.stderr.contains(&format!("{manifest}{expected}")),
            "{what}: {}",
            output.stderr
        );
        assert!(
            output.stderr.contains("= hint: "),
            "{what}: {}",
            output.stderr
        );
    }
}

#[test]
fn plan_shows_roles_cache_state_outputs_and_capacity() {
    let (_dir, manifest) = reference_copy();
    let cache = tempfile::tempdir().unwrap();
    let output = run_image_tool(
        &[
            "plan",
            &manifest,
            "--cache",
            cache.path().to_str().unwrap(),
            "--json",
        ],
        None,
    );
    assert!(output.status.success(), "{}", output.stderr);
    let plan: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    assert_eq!(plan["schema"], r2a::plan::PLAN_SCHEMA);
    assert_eq!(plan["roles"][2]["nodes"][1]["name"], "pg-node-02");
    assert_eq!(plan["roles"][2]["nodes"][1]["address"], "192.168.10.32");
    // The reference builds qcow2, iso and pxe: GRUB's layer is planned.
    assert!(
        plan["boot_tools"]["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "grub-efi-amd64-bin"),
        "{}",
        plan["boot_tools"]
    );
    let roles: Vec<&str> = plan["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "admin",
            "api",
            "db",
            "fs",
            "portal",
            "switchboard",
            "telephony"
        ]
    );
    assert_eq!(plan["base"]["cached"], false);
    let telephony = &plan["roles"][6];
    assert_eq!(
        telephony["outputs"],
        serde_json::json!([
            "ring2all/telephony/rootfs.tar.gz",
            "ring2all/telephony/disk.qcow2",
            "ring2all/telephony/telephony.iso",
            "ring2all/telephony/pxe/"
        ])
    );
    assert!(
        telephony["vendor_skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "freeswitch")
    );
    let capacity = &plan["capacity"];
    assert_eq!(capacity["servers"], 2);
    assert_eq!(capacity["extensions"], 20_000);
    assert_eq!(capacity["concurrent_calls"], 3_000);
    assert_eq!(capacity["calls_with_one_down"], 1_500);
    assert_eq!(capacity["use_case"], "Large Enterprise");
    let sizes: Vec<u64> = capacity["table"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["servers"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [1, 2, 3, 5, 10, 20]);
    assert_eq!(capacity["table"][5]["concurrent_calls"], 30_000);

    let text = run_image_tool(
        &[
            "plan",
            &manifest,
            "--cache",
            cache.path().to_str().unwrap(),
            "--role",
            "db",
        ],
        None,
    );
    assert!(text.stdout.contains("role db\n  nodes     pg-node-01 (192.168.10.31), pg-node-02 (192.168.10.32), pg-node-03 (192.168.10.33)"), "{}", text.stdout);
    assert!(!text.stdout.contains("role fs"), "{}", text.stdout);
    assert!(text.stdout.contains("        2       20000              3000           1500  Large Enterprise  <- this cluster"), "{}", text.stdout);
}

#[test]
fn render_writes_what_one_node_gets() {
    let (dir, manifest) = reference_copy();
    let out = dir.path().join("pg-node-02");
    let output = run_image_tool(
        &[
            "render",
            &manifest,
            "--node",
            "pg-node-02",
            "--out",
            out.to_str().unwrap(),
        ],
        None,
    );
    assert!(output.status.success(), "{}", output.stderr);
    let patroni = out.join("etc/patroni/config.yml");
    assert!(
        std::fs::read_to_string(&patroni)
            .unwrap()
            .contains("name: pg-node-02")
    );
    assert_eq!(
        std::fs::metadata(&patroni).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(out.join("etc/hosts"))
            .unwrap()
            .contains("tele-node-02")
    );
    let secrets = dir.path().join("reference-cluster.secrets.toml");
    assert_eq!(
        std::fs::metadata(&secrets).unwrap().permissions().mode() & 0o777,
        0o600,
        "secrets are made private"
    );
    for (_, line) in std::fs::read_to_string(&secrets)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(" = "))
    {
        let value = line.trim_matches('"');
        assert!(
            !output.stdout.contains(value) && !output.stderr.contains(value),
            "a secret was printed"
        );
    }

    let again = run_image_tool(
        &[
            "render",
            &manifest,
            "--node",
            "pg-node-02",
            "--out",
            out.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        !again.status.success() && again.stderr.contains("is not empty"),
        "{}",
        again.stderr
    );
    let unknown = run_image_tool(
        &[
            "render",
            &manifest,
            "--node",
            "pg-node-09",
            "--out",
            dir.path().join("x").to_str().unwrap(),
        ],
        None,
    );
    assert!(
        unknown.stderr.contains("no node `pg-node-09`") && unknown.stderr.contains("pg-node-01"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn an_undefined_template_variable_names_the_template_line_and_variable() {
    let (_dir, manifest) = reference_copy();
    let data = support::data_copy();
    let template = data.path().join("overlays/db/etc/broken.conf.tera");
    std::fs::write(
        &template,
        "# fine\nname = {{ node.name }}\naddress = {{ node.adress }}\n",
    )
    .unwrap();
    let output = run_image_tool(&["check", &manifest], Some(data.path()));
    assert_eq!(output.status.code(), Some(2), "{}", output.stderr);
    let expected = format!("{}:3:", template.display());
    assert!(output.stderr.contains(&expected), "{}", output.stderr);
    assert!(
        output
            .stderr
            .contains("uses the undefined variable `node.adress`"),
        "{}",
        output.stderr
    );
    assert_eq!(
        output.stderr.matches("undefined variable").count(),
        1,
        "reported once, not once per node:\n{}",
        output.stderr
    );
}

#[test]
fn check_refuses_a_join_step_the_agent_does_not_know_with_file_and_line() {
    let (_dir, manifest) = reference_copy();
    let data = support::data_copy();
    let role = data.path().join("roles/db.toml");
    let text = std::fs::read_to_string(&role).unwrap();
    let text = text.replacen("\"patroni\",", "\"patorni\",", 1);
    assert!(
        text.contains("\"patorni\""),
        "roles/db.toml lists its join steps"
    );
    std::fs::write(&role, &text).unwrap();
    let line = text
        .lines()
        .position(|line| line.contains("\"patorni\""))
        .unwrap()
        + 1;
    let output = run_image_tool(&["check", &manifest], Some(data.path()));
    assert_eq!(output.status.code(), Some(2), "{}", output.stderr);
    let expected = format!("{}:{line}:", role.display());
    assert!(output.stderr.contains(&expected), "{}", output.stderr);
    assert!(
        output.stderr.contains("unknown join step `patorni`")
            && output.stderr.contains(
                "etcd, freeswitch, gluster, patroni, schema, shared-volume, telephony-pool"
            ),
        "{}",
        output.stderr
    );
}
