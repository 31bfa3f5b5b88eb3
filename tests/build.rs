//! Real builds from the Debian mirror (root needed): the db role and the portal role (with
//! a vendor package from a local folder of .deb files), then the artifacts are opened and
//! checked and their configs run through the real programs inside the image; a debootstrap
//! base builds too. Layers are cached in target/tmp/r2a-test-cache between runs.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use support::image::{assert_empty_or_absent, in_image, passwd_uid};
use support::{fixture, run_image_tool};

#[test]
fn the_artifacts_and_their_records_are_published() {
    let fx = fixture();
    let out = fx.cluster_out();
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    for role in ["db", "portal"] {
        let artifact = out.join(role).join("rootfs.tar.gz");
        let sum = r2a::hash::sha256_file(&artifact).unwrap();
        assert!(
            sums.contains(&format!("{sum}  {role}/rootfs.tar.gz")),
            "{sums}"
        );
    }
    // The db image holds cluster secrets: not readable by others.
    let mode = std::fs::metadata(out.join("db/rootfs.tar.gz"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "db artifact mode {mode:o}");

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let db = &manifest["images"]["db"];
    let version = |image: &serde_json::Value, package: &str| {
        image["packages"][package]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        version(db, "postgresql-17").starts_with("17."),
        "{}",
        version(db, "postgresql-17")
    );
    assert!(
        version(db, "patroni").starts_with("4."),
        "{}",
        version(db, "patroni")
    );
    assert!(
        version(db, "etcd-server").starts_with("3.5."),
        "{}",
        version(db, "etcd-server")
    );
    assert_eq!(db["layers"][0]["name"], "base");
    assert_eq!(db["layers"][1]["name"], "db");
    let portal = &manifest["images"]["portal"];
    assert_eq!(
        version(portal, "softswitch-portal"),
        "1.0.0",
        "the vendor package from the local folder"
    );
    assert_eq!(portal["vendor_skipped"], serde_json::json!([]));
    let text = serde_json::to_string(&manifest).unwrap();
    for (_, secret) in fx.secrets().values() {
        assert!(
            !text.contains(secret.expose()),
            "manifest.json holds a secret"
        );
    }
}

/// Each image has an SPDX 2.3 document that an independent validator (the `spdx-tools`
/// Python package `make deps` installs) accepts, listing what dpkg has installed in the
/// image, each package with its version, source, license and purl; SHA256SUMS covers it.
#[test]
fn every_image_has_a_valid_sbom_of_its_installed_packages() {
    let fx = fixture();
    let out = fx.cluster_out();
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    let validator = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/spdx-tools/bin/pyspdxtools");
    assert!(
        validator.is_file(),
        "{} is missing: run `make deps`",
        validator.display()
    );
    for role in ["db", "portal"] {
        let path = out.join(role).join("sbom.spdx.json");
        let sum = r2a::hash::sha256_file(&path).unwrap();
        assert!(
            sums.contains(&format!("{sum}  {role}/sbom.spdx.json")),
            "{sums}"
        );
        let checked = std::process::Command::new(&validator)
            .arg("--infile")
            .arg(&path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&checked.stdout).into_owned()
            + &String::from_utf8_lossy(&checked.stderr);
        assert!(checked.status.success(), "{role}: {said}");
        assert!(
            !said.contains("invalid") && !said.contains("Error"),
            "{role}: {said}"
        );

        let document: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let packages = document["packages"].as_array().unwrap();
        // What dpkg in the image says is installed, read by dpkg-query itself.
        let tree = fx.extracted(role);
        let listed = support::host_output(&[
            "dpkg-query",
            "--admindir",
            tree.path().join("var/lib/dpkg").to_str().unwrap(),
            "-W",
            "-f",
            "${db:Status-Status} ${Package} ${Version} ${Architecture}\n",
        ]);
        let installed: Vec<&str> = listed
            .lines()
            .filter_map(|line| line.strip_prefix("installed "))
            .collect();
        assert_eq!(
            packages.len(),
            installed.len() + 1,
            "{role}: the image and each package"
        );
        for line in &installed {
            let words: Vec<&str> = line.split(' ').collect();
            let (name, version) = (words[0], words[1]);
            let entry = packages
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{role}: {name} is not in the SBOM"));
            assert_eq!(entry["versionInfo"], version, "{role}: {name}");
            let purl = entry["externalRefs"][0]["referenceLocator"]
                .as_str()
                .unwrap();
            assert!(
                purl.starts_with("pkg:deb/") && purl.contains(&format!("/{name}@")),
                "{purl}"
            );
        }
        let package = |name: &str| packages.iter().find(|p| p["name"] == name).unwrap();
        assert_eq!(package("bash")["licenseDeclared"], "GPL-3.0-or-later");
        assert!(
            package("libc6")["sourceInfo"]
                .as_str()
                .unwrap()
                .contains("source package glibc"),
            "{}",
            package("libc6")
        );
        if role == "portal" {
            let vendor = package("softswitch-portal");
            assert_eq!(
                vendor["externalRefs"][0]["referenceLocator"],
                "pkg:deb/vendor/softswitch-portal@1.0.0?arch=all"
            );
        }
    }
}

/// SHA256SUMS is signed: `r2a-image verify` and OpenSSH's `ssh-keygen -Y verify` both
/// accept it; in a copy, a changed byte and a stray file each fail `verify`, named.
#[test]
fn the_published_sums_are_signed_and_verify_finds_a_changed_byte_and_a_stray_file() {
    let fx = fixture();
    let _build = fx.lock();
    let out = fx.out.to_str().unwrap();
    let manifest = fx.manifest.to_str().unwrap();
    let verified = run_image_tool(&["verify", manifest, "--out", out], None);
    assert!(verified.status.success(), "{}", verified.stderr);
    assert!(
        verified.stdout.contains("signature good"),
        "{}",
        verified.stdout
    );

    let cluster_out = fx.cluster_out();
    let sums = std::fs::read(cluster_out.join("SHA256SUMS")).unwrap();
    let openssh = |sums: &[u8]| {
        let mut child = std::process::Command::new("ssh-keygen")
            .args(["-Y", "verify", "-f"])
            .arg(cluster_out.join("allowed_signers"))
            .args(["-I", "r2a@r2a-test", "-n", "r2a-sha256sums", "-s"])
            .arg(cluster_out.join("SHA256SUMS.sig"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), sums).unwrap();
        child.wait().unwrap().success()
    };
    assert!(openssh(&sums), "ssh-keygen -Y verify refused the signature");
    let mut altered = sums.clone();
    altered[0] ^= 1;
    assert!(!openssh(&altered), "ssh-keygen -Y verify took altered sums");

    let copy = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&cluster_out)
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(copied.success());
    let copy_out = copy.path().join("r2a-test");
    let tarball = copy_out.join("portal/rootfs.tar.gz");
    let mut bytes = std::fs::read(&tarball).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&tarball, bytes).unwrap();
    std::fs::write(copy_out.join("db/notes.txt"), "left here").unwrap();
    let tampered = run_image_tool(
        &["verify", manifest, "--out", copy.path().to_str().unwrap()],
        None,
    );
    assert_eq!(tampered.status.code(), Some(1), "{}", tampered.stderr);
    assert!(
        tampered
            .stderr
            .contains("portal/rootfs.tar.gz: its sha256 differs from SHA256SUMS"),
        "{}",
        tampered.stderr
    );
    assert!(
        tampered
            .stderr
            .contains("db/notes.txt: not listed in SHA256SUMS"),
        "{}",
        tampered.stderr
    );
    assert!(
        !tampered.stderr.contains("SHA256SUMS.sig"),
        "{}",
        tampered.stderr
    );
}

#[test]
fn the_db_image_has_its_packages_configs_and_agent_and_no_node_state() {
    let fx = fixture();
    let root = fx.extracted("db");
    let root = root.path();
    let agent = root.join("usr/bin/r2a-node");
    assert_eq!(
        std::fs::metadata(&agent).unwrap().permissions().mode() & 0o755,
        0o755
    );
    assert!(
        root.join("usr/lib/systemd/system/r2a-firstboot.service")
            .is_file()
    );
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    assert!(
        wants
            .join("r2a-firstboot.service")
            .symlink_metadata()
            .is_ok(),
        "the agent's unit is enabled"
    );
    for unit in ["etcd.service", "patroni.service", "postgresql.service"] {
        assert!(
            wants.join(unit).symlink_metadata().is_err(),
            "{unit} must be disabled: the agent starts it"
        );
    }
    assert!(root.join("usr/lib/postgresql/17/bin/postgres").is_file());
    assert!(root.join("usr/bin/patroni").is_file());
    assert!(root.join("usr/bin/etcd").is_file());

    let postgres_uid = passwd_uid(root, "postgres");
    for node in ["db1", "db2", "db3"] {
        let config = root.join(format!("usr/lib/r2a/nodes/{node}/etc/patroni/config.yml"));
        let metadata =
            std::fs::metadata(&config).unwrap_or_else(|_| panic!("{} missing", config.display()));
        assert_eq!(
            metadata.permissions().mode() & 0o777,
            0o600,
            "{}",
            config.display()
        );
        assert_eq!(
            metadata.uid(),
            postgres_uid,
            "{} is postgres's",
            config.display()
        );
        assert!(
            std::fs::read_to_string(
                root.join(format!("usr/lib/r2a/nodes/{node}/etc/default/etcd"))
            )
            .unwrap()
            .contains(node)
        );
    }
    let hosts = std::fs::read_to_string(root.join("etc/hosts")).unwrap();
    for node in ["db1", "db2", "db3", "fs1", "portal1", "tel1"] {
        assert!(hosts.contains(node), "/etc/hosts lacks {node}:\n{hosts}");
    }

    assert_eq!(
        std::fs::read(root.join("etc/machine-id")).unwrap(),
        b"",
        "machine-id is made on first boot"
    );
    let forbidden = [
        "var/lib/dbus/machine-id",
        "var/lib/postgresql/17",
        "etc/postgresql/17/main",
        "var/lib/glusterd/glusterd.info",
        "usr/sbin/policy-rc.d",
        "etc/resolv.conf.r2a-saved",
    ];
    for path in forbidden {
        assert!(
            root.join(path).symlink_metadata().is_err(),
            "{path} must not be in the image"
        );
    }
    assert_empty_or_absent(&root.join("var/lib/etcd"));
    let host_keys: Vec<_> = std::fs::read_dir(root.join("etc/ssh"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("ssh_host_"))
        .collect();
    assert!(host_keys.is_empty(), "SSH host keys are made on the node");
    let lists: Vec<_> = std::fs::read_dir(root.join("var/lib/apt/lists"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().unwrap().is_file())
        .collect();
    assert!(lists.is_empty(), "apt lists are not shipped");
    let sources = std::fs::read_to_string(root.join("etc/apt/sources.list")).unwrap();
    assert!(
        sources.contains("trixie-security") && sources.contains("trixie-updates"),
        "{sources}"
    );
    let createcluster =
        std::fs::read_to_string(root.join("etc/postgresql-common/createcluster.conf")).unwrap();
    assert!(createcluster.contains("create_main_cluster = false"));
}

#[test]
fn the_rendered_configs_pass_the_real_programs_inside_the_images() {
    let fx = fixture();
    let db = fx.extracted("db");
    in_image(
        db.path(),
        "mkdir -p /run/sshd && ssh-keygen -q -t ed25519 -N '' -f /tmp/hostkey && /usr/sbin/sshd -t -h /tmp/hostkey",
    );
    in_image(db.path(), "nft -c -f /etc/nftables.conf");
    // Patroni's validator connects to every etcd host: run the three etcd members from
    // their own rendered files and certificates (mutual TLS), on loopback addresses inside
    // the check's namespace. All three share that namespace, so each gives up the
    // 127.0.0.1 listeners a real node has and reads its certificate from its own tree.
    // A connection to a member leaves from that member's own address there, which etcd's
    // peer authentication refuses, so the peers talk plain HTTP here; the clients (etcdctl,
    // Patroni) use mutual TLS. The cluster test checks peer TLS between real nodes.
    let mut script = String::from("ip link set lo up\n");
    for (node, address) in [
        ("db1", "10.77.0.11"),
        ("db2", "10.77.0.12"),
        ("db3", "10.77.0.13"),
    ] {
        let tls = format!("/usr/lib/r2a/nodes/{node}/etc/r2a/tls");
        script.push_str(&format!(
            "ip addr add {address}/32 dev lo\n(set -a; . /usr/lib/r2a/nodes/{node}/etc/default/etcd; \
             ETCD_DATA_DIR=/tmp/etcd-{node}; ETCD_LISTEN_CLIENT_URLS=https://{address}:2379; \
             ETCD_LISTEN_METRICS_URLS=http://{address}:2381; \
             ETCD_CERT_FILE={tls}/etcd.crt; ETCD_KEY_FILE={tls}/etcd.key; \
             ETCD_LISTEN_PEER_URLS=http://{address}:2380; \
             ETCD_INITIAL_ADVERTISE_PEER_URLS=http://{address}:2380; \
             ETCD_INITIAL_CLUSTER=db1=http://10.77.0.11:2380,db2=http://10.77.0.12:2380,db3=http://10.77.0.13:2380; \
             ETCD_PEER_CLIENT_CERT_AUTH=false; ETCD_PEER_TRUSTED_CA_FILE=; \
             ETCD_PEER_CERT_FILE=; ETCD_PEER_KEY_FILE=; \
             exec etcd) >/tmp/etcd-{node}.log 2>&1 &\n"
        ));
    }
    let etcdctl = "etcdctl --cacert=/etc/r2a/tls/ca.crt \
                   --cert=/usr/lib/r2a/nodes/db1/etc/r2a/tls/node.crt \
                   --key=/usr/lib/r2a/nodes/db1/etc/r2a/tls/node.key";
    script.push_str(&format!("for i in $(seq 50); do {etcdctl} --endpoints=https://10.77.0.11:2379,https://10.77.0.12:2379,https://10.77.0.13:2379 endpoint health >/dev/null 2>&1 && break; sleep 0.2; done\n"));
    script.push_str(&format!(
        "{etcdctl} --endpoints=https://10.77.0.11:2379 member list | grep -c started | grep -qx 3 || {{ tail -n 5 /tmp/etcd-*.log; exit 1; }}\n",
    ));
    script.push_str("install -d -o postgres -g postgres -m 700 /var/lib/postgresql/17/main\n");
    for node in ["db1", "db2", "db3"] {
        // The node's certificates where its config names them, as its agent installs them.
        script.push_str(&format!(
            "cp -a /usr/lib/r2a/nodes/{node}/etc/r2a/tls/. /etc/r2a/tls/\n\
             runuser -u postgres -- patroni --validate-config /usr/lib/r2a/nodes/{node}/etc/patroni/config.yml\n"
        ));
    }
    in_image(db.path(), &script);
    // The seeds r2a-image writes pass cloud-init's own schema checks, in the image's cloud-init.
    let cluster = r2a::manifest::Cluster::load(
        &fx.manifest,
        &r2a::role::RoleSet::load(&support::repo().join("roles")).unwrap(),
    )
    .unwrap();
    let check = db.path().join("root/seed-check");
    std::fs::create_dir_all(&check).unwrap();
    for node in &cluster.nodes {
        let files = r2a::seed::seed_files(&cluster, node);
        std::fs::write(
            check.join(format!("{}.user-data", node.name)),
            &files.user_data,
        )
        .unwrap();
        std::fs::write(
            check.join(format!("{}.network-config", node.name)),
            &files.network_config,
        )
        .unwrap();
    }
    in_image(
        db.path(),
        "cd /root/seed-check && for f in *.user-data; do cloud-init schema -c $f; done && for f in *.network-config; do cloud-init schema --schema-type network-config -c $f; done",
    );
    // The schema accepts what cloud-init's network rendering refuses (`to: default` once
    // failed every cloud-init stage at boot): render each config for networkd as well.
    in_image(
        db.path(),
        "cd /root/seed-check && for f in *.network-config; do mkdir -p /tmp/$f && cloud-init devel net-convert -p $f -k yaml -d /tmp/$f -D debian -O networkd && grep -rq 'Gateway=10.77.0.1' /tmp/$f || exit 1; done",
    );
    let portal = fx.extracted("portal");
    in_image(portal.path(), "haproxy -c -f /etc/haproxy/haproxy.cfg");
    in_image(portal.path(), "nft -c -f /etc/nftables.conf");
    // The vendor package is installed, its temporary repository is gone.
    assert!(
        portal
            .path()
            .join("usr/share/softswitch-portal/VERSION")
            .is_file()
    );
    for path in [
        "var/lib/r2a-vendor-local",
        "etc/apt/sources.list.d/r2a-vendor-local.list",
    ] {
        assert!(
            portal.path().join(path).symlink_metadata().is_err(),
            "{path} left in the image"
        );
    }
}

#[test]
fn a_debootstrap_base_builds_the_same_role() {
    let fx = fixture();
    let _build = fx.lock();
    let out = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let argv = [
        "build",
        fx.manifest.to_str().unwrap(),
        "--role",
        "portal",
        "--bootstrap",
        "debootstrap",
        "--out",
        out.path().to_str().unwrap(),
        "--cache",
        fx.cache.to_str().unwrap(),
        "--agent",
        env!("CARGO_BIN_EXE_r2a-node"),
    ];
    let output = run_image_tool(&argv, None);
    assert!(output.status.success(), "{}", output.stderr);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("r2a-test/manifest.json")).unwrap())
            .unwrap();
    let portal = &manifest["images"]["portal"];
    assert!(
        portal["layers"][0]["tool"]
            .as_str()
            .unwrap()
            .starts_with("debootstrap "),
        "{}",
        portal["layers"][0]
    );
    for package in ["haproxy", "systemd", "openssh-server", "softswitch-portal"] {
        assert!(portal["packages"][package].is_string(), "{package} missing");
    }
}
