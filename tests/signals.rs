//! Stopping a build (root needed): SIGTERM, Ctrl-C and a second signal, sent during the
//! bootstrap and during a role layer, stop the whole process tree within seconds, exit
//! 128 + the signal, and leave no process, mount, work folder or partial artifact; a build
//! killed outright (SIGKILL) takes its tools along, and the next build removes the
//! half-built layer it left.

mod support;

use std::process::Child;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use support::processes::{Process, descendants, still_running_after};
use support::{Fixture, fixture, hidden_entries, processes_mentioning};

/// How long a stopped build may take to exit: the tools' grace time, then the cleanup.
const STOP_WITHIN: Duration = Duration::from_secs(15);
/// How long the bootstrap runs before the signal: long enough for apt and dpkg to be at
/// work under mmdebstrap.
const BOOTSTRAP_SETTLE: Duration = Duration::from_secs(5);

#[test]
fn a_signal_during_the_bootstrap_stops_the_whole_tree_within_seconds() {
    let fx = fixture();
    let _build = fx.lock();
    let sums = sums(fx);
    // --refresh makes the base layer again: mmdebstrap runs when the signals come.
    for (signals, status) in [
        (&[Signal::TERM][..], 143),
        (&[Signal::TERM, Signal::INT][..], 143),
    ] {
        let mut build = Build::start(fx, &["--role", "portal", "--refresh"]);
        let tree = wait_for_stage(&mut build.0, "mmdebstrap", BOOTSTRAP_SETTLE);
        let (code, took) = stop(&mut build.0, signals);
        eprintln!("bootstrap, {signals:?}: exit {code:?} after {took:.1?}");
        assert_eq!(code, Some(status), "{signals:?}");
        assert!(took < STOP_WITHIN, "{signals:?} took {took:?}");
        assert_nothing_left(fx, &tree, &sums);
    }
}

#[test]
fn a_signal_during_a_role_layer_stops_apt_and_the_damaged_layer_is_never_used() {
    let fx = fixture();
    let _build = fx.lock();
    let sums = sums(fx);
    // A stray file makes the cached portal layer damaged: the build makes it again.
    let stray = fx.layer_tree("portal").join("etc/r2a-stray");
    std::fs::write(&stray, "not from a package\n").unwrap();
    for (signals, status) in [
        (&[Signal::INT][..], 130),
        (&[Signal::TERM, Signal::TERM][..], 143),
    ] {
        let mut build = Build::start(fx, &["--role", "portal"]);
        // Package installs run as `unshare ... r2a-chroot apt-get ...`; from the cache
        // they take seconds, so the signal comes as soon as apt starts.
        let tree = wait_for_stage(&mut build.0, "r2a-chroot apt-get", Duration::ZERO);
        let (code, took) = stop(&mut build.0, signals);
        eprintln!("role layer, {signals:?}: exit {code:?} after {took:.1?}");
        assert_eq!(code, Some(status), "{signals:?}");
        assert!(took < STOP_WITHIN, "{signals:?} took {took:?}");
        assert_nothing_left(fx, &tree, &sums);
    }
    let output = fx.build(&["--role", "portal"], None);
    assert!(output.status.success(), "{}", output.stderr);
    assert!(
        output.stderr.contains("cached layer damaged"),
        "{}",
        output.stderr
    );
    assert!(
        !stray.exists(),
        "the layer was made again from its packages"
    );
}

#[test]
fn a_killed_build_takes_its_tools_along_and_the_next_build_removes_its_folder() {
    let fx = fixture();
    let _build = fx.lock();
    let mut build = Build::start(fx, &["--role", "portal", "--refresh"]);
    let tree = wait_for_stage(&mut build.0, "mmdebstrap", BOOTSTRAP_SETTLE);
    build.0.kill().unwrap();
    build.0.wait().unwrap();
    let running = still_running_after(&tree, Duration::from_secs(5));
    assert!(running.is_empty(), "tools outlived the build: {running:#?}");
    let layers = fx.cache.join("layers");
    let left = hidden_entries(&layers);
    assert!(
        left.iter()
            .any(|name| name.to_string_lossy().starts_with(".base-")),
        "a killed build leaves its half-built layer: {left:?}"
    );

    let output = fx.build(&["--role", "portal"], None);
    assert!(output.status.success(), "{}", output.stderr);
    assert!(
        output.stderr.contains("removed .base-"),
        "the next build says what it removed:\n{}",
        output.stderr
    );
    assert!(hidden_entries(&layers).is_empty());
    assert!(output.hit_cache("base layer"), "{}", output.stderr);
}

/// A build started by a test, killed if the test fails before it ends.
struct Build(Child);

impl Build {
    fn start(fx: &Fixture, args: &[&str]) -> Build {
        Build(fx.build_command(args).spawn().unwrap())
    }
}

impl Drop for Build {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn sums(fx: &Fixture) -> String {
    std::fs::read_to_string(fx.cluster_out().join("SHA256SUMS")).unwrap()
}

/// Waits until a process below the build mentions `marker`, lets it work for `settle`,
/// and returns the build's process tree at that moment.
fn wait_for_stage(build: &mut Child, marker: &str, settle: Duration) -> Vec<Process> {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !descendants(build.id())
        .iter()
        .any(|process| process.cmdline.contains(marker))
    {
        if let Some(status) = build.try_wait().unwrap() {
            panic!("the build ended ({status}) before `{marker}` ran");
        }
        assert!(Instant::now() < deadline, "`{marker}` never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(settle);
    let tree = descendants(build.id());
    assert!(
        tree.iter().any(|process| process.cmdline.contains(marker)),
        "`{marker}` ended before the signal: {tree:#?}"
    );
    tree
}

/// Sends `signals` half a second apart; returns the exit code and the time from the first
/// signal to the exit.
fn stop(build: &mut Child, signals: &[Signal]) -> (Option<i32>, Duration) {
    let sent = Instant::now();
    for (index, &signal) in signals.iter().enumerate() {
        if index > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        kill_process(Pid::from_child(build), signal).unwrap();
    }
    let status = build.wait().unwrap();
    (status.code(), sent.elapsed())
}

/// No process of `tree` runs on, none mentions the cache, nothing is mounted from it, no
/// work folder is left, and the published sums are unchanged.
fn assert_nothing_left(fx: &Fixture, tree: &[Process], sums_before: &str) {
    let running = still_running_after(tree, Duration::from_secs(2));
    assert!(running.is_empty(), "processes left behind: {running:#?}");
    let cache = fx.cache.to_string_lossy();
    let mentioning = processes_mentioning(&cache);
    assert!(
        mentioning.is_empty(),
        "processes left behind: {mentioning:?}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(cache.as_ref()),
        "mounts left behind:\n{mounts}"
    );
    let layers = hidden_entries(&fx.cache.join("layers"));
    assert!(layers.is_empty(), "half-built layers left: {layers:?}");
    assert_eq!(std::fs::read_dir(fx.cache.join("work")).unwrap().count(), 0);
    let staging = hidden_entries(&fx.cluster_out());
    assert!(staging.is_empty(), "staging folders left: {staging:?}");
    assert_eq!(sums_before, sums(fx));
}
