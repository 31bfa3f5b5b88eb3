//! The bad manifests of `tests/manifest_errors.rs`: one valid manifest, and each case
//! changes one thing in it, with the messages (and places) it must produce.

pub const VALID: &str = r#"vendor = "skip"

[cluster]
name = "lab"
domain = "lab.example.com"

[network]
cidr = "10.77.0.0/24"
gateway = "10.77.0.1"
dns = ["10.77.0.1"]

[ssh]
authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ8c0uD2Xb5wq4Yk0qY8pY3n1m4rZxP2w6b3l9s7u1aB test@lab"]

[[nodes]]
name = "db1"
role = "db"
address = "10.77.0.11"
mac = "52:54:00:00:00:11"

[[nodes]]
name = "db2"
role = "db"
address = "10.77.0.12"

[[nodes]]
name = "db3"
role = "db"
address = "10.77.0.13"

[[nodes]]
name = "fs1"
role = "fs"
address = "10.77.0.21"

[[nodes]]
name = "fs2"
role = "fs"
address = "10.77.0.22"

[[nodes]]
name = "fs3"
role = "fs"
address = "10.77.0.23"

[[nodes]]
name = "tel1"
role = "telephony"
address = "10.77.0.51"
memory = "8GiB"
data_disk = "/dev/vdb"
"#;

pub const EXTRA_DB: &str = "\n[[nodes]]\nname = \"db4\"\nrole = \"db\"\naddress = \"10.77.0.14\"\n";

/// (what is wrong, the manifest, text every expected message contains)
pub fn cases() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let edit = |from: &str, to: &str| {
        assert!(
            VALID.contains(from),
            "case edits text that is not there: {from}"
        );
        VALID.replacen(from, to, 1)
    };
    vec![
        (
            "syntax error",
            edit("name = \"lab\"", "name = \"lab"),
            vec![":4:12: error: invalid TOML"],
        ),
        (
            "unknown section",
            edit("[network]", "[netwrok]"),
            vec![
                ":7:2: error: unknown section `netwrok`",
                "missing section [network]",
            ],
        ),
        (
            "unknown node key",
            edit("address = \"10.77.0.12\"", "adress = \"10.77.0.12\""),
            vec![
                ":24:1: error: unknown field `adress`, expected one of `name`, `role`, `address`",
                ":21:1: error: missing field `address`",
            ],
        ),
        (
            "two unknown keys in one node",
            edit("name = \"db2\"", "name = \"db2\"\nvcpu = 4\nram = \"2G\""),
            vec!["unknown field `vcpu`", "unknown field `ram`"],
        ),
        (
            "unknown role",
            edit("role = \"fs\"", "role = \"files\""),
            vec![
                ":33:8: error: unknown role `files` for node fs1",
                "use one of: admin, api, db, fs",
            ],
        ),
        (
            "duplicate name",
            edit("name = \"db2\"", "name = \"db1\""),
            vec![":22:8: error: duplicate name: node db1 (line 16) has it too"],
        ),
        (
            "duplicate address",
            edit("address = \"10.77.0.12\"", "address = \"10.77.0.11\""),
            vec![":24:11: error: duplicate address: node db1 (line 18) has it too"],
        ),
        (
            "duplicate MAC",
            edit(
                "address = \"10.77.0.12\"",
                "address = \"10.77.0.12\"\nmac = \"52:54:00:00:00:11\"",
            ),
            vec![":25:7: error: duplicate MAC address: node db1 (line 19) has it too"],
        ),
        (
            "address outside the network",
            edit("address = \"10.77.0.13\"", "address = \"10.78.0.13\""),
            vec![
                ":29:11: error: address 10.78.0.13 of node db3 is outside the network 10.77.0.0/24",
            ],
        ),
        (
            "address is the network's own",
            edit("address = \"10.77.0.13\"", "address = \"10.77.0.0\""),
            vec!["is the network's own or broadcast address"],
        ),
        (
            "address is the gateway's",
            edit("address = \"10.77.0.13\"", "address = \"10.77.0.1\""),
            vec!["is the gateway's"],
        ),
        (
            "even db count",
            format!("{VALID}{EXTRA_DB}"),
            vec![
                "error: role db needs an odd number of nodes, the manifest has 4 (etcd keeps quorum",
            ],
        ),
        (
            "db count below 3",
            edit(
                "role = \"db\"\naddress = \"10.77.0.12\"",
                "role = \"fs\"\naddress = \"10.77.0.12\"",
            )
            .replacen(
                "role = \"db\"\naddress = \"10.77.0.13\"",
                "role = \"fs\"\naddress = \"10.77.0.13\"",
                1,
            ),
            vec![
                "role db needs at least 3 nodes, the manifest has 1",
                "role fs needs a multiple of 3 nodes, the manifest has 5",
            ],
        ),
        (
            "fs count not a multiple of 3",
            edit(
                "role = \"fs\"\naddress = \"10.77.0.23\"",
                "role = \"db\"\naddress = \"10.77.0.23\"",
            ),
            vec![
                "role fs needs at least 3 nodes, the manifest has 2",
                "role db needs an odd number of nodes, the manifest has 4",
            ],
        ),
        (
            "no telephony node",
            edit("role = \"telephony\"", "role = \"api\""),
            vec![
                "role telephony needs at least 1 node, the manifest has 0 (calls need at least one telephony server)",
            ],
        ),
        (
            "vendor packages without a source",
            edit("vendor = \"skip\"\n", ""),
            vec![
                ":47:8: error: role telephony needs vendor packages (freeswitch",
                "or opt out with vendor = \"skip\"",
            ],
        ),
        (
            "vendor value not understood",
            edit("vendor = \"skip\"", "vendor = \"later\""),
            vec![":1:10: error: vendor = \"later\" is not understood"],
        ),
        (
            "vendor folder missing",
            edit(
                "vendor = \"skip\"",
                "[[vendor.local]]\npath = \"no-such-debs\"",
            ),
            vec!["vendor folder", "no-such-debs not found"],
        ),
        (
            "invalid MAC",
            edit("mac = \"52:54:00:00:00:11\"", "mac = \"52:54:00:00:11\""),
            vec![":19:7: error: invalid MAC address `52:54:00:00:11`"],
        ),
        (
            "invalid address",
            edit("address = \"10.77.0.12\"", "address = \"10.77.0.312\""),
            vec![":24:11: error: invalid node address `10.77.0.312`"],
        ),
        (
            "invalid network",
            edit("cidr = \"10.77.0.0/24\"", "cidr = \"10.77.0.0/33\""),
            vec![":8:8: error: invalid network `10.77.0.0/33`"],
        ),
        (
            "gateway outside the network",
            edit("gateway = \"10.77.0.1\"", "gateway = \"10.99.0.1\""),
            vec![":9:11: error: gateway 10.99.0.1 is outside the network 10.77.0.0/24"],
        ),
        (
            "gateway on the network address",
            edit("gateway = \"10.77.0.1\"", "gateway = \"10.77.0.0\""),
            vec![":9:11: error: gateway 10.77.0.0 is the network address of 10.77.0.0/24"],
        ),
        (
            "gateway on the broadcast address",
            edit("gateway = \"10.77.0.1\"", "gateway = \"10.77.0.255\""),
            vec![":9:11: error: gateway 10.77.0.255 is the broadcast address of 10.77.0.0/24"],
        ),
        (
            "no vCPU",
            edit(
                "address = \"10.77.0.12\"",
                "address = \"10.77.0.12\"\nvcpus = 0",
            ),
            vec![":25:9: error: node db2 has 0 vCPUs"],
        ),
        (
            "too little memory and disk to boot",
            edit(
                "address = \"10.77.0.12\"",
                "address = \"10.77.0.12\"\nmemory = \"256MiB\"\ndisk = \"1GB\"",
            ),
            vec![
                ":25:10: error: node db2's memory of 256MiB is too small to boot a role image",
                ":26:8: error: node db2's disk of 1GB is too small to boot a role image",
            ],
        ),
        (
            "node name not a DNS label",
            edit("name = \"db2\"", "name = \"DB_2\""),
            vec![":22:8: error: invalid node name `DB_2`"],
        ),
        (
            "unsupported suite",
            edit("[network]", "[debian]\nsuite = \"bookworm\"\n\n[network]"),
            vec!["error: unsupported suite `bookworm`"],
        ),
        (
            "invalid size",
            edit("memory = \"8GiB\"", "memory = \"8 gigs\""),
            vec![":50:10: error: invalid memory size `8 gigs`"],
        ),
        (
            "not an SSH key",
            edit("ssh-ed25519 AAAA", "ssh-dss AAAA"),
            vec![":13:20: error: SSH key is not an OpenSSH public key (unknown algorithm)"],
        ),
        (
            "an SSH key with bad base64",
            edit("AAAAC3NzaC1lZDI1NTE5AAAAIJ8c0", "AAAAC3NzaC1lZDI1NTE5AAAAIJ8c0!!"),
            vec![":13:20: error: SSH key is not an OpenSSH public key"],
        ),
        (
            "an SSH key cut short",
            edit("l9s7u1aB test@lab", " test@lab"),
            vec![":13:20: error: SSH key is not an OpenSSH public key"],
        ),
        (
            "an SSH key over two lines",
            edit("[\"ssh-ed25519 AAAA", "[\"\"\"ssh-ed25519\nAAAA").replacen(
                "test@lab\"]",
                "test@lab\"\"\"]",
                1,
            ),
            vec![":13:20: error: SSH key spans more than one line"],
        ),
        (
            "no SSH key",
            edit("authorized_keys = [\"ssh-ed25519", "authorized_keys = []\nunused = [\"ssh-ed25519"),
            vec![
                "unknown field `unused`",
                ":12:2: error: no SSH key: nobody could log in to the nodes",
                "allow_no_keys = true",
            ],
        ),
        (
            "an NTP server with a space",
            edit("dns = [\"10.77.0.1\"]", "dns = [\"10.77.0.1\"]\nntp = [\"ntp1.example.com iburst\", \"10.77.0.2\"]"),
            vec![
                ":11:8: error: invalid NTP server `ntp1.example.com iburst`",
                "write a host name such as ntp.example.com or an IP address",
            ],
        ),
        (
            "a mirror with a space",
            edit("[network]", "[debian]\nmirror = \"http://deb.debian.org/debian main\"\n\n[network]"),
            vec![":8:10: error: mirror `http://deb.debian.org/debian main` has a space or a control character"],
        ),
        (
            "a mirror with credentials",
            edit("[network]", "[debian]\nmirror = \"https://user:pw@mirror.example/debian\"\n\n[network]"),
            vec!["carries credentials, which would be written into every image"],
        ),
        (
            "a mirror that is no URL",
            edit("[network]", "[debian]\nmirror = \"deb.debian.org/debian\"\n\n[network]"),
            vec!["error: mirror `deb.debian.org/debian` is not a URL"],
        ),
        (
            "a component with a space",
            edit("[network]", "[debian]\ncomponents = [\"main contrib\"]\n\n[network]"),
            vec![
                ":8:15: error: invalid component `main contrib`",
                "write one word of letters, digits and . _ + ~ / -",
            ],
        ),
        (
            "a vendor repository with a bad URL, suite and component",
            edit("vendor = \"skip\"\n", "").replacen(
                "\n[[nodes]]\nname = \"db1\"",
                "\n[[vendor.apt]]\nname = \"v\"\nuri = \"https://repo.example/deb?token=x\"\nsuite = \"trixie main\"\ncomponents = [\"ma\\nin\"]\nsigning_key = \"k.gpg\"\n\n[[nodes]]\nname = \"db1\"",
                1,
            ),
            vec![
                "error: repository `https://repo.example/deb?token=x` has a query or fragment",
                "error: invalid suite `trixie main`",
                "error: invalid component `ma\\nin`",
            ],
        ),
        (
            "data disk not a device",
            edit("data_disk = \"/dev/vdb\"", "data_disk = \"vdb\""),
            vec!["error: data disk `vdb` is not a device path"],
        ),
        (
            "wrong type",
            edit(
                "address = \"10.77.0.12\"",
                "address = \"10.77.0.12\"\nvcpus = \"four\"",
            ),
            vec!["invalid type: string \"four\", expected u32"],
        ),
        (
            "missing section",
            edit(
                "[cluster]\nname = \"lab\"\ndomain = \"lab.example.com\"\n",
                "",
            ),
            vec!["error: missing section [cluster]"],
        ),
        (
            "unknown format",
            edit("[network]", "[build]\nformats = [\"vmdk\"]\n\n[network]"),
            vec!["error: unknown format `vmdk`", "use one of: tar"],
        ),
        (
            "unknown bootstrap tool",
            edit(
                "[network]",
                "[build]\nbootstrap = \"cdebootstrap\"\n\n[network]",
            ),
            vec!["error: unknown bootstrap tool `cdebootstrap`"],
        ),
        (
            "a range that runs past the network",
            edit("name = \"tel1\"", "name = \"tel-[001-300]\""),
            vec![
                ":49:11: error: the range `tel-[001-300]` runs past the network 10.77.0.0/24: its node tel-205 would get no address in it",
                "start lower, shorten the range, or widen [network].cidr",
            ],
        ),
        (
            "a range node on another node's address",
            edit("name = \"tel1\"", "name = \"tel[1-4]\"").replacen(
                "address = \"10.77.0.51\"",
                "address = \"10.77.0.10\"",
                1,
            ),
            vec![
                ":49:11: error: node tel2 (10.77.0.11, from `tel[1-4]`): duplicate address: node db1 (line 18) has it too",
                ":49:11: error: node tel3 (10.77.0.12, from `tel[1-4]`): duplicate address: node db2 (line 24) has it too",
                ":49:11: error: node tel4 (10.77.0.13, from `tel[1-4]`): duplicate address: node db3 (line 29) has it too",
            ],
        ),
        (
            "a range over the gateway",
            edit("name = \"tel1\"", "name = \"tel[1-2]\"").replacen(
                "address = \"10.77.0.51\"",
                "address = \"10.77.0.0\"",
                1,
            ),
            vec![
                "node tel1 (10.77.0.0, from `tel[1-2]`): address 10.77.0.0 of node tel1 is the network's own or broadcast address",
                "node tel2 (10.77.0.1, from `tel[1-2]`): address 10.77.0.1 of node tel2 is the gateway's",
            ],
        ),
        (
            "a range with a name that is no DNS label",
            edit("name = \"tel1\"", "name = \"Tel-[1-2]\""),
            vec![":47:8: error: invalid node name `Tel-1` in the range `Tel-[1-2]`"],
        ),
        (
            "a range counting backwards",
            edit("name = \"tel1\"", "name = \"tel[9-2]\""),
            vec![
                ":47:8: error: invalid node range `tel[9-2]`: the counter runs backwards, from 9 to 2",
                "write one counter such as tele-node-[001-200]",
            ],
        ),
        (
            "a range with one MAC",
            edit(
                "name = \"tel1\"",
                "name = \"tel[1-2]\"\nmac = \"52:54:00:00:00:51\"",
            ),
            vec!["error: the range `tel[1-2]` cannot share one MAC address"],
        ),
        (
            "top-level key after a table",
            edit("vendor = \"skip\"\n", "").replacen(
                "dns = [\"10.77.0.1\"]",
                "dns = [\"10.77.0.1\"]\nvendor = \"skip\"",
                1,
            ),
            vec!["unknown field `vendor`, expected one of"],
        ),
    ]
}
