//! A carrier's fleet (`examples/fleet.toml`): 3 db, 6 fs, 4 application and 1,000
//! telephony nodes on a /16. Written with one node range and written node by node, the
//! manifest gives the same `check`,
//! `plan --json`, rendered files and seeds; a role image keeps one copy of what its nodes
//! share and each node's own small files only. (Times and memory: `make bench`.)

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use r2a::project::{Project, SecretsMode};
use support::run_image_tool;

const TELEPHONY: u32 = 1000;
/// The range entry of `examples/fleet.toml`.
const RANGE_ENTRY: &str = "name = \"tele-node-[0001-1000]\"\nrole = \"telephony\"\naddress = \"10.77.1.0\"\nvcpus = 8\nmemory = \"16GiB\"\n";

/// The fleet as the example writes it: its telephony nodes as one range.
fn ranged() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet.toml");
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains(RANGE_ENTRY),
        "examples/fleet.toml has the range"
    );
    text
}

/// The same fleet with the telephony nodes one by one, from 10.77.1.0 up.
fn listed() -> String {
    let start = u32::from(std::net::Ipv4Addr::new(10, 77, 1, 0));
    let nodes: Vec<String> = (0..TELEPHONY)
        .map(|i| {
            let address = std::net::Ipv4Addr::from(start + i);
            let name = format!("tele-node-{:04}", i + 1);
            RANGE_ENTRY
                .replace("tele-node-[0001-1000]", &name)
                .replace("10.77.1.0", &address.to_string())
        })
        .collect();
    ranged().replace(RANGE_ENTRY, &nodes.join("\n[[nodes]]\n"))
}

fn image_tool(args: &[&str]) -> String {
    let output = run_image_tool(args, None);
    assert!(output.status.success(), "{args:?}: {}", output.stderr);
    output.stdout
}

/// Every file below `root`, by relative path, with its bytes.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(Result::unwrap)
        .filter(|entry| entry.file_type().is_file())
        .map(|entry| {
            let path = entry.path().strip_prefix(root).unwrap();
            (
                path.display().to_string(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_range_gives_the_same_bytes_as_its_nodes_written_one_by_one() {
    // Two thousand seeds: on the target's disk, not in a /tmp that may be memory.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let ranged_dir = dir.path().join("ranged");
    let listed_dir = dir.path().join("listed");
    let mut manifests = Vec::new();
    for (folder, text) in [(&ranged_dir, ranged()), (&listed_dir, listed())] {
        std::fs::create_dir_all(folder).unwrap();
        let manifest = folder.join("fleet.toml");
        std::fs::write(&manifest, text).unwrap();
        manifests.push(manifest.to_str().unwrap().to_string());
    }
    let (ranged_manifest, listed_manifest) = (&manifests[0], &manifests[1]);
    assert!(std::fs::metadata(listed_manifest).unwrap().len() > 50_000);

    for manifest in &manifests {
        let said = image_tool(&["check", manifest]);
        assert!(said.contains("valid (1013 nodes"), "{said}");
    }
    assert_eq!(
        image_tool(&["plan", "--json", ranged_manifest]),
        image_tool(&["plan", "--json", listed_manifest])
    );

    // One set of secrets for both: the first render makes it.
    let rendered = |manifest: &str, node: &str, out: &Path| {
        image_tool(&[
            "render",
            manifest,
            "--node",
            node,
            "--out",
            out.to_str().unwrap(),
        ]);
        tree(out)
    };
    let first = rendered(ranged_manifest, "db2", &ranged_dir.join("db2"));
    std::fs::copy(
        ranged_dir.join("fleet.secrets.toml"),
        listed_dir.join("fleet.secrets.toml"),
    )
    .unwrap();
    assert_eq!(
        first,
        rendered(listed_manifest, "db2", &listed_dir.join("db2"))
    );
    for node in ["tele-node-0001", "tele-node-0500", "tele-node-1000"] {
        let ranged_files = rendered(ranged_manifest, node, &ranged_dir.join(node));
        let hosts = String::from_utf8_lossy(&ranged_files["etc/hosts"]).into_owned();
        assert!(hosts.contains("10.77.4.231\ttele-node-1000.fleet.example.com"));
        assert_eq!(
            ranged_files,
            rendered(listed_manifest, node, &listed_dir.join(node)),
            "{node}"
        );
    }

    let seeds = |manifest: &str, out: &Path| {
        image_tool(&["seed", manifest, "--all", "--out", out.to_str().unwrap()]);
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("fleet/manifest.json")).unwrap())
                .unwrap();
        index["seeds"].clone()
    };
    let ranged_seeds = seeds(ranged_manifest, &ranged_dir.join("out"));
    assert_eq!(ranged_seeds.as_object().unwrap().len(), 1013);
    assert_eq!(
        ranged_seeds["tele-node-0777"]["path"],
        "seeds/tele-node-0777.iso"
    );
    assert_eq!(
        ranged_seeds,
        seeds(listed_manifest, &listed_dir.join("out"))
    );
}

#[test]
fn a_role_image_keeps_one_copy_of_what_its_nodes_share() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("fleet.toml");
    std::fs::write(&manifest, ranged()).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let project = Project::load(repo, &manifest, SecretsMode::ReadOnly).unwrap();
    let telephony = project.render("telephony").unwrap();

    let shared: Vec<&str> = telephony.shared.iter().map(|f| f.path.as_str()).collect();
    for path in ["/etc/hosts", "/etc/r2a/cluster.json"] {
        assert_eq!(shared.iter().filter(|p| **p == path).count(), 1, "{path}");
    }
    assert_eq!(telephony.per_node.len(), TELEPHONY as usize);
    let own_paths = |files: &[r2a::overlay::OverlayFile]| -> Vec<String> {
        files.iter().map(|f| f.path.clone()).collect()
    };
    let first = own_paths(&telephony.per_node["tele-node-0001"]);
    assert!(
        first.contains(&"/etc/freeswitch/r2a/vars.xml".to_string()),
        "{first:?}"
    );
    for (node, files) in &telephony.per_node {
        assert_eq!(own_paths(files), first, "{node} has the same own files");
        let bytes: usize = files.iter().map(|f| f.content.len()).sum();
        assert!(bytes < 16 * 1024, "{node}'s own files take {bytes} bytes");
    }
    // What the image holds beyond the shared files is the nodes' own files, nothing more.
    let image = telephony.image_files();
    let own_total = TELEPHONY as usize * first.len();
    assert_eq!(image.len(), telephony.shared.len() + own_total);
}
