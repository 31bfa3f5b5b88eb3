//! sha256 helpers: file checksums and the content keys of cached layers.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};

/// Lower-case hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of a byte string, as hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The sha256 of a file's content, as hex, read in chunks.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let read = file
            .read(&mut buffer)
            .with_context(|| format!("reading {}", path.display()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Builds a content key from named inputs. Each input is framed by its name and length,
/// so no two different input lists can produce the same byte stream.
#[derive(Default)]
pub struct KeyBuilder {
    hasher: Sha256,
}

impl KeyBuilder {
    /// An empty key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one named input.
    pub fn add(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let value = value.as_ref();
        self.hasher.update((name.len() as u64).to_le_bytes());
        self.hasher.update(name.as_bytes());
        self.hasher.update((value.len() as u64).to_le_bytes());
        self.hasher.update(value);
        self
    }

    /// Adds a list of strings as one input.
    pub fn add_list(self, name: &str, values: &[String]) -> Self {
        let joined = values.join("\n");
        self.add(name, joined)
    }

    /// The key, as hex.
    pub fn finish(self) -> String {
        hex(&self.hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn framing_keeps_inputs_apart() {
        let a = KeyBuilder::new().add("x", "ab").add("y", "c").finish();
        let b = KeyBuilder::new().add("x", "a").add("y", "bc").finish();
        assert_ne!(a, b);
        assert_eq!(a, KeyBuilder::new().add("x", "ab").add("y", "c").finish());
    }
}
