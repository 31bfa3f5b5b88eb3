//! Tests of the SBOM: license fields as a table, dpkg's status file, purls, and a whole
//! document of a small tree.

use super::license::{expression, from_copyright};
use super::*;

#[test]
fn debian_license_fields_become_spdx_expressions() {
    // (Debian's License field, the SPDX expression, the LicenseRefs it defines)
    let table: [(&str, &str, &[&str]); 13] = [
        ("GPL-2+", "GPL-2.0-or-later", &[]),
        (
            "GPL-1+ or Artistic",
            "GPL-1.0-or-later OR Artistic-1.0-Perl",
            &[],
        ),
        (
            "LGPL-3+ or GPL-2+",
            "LGPL-3.0-or-later OR GPL-2.0-or-later",
            &[],
        ),
        ("GPLv3+", "GPL-3.0-or-later", &[]),
        ("GPL-2.0+", "GPL-2.0-or-later", &[]),
        ("Expat", "MIT", &[]),
        ("  BSD-3-Clause", "BSD-3-Clause", &[]),
        ("Apache-2.0", "Apache-2.0", &[]),
        (
            "GPL-2 with Linux-syscall-note exception",
            "GPL-2.0-only WITH Linux-syscall-note",
            &[],
        ),
        (
            "public-domain",
            "LicenseRef-public-domain",
            &["LicenseRef-public-domain"],
        ),
        (
            "GPL-3+ and BSD-4-clause-UC",
            "GPL-3.0-or-later AND BSD-4-Clause-UC",
            &[],
        ),
        (
            "LGPL-2.1+ or GPL-2+, and OpenLDAP-2.8",
            "(LGPL-2.1-or-later OR GPL-2.0-or-later) AND OLDAP-2.8",
            &[],
        ),
        (
            "LGPL-2.1+ with OpenSSL exception",
            "LicenseRef-LGPL-2.1--with-OpenSSL-exception",
            &["LicenseRef-LGPL-2.1--with-OpenSSL-exception"],
        ),
    ];
    for (debian, spdx, references) in table {
        let declared = expression(debian);
        assert_eq!(declared.expression, spdx, "{debian}");
        let defined: Vec<&str> = declared.references.keys().map(String::as_str).collect();
        assert_eq!(defined, references, "{debian}");
    }
    // A sentence where a name should be, or nothing: no assertion.
    for debian in ["Permission to use, copy, modify", "GPL-2+ or", ""] {
        assert_eq!(expression(debian).expression, "NOASSERTION", "{debian}");
    }
}

#[test]
fn only_machine_readable_copyright_files_declare_and_files_star_wins() {
    let readable = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
                    Upstream-Name: x\n\nFiles: debian/*\nLicense: GPL-2+\n\n\
                    Files: *\nCopyright: someone\nLicense: BSD-3-clause\n\n\
                    License: BSD-3-clause\n text\n";
    assert_eq!(from_copyright(readable).expression, "BSD-3-Clause");
    let no_star = readable.replace("Files: *\n", "Files: src/*\n");
    assert_eq!(from_copyright(&no_star).expression, "GPL-2.0-or-later");
    let free_text = "This package was debianized by someone.\n\nLicense: GPL-2+\n";
    assert_eq!(from_copyright(free_text).expression, "NOASSERTION");
}

const STATUS: &str = "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\n\
Source: glibc\nVersion: 2.41-12\nMaintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>\n\
Description: GNU C Library\n shared libraries\n\n\
Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0-1\n\n\
Package: libgcc-s1\nStatus: install ok installed\nArchitecture: amd64\nSource: gcc-14 (14.2.0-19)\n\
Version: 14.2.0-19\nMaintainer: Debian GCC Maintainers <debian-gcc@lists.debian.org>\n\n\
Package: softswitch-portal\nStatus: install ok installed\nArchitecture: all\nVersion: 1:2.0+r2~b1\n\
Maintainer: Vendor\n";

fn tree() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("var/lib/dpkg")).unwrap();
    std::fs::write(root.path().join("var/lib/dpkg/status"), STATUS).unwrap();
    let doc = root.path().join("usr/share/doc/libc6");
    std::fs::create_dir_all(&doc).unwrap();
    std::fs::write(
        doc.join("copyright"),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n\
         Files: *\nLicense: LGPL-2.1+\n",
    )
    .unwrap();
    root
}

#[test]
fn installed_packages_come_with_their_source_and_removed_ones_are_left_out() {
    let root = tree();
    let packages = installed(root.path()).unwrap();
    let seen: Vec<(&str, &str, &str, &str)> = packages
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.version.as_str(),
                p.source.as_str(),
                p.source_version.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("libc6", "2.41-12", "glibc", "2.41-12"),
            ("libgcc-s1", "14.2.0-19", "gcc-14", "14.2.0-19"),
            (
                "softswitch-portal",
                "1:2.0+r2~b1",
                "softswitch-portal",
                "1:2.0+r2~b1"
            ),
        ]
    );
}

#[test]
fn the_document_lists_every_package_with_license_purl_and_source() {
    let root = tree();
    let vendor = BTreeSet::from(["softswitch-portal".to_string()]);
    let image = ImageInfo {
        cluster: "lab",
        role: "portal",
        key: "abc",
        created: 1_754_697_600,
        vendor_packages: &vendor,
    };
    let document = document(root.path(), &image).unwrap();
    assert_eq!(document["spdxVersion"], "SPDX-2.3");
    assert_eq!(document["creationInfo"]["created"], "2025-08-09T00:00:00Z");
    let packages = document["packages"].as_array().unwrap();
    assert_eq!(packages.len(), 4, "the image and its three packages");
    let libc = &packages[1];
    assert_eq!(libc["name"], "libc6");
    assert_eq!(libc["licenseDeclared"], "LGPL-2.1-or-later");
    assert_eq!(
        libc["externalRefs"][0]["referenceLocator"],
        "pkg:deb/debian/libc6@2.41-12?arch=amd64&distro=debian-13"
    );
    assert!(
        libc["sourceInfo"]
            .as_str()
            .unwrap()
            .contains("source package glibc version 2.41-12")
    );
    let portal = &packages[3];
    assert_eq!(portal["licenseDeclared"], "NOASSERTION");
    assert_eq!(
        portal["externalRefs"][0]["referenceLocator"],
        "pkg:deb/vendor/softswitch-portal@1%3A2.0%2Br2%7Eb1?arch=all"
    );
    let contains = document["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["relationshipType"] == "CONTAINS")
        .count();
    assert_eq!(contains, 3);
    // The same tree gives the same document.
    assert_eq!(document, super::document(root.path(), &image).unwrap());
}
