//! The db role's real qcow2 image, booted as the three db nodes in QEMU under TCG, each
//! machine with its own seed and a blank data disk, on a private network: tap devices on
//! a bridge inside a network namespace of the test's own (the host's namespace gets no
//! link, address or route; no `-netdev socket`). The machines form the etcd and Patroni
//! cluster by themselves, with PostgreSQL's data on their data disks, and a row committed
//! on the leader is read on both replicas. The test reaches the machines over SSH from
//! inside that namespace, with a key made for the run; it prints how long the cluster took
//! to form (`make bench` reports that figure). The image holds no secret and no node
//! (`node_data = "seed"`): each machine's files and keys come from its seed drive.

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use r2a::agent::report::BootReport;
use r2a::boot::qemu::{Accel, Firmware, Network, PxeLoader};
use r2a::boot::{BootOptions, machine_for};
use r2a::cluster::names::LabNames;
use r2a::cluster::network;
use r2a::manifest::Format;
use r2a::project::{Project, SecretsMode};
use support::db_cluster::{
    DB, ETCDCTL, PATRONI_LIST, parse_etcd_members, parse_patroni_list, wait_until,
};
use support::{Fixture, fixture, host_output, processes_mentioning, repo};

/// The test's own namespace and the bridge in it.
const NETNS: &str = "r2a-qemu-cluster";
const BRIDGE: &str = "br0";
/// The test's end of the private network: the manifest's gateway, on the bridge.
const GATEWAY: &str = "10.77.0.1/24";
/// Memory per machine: PostgreSQL, Patroni and etcd with room to spare.
const MEMORY_MIB: u32 = 1536;
/// Three machines under TCG on the test machine's cores boot slowly.
const BOOT_LIMIT: Duration = Duration::from_secs(900);
const FORM_LIMIT: Duration = Duration::from_secs(600);
const DATA_MOUNT: &str = "/var/lib/postgresql";
/// The process ids of the machines a run started, in its folder.
const PIDS: &str = "machines.pid";

#[test]
fn the_db_images_boot_as_three_machines_and_form_the_cluster_on_their_data_disks() {
    let fx = fixture();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("r2a-qemu-cluster");
    // What a killed run left: its machines (by the ids it recorded) and its namespace.
    end_recorded_machines(&dir);
    network::delete_netns(NETNS).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = ssh_key(&dir);
    let manifest = every_db_node_with_a_data_disk_and_the_key(fx, &dir, &key);
    let out = support::build_images(fx, &manifest, &["db"], "qcow2", None);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("r2a-test/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(index["images"]["db"]["contains_secrets"], false);
    let project = Project::load(&repo(), &manifest, SecretsMode::ReadOnly).unwrap();

    let lab = VmLab::create(&dir, key);
    let started = Instant::now();
    for node in DB {
        lab.start(&project, node, &out);
    }
    for (index, node) in DB.iter().enumerate() {
        let report = lab.wait_for_report(node);
        assert!(report.is_healthy(), "{node}: {report:?}");
        assert_eq!(report.addresses, [format!("10.77.0.1{}/24", index + 1)]);
        // Its files and secrets came from its seed drive.
        let console = lab.console(node);
        assert!(
            console
                .lines()
                .any(|line| line.contains("r2a-node: node data: ") && line.contains("r2a-node.tar")),
            "{node} did not take its node data from its seed"
        );
    }
    println!(
        "the three machines booted {:.1} s after they started",
        started.elapsed().as_secs_f64()
    );
    the_host_namespace_holds_nothing_of_the_lab();

    let leader = lab.wait_formed();
    println!(
        "a Patroni leader with two replicas {:.1} s after the machines started",
        started.elapsed().as_secs_f64()
    );

    the_etcd_members_are_the_three_nodes(&lab);
    the_data_lies_on_each_data_disk(&lab);
    a_row_committed_on_the_leader_is_on_both_replicas(&lab, &leader);
    every_join_step_is_done(&lab);

    lab.stop();
    assert!(processes_mentioning(dir.to_str().unwrap()).is_empty());
    assert!(!network::netns_exists(NETNS));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Ends the machines an earlier run recorded and left running: each by its id, and only
/// while that process is still a QEMU of this test's folder.
fn end_recorded_machines(dir: &Path) {
    let Ok(record) = std::fs::read_to_string(dir.join(PIDS)) else {
        return;
    };
    for pid in record
        .lines()
        .filter_map(|line| line.trim().parse::<i32>().ok())
    {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("qemu-system-x86_64") && cmdline.contains(dir.to_str().unwrap()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

fn the_etcd_members_are_the_three_nodes(lab: &VmLab) {
    let members = parse_etcd_members(&lab.ssh("db2", &format!("{ETCDCTL} member list -w json")));
    let mut names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, DB, "{members:?}");
    assert!(members.iter().all(|m| !m.learner), "{members:?}");
}

/// Each node's data disk (`/dev/vdb`, blank at start) is formatted and mounted where the
/// role puts it, and PostgreSQL's data directory lies on it.
fn the_data_lies_on_each_data_disk(lab: &VmLab) {
    for node in DB {
        let mount = lab.ssh(node, &format!("findmnt -no SOURCE,FSTYPE {DATA_MOUNT}"));
        assert_eq!(
            mount.split_whitespace().collect::<Vec<_>>(),
            ["/dev/vdb", "ext4"],
            "{node}"
        );
        let data = lab.ssh(node, &psql("SHOW data_directory"));
        let holder = lab.ssh(
            node,
            &format!("findmnt -no SOURCE --target {}", data.trim()),
        );
        assert_eq!(holder.trim(), "/dev/vdb", "{node}: {data}");
    }
}

fn a_row_committed_on_the_leader_is_on_both_replicas(lab: &VmLab, leader: &str) {
    lab.ssh(
        leader,
        &psql("CREATE TABLE vm_probe (id int PRIMARY KEY); INSERT INTO vm_probe VALUES (42)"),
    );
    for node in DB.iter().filter(|node| **node != leader) {
        let read = wait_until(Duration::from_secs(60), "the row on a replica", || {
            let text = lab.ssh_try(node, &psql("SELECT id FROM vm_probe"))?;
            (!text.trim().is_empty()).then_some(text)
        });
        assert_eq!(read.trim(), "42", "{node}");
        let recovery = lab.ssh(node, &psql("SELECT pg_is_in_recovery()"));
        assert_eq!(recovery.trim(), "t", "{node} is a replica");
    }
}

fn every_join_step_is_done(lab: &VmLab) {
    for node in DB {
        let status: serde_json::Value =
            serde_json::from_str(&lab.ssh(node, "r2a-node status --json")).unwrap();
        let steps = status["join"].as_array().unwrap();
        assert_eq!(steps.len(), 3, "{node}: {status:#}");
        for step in steps {
            assert_eq!(step["state"], "done", "{node}: {step:#}");
        }
    }
}

fn the_host_namespace_holds_nothing_of_the_lab() {
    let links = host_output(&["ip", "-o", "link", "show"]);
    assert!(!links.contains("tap-db"), "{links}");
    let addresses = host_output(&["ip", "-o", "address", "show"]);
    assert!(!addresses.contains("10.77."), "{addresses}");
    let routes = host_output(&["ip", "route", "show", "table", "all"]);
    assert!(!routes.contains("10.77."), "{routes}");
}

/// psql as the postgres user on the node's own server.
fn psql(sql: &str) -> String {
    format!("runuser -u postgres -- psql -X -At -c \"{sql}\"")
}

/// A key pair made for this run; returns the private key's path.
fn ssh_key(dir: &Path) -> PathBuf {
    let key = dir.join("id_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "r2a-qemu-test", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success(), "ssh-keygen");
    key
}

/// The fixture's manifest with a data disk on db2 and db3 too (db1 has one), the run's
/// public key as the only authorized key, and the nodes' files and secrets in their seeds
/// (`node_data = "seed"`): the machines boot one image that holds no secret.
fn every_db_node_with_a_data_disk_and_the_key(fx: &Fixture, dir: &Path, key: &Path) -> PathBuf {
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    support::derived_manifest(fx, dir, |text| {
        let mut edited = String::new();
        for line in text.lines() {
            if line.starts_with("authorized_keys") {
                edited.push_str(&format!("authorized_keys = [\"{}\"]\n", public.trim()));
                continue;
            }
            edited.push_str(line);
            edited.push('\n');
            if line == "address = \"10.77.0.12\"" || line == "address = \"10.77.0.13\"" {
                edited.push_str("data_disk = \"/dev/vdb\"\n");
            }
        }
        assert_eq!(
            edited.matches("data_disk").count(),
            text.matches("data_disk").count() + 2
        );
        support::seeds::node_data_seed(edited)
    })
}

/// The machines, the namespace they run in and their work files; stopped (by process
/// id) and removed when dropped, also when the test fails.
struct VmLab {
    dir: PathBuf,
    key: PathBuf,
    lab: LabNames,
    machines: std::cell::RefCell<Vec<(String, Child)>>,
    /// Each started node's address, from the manifest.
    addresses: std::cell::RefCell<std::collections::BTreeMap<String, String>>,
}

impl VmLab {
    fn create(dir: &Path, key: PathBuf) -> VmLab {
        let lab = LabNames {
            netns: NETNS.to_string(),
            bridge: BRIDGE.to_string(),
        };
        let vm_lab = VmLab {
            dir: dir.to_path_buf(),
            key,
            lab,
            machines: Default::default(),
            addresses: Default::default(),
        };
        network::create_lab(&vm_lab.lab).unwrap();
        let status = Command::new("ip")
            .args(["-n", NETNS, "address", "add", GATEWAY, "dev", BRIDGE])
            .status()
            .unwrap();
        assert!(status.success(), "an address for the test's end");
        vm_lab
    }

    /// Starts `node`'s machine from the db qcow2 in `out`, on its own tap device.
    fn start(&self, project: &Project, node: &str, out: &Path) {
        let options = BootOptions {
            role: "db".into(),
            node: Some(node.into()),
            format: Format::Qcow2,
            firmware: Firmware::Bios,
            accel: Accel::Tcg,
            install: false,
            usb: false,
            pxe_loader: PxeLoader::Ipxe,
            check: true,
            timeout: BOOT_LIMIT,
            memory_mib: MEMORY_MIB,
            out: out.to_path_buf(),
        };
        let work = self.dir.join(node);
        std::fs::create_dir_all(&work).unwrap();
        let manifest_node = project.cluster.node(node).unwrap();
        self.addresses
            .borrow_mut()
            .insert(node.to_string(), manifest_node.address.to_string());
        let mut machine = machine_for(project, manifest_node, &options, &work).unwrap();
        let tap = format!("tap-{node}");
        network::create_tap(&self.lab, &tap).unwrap();
        machine.network = Network::Tap(tap);
        let console = File::create(self.console_path(node)).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", NETNS, "qemu-system-x86_64"])
            .args(machine.args())
            .stdin(Stdio::piped())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .unwrap();
        // Recorded first, so that a run killed before its cleanup can be cleaned after.
        let mut record = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(PIDS))
            .unwrap();
        std::io::Write::write_all(&mut record, format!("{}\n", child.id()).as_bytes()).unwrap();
        self.machines.borrow_mut().push((node.to_string(), child));
    }

    fn console_path(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.console"))
    }

    fn console(&self, node: &str) -> String {
        let bytes = std::fs::read(self.console_path(node)).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The boot report `node` printed on its console.
    fn wait_for_report(&self, node: &str) -> BootReport {
        let deadline = Instant::now() + BOOT_LIMIT;
        loop {
            let console = self.console(node);
            if let Some(report) = console.lines().find_map(BootReport::parse_line) {
                return report;
            }
            let exited = self
                .machines
                .borrow_mut()
                .iter_mut()
                .any(|(name, child)| name == node && !matches!(child.try_wait(), Ok(None)));
            if exited || Instant::now() > deadline {
                let tail: Vec<&str> = console.lines().rev().take(40).collect();
                panic!(
                    "{node} gave no boot report (QEMU exited: {exited}):\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// The Patroni leader, once db1 sees it with two streaming replicas; on a timeout
    /// the failure shows each node's join steps and console.
    fn wait_formed(&self) -> String {
        let deadline = Instant::now() + FORM_LIMIT;
        loop {
            let members = self
                .ssh_try("db1", PATRONI_LIST)
                .map(|text| parse_patroni_list(&text))
                .unwrap_or_default();
            let streaming = members.iter().filter(|m| m.state == "streaming").count();
            if let Some(leader) = members.iter().find(|m| m.role == "Leader")
                && streaming == 2
            {
                return leader.name.clone();
            }
            if Instant::now() > deadline {
                let views: Vec<String> = DB
                    .iter()
                    .map(|node| {
                        let status = self.ssh_try(node, "r2a-node status").unwrap_or_default();
                        let console = self.console(node);
                        let tail: Vec<&str> = console.lines().rev().take(15).collect();
                        let tail: Vec<&str> = tail.into_iter().rev().collect();
                        format!("== {node}\n{status}\n{}", tail.join("\n"))
                    })
                    .collect();
                panic!(
                    "no leader with two streaming replicas within {FORM_LIMIT:?}: {members:?}\n{}",
                    views.join("\n")
                );
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// Runs `script` on `node` as root over SSH (given up after two minutes); its output
    /// when it succeeded.
    fn ssh_try(&self, node: &str, script: &str) -> Option<String> {
        let address = self.addresses.borrow()[node].clone();
        let output = Command::new("ip")
            .args(["netns", "exec", NETNS, "timeout", "120", "ssh", "-i"])
            .arg(&self.key)
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "ServerAliveInterval=5",
                &format!("root@{address}"),
                script,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn ssh(&self, node: &str, script: &str) -> String {
        self.ssh_try(node, script)
            .unwrap_or_else(|| panic!("`{script}` failed on {node}"))
    }

    /// Stops every machine by its process id and removes the namespace.
    fn stop(&self) {
        for (_, mut child) in self.machines.borrow_mut().drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        network::delete_netns(NETNS).unwrap();
    }
}

impl Drop for VmLab {
    fn drop(&mut self) {
        self.stop();
    }
}
