//! The software bill of materials of an image: an SPDX 2.3 JSON document listing every
//! installed package (Debian's and the vendor's) with its version, architecture, source
//! package, the license its machine-readable copyright file declares, and a purl.
//!
//! Everything comes from the image tree itself (dpkg's status file and
//! `/usr/share/doc/*/copyright`), and the document's time is the build's
//! `source_date_epoch`, so the same image gives the same bytes.

mod license;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::Context;
use serde_json::{Value, json};

pub use license::{Declared, declared_license};

use crate::exec::{CommandExt, Tool, require_tools};

/// The SBOM's file name in a role's output folder.
pub const FILE_NAME: &str = "sbom.spdx.json";

/// One package dpkg lists as installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPackage {
    /// Package name.
    pub name: String,
    /// Version, epoch included.
    pub version: String,
    /// Architecture (`amd64`, `all`).
    pub architecture: String,
    /// The source package it was built from (its name when the same).
    pub source: String,
    /// The source package's version (the package's when not given).
    pub source_version: String,
    /// The Maintainer field.
    pub maintainer: String,
}

/// The tool that reads a tree's package database.
const DPKG_QUERY: Tool = Tool {
    program: "dpkg-query",
    package: "dpkg",
    reason: "list the packages installed in an image tree",
};

/// The fields [`installed`] asks `dpkg-query` for, tab-separated, one package a line;
/// `source:Package` and `source:Version` fall back to the package's own, as dpkg does.
const QUERY_FORMAT: &str = "${db:Status-Status}\t${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\t${Maintainer}\n";

/// Every installed package of a tree, as dpkg itself reads its database
/// (`dpkg-query --admindir <tree>/var/lib/dpkg`), in name order.
pub fn installed(root: &Path) -> anyhow::Result<Vec<InstalledPackage>> {
    require_tools(&[DPKG_QUERY])?;
    let admin = root.join("var/lib/dpkg");
    anyhow::ensure!(
        admin.join("status").is_file(),
        "{} holds no dpkg database",
        root.display()
    );
    let listing = Command::new(DPKG_QUERY.program)
        .arg("--admindir")
        .arg(&admin)
        .args(["--show", "--showformat", QUERY_FORMAT])
        .env("LC_ALL", "C.UTF-8")
        .output_text()
        .with_context(|| format!("listing the packages of {}", root.display()))?;
    let mut packages: Vec<InstalledPackage> = listing
        .lines()
        .filter_map(|line| {
            // The maintainer comes last: a tab in it stays in it.
            let fields: Vec<&str> = line.splitn(7, '\t').collect();
            let [
                status,
                name,
                version,
                architecture,
                source,
                source_version,
                maintainer,
            ] = fields[..]
            else {
                return None;
            };
            (status == "installed").then(|| InstalledPackage {
                name: name.to_string(),
                version: version.to_string(),
                architecture: architecture.to_string(),
                source: source.to_string(),
                source_version: source_version.to_string(),
                maintainer: maintainer.to_string(),
            })
        })
        .collect();
    packages.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
    Ok(packages)
}

/// What the document says of the image as a whole.
pub struct ImageInfo<'a> {
    /// The cluster's name.
    pub cluster: &'a str,
    /// The role.
    pub role: &'a str,
    /// The image's content key.
    pub key: &'a str,
    /// The document's creation time, seconds since 1970 (the build's source date).
    pub created: i64,
    /// Packages that came from the vendor's sources, not Debian's.
    pub vendor_packages: &'a BTreeSet<String>,
}

/// The SPDX 2.3 document of the image whose tree is `root`.
pub fn document(root: &Path, image: &ImageInfo<'_>) -> anyhow::Result<Value> {
    let packages = installed(root)?;
    let mut references: BTreeMap<String, String> = BTreeMap::new();
    let image_id = "SPDXRef-Image";
    let mut spdx_packages = vec![json!({
        "SPDXID": image_id,
        "name": format!("r2a-{}-{}", image.cluster, image.role),
        "versionInfo": image.key,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "supplier": "NOASSERTION",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "comment": format!("The {} role image of cluster {}, made by r2a-image.", image.role, image.cluster),
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    for package in &packages {
        let id = spdx_id(package);
        let declared = declared_license(root, &package.name);
        for (reference, name) in &declared.references {
            references
                .entry(reference.clone())
                .or_insert_with(|| name.clone());
        }
        let vendor = image.vendor_packages.contains(&package.name);
        spdx_packages.push(json!({
            "SPDXID": id,
            "name": package.name,
            "versionInfo": package.version,
            "supplier": supplier(&package.maintainer),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": declared.expression,
            "copyrightText": "NOASSERTION",
            "sourceInfo": format!(
                "built from the {} source package {} version {}",
                if vendor { "vendor's" } else { "Debian" },
                package.source,
                package.source_version
            ),
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl(package, vendor),
            }],
        }));
        relationships.push(json!({
            "spdxElementId": image_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    let extracted: Vec<Value> = references
        .iter()
        .map(|(id, name)| {
            json!({
                "licenseId": id,
                "name": name,
                "extractedText": format!(
                    "The license Debian's machine-readable copyright files call `{name}`; its text is in the copyright file of each package that declares it (/usr/share/doc/PACKAGE/copyright)."
                ),
            })
        })
        .collect();
    Ok(json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("r2a-{}-{}", image.cluster, image.role),
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/r2a-image/{}/{}-{}",
            image.cluster, image.role, image.key
        ),
        "creationInfo": {
            "created": crate::timestamp::rfc3339(image.created)?,
            "creators": [format!("Tool: r2a-image-{}", env!("CARGO_PKG_VERSION"))],
        },
        "documentDescribes": [image_id],
        "packages": spdx_packages,
        "relationships": relationships,
        "hasExtractedLicensingInfos": extracted,
    }))
}

/// Writes the document of the tree `root` to `path` (pretty JSON, a final newline).
pub fn write(root: &Path, image: &ImageInfo<'_>, path: &Path) -> anyhow::Result<usize> {
    let document = document(root, image)?;
    let count = document["packages"].as_array().map_or(0, Vec::len) - 1;
    let mut bytes = serde_json::to_vec_pretty(&document)?;
    bytes.push(b'\n');
    crate::fsutil::write_atomic(path, &bytes, 0o644)?;
    Ok(count)
}

/// `SPDXRef-Package-deb-NAME-ARCH`, with what SPDX ids cannot hold replaced.
fn spdx_id(package: &InstalledPackage) -> String {
    let clean = |text: &str| -> String {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!(
        "SPDXRef-Package-deb-{}-{}",
        clean(&package.name),
        clean(&package.architecture)
    )
}

/// `pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-13` (namespace `vendor` for the
/// vendor's packages), with the version percent-encoded as purl asks (`:` of an epoch,
/// `+`, `~`).
fn purl(package: &InstalledPackage, vendor: bool) -> String {
    let namespace = if vendor { "vendor" } else { "debian" };
    let version: String = package
        .version
        .bytes()
        .map(|byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    let mut purl = format!(
        "pkg:deb/{namespace}/{}@{version}?arch={}",
        package.name, package.architecture
    );
    if !vendor {
        purl.push_str("&distro=debian-13");
    }
    purl
}

/// `Organization: NAME (EMAIL)` from a Maintainer field (Debian's are mostly teams).
fn supplier(maintainer: &str) -> String {
    match maintainer.split_once('<') {
        Some((name, email)) if !name.trim().is_empty() => format!(
            "Organization: {} ({})",
            name.trim(),
            email.trim_end_matches('>').trim()
        ),
        _ if !maintainer.trim().is_empty() => format!("Organization: {}", maintainer.trim()),
        _ => "NOASSERTION".to_string(),
    }
}

#[cfg(test)]
mod tests;
