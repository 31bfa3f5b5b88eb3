//! Helpers of the db cluster test: the nodes' join steps, etcd's and Patroni's members as
//! their own tools report them, psql through a client's HAProxy, and a writer that commits
//! one row per transaction while the cluster fails over.

use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use r2a::cluster::Harness;

use super::repo;

pub const JOIN_LIMIT: Duration = Duration::from_secs(300);
pub const DB: [&str; 3] = ["db1", "db2", "db3"];
pub const PATRONI_LIST: &str = "patronictl -c /etc/patroni/config.yml list -f json";
pub const ETCDCTL: &str = "etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/r2a/tls/ca.crt \
                       --cert=/etc/r2a/tls/node.crt --key=/etc/r2a/tls/node.key";

/// A client that commits one row per transaction through HAProxy, in portal1.
pub struct Writer {
    child: Child,
    acks: Arc<Mutex<Vec<(u64, Instant)>>>,
    failures: Arc<Mutex<Vec<Instant>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub fn start(h: &Harness, first_id: u64) -> Writer {
        let script = format!(
            "set -a; . /etc/r2a/database.env; set +a; rm -f /run/r2a-test-stop; i={first_id}
             # Retried every few tenths of a second, each attempt given up after 2 s.
             export PGCONNECT_TIMEOUT=2
             while [ ! -e /run/r2a-test-stop ]; do
               if timeout 10 psql -X -q -At -c \"INSERT INTO acked (id) VALUES ($i) RETURNING id\" \
                    >/dev/null 2>&1; then echo \"ok $i\"; i=$((i+1)); else echo fail; sleep 0.2; fi
             done"
        );
        let mut child = h
            .exec_command("portal1", &["sh", "-c", &script])
            .unwrap()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let acks = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let (acks_in, failures_in) = (acks.clone(), failures.clone());
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match line.strip_prefix("ok ") {
                    Some(id) => acks_in
                        .lock()
                        .unwrap()
                        .push((id.trim().parse().unwrap(), Instant::now())),
                    None => failures_in.lock().unwrap().push(Instant::now()),
                }
            }
        });
        Writer {
            child,
            acks,
            failures,
            reader: Some(reader),
        }
    }

    pub fn wait_for_acks(&self, count: usize, limit: Duration) {
        wait_until(limit, &format!("{count} acknowledged commits"), || {
            (self.acks.lock().unwrap().len() >= count).then_some(())
        });
    }

    pub fn wait_for_acks_after(&self, since: Instant, count: usize, limit: Duration) {
        wait_until(limit, "writes to resume on a new leader", || {
            let acks = self.acks.lock().unwrap();
            (acks.iter().filter(|(_, at)| *at > since).count() >= count).then_some(())
        });
    }

    /// Stops the client; returns every acknowledged id and how long writes stopped.
    pub fn stop(mut self, h: &Harness, halted_at: Instant) -> (Vec<u64>, Duration) {
        ok(h, "portal1", "touch /run/r2a-test-stop");
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let acks = self.acks.lock().unwrap();
        let failures = self.failures.lock().unwrap();
        // Writes are back with the first commit after the last failed attempt.
        let last_failure = failures.iter().filter(|at| **at > halted_at).max().copied();
        let outage = match last_failure {
            None => Duration::ZERO,
            Some(last_failure) => acks
                .iter()
                .map(|(_, at)| *at)
                .filter(|at| *at > last_failure)
                .min()
                .map_or(Duration::MAX, |back| back.duration_since(halted_at)),
        };
        (acks.iter().map(|(id, _)| *id).collect(), outage)
    }
}

#[derive(Debug)]
pub struct PatroniMember {
    pub name: String,
    pub role: String,
    pub state: String,
}

#[derive(Debug)]
pub struct EtcdMember {
    pub id: u64,
    pub name: String,
    pub learner: bool,
}

pub fn patroni_members(h: &Harness, node: &str) -> Vec<PatroniMember> {
    parse_patroni_list(&ok(h, node, PATRONI_LIST))
}

/// The members in the JSON of `patronictl list -f json`.
pub fn parse_patroni_list(text: &str) -> Vec<PatroniMember> {
    let list: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
    list.iter()
        .map(|m| PatroniMember {
            name: m["Member"].as_str().unwrap_or_default().to_string(),
            role: m["Role"].as_str().unwrap_or_default().to_string(),
            state: m["State"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

pub fn etcd_members(h: &Harness, node: &str) -> Vec<EtcdMember> {
    parse_etcd_members(&ok(h, node, &format!("{ETCDCTL} member list -w json")))
}

/// The members in the JSON of `etcdctl member list -w json`.
pub fn parse_etcd_members(text: &str) -> Vec<EtcdMember> {
    let list: serde_json::Value = serde_json::from_str(text).unwrap();
    list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| EtcdMember {
            id: m["ID"].as_u64().unwrap(),
            name: m["name"].as_str().unwrap_or_default().to_string(),
            learner: m["isLearner"].as_bool().unwrap_or(false),
        })
        .collect()
}

/// The Patroni leader, as every running db node sees it once they agree.
pub fn leader(h: &Harness) -> String {
    let running: Vec<&str> = DB
        .iter()
        .copied()
        .filter(|n| h.is_running(n).unwrap())
        .collect();
    leader_seen_from(h, running[0])
}

pub fn leader_seen_from(h: &Harness, node: &str) -> String {
    wait_until(Duration::from_secs(120), "a Patroni leader", || {
        patroni_members(h, node)
            .into_iter()
            .find(|m| m.role == "Leader" && m.state == "running")
            .map(|m| m.name)
    })
}

/// Join steps as (step, state, detail).
pub type JoinSteps = Vec<(String, String, String)>;

/// The join steps of a node.
pub fn join_steps(h: &Harness, node: &str) -> JoinSteps {
    let text = ok(h, node, "r2a-node status --json");
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    status["join"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| {
            let field = |name: &str| step[name].as_str().unwrap_or_default().to_string();
            (field("step"), field("state"), field("detail"))
        })
        .collect()
}

/// Waits until every join step of `nodes` is done.
pub fn wait_joined(h: &Harness, nodes: &[&str]) {
    for node in nodes {
        h.wait_booted(node, JOIN_LIMIT).unwrap();
    }
    let deadline = Instant::now() + JOIN_LIMIT;
    loop {
        let pending: Vec<(String, JoinSteps)> = nodes
            .iter()
            .map(|node| (node.to_string(), join_steps(h, node)))
            .filter(|(_, steps)| steps.is_empty() || steps.iter().any(|s| s.1 != "done"))
            .collect();
        if pending.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            let consoles: Vec<String> = nodes.iter().map(|n| h.console_tail(n, 30)).collect();
            panic!(
                "join steps not done after {JOIN_LIMIT:?}: {pending:#?}\n{}",
                consoles.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

pub fn wait_until<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// psql through portal1's HAProxy (`port` 5000: the primary, 5001: a replica) with the
/// application's settings.
pub fn client(sql: &str, port: u16) -> String {
    format!(
        "set -a; . /etc/r2a/database.env; set +a; PGPORT={port} timeout 30 psql -X -At -c \"{sql}\""
    )
}

pub fn address_of(h: &Harness, node: &str) -> String {
    h.cluster().node(node).unwrap().address.to_string()
}

pub fn project_roles() -> r2a::role::RoleSet {
    r2a::role::RoleSet::load(&repo().join("roles")).unwrap()
}

pub fn run(h: &Harness, node: &str, script: &str) -> Output {
    h.exec(node, &["sh", "-c", script]).unwrap()
}

pub fn ok(h: &Harness, node: &str, script: &str) -> String {
    let output = run(h, node, script);
    assert!(
        output.status.success(),
        "`{script}` failed on {node}: {}{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn count(items: &[&str], wanted: &str) -> usize {
    items.iter().filter(|item| **item == wanted).count()
}

pub fn command_output(program: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}
