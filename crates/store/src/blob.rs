//! Writing blobs and other files atomically: write to a temp file in the destination's
//! file system, hash while writing, fsync, then rename into place.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;

use crate::digest::Digest;
use crate::error::{IoContext, Result, StoreError};

/// Prefix of our temp files (in `blobs/` and `manifests/`); never a valid blob or
/// manifest name, so listings and Ollama's own scans skip them.
pub(crate) const TEMP_PREFIX: &str = ".wick-tmp-";

fn temp_in(dir: &Path) -> Result<NamedTempFile> {
    tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .ctx(|| format!("creating a temp file in {}", dir.display()))
}

/// Blobs and manifests are world-readable like Ollama's (0644); temp files start 0600.
fn make_readable(file: &fs::File, path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o644))
            .ctx(|| format!("setting permissions of {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = (file, path);
    Ok(())
}

/// Best effort: make a rename durable by syncing its directory.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Rename `tmp` to `dest`, creating `dest`'s directory; retry once if a concurrent
/// prune removed the directory between the two steps.
fn persist(tmp: NamedTempFile, dest: &Path) -> Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    let rename_err = |e: io::Error| StoreError::io(format!("renaming into {}", dest.display()), e);
    fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
    let tmp = match tmp.persist(dest) {
        Ok(_) => {
            sync_dir(parent);
            return Ok(());
        }
        Err(e) if e.error.kind() == io::ErrorKind::NotFound => e.file,
        Err(e) => return Err(rename_err(e.error)),
    };
    fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
    tmp.persist(dest).map_err(|e| rename_err(e.error))?;
    sync_dir(parent);
    Ok(())
}

/// Write `bytes` to `dest` atomically, using a temp file in `tmp_dir` (which must be on
/// the same file system). Readers see either the old file or the whole new one.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = temp_in(tmp_dir)?;
    let tmp_path = tmp.path().to_path_buf();
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .ctx(|| format!("writing {}", tmp_path.display()))?;
    make_readable(tmp.as_file(), &tmp_path)?;
    persist(tmp, dest)
}

/// A temp file inside `blobs/`, hashed as it is written; [`HashedTemp::commit`] checks
/// the digest and renames it into place. Dropped uncommitted, the file is removed.
struct HashedTemp {
    file: NamedTempFile,
    hasher: Sha256,
    written: u64,
}

impl HashedTemp {
    fn new(blobs_dir: &Path) -> Result<Self> {
        Ok(HashedTemp {
            file: temp_in(blobs_dir)?,
            hasher: Sha256::new(),
            written: 0,
        })
    }

    fn write_all(&mut self, chunk: &[u8]) -> Result<()> {
        if let Err(e) = self.file.as_file_mut().write_all(chunk) {
            let context = format!("writing {}", self.file.path().display());
            return Err(StoreError::io(context, e));
        }
        self.hasher.update(chunk);
        self.written += chunk.len() as u64;
        Ok(())
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.as_file_mut().write(buf)?;
        self.hasher.update(&buf[..n.min(buf.len())]);
        self.written += n as u64;
        Ok(n)
    }

    /// Verify the digest, fsync and rename into `dest`. Returns the size. On a mismatch
    /// the temp file is removed and the store is left unchanged.
    fn commit(self, expected: &Digest, dest: &Path) -> Result<u64> {
        let got = Digest::from_sha256(self.hasher.finalize().into());
        if &got != expected {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                got,
            });
        }
        let tmp_path = self.file.path().to_path_buf();
        self.file
            .as_file()
            .sync_all()
            .ctx(|| format!("syncing {}", tmp_path.display()))?;
        make_readable(self.file.as_file(), &tmp_path)?;
        persist(self.file, dest)?;
        Ok(self.written)
    }
}

/// Streams a blob into the store. Chunks are hashed as they are written to a temp file
/// inside `blobs/`; [`BlobWriter::commit`] checks the digest and renames the file into
/// place. Dropping the writer without committing removes the temp file.
pub struct BlobWriter {
    temp: HashedTemp,
    expected: Digest,
    dest: PathBuf,
}

impl BlobWriter {
    pub(crate) fn new(blobs_dir: &Path, expected: Digest) -> Result<Self> {
        Ok(BlobWriter {
            temp: HashedTemp::new(blobs_dir)?,
            dest: blobs_dir.join(expected.file_name()),
            expected,
        })
    }

    /// Append a chunk.
    pub fn write_all(&mut self, chunk: &[u8]) -> Result<()> {
        self.temp.write_all(chunk)
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.temp.written
    }

    /// The digest the content must have.
    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    /// Verify the digest, fsync and rename into `blobs/sha256-<hex>`. Returns the size.
    /// On a mismatch the temp file is removed and the store is left unchanged.
    pub fn commit(self) -> Result<u64> {
        self.temp.commit(&self.expected, &self.dest)
    }
}

/// Lets a `BlobWriter` be the target of `std::io::copy`.
impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.temp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temp.file.as_file_mut().flush()
    }
}

/// A blob being downloaded, kept under a fixed name (`blobs/.wick-tmp-partial-<blob>`)
/// so an interrupted download resumes where it stopped: opening it hashes what is
/// already there. Committing checks the digest and renames it into place; a mismatch
/// removes it. Readers never see it (temp-prefixed, swept when stale).
pub struct PartialBlob {
    file: fs::File,
    path: PathBuf,
    hasher: Sha256,
    written: u64,
    expected: Digest,
    dest: PathBuf,
}

impl PartialBlob {
    pub(crate) fn open(blobs_dir: &Path, expected: Digest) -> Result<Self> {
        fs::create_dir_all(blobs_dir).ctx(|| format!("creating {}", blobs_dir.display()))?;
        let path = blobs_dir.join(format!("{TEMP_PREFIX}partial-{}", expected.file_name()));
        let mut file = fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .ctx(|| format!("opening {}", path.display()))?;
        let mut hasher = Sha256::new();
        let written = io::copy(&mut file, &mut HashSink(&mut hasher))
            .ctx(|| format!("reading {}", path.display()))?;
        Ok(PartialBlob {
            file,
            path,
            hasher,
            written,
            dest: blobs_dir.join(expected.file_name()),
            expected,
        })
    }

    /// Bytes already in the file: where a resumed download starts.
    pub fn offset(&self) -> u64 {
        self.written
    }

    /// The digest the content must have.
    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    /// Append a chunk.
    pub fn write_all(&mut self, chunk: &[u8]) -> Result<()> {
        self.file
            .write_all(chunk)
            .ctx(|| format!("writing {}", self.path.display()))?;
        self.hasher.update(chunk);
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Start again from nothing (the source cannot resume, or sent other bytes).
    pub fn restart(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .ctx(|| format!("truncating {}", self.path.display()))?;
        self.hasher = Sha256::new();
        self.written = 0;
        Ok(())
    }

    /// Verify the digest, fsync and rename into `blobs/sha256-<hex>`. Returns the size.
    /// On a mismatch the partial file is removed and the store is left unchanged.
    pub fn commit(self) -> Result<u64> {
        let got = Digest::from_sha256(self.hasher.finalize().into());
        if got != self.expected {
            let _ = fs::remove_file(&self.path);
            return Err(StoreError::DigestMismatch {
                expected: self.expected,
                got,
            });
        }
        self.file
            .sync_all()
            .ctx(|| format!("syncing {}", self.path.display()))?;
        make_readable(&self.file, &self.path)?;
        let parent = self.dest.parent().unwrap_or(Path::new("."));
        fs::rename(&self.path, &self.dest).ctx(|| {
            format!(
                "renaming {} to {}",
                self.path.display(),
                self.dest.display()
            )
        })?;
        sync_dir(parent);
        Ok(self.written)
    }
}

/// A blob pushed to this store whose digest is only named at the end (a registry
/// upload session): chunks are hashed into a temp file; [`Upload::finish`] checks the
/// digest the client names and renames the file into place. Dropped unfinished, the
/// temp file is removed.
pub struct Upload {
    temp: HashedTemp,
    blobs_dir: PathBuf,
}

impl Upload {
    pub(crate) fn new(blobs_dir: &Path) -> Result<Self> {
        fs::create_dir_all(blobs_dir).ctx(|| format!("creating {}", blobs_dir.display()))?;
        Ok(Upload {
            temp: HashedTemp::new(blobs_dir)?,
            blobs_dir: blobs_dir.to_path_buf(),
        })
    }

    /// Append a chunk.
    pub fn write_all(&mut self, chunk: &[u8]) -> Result<()> {
        self.temp.write_all(chunk)
    }

    /// Bytes received so far.
    pub fn bytes_written(&self) -> u64 {
        self.temp.written
    }

    /// Check the content against `expected`, fsync and rename into place. A mismatch
    /// removes the temp file and leaves the store unchanged.
    pub fn finish(self, expected: &Digest) -> Result<u64> {
        self.temp
            .commit(expected, &self.blobs_dir.join(expected.file_name()))
    }
}

/// Feeds what `io::copy` reads into a hasher.
struct HashSink<'a>(&'a mut Sha256);

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commit_good_digest() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"hello blob";
        let digest = Digest::of_bytes(data);
        let mut w = BlobWriter::new(dir.path(), digest.clone()).unwrap();
        w.write_all(&data[..5]).unwrap();
        w.write_all(&data[5..]).unwrap();
        assert_eq!(w.bytes_written(), data.len() as u64);
        assert_eq!(w.commit().unwrap(), data.len() as u64);
        assert_eq!(entries(dir.path()), vec![digest.file_name()]);
        assert_eq!(fs::read(dir.path().join(digest.file_name())).unwrap(), data);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(digest.file_name()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o644);
        }
    }

    #[test]
    fn mismatch_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let expected = Digest::of_bytes(b"something else");
        let mut w = BlobWriter::new(dir.path(), expected.clone()).unwrap();
        std::io::copy(&mut &b"actual"[..], &mut w).unwrap();
        match w.commit() {
            Err(StoreError::DigestMismatch { expected: e, got }) => {
                assert_eq!(e, expected);
                assert_eq!(got, Digest::of_bytes(b"actual"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn drop_without_commit_removes_temp() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = BlobWriter::new(dir.path(), Digest::of_bytes(b"x")).unwrap();
        w.write_all(b"x").unwrap();
        assert_eq!(entries(dir.path()).len(), 1);
        drop(w);
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn atomic_write_creates_dirs_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a/b/c");
        write_atomic(dir.path(), &dest, b"one").unwrap();
        write_atomic(dir.path(), &dest, b"two").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        assert_eq!(entries(dir.path()), vec!["a".to_string()]);
    }

    #[test]
    fn a_partial_blob_resumes_and_commits_only_the_right_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"hello, resumable world";
        let digest = Digest::of_bytes(data);
        let mut p = PartialBlob::open(dir.path(), digest.clone()).unwrap();
        p.write_all(&data[..7]).unwrap();
        drop(p);
        let mut p = PartialBlob::open(dir.path(), digest.clone()).unwrap();
        assert_eq!(p.offset(), 7);
        p.write_all(&data[7..]).unwrap();
        assert_eq!(p.commit().unwrap(), data.len() as u64);
        assert_eq!(fs::read(dir.path().join(digest.file_name())).unwrap(), data);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "the partial file is gone");

        let other = Digest::of_bytes(b"other");
        let mut p = PartialBlob::open(dir.path(), other.clone()).unwrap();
        p.write_all(b"not other").unwrap();
        assert!(matches!(p.commit(), Err(StoreError::DigestMismatch { .. })));
        assert!(!dir.path().join(other.file_name()).exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
