//! A gzip writer for large archives that compresses on every core and never compresses the
//! same bytes twice.
//!
//! The stream is cut into chunks at archive entry boundaries chosen by content (the entry's
//! path), each chunk becomes one gzip member, and members are cached under the sha256 of
//! their uncompressed bytes. A multi-member gzip file is one valid gzip stream (RFC 1952),
//! so `tar -xzf` and every gzip reader take it as usual. When one overlay file changes,
//! only the chunk holding it is compressed again; since boundaries depend on paths, not on
//! offsets, the chunks after it line up again at the next boundary.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::Context;
use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

use crate::fsutil;
use crate::hash::hex;

/// Chunks are cut only after this many bytes...
const MIN_CHUNK: usize = 1 << 20;
/// ...at an entry whose path hash is 0 modulo this (about every 64th entry)...
const BOUNDARY_MODULUS: u64 = 64;
/// ...or in any case once this large, even inside an entry, to bound memory.
const MAX_CHUNK: usize = 8 << 20;
const LEVEL: u32 = 6;

/// Counts of what the writer did, for the progress line.
#[derive(Debug, Default, Clone, Copy)]
pub struct ChunkStats {
    /// Chunks compressed now.
    pub compressed: usize,
    /// Chunks taken from the cache.
    pub reused: usize,
}

/// The writer; call [`ChunkedGzip::entry_end`] after each archive entry.
pub struct ChunkedGzip<W: Write> {
    out: W,
    cache: PathBuf,
    chunk: Vec<u8>,
    in_flight: VecDeque<Pending>,
    parallelism: usize,
    stats: ChunkStats,
}

enum Pending {
    Cached(Vec<u8>),
    Compressing(JoinHandle<anyhow::Result<Vec<u8>>>),
}

impl<W: Write> ChunkedGzip<W> {
    /// Writes to `out`, keeping members in the `cache` folder.
    pub fn new(out: W, cache: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(ChunkedGzip {
            out,
            cache: cache.to_path_buf(),
            chunk: Vec::new(),
            in_flight: VecDeque::new(),
            parallelism,
            stats: ChunkStats::default(),
        })
    }

    /// Marks the end of an archive entry named `path`: a possible chunk boundary.
    pub fn entry_end(&mut self, path: &str) -> anyhow::Result<()> {
        let boundary = path_hash(path).is_multiple_of(BOUNDARY_MODULUS);
        if boundary && self.chunk.len() >= MIN_CHUNK {
            self.cut()?;
        }
        Ok(())
    }

    /// Flushes every chunk and returns the sink and the counts.
    pub fn finish(mut self) -> anyhow::Result<(W, ChunkStats)> {
        if !self.chunk.is_empty() {
            self.cut()?;
        }
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        self.out.flush()?;
        Ok((self.out, self.stats))
    }

    fn cut(&mut self) -> anyhow::Result<()> {
        let chunk = std::mem::take(&mut self.chunk);
        let key = hex(&Sha256::digest(&chunk));
        let path = self.cache.join(&key[..2]).join(format!("{key}.gz"));
        if let Ok(member) = std::fs::read(&path) {
            self.stats.reused += 1;
            // Its time says when a build last used it: `cache prune` drops the old ones.
            // A member whose time cannot be renewed is still good to use.
            let _ = std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|file| file.set_modified(std::time::SystemTime::now()));
            self.in_flight.push_back(Pending::Cached(member));
        } else {
            self.stats.compressed += 1;
            self.in_flight
                .push_back(Pending::Compressing(std::thread::spawn(move || {
                    let member = compress(&chunk)?;
                    std::fs::create_dir_all(path.parent().expect("member paths have a folder"))?;
                    fsutil::write_atomic(&path, &member, 0o600)?;
                    Ok(member)
                })));
        }
        while self.in_flight.len() > self.parallelism {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> anyhow::Result<()> {
        let member = match self
            .in_flight
            .pop_front()
            .expect("called with work in flight")
        {
            Pending::Cached(member) => member,
            Pending::Compressing(handle) => handle
                .join()
                .map_err(|_| anyhow::anyhow!("a compression thread panicked"))??,
        };
        self.out
            .write_all(&member)
            .context("writing the compressed archive")
    }
}

impl<W: Write> Write for ChunkedGzip<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = MAX_CHUNK - self.chunk.len();
        let taken = bytes.len().min(room);
        self.chunk.extend_from_slice(&bytes[..taken]);
        if self.chunk.len() == MAX_CHUNK {
            self.cut().map_err(std::io::Error::other)?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One gzip member with no name and no time: the same bytes always give the same member.
fn compress(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .write(Vec::with_capacity(data.len() / 2), Compression::new(LEVEL));
    encoder.write_all(data)?;
    Ok(encoder.finish()?)
}

/// FNV-1a: stable across builds and platforms, unlike the standard library's hasher.
fn path_hash(path: &str) -> u64 {
    path.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn stream(entries: &[(String, Vec<u8>)], cache: &Path) -> (Vec<u8>, ChunkStats) {
        let mut writer = ChunkedGzip::new(Vec::new(), cache).unwrap();
        for (path, content) in entries {
            writer.write_all(content).unwrap();
            writer.entry_end(path).unwrap();
        }
        writer.finish().unwrap()
    }

    fn entries(changed: usize) -> Vec<(String, Vec<u8>)> {
        (0..2000)
            .map(|i| {
                let content: Vec<u8> = (0..4096)
                    .map(|j| ((i * 31 + j * 7 + usize::from(i == changed)) % 251) as u8)
                    .collect();
                (format!("/usr/share/file-{i:05}"), content)
            })
            .collect()
    }

    #[test]
    fn a_multi_member_stream_reads_back_whole() {
        let cache = tempfile::tempdir().unwrap();
        let input = entries(usize::MAX);
        let (bytes, stats) = stream(&input, cache.path());
        assert!(stats.compressed > 1, "{stats:?}");
        let mut decoded = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes.as_slice())
            .read_to_end(&mut decoded)
            .unwrap();
        let expected: Vec<u8> = input.iter().flat_map(|(_, c)| c.clone()).collect();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn one_change_recompresses_only_its_neighbourhood_and_output_is_stable() {
        let cache = tempfile::tempdir().unwrap();
        let (first, cold) = stream(&entries(usize::MAX), cache.path());
        let (again, warm) = stream(&entries(usize::MAX), cache.path());
        assert_eq!(first, again, "cached members give the same bytes");
        assert_eq!(warm.compressed, 0, "{warm:?}");
        let (_, changed) = stream(&entries(1000), cache.path());
        assert!(changed.compressed <= 2, "{changed:?} of {cold:?}");
        assert!(
            changed.reused >= cold.compressed - 2,
            "{changed:?} of {cold:?}"
        );
    }

    #[test]
    fn a_large_entry_is_split_so_memory_stays_bounded() {
        let cache = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..(MAX_CHUNK * 5 / 2)).map(|i| (i % 253) as u8).collect();
        let (bytes, stats) = stream(
            &[("/usr/lib/libhuge.so".to_string(), big.clone())],
            cache.path(),
        );
        assert_eq!(stats.compressed, 3, "{stats:?}");
        let mut decoded = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes.as_slice())
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, big);
    }
}
