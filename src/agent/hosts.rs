//! The block of `/etc/hosts` the agent keeps in step with the nodes registered in the
//! cluster after its image was built (telephony nodes added as capacity grows), so that
//! every node still resolves every other by name.
//!
//! The image's `/etc/hosts` lists the manifest's nodes; the agent only ever rewrites the
//! lines between its two markers, and lists there only names the rest of the file does
//! not resolve already.

use std::net::Ipv4Addr;

/// The first line of the agent's block.
pub const BEGIN: &str = "# r2a-node: nodes registered in the cluster after this image was built";
/// The last line of the agent's block.
pub const END: &str = "# r2a-node: end of registered nodes";

/// `current` with the agent's block listing those of `registered` that the rest of the
/// file does not name; without the block when there are none.
pub fn with_registered(current: &str, registered: &[(String, Ipv4Addr)], domain: &str) -> String {
    let mut outside = Vec::new();
    let mut inside = false;
    for line in current.lines() {
        match line {
            BEGIN => inside = true,
            END => inside = false,
            _ if !inside => outside.push(line),
            _ => {}
        }
    }
    let named = |name: &str| {
        outside.iter().any(|line| {
            let fields = line.split('#').next().unwrap_or_default();
            fields.split_whitespace().skip(1).any(|field| field == name)
        })
    };
    let mut text: String = outside.iter().map(|line| format!("{line}\n")).collect();
    let missing: Vec<&(String, Ipv4Addr)> =
        registered.iter().filter(|(name, _)| !named(name)).collect();
    if !missing.is_empty() {
        text.push_str(BEGIN);
        text.push('\n');
        for (name, address) in missing {
            text.push_str(&format!("{address}\t{name}.{domain} {name}\n"));
        }
        text.push_str(END);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: &str = "127.0.0.1\tlocalhost\n10.77.0.51\ttel1.lab tel1\n";

    fn node(name: &str, last: u8) -> (String, Ipv4Addr) {
        (name.to_string(), Ipv4Addr::new(10, 77, 0, last))
    }

    #[test]
    fn only_names_the_image_lacks_go_into_the_block_and_it_is_rewritten_in_place() {
        // (what, current file, registered, expected)
        let block = |lines: &str| format!("{IMAGE}{BEGIN}\n{lines}{END}\n");
        let cases = [
            (
                "nothing new: the file stays",
                IMAGE.to_string(),
                vec![node("tel1", 51)],
                IMAGE.to_string(),
            ),
            (
                "a node added later is listed",
                IMAGE.to_string(),
                vec![node("tel1", 51), node("tel2", 52)],
                block("10.77.0.52\ttel2.lab tel2\n"),
            ),
            (
                "a second run changes nothing",
                block("10.77.0.52\ttel2.lab tel2\n"),
                vec![node("tel1", 51), node("tel2", 52)],
                block("10.77.0.52\ttel2.lab tel2\n"),
            ),
            (
                "a new address replaces the old line",
                block("10.77.0.52\ttel2.lab tel2\n"),
                vec![node("tel2", 62)],
                block("10.77.0.62\ttel2.lab tel2\n"),
            ),
            (
                "a node gone from the pool leaves the block, and an empty block goes",
                block("10.77.0.52\ttel2.lab tel2\n"),
                vec![],
                IMAGE.to_string(),
            ),
        ];
        for (what, current, registered, expected) in cases {
            assert_eq!(
                with_registered(&current, &registered, "lab"),
                expected,
                "{what}"
            );
        }
    }
}
