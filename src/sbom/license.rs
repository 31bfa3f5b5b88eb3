//! A package's declared license, from its machine-readable Debian copyright file, as an
//! SPDX license expression: Debian's short names mapped to SPDX identifiers, the others
//! kept as `LicenseRef-` identifiers the document then defines.

use std::collections::BTreeMap;
use std::path::Path;

/// The first line of a machine-readable copyright file (the `http` form is older).
const FORMAT_PREFIXES: [&str; 2] = [
    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0",
    "Format: http://www.debian.org/doc/packaging-manuals/copyright-format/1.0",
];

/// Debian short license names (lower case, `.0` and `v` spellings folded) and their SPDX
/// identifiers.
const DEBIAN_TO_SPDX: &[(&str, &str)] = &[
    ("0bsd", "0BSD"),
    ("agpl-3", "AGPL-3.0-only"),
    ("agpl-3+", "AGPL-3.0-or-later"),
    ("apache-2", "Apache-2.0"),
    ("artistic", "Artistic-1.0-Perl"),
    ("artistic-2", "Artistic-2.0"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    ("bsd-4-clause-uc", "BSD-4-Clause-UC"),
    ("bsl-1", "BSL-1.0"),
    ("cc0-1", "CC0-1.0"),
    ("curl", "curl"),
    ("expat", "MIT"),
    ("fsfap", "FSFAP"),
    ("fsful", "FSFUL"),
    ("fsfullr", "FSFULLR"),
    ("gfdl-1.2", "GFDL-1.2-only"),
    ("gfdl-1.2+", "GFDL-1.2-or-later"),
    ("gfdl-1.3", "GFDL-1.3-only"),
    ("gfdl-1.3+", "GFDL-1.3-or-later"),
    ("gfdl-niv-1.3+", "GFDL-1.3-no-invariants-or-later"),
    ("gpl-1", "GPL-1.0-only"),
    ("gpl-1+", "GPL-1.0-or-later"),
    ("gpl-2", "GPL-2.0-only"),
    ("gpl-2+", "GPL-2.0-or-later"),
    ("gpl-3", "GPL-3.0-only"),
    ("gpl-3+", "GPL-3.0-or-later"),
    ("isc", "ISC"),
    ("lgpl-2", "LGPL-2.0-only"),
    ("lgpl-2+", "LGPL-2.0-or-later"),
    ("lgpl-2.1", "LGPL-2.1-only"),
    ("lgpl-2.1+", "LGPL-2.1-or-later"),
    ("lgpl-3", "LGPL-3.0-only"),
    ("lgpl-3+", "LGPL-3.0-or-later"),
    ("mit", "MIT"),
    ("mpl-1.1", "MPL-1.1"),
    ("mpl-2", "MPL-2.0"),
    ("ofl-1.1", "OFL-1.1"),
    ("openldap-2.8", "OLDAP-2.8"),
    ("openssl", "OpenSSL"),
    ("psf-2", "PSF-2.0"),
    ("python-2", "Python-2.0"),
    ("sleepycat", "Sleepycat"),
    ("unicode-dfs-2016", "Unicode-DFS-2016"),
    ("unlicense", "Unlicense"),
    ("wtfpl", "WTFPL"),
    ("x11", "X11"),
    ("zlib", "Zlib"),
];

/// A package's declared license.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// An SPDX license expression, or `NOASSERTION`.
    pub expression: String,
    /// The `LicenseRef-` identifiers it uses, with the Debian name each stands for.
    pub references: BTreeMap<String, String>,
}

impl Declared {
    fn none() -> Declared {
        Declared {
            expression: "NOASSERTION".to_string(),
            references: BTreeMap::new(),
        }
    }
}

/// The license `package`'s copyright file in `root` declares for its files as a whole
/// (the `Files: *` paragraph, else the first `License:` field); `NOASSERTION` when the
/// file is missing or not machine-readable.
pub fn declared_license(root: &Path, package: &str) -> Declared {
    let path = root.join("usr/share/doc").join(package).join("copyright");
    match std::fs::read_to_string(path) {
        Ok(text) => from_copyright(&text),
        Err(_) => Declared::none(),
    }
}

/// [`declared_license`] of a copyright file's text.
pub fn from_copyright(text: &str) -> Declared {
    let first = text.lines().next().unwrap_or_default().trim_end();
    if !FORMAT_PREFIXES
        .iter()
        .any(|prefix| first.starts_with(prefix))
    {
        return Declared::none();
    }
    let paragraphs: Vec<&str> = text.split("\n\n").collect();
    let whole = paragraphs
        .iter()
        .find(|p| p.lines().any(|line| line.trim_end() == "Files: *"))
        .and_then(|p| license_of(p))
        .or_else(|| paragraphs.iter().find_map(|p| license_of(p)));
    whole.map_or_else(Declared::none, expression)
}

/// The first line of a paragraph's `License:` field, when it has a name there.
fn license_of(paragraph: &str) -> Option<&str> {
    paragraph
        .lines()
        .find_map(|line| line.strip_prefix("License:"))
        .map(str::trim)
        .filter(|name| !name.is_empty())
}

/// Converts a Debian license field's first line (`GPL-2+ or Artistic`, `GPL-2 with
/// Linux-syscall-note exception`, `LGPL-3+ or GPL-2+, and BSD-3-clause`) to SPDX.
pub fn expression(debian: &str) -> Declared {
    let mut references = BTreeMap::new();
    // A comma closes a group: `A or B, and C` is `(A or B) and C`.
    let groups: Vec<&str> = debian.split(',').collect();
    let mut parts = Vec::new();
    for (index, group) in groups.iter().enumerate() {
        let mut words: Vec<&str> = group.split_whitespace().collect();
        let mut joiner = None;
        if index > 0 {
            match words
                .first()
                .map(|word| word.to_ascii_lowercase())
                .as_deref()
            {
                Some("and") => joiner = Some("AND"),
                Some("or") => joiner = Some("OR"),
                _ => {}
            }
            if joiner.is_some() {
                words.remove(0);
            }
        }
        let Some(group) = group_expression(&words, &mut references) else {
            return Declared::none();
        };
        if let Some(joiner) = joiner.or((index > 0).then_some("AND")) {
            parts.push(joiner.to_string());
        }
        parts.push(if groups.len() > 1 && group.contains(' ') {
            format!("({group})")
        } else {
            group
        });
    }
    Declared {
        expression: parts.join(" "),
        references,
    }
}

/// Terms joined by `and`/`or`; a term is a name, or `NAME with EXCEPTION exception`.
fn group_expression(words: &[&str], references: &mut BTreeMap<String, String>) -> Option<String> {
    let mut out = Vec::new();
    let mut term: Vec<&str> = Vec::new();
    let mut finish = |term: &mut Vec<&str>, out: &mut Vec<String>| -> Option<()> {
        if term.is_empty() {
            return None;
        }
        out.push(term_expression(&term.join(" "), references)?);
        term.clear();
        Some(())
    };
    for word in words {
        match word.to_ascii_lowercase().as_str() {
            operator @ ("and" | "or") => {
                finish(&mut term, &mut out)?;
                out.push(operator.to_ascii_uppercase());
            }
            _ => term.push(word),
        }
    }
    finish(&mut term, &mut out)?;
    Some(out.join(" "))
}

fn term_expression(term: &str, references: &mut BTreeMap<String, String>) -> Option<String> {
    // A short name has no spaces unless it carries an exception; a sentence is no name.
    let words: Vec<&str> = term.split_whitespace().collect();
    let is_exception = words.len() >= 3
        && words[1].eq_ignore_ascii_case("with")
        && words.last()?.eq_ignore_ascii_case("exception");
    if words.len() > 1 && !is_exception {
        return None;
    }
    if is_exception
        && words.len() == 4
        && words[2].eq_ignore_ascii_case("linux-syscall-note")
        && let Some(license) = spdx_name(words[0])
    {
        return Some(format!("{license} WITH Linux-syscall-note"));
    }
    if !is_exception && let Some(license) = spdx_name(term) {
        return Some(license.to_string());
    }
    let reference = format!(
        "LicenseRef-{}",
        term.chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            })
            .collect::<String>()
    );
    references.insert(reference.clone(), term.to_string());
    Some(reference)
}

/// The SPDX identifier of one Debian short name, if it has one.
fn spdx_name(debian: &str) -> Option<&'static str> {
    let mut name = debian.to_ascii_lowercase();
    // `GPLv3+`, `LGPLv2.1+` and `GPL-2.0+` are other spellings of `GPL-3+`, ...
    for family in ["lgpl", "agpl", "gpl"] {
        if let Some(rest) = name.strip_prefix(&format!("{family}v")) {
            name = format!("{family}-{rest}");
            break;
        }
    }
    let name = name.replace(".0+", "+");
    let name = name.strip_suffix(".0").unwrap_or(&name);
    DEBIAN_TO_SPDX
        .iter()
        .find(|(debian, _)| *debian == name)
        .map(|(_, spdx)| *spdx)
}
