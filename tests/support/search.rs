//! Searching artifacts for secrets, byte for byte and inside what they pack: gzip
//! streams, qcow2 disks, ISO 9660 images, squashfs file systems and newc archives are
//! opened ([`r2a::unpack`]) and what they hold is searched in turn.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use aho_corasick::AhoCorasick;
use r2a::secrets::Secrets;
use r2a::unpack::{self, Kind};

/// What compresses (gzip, qcow2, squashfs) or carries what compresses (ISO, cpio) is
/// opened; tar, ext4, FAT and ISO keep contents as they are, and their bytes are searched.
const OPENED: [Kind; 5] = [
    Kind::Gzip,
    Kind::Qcow2,
    Kind::Squashfs,
    Kind::Iso,
    Kind::Cpio,
];

/// The byte strings that betray each secret of a cluster.
pub struct Needles {
    finder: AhoCorasick,
    names: Vec<String>,
}

impl Needles {
    /// Every secret of `secrets` (passwords, the CA, node and signing keys).
    pub fn of(secrets: &Secrets) -> Needles {
        let mut patterns = Vec::new();
        let mut names = Vec::new();
        for (name, value) in secrets.values() {
            for fingerprint in value.fingerprints() {
                patterns.push(fingerprint.to_vec());
                names.push(name.to_string());
            }
        }
        assert!(
            !patterns.is_empty(),
            "the cluster has no secret to look for"
        );
        Needles {
            finder: AhoCorasick::new(&patterns).unwrap(),
            names,
        }
    }

    /// The secrets found in `artifact`, each with where: `"<artifact>!<inner path>"`.
    pub fn find_in(&self, artifact: &Path) -> BTreeSet<(String, String)> {
        let mut found = BTreeSet::new();
        self.search(artifact, &artifact.display().to_string(), 0, &mut found);
        found
    }

    fn search(&self, file: &Path, place: &str, depth: u32, found: &mut BTreeSet<(String, String)>) {
        assert!(depth < 8, "{place}: packed too deep");
        let kind = Kind::of(file).unwrap();
        if kind == Kind::Gzip && self.scan_gzip(file, place, found) {
            return;
        }
        self.scan(open(file), place, found);
        if !OPENED.contains(&kind) {
            return;
        }
        let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let dir = unpack::unpack(file, kind, &scratch.path().join("unpacked"))
            .unwrap_or_else(|error| panic!("{place}: {error:#}"));
        match kind.single_file() {
            Some(name) => self.search(
                &dir.join(name),
                &format!("{place}!{kind:?}"),
                depth + 1,
                found,
            ),
            None => {
                for entry in walkdir::WalkDir::new(&dir).sort_by_file_name() {
                    let entry = entry.unwrap();
                    if entry.file_type().is_file() {
                        let inner = entry.path().strip_prefix(&dir).unwrap().display();
                        self.search(entry.path(), &format!("{place}!/{inner}"), depth + 1, found);
                    }
                }
            }
        }
    }

    /// Searches what a gzip stream holds as it is decompressed, unless it holds something
    /// to open (then `false`, and the stream is unpacked).
    fn scan_gzip(&self, file: &Path, place: &str, found: &mut BTreeSet<(String, String)>) -> bool {
        let mut head = Vec::new();
        flate2::read::MultiGzDecoder::new(open(file))
            .take(Kind::HEAD as u64)
            .read_to_end(&mut head)
            .unwrap();
        if OPENED.contains(&Kind::of_head(&head)) {
            return false;
        }
        let stream = flate2::read::MultiGzDecoder::new(open(file));
        self.scan(stream, &format!("{place}!Gzip"), found);
        true
    }

    fn scan(&self, stream: impl Read, place: &str, found: &mut BTreeSet<(String, String)>) {
        for hit in self.finder.stream_find_iter(stream) {
            let hit = hit.unwrap();
            found.insert((
                self.names[hit.pattern().as_usize()].clone(),
                place.to_string(),
            ));
        }
    }
}

fn open(file: &Path) -> std::io::BufReader<std::fs::File> {
    let opened =
        std::fs::File::open(file).unwrap_or_else(|error| panic!("{}: {error}", file.display()));
    std::io::BufReader::with_capacity(1 << 20, opened)
}

/// Flips byte `at` of the only place `needle` occurs in `file`.
pub fn flip_byte_in(file: &Path, needle: &[u8], at: u64) {
    let finder = aho_corasick::AhoCorasick::new([needle]).unwrap();
    let reader = std::io::BufReader::new(std::fs::File::open(file).unwrap());
    let found: Vec<u64> = finder
        .stream_find_iter(reader)
        .map(|hit| hit.unwrap().start() as u64)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{} holds the needle {} times",
        file.display(),
        found.len()
    );
    use std::os::unix::fs::FileExt as _;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut byte = [0u8];
    opened.read_exact_at(&mut byte, found[0] + at).unwrap();
    opened
        .write_all_at(&[byte[0] ^ 0x20], found[0] + at)
        .unwrap();
}
