//! Which interface carries the node's address, and whether cloud-init's network files
//! already put it there: a pure decision over what the machine shows (its wired links
//! and cloud-init's `.network` files), tested as a table; [`super::network`] acts on it.
//!
//! cloud-init's networkd renderer writes `[Match] Name=<the ethernet's id>`, whatever
//! the seed's `match:` says, so a seed written for other hardware (or for no MAC) can
//! match no link, or several. The agent never trusts that a file exists: it checks which
//! links the file matches.

use crate::fsutil::wildcard_match;

/// Interface names a node's cluster interface may have when the manifest lists no MAC:
/// predictable names, the classic name, and systemd-nspawn's container side.
pub const WIRED_PATTERNS: [&str; 3] = ["en*", "eth*", "host0"];

/// A network link the machine has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its kernel name.
    pub name: String,
    /// Its MAC address, lower case.
    pub mac: String,
}

impl Link {
    /// A link from a name and a MAC.
    pub fn new(name: &str, mac: &str) -> Link {
        Link {
            name: name.to_string(),
            mac: mac.to_ascii_lowercase(),
        }
    }

    /// Whether it looks like a wired cluster interface (not Wi-Fi, a bridge, a tunnel).
    pub fn is_wired(&self) -> bool {
        WIRED_PATTERNS
            .iter()
            .any(|pattern| wildcard_match(pattern, &self.name))
    }
}

/// The `[Match]` section of a systemd `.network` file: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchSection {
    /// `Name=` globs (any may match).
    pub names: Vec<String>,
    /// `MACAddress=` values (any may match).
    pub macs: Vec<String>,
}

impl MatchSection {
    /// Reads the `[Match]` section of a `.network` file.
    pub fn parse(text: &str) -> MatchSection {
        let mut section = MatchSection::default();
        let mut in_match = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_match = line == "[Match]";
                continue;
            }
            let Some((key, value)) = line.split_once('=').filter(|_| in_match) else {
                continue;
            };
            let values = value.split_whitespace().map(str::to_string);
            match key.trim() {
                "Name" => section.names.extend(values),
                "MACAddress" => section
                    .macs
                    .extend(values.map(|mac| mac.to_ascii_lowercase())),
                _ => {}
            }
        }
        section
    }

    /// Whether `link` satisfies every condition.
    pub fn matches(&self, link: &Link) -> bool {
        let name_ok = self.names.is_empty()
            || self
                .names
                .iter()
                .any(|pattern| wildcard_match(pattern, &link.name));
        let mac_ok = self.macs.is_empty() || self.macs.contains(&link.mac);
        name_ok && mac_ok
    }
}

/// The link chosen for the node's address, and why that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The link, when the machine shows it; `None` when it has not appeared (yet).
    pub link: Option<Link>,
    /// Why, in words for `r2a-node status`.
    pub why: String,
    /// The manifest's MAC, which pins the link (a seed may not pick another).
    pub pinned: Option<String>,
}

/// Picks the node's cluster interface: the one with the manifest's MAC, else the only
/// wired link, else the first wired link by name (said so, with the others named).
pub fn choose(links: &[Link], manifest_mac: Option<&str>) -> Choice {
    if let Some(mac) = manifest_mac {
        let mac = mac.to_ascii_lowercase();
        let link = links.iter().find(|link| link.mac == mac).cloned();
        let why = match &link {
            Some(link) => format!("{} has the MAC {mac} the manifest lists", link.name),
            None => format!("no link has the MAC {mac} the manifest lists yet"),
        };
        return Choice {
            link,
            why,
            pinned: Some(mac),
        };
    }
    let mut wired: Vec<&Link> = links.iter().filter(|link| link.is_wired()).collect();
    wired.sort_by(|a, b| a.name.cmp(&b.name));
    match wired.as_slice() {
        [] => Choice {
            link: None,
            why: format!(
                "no wired link ({}) is visible yet",
                WIRED_PATTERNS.join(", ")
            ),
            pinned: None,
        },
        [only] => Choice {
            link: Some((*only).clone()),
            why: format!("{} is the only wired link", only.name),
            pinned: None,
        },
        [first, ..] => {
            let names: Vec<&str> = wired.iter().map(|link| link.name.as_str()).collect();
            Choice {
                link: Some((*first).clone()),
                why: format!(
                    "{} is the first of {} wired links ({}) by name; list the node's MAC in \
                     the manifest to pick another",
                    first.name,
                    wired.len(),
                    names.join(", ")
                ),
                pinned: None,
            }
        }
    }
}

/// A `.network` file cloud-init wrote that configures the node's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudInitFile {
    /// Its file name in `/etc/systemd/network`.
    pub name: String,
    /// Its `[Match]` section.
    pub section: MatchSection,
}

/// What the network step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// cloud-init's file puts the address on the chosen link alone: nothing to do.
    KeepCloudInit {
        /// The file.
        file: String,
        /// The link.
        link: String,
    },
    /// cloud-init's file matches the chosen link and others: a drop-in narrows it to the
    /// chosen link's MAC, so the address is not on two links.
    NarrowCloudInit {
        /// The file.
        file: String,
        /// The chosen link.
        link: Link,
        /// The other links it matched.
        others: Vec<String>,
    },
    /// No cloud-init file puts the address on the chosen link: the agent's own file does.
    Own(OwnMatch),
}

/// How the agent's own file finds the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnMatch {
    /// By MAC: the manifest's, or the chosen link's (names change when udev renames a
    /// link; its MAC does not).
    Mac(String),
    /// By the wired name patterns, while no link is visible.
    Patterns,
}

impl std::fmt::Display for OwnMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OwnMatch::Mac(mac) => write!(f, "the link with MAC {mac}"),
            OwnMatch::Patterns => write!(f, "links named {}", WIRED_PATTERNS.join(" ")),
        }
    }
}

/// Decides from the machine's links and cloud-init's files. A cloud-init file that puts
/// the address on exactly one link is kept, even on another link than the agent would
/// pick, unless the manifest's MAC pins the link: the seed may know the hardware better.
pub fn plan(choice: &Choice, links: &[Link], cloud_init: &[CloudInitFile]) -> Plan {
    for file in cloud_init {
        let mut matched: Vec<&Link> = links
            .iter()
            .filter(|link| file.section.matches(link))
            .collect();
        matched.sort_by(|a, b| a.name.cmp(&b.name));
        let chosen = choice.link.as_ref().filter(|link| matched.contains(link));
        let target = match (chosen, matched.first()) {
            (Some(chosen), _) => chosen,
            (None, Some(first)) if choice.pinned.is_none() => *first,
            _ => continue,
        };
        let others: Vec<String> = matched
            .iter()
            .filter(|link| link.name != target.name)
            .map(|link| link.name.clone())
            .collect();
        return if others.is_empty() {
            Plan::KeepCloudInit {
                file: file.name.clone(),
                link: target.name.clone(),
            }
        } else {
            Plan::NarrowCloudInit {
                file: file.name.clone(),
                link: target.clone(),
                others,
            }
        };
    }
    match (&choice.link, &choice.pinned) {
        (Some(link), _) => Plan::Own(OwnMatch::Mac(link.mac.clone())),
        (None, Some(mac)) => Plan::Own(OwnMatch::Mac(mac.clone())),
        (None, None) => Plan::Own(OwnMatch::Patterns),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(spec: &[(&str, &str)]) -> Vec<Link> {
        spec.iter()
            .map(|(name, mac)| Link::new(name, mac))
            .collect()
    }

    fn file(name: &str, text: &str) -> CloudInitFile {
        CloudInitFile {
            name: name.to_string(),
            section: MatchSection::parse(text),
        }
    }

    #[test]
    fn match_sections_read_names_and_macs_and_ignore_other_sections() {
        let section = MatchSection::parse(
            "[Match]\nName=e* host0\nMACAddress=52:54:00:AA:00:01\n\n[Network]\nName=x\n",
        );
        assert_eq!(section.names, ["e*", "host0"]);
        assert_eq!(section.macs, ["52:54:00:aa:00:01"]);
        assert!(section.matches(&Link::new("ens3", "52:54:00:aa:00:01")));
        assert!(!section.matches(&Link::new("ens3", "52:54:00:aa:00:02")));
        assert!(!section.matches(&Link::new("wlan0", "52:54:00:aa:00:01")));
        assert!(MatchSection::default().matches(&Link::new("anything", "02:00:00:00:00:01")));
    }

    #[test]
    fn the_choice_of_link() {
        let two = links(&[
            ("wlan0", "02:00:00:00:00:09"),
            ("ens4", "02:00:00:00:00:04"),
            ("ens3", "02:00:00:00:00:03"),
        ]);
        /// Links, the manifest's MAC, the link chosen, words of the reason.
        type Row<'a> = (&'a [Link], Option<&'a str>, Option<&'a str>, &'a str);
        let table: [Row; 6] = [
            (&two, Some("02:00:00:00:00:04"), Some("ens4"), "has the MAC"),
            (&two, Some("02:00:00:00:00:07"), None, "no link has the MAC"),
            (
                &two,
                None,
                Some("ens3"),
                "first of 2 wired links (ens3, ens4)",
            ),
            (&two[..2], None, Some("ens4"), "ens4 is the only wired link"),
            (
                &links(&[("host0", "0a:00:00:00:00:01")]),
                None,
                Some("host0"),
                "only wired",
            ),
            (
                &links(&[("wlan0", "02:00:00:00:00:09")]),
                None,
                None,
                "no wired link",
            ),
        ];
        for (links, mac, chosen, why) in table {
            let choice = choose(links, mac);
            assert_eq!(
                choice.link.as_ref().map(|link| link.name.as_str()),
                chosen,
                "{links:?} {mac:?}"
            );
            assert!(choice.why.contains(why), "{:?} lacks {why:?}", choice.why);
        }
    }

    #[test]
    fn the_plan_over_cloud_init_files() {
        let one = links(&[("ens3", "02:00:00:00:00:03")]);
        let two = links(&[("ens3", "02:00:00:00:00:03"), ("ens4", "02:00:00:00:00:04")]);
        let container = links(&[("host0", "0a:00:00:00:00:01")]);
        let glob = file("10-cloud-init-e*.network", "[Match]\nName=e*\n");
        // What cloud-init 25.1 made of `ethernets: {cluster: {match: {name: "en*"}}}`.
        let lost_glob = file("10-cloud-init-cluster.network", "[Match]\nName=cluster\n");
        // With a MAC, cloud-init renames the link to the id before it is matched; here
        // the id was the link's own name.
        let by_mac = file(
            "10-cloud-init-ens4.network",
            "[Match]\nMACAddress=02:00:00:00:00:04\nName=ens4\n",
        );
        let keep = |file: &str, link: &str| Plan::KeepCloudInit {
            file: file.to_string(),
            link: link.to_string(),
        };
        let own_mac = |mac: &str| Plan::Own(OwnMatch::Mac(mac.to_string()));
        let table: Vec<(&[Link], Vec<CloudInitFile>, Plan)> = vec![
            (
                &one,
                vec![glob.clone()],
                keep("10-cloud-init-e*.network", "ens3"),
            ),
            (&one, vec![lost_glob.clone()], own_mac("02:00:00:00:00:03")),
            (&one, vec![], own_mac("02:00:00:00:00:03")),
            (&container, vec![glob.clone()], own_mac("0a:00:00:00:00:01")),
            (
                &two,
                vec![glob.clone()],
                Plan::NarrowCloudInit {
                    file: "10-cloud-init-e*.network".to_string(),
                    link: two[0].clone(),
                    others: vec!["ens4".to_string()],
                },
            ),
            // The seed put the address on ens4 by its MAC: kept, though ens3 sorts first.
            (
                &two,
                vec![by_mac.clone()],
                keep("10-cloud-init-ens4.network", "ens4"),
            ),
            (&[], vec![glob], Plan::Own(OwnMatch::Patterns)),
        ];
        for (links, files, wanted) in table {
            let choice = choose(links, None);
            assert_eq!(plan(&choice, links, &files), wanted, "{links:?} {files:?}");
        }
        // The manifest's MAC pins ens3: a seed's file for ens4 is not the node's.
        let pinned = choose(&two, Some("02:00:00:00:00:03"));
        assert_eq!(plan(&pinned, &two, &[by_mac]), own_mac("02:00:00:00:00:03"));
        // A pinned link that has not appeared yet is still matched by its MAC.
        let absent = choose(&[], Some("02:00:00:00:00:07"));
        assert_eq!(plan(&absent, &[], &[]), own_mac("02:00:00:00:00:07"));
    }
}
