//! Node ranges: one `[[nodes]]` entry named `tele-node-[001-200]` stands for 200 nodes,
//! `tele-node-001` to `tele-node-200`, with addresses counted up from the entry's address.

use std::net::Ipv4Addr;

/// The most nodes one range may stand for: a /16's worth.
pub const MAX_RANGE: u32 = 65_536;

/// A name with one `[first-last]` counter in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRange {
    prefix: String,
    first: u32,
    last: u32,
    /// Digits of each number, zero-padded: `[001-200]` gives `001`, `[1-200]` gives `1`.
    width: usize,
    suffix: String,
}

impl NameRange {
    /// The range in `name`, `None` for a plain name, or what is wrong with the counter.
    pub fn parse(name: &str) -> Result<Option<NameRange>, String> {
        let Some(open) = name.find('[') else {
            return match name.contains(']') {
                true => Err("a `]` without its `[`".to_string()),
                false => Ok(None),
            };
        };
        let close = name[open..]
            .find(']')
            .map(|at| open + at)
            .ok_or("a `[` without its `]`")?;
        let (prefix, suffix) = (&name[..open], &name[close + 1..]);
        if suffix.contains(['[', ']']) {
            return Err("more than one counter; a name takes one `[first-last]`".to_string());
        }
        let (first_text, last_text) = name[open + 1..close]
            .split_once('-')
            .ok_or("the counter needs a first and last number, e.g. [001-200]")?;
        let number = |text: &str| -> Result<u32, String> {
            match text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
                true => text.parse().map_err(|_| format!("`{text}` is too large")),
                false => Err(format!("`{text}` is not a number")),
            }
        };
        let (first, last) = (number(first_text)?, number(last_text)?);
        if first > last {
            return Err(format!(
                "the counter runs backwards, from {first} to {last}"
            ));
        }
        if last - first >= MAX_RANGE {
            return Err(format!(
                "the counter stands for {} nodes, more than {MAX_RANGE}",
                u64::from(last - first) + 1
            ));
        }
        Ok(Some(NameRange {
            prefix: prefix.to_string(),
            first,
            last,
            width: if first_text.starts_with('0') {
                first_text.len()
            } else {
                1
            },
            suffix: suffix.to_string(),
        }))
    }

    /// How many nodes the range stands for.
    pub fn count(&self) -> u32 {
        self.last - self.first + 1
    }

    /// The name of the range's `index`th node (from 0).
    pub fn name(&self, index: u32) -> String {
        format!(
            "{}{:0width$}{}",
            self.prefix,
            self.first + index,
            self.suffix,
            width = self.width
        )
    }

    /// The address of the range's `index`th node, counted up from `start`; `None` past
    /// the end of the address space.
    pub fn address(start: Ipv4Addr, index: u32) -> Option<Ipv4Addr> {
        u32::from(start).checked_add(index).map(Ipv4Addr::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_expand_to_names() {
        // (name, the names it stands for, or what is wrong)
        let table: [(&str, Result<Vec<&str>, &str>); 12] = [
            ("tele-node-01", Ok(vec!["tele-node-01"])),
            (
                "tele-node-[001-003]",
                Ok(vec!["tele-node-001", "tele-node-002", "tele-node-003"]),
            ),
            ("t[8-11]", Ok(vec!["t8", "t9", "t10", "t11"])),
            ("[1-2]-edge", Ok(vec!["1-edge", "2-edge"])),
            ("t[07-07]", Ok(vec!["t07"])),
            ("t[098-101]", Ok(vec!["t098", "t099", "t100", "t101"])),
            ("t[3-1]", Err("backwards")),
            ("t[1-x]", Err("`x` is not a number")),
            ("t[1-2]x[1-2]", Err("more than one counter")),
            ("t[1-2", Err("without its `]`")),
            ("t1-2]", Err("without its `[`")),
            ("t[0-99999]", Err("more than 65536")),
        ];
        for (name, expected) in table {
            let names = NameRange::parse(name).map(|range| match range {
                Some(range) => (0..range.count()).map(|i| range.name(i)).collect(),
                None => vec![name.to_string()],
            });
            match (names, expected) {
                (Ok(names), Ok(expected)) => assert_eq!(names, expected, "{name}"),
                (Err(error), Err(part)) => assert!(error.contains(part), "{name}: {error}"),
                (got, expected) => panic!("{name}: {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn addresses_count_up_across_octets_and_stop_at_the_end() {
        let start: Ipv4Addr = "10.77.0.254".parse().unwrap();
        assert_eq!(NameRange::address(start, 0), Some(start));
        assert_eq!(
            NameRange::address(start, 3),
            Some("10.77.1.1".parse().unwrap())
        );
        let last: Ipv4Addr = "255.255.255.255".parse().unwrap();
        assert_eq!(NameRange::address(last, 1), None);
    }
}
