//! `r2a-image seed` on the reference manifest: one NoCloud image per node, recorded in
//! `SHA256SUMS` and `manifest.json`, the same bytes when written again, one seed for a
//! node named twice, and a damaged index refused.

mod support;

use support::{reference_copy, run_image_tool};

#[test]
fn seed_writes_a_cidata_image_per_node_and_records_it() {
    let (dir, manifest) = reference_copy();
    let out = dir.path().join("out");
    let output = run_image_tool(
        &["seed", &manifest, "--all", "--out", out.to_str().unwrap()],
        None,
    );
    assert!(output.status.success(), "{}", output.stderr);
    let seeds = out.join("ring2all/seeds");
    let count = std::fs::read_dir(&seeds)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".iso"))
        .count();
    assert_eq!(count, 12, "one seed per node");
    let sums = std::fs::read_to_string(out.join("ring2all/SHA256SUMS")).unwrap();
    let iso = seeds.join("pg-node-02.iso");
    assert!(
        sums.contains(&format!(
            "{}  seeds/pg-node-02.iso",
            r2a::hash::sha256_file(&iso).unwrap()
        )),
        "{sums}"
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("ring2all/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(index["seeds"]["pg-node-02"]["path"], "seeds/pg-node-02.iso");

    // What cloud-init will read: the volume label and the three files.
    let info = std::process::Command::new("xorriso")
        .args(["-indev"])
        .arg(&iso)
        .arg("-pvd_info")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&info.stdout).contains("Volume Id    : cidata"));
    let extracted = dir.path().join("extracted");
    let status = std::process::Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(&iso)
        .args(["-extract", "/"])
        .arg(&extracted)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let meta = std::fs::read_to_string(extracted.join("meta-data")).unwrap();
    let meta: serde_yaml_ng::Value = serde_yaml_ng::from_str(&meta).unwrap();
    assert_eq!(meta["instance-id"], "r2a-ring2all-pg-node-02");
    assert_eq!(meta["r2a-node"], "pg-node-02");
    assert!(
        std::fs::read_to_string(extracted.join("network-config"))
            .unwrap()
            .contains("192.168.10.32/24")
    );

    // Same manifest, same bytes.
    let seed_again = || {
        run_image_tool(
            &[
                "seed",
                &manifest,
                "--node",
                "pg-node-02",
                "--out",
                out.to_str().unwrap(),
            ],
            None,
        )
    };
    let again = seed_again();
    assert!(again.status.success(), "{}", again.stderr);
    assert_eq!(
        std::fs::read_to_string(out.join("ring2all/SHA256SUMS")).unwrap(),
        sums
    );
    // A node named twice gets its one seed.
    let twice = run_image_tool(
        &[
            "seed",
            &manifest,
            "--node",
            "pg-node-02",
            "--node",
            "pg-node-02",
            "--out",
            out.to_str().unwrap(),
        ],
        None,
    );
    assert!(twice.status.success(), "{}", twice.stderr);
    assert_eq!(twice.stdout.lines().count(), 1, "{}", twice.stdout);
    assert_eq!(
        std::fs::read_to_string(out.join("ring2all/SHA256SUMS")).unwrap(),
        sums
    );

    // A damaged index is never read as empty (the sums would lose every other file): the
    // command fails, says what to do, and rewrites nothing.
    let index_path = out.join("ring2all/manifest.json");
    let mut damaged = std::fs::read(&index_path).unwrap();
    damaged.truncate(damaged.len() / 2);
    std::fs::write(&index_path, &damaged).unwrap();
    let refused = seed_again();
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("manifest.json is damaged")
            && refused.stderr.contains("Restore it from a backup"),
        "{}",
        refused.stderr
    );
    assert_eq!(std::fs::read(&index_path).unwrap(), damaged);
    assert_eq!(
        std::fs::read_to_string(out.join("ring2all/SHA256SUMS")).unwrap(),
        sums
    );

    let unknown = run_image_tool(&["seed", &manifest, "--node", "pg-node-09"], None);
    assert!(
        unknown.status.code() == Some(2) && unknown.stderr.contains("no node `pg-node-09`"),
        "{}",
        unknown.stderr
    );
    let neither = run_image_tool(&["seed", &manifest], None);
    assert_eq!(neither.status.code(), Some(2), "{}", neither.stderr);
}
