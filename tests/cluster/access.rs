//! Who reaches the db cluster, and how: TLS on every port (no plain connection, no
//! certificate of another CA), and HAProxy cutting the sessions of a server it marks
//! down.

use std::time::{Duration, Instant};

use r2a::cluster::Harness;

use crate::support::db_cluster::*;

/// etcd (client and peer ports), Patroni's REST API and PostgreSQL refuse what is not
/// TLS with the cluster's certificates; Patroni's API takes a change only with its
/// password.
pub fn tls_is_required_everywhere(h: &Harness) {
    let db1 = address_of(h, "db1");
    let stranger = rcgen::generate_simple_self_signed(vec!["intruder".to_string()]).unwrap();
    let portal_root = h.state_dir().join("nodes/portal1/root/root");
    std::fs::write(portal_root.join("stranger.crt"), stranger.cert.pem()).unwrap();
    std::fs::write(
        portal_root.join("stranger.key"),
        stranger.signing_key.serialize_pem(),
    )
    .unwrap();
    // libpq takes a client key only when others cannot read it.
    std::fs::set_permissions(
        portal_root.join("stranger.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let curl = "curl --silent --show-error --max-time 5";
    let ca = "--cacert /etc/r2a/tls/ca.crt";
    let own = "--cert /etc/r2a/tls/node.crt --key /etc/r2a/tls/node.key";
    // etcd: plain HTTP gets no answer, TLS without a client certificate or with one of
    // another CA is refused; the node's own certificate is let in.
    let plain = run(h, "portal1", &format!("{curl} http://{db1}:2379/health"));
    assert!(!stdout(&plain).contains("health"), "{plain:?}");
    let anonymous = run(
        h,
        "portal1",
        &format!("{curl} {ca} https://{db1}:2379/health"),
    );
    assert!(!anonymous.status.success(), "{anonymous:?}");
    let foreign = format!(
        "{curl} {ca} --cert /root/stranger.crt --key /root/stranger.key https://{db1}:2379/health"
    );
    let foreign = run(h, "portal1", &foreign);
    assert!(!foreign.status.success(), "{foreign:?}");
    let member = ok(
        h,
        "db2",
        &format!("{curl} {ca} {own} https://{db1}:2379/health"),
    );
    assert!(member.contains("\"health\":\"true\""), "{member}");
    // etcd's peer port wants a member's certificate too: none, or another CA's, is
    // refused.
    let peer = run(
        h,
        "portal1",
        &format!("{curl} {ca} https://{db1}:2380/members"),
    );
    assert!(!peer.status.success(), "{peer:?}");
    let foreign_peer = format!(
        "{curl} {ca} --cert /root/stranger.crt --key /root/stranger.key https://{db1}:2380/members"
    );
    let foreign_peer = run(h, "portal1", &foreign_peer);
    assert!(!foreign_peer.status.success(), "{foreign_peer:?}");
    // Patroni's REST API speaks HTTPS only.
    let plain = run(h, "portal1", &format!("{curl} http://{db1}:8008/patroni"));
    assert!(!stdout(&plain).contains("\"state\""), "{plain:?}");
    let https = ok(
        h,
        "portal1",
        &format!("{curl} {ca} https://{db1}:8008/patroni"),
    );
    assert!(https.contains("\"state\""), "{https}");
    // Its reads are open (HAProxy's checks), its changes want the password: none or a
    // wrong one is refused; db2 reads it from its own Patroni config, and db1 takes it.
    let reload = |credentials: &str| {
        format!(
            "{curl} {ca} {credentials} --output /dev/null --write-out '%{{http_code}}' \
             --request POST https://{db1}:8008/reload"
        )
    };
    assert_eq!(ok(h, "portal1", &reload("")), "401");
    assert_eq!(ok(h, "portal1", &reload("--user patroni:wrong")), "401");
    let password = "$(python3 -c 'import yaml; print(yaml.safe_load(open(\"/etc/patroni/config.yml\"))\
                    [\"restapi\"][\"authentication\"][\"password\"])')";
    let accepted = ok(h, "db2", &reload(&format!("--user \"patroni:{password}\"")));
    assert_eq!(accepted, "202");
    // PostgreSQL: no plain connection from the network; TLS with the server verified.
    let direct = |sslmode: &str| {
        format!(
            "set -a; . /etc/r2a/database.env; set +a; PGSSLMODE={sslmode} PGHOST={db1} \
             PGPORT=5432 psql -X -At -c 'SELECT current_setting($$ssl$$)'"
        )
    };
    let plain = run(h, "portal1", &direct("disable"));
    assert!(!plain.status.success(), "{plain:?}");
    assert!(stderr(&plain).contains("no encryption"), "{plain:?}");
    let verified = ok(h, "portal1", &direct("verify-full"));
    assert_eq!(verified.trim(), "on");
    // The pool reader logs in with a node certificate of the cluster CA (db2's), never
    // with one of another CA.
    let env = ok(h, "portal1", "cat /etc/r2a/database.env");
    let database = env
        .lines()
        .find_map(|line| line.strip_prefix("PGDATABASE="))
        .expect("database.env names the database");
    let reader = |cert: &str, key: &str| {
        format!(
            "PGSSLMODE=verify-full PGSSLROOTCERT=/etc/r2a/tls/ca.crt PGHOST={db1} PGPORT=5432 \
             PGDATABASE={database} PGUSER=r2a_pool_reader PGSSLCERT={cert} PGSSLKEY={key} \
             timeout 30 psql -X -At -c 'SELECT count(*) >= 0 FROM telephony_pool'"
        )
    };
    let member = ok(
        h,
        "db2",
        &reader("/etc/r2a/tls/node.crt", "/etc/r2a/tls/node.key"),
    );
    assert_eq!(member.trim(), "t");
    let foreign = run(
        h,
        "portal1",
        &reader("/root/stranger.crt", "/root/stranger.key"),
    );
    assert!(!foreign.status.success(), "{foreign:?}");
}

/// portal1's HAProxy cuts the sessions of a server it marks down. The primary's Patroni
/// API stops answering portal1 (its packets dropped on the primary) while PostgreSQL
/// runs on: a session held open there ends only because HAProxy ends it.
pub fn haproxy_cuts_the_sessions_of_a_server_it_marks_down(h: &Harness) {
    let primary = leader(h);
    let portal1 = address_of(h, "portal1");
    hold_a_session_through_haproxy(h);
    let blocked_at = Instant::now();
    ok(
        h,
        &primary,
        &format!(
            "nft add table inet r2a_test && \
             nft add chain inet r2a_test input '{{ type filter hook input priority -10; }}' && \
             nft add rule inet r2a_test input ip saddr {portal1} tcp dport 8008 drop"
        ),
    );
    wait_until(
        Duration::from_secs(30),
        "HAProxy to cut the session held on the primary it marked down",
        || {
            let state = stdout(&run(h, "portal1", "systemctl is-active r2a-held-session"));
            (state.trim() != "active").then_some(())
        },
    );
    println!(
        "held session cut {:.1?} after the block",
        blocked_at.elapsed()
    );
    let postgres = ok(
        h,
        &primary,
        "cat /proc/[0-9]*/comm | grep -c -x postgres || true",
    );
    assert_ne!(postgres.trim(), "0", "PostgreSQL stopped on {primary}");
    ok(h, &primary, "nft delete table inet r2a_test");
    wait_until(
        Duration::from_secs(30),
        "the primary back behind HAProxy",
        || {
            run(h, "portal1", &client("SELECT 1", 5000))
                .status
                .success()
                .then_some(())
        },
    );
}

/// A psql session on the primary through portal1's HAProxy that stays open (a 10 min
/// sleep) in a unit of its own; returns once the primary lists it.
fn hold_a_session_through_haproxy(h: &Harness) {
    let script = "set -a; . /etc/r2a/database.env; set +a\n\
                  PGPORT=5000 PGAPPNAME=r2a-held exec psql -X -c 'SELECT pg_sleep(600)'\n";
    let portal_root = h.state_dir().join("nodes/portal1/root/root");
    std::fs::write(portal_root.join("held-session.sh"), script).unwrap();
    ok(
        h,
        "portal1",
        "systemd-run --quiet --collect --unit=r2a-held-session sh /root/held-session.sh",
    );
    let held = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'r2a-held'";
    wait_until(
        Duration::from_secs(30),
        "the held session on the primary",
        || (ok(h, "portal1", &client(held, 5000)).trim() == "1").then_some(()),
    );
}
