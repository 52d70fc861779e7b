//! A model file's bytes, memory-mapped read-only where the OS allows it: the weights
//! run straight from the shared page cache (a reload is instant and the process's RSS
//! is the file's pages, as with llama.cpp), and nothing is copied at load.
//!
//! A mapped file that is truncated or rewritten under the server would make reads of
//! the mapping fault (SIGBUS). On Linux, wick takes a read lease on the file
//! (`F_SETLEASE`): the kernel holds back anyone who opens it for writing or truncates
//! it and tells wick first (SIGIO); wick then swaps the mapping for a private copy of
//! the same bytes (`mremap` over it, atomic for the threads reading it) and releases
//! the lease, so the loaded model keeps running on the bytes it was loaded from. Where
//! no lease can be had (another process has the file open for writing, the file
//! belongs to another user, not Linux), the file is copied into memory at load instead.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use crate::error::{EngineError, Result};

/// The bytes of a model file, mapped or copied.
pub struct ModelFile {
    inner: Backing,
}

enum Backing {
    #[cfg(target_os = "linux")]
    Mapped(Arc<lease::LeasedMap>),
    Copied(Vec<u8>),
}

impl ModelFile {
    /// Map `file` (opened from `path`) if it can be guarded, else read it whole.
    pub fn open(path: &Path, file: File) -> Result<Self> {
        let io = |source| EngineError::Io {
            path: path.display().to_string(),
            source,
        };
        #[cfg(target_os = "linux")]
        {
            match lease::LeasedMap::new(file, path) {
                Ok(map) => {
                    return Ok(Self {
                        inner: Backing::Mapped(map),
                    })
                }
                Err((file, why)) => {
                    tracing::info!(path = %path.display(), reason = %why, "model file copied into memory instead of mapped");
                    return Self::copy(file).map_err(io);
                }
            }
        }
        #[allow(unreachable_code)]
        Self::copy(file).map_err(io)
    }

    fn copy(mut file: File) -> std::io::Result<Self> {
        let mut bytes = Vec::new();
        // From the start, whatever the descriptor's position (a header may have been
        // read through it).
        file.seek(SeekFrom::Start(0))?;
        file.read_to_end(&mut bytes)?;
        Ok(Self {
            inner: Backing::Copied(bytes),
        })
    }

    /// Whether the bytes are the mapped file (not a copy).
    pub fn is_mapped(&self) -> bool {
        match &self.inner {
            #[cfg(target_os = "linux")]
            Backing::Mapped(m) => !m.is_private(),
            Backing::Copied(_) => false,
        }
    }
}

impl AsRef<[u8]> for ModelFile {
    fn as_ref(&self) -> &[u8] {
        match &self.inner {
            #[cfg(target_os = "linux")]
            Backing::Mapped(m) => m.bytes(),
            Backing::Copied(v) => v,
        }
    }
}

#[cfg(target_os = "linux")]
mod lease {
    //! The read lease and the swap to a private copy (Linux only).

    use std::fs::File;
    use std::os::fd::AsRawFd;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, OnceLock, Weak};

    /// Every leased mapping alive, for the SIGIO watcher.
    static LEASED: Mutex<Vec<Weak<LeasedMap>>> = Mutex::new(Vec::new());
    /// The SIGIO watcher thread, started once (its error, if it could not start).
    static WATCHER: OnceLock<Result<(), String>> = OnceLock::new();

    pub(super) struct LeasedMap {
        file: File,
        path: PathBuf,
        ptr: *mut libc::c_void,
        len: usize,
        /// The mapping now holds a private copy: the file is no longer read.
        private: AtomicBool,
        /// Serializes the swap with itself.
        swap: Mutex<()>,
    }

    // SAFETY: the mapping is read-only and lives as long as the value; the swap
    // replaces it with identical bytes atomically (mremap under the mm lock).
    unsafe impl Send for LeasedMap {}
    unsafe impl Sync for LeasedMap {}

    impl LeasedMap {
        /// Map `file` and take a read lease on it; on failure, the file back and why.
        pub fn new(file: File, path: &Path) -> Result<Arc<Self>, (File, String)> {
            let len = match file.metadata() {
                Ok(m) => m.len() as usize,
                Err(e) => return Err((file, e.to_string())),
            };
            if len == 0 {
                return Err((file, "empty file".into()));
            }
            if let Err(e) = WATCHER.get_or_init(start_watcher) {
                return Err((file, format!("no SIGIO watcher: {e}")));
            }
            // SAFETY: a fresh read-only shared mapping of an open file; checked below.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err((file, format!("mmap: {}", std::io::Error::last_os_error())));
            }
            // SAFETY: fcntl on our own open descriptor.
            let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) };
            if r != 0 {
                let why = format!("no read lease: {}", std::io::Error::last_os_error());
                // SAFETY: unmapping the mapping made above, used by nothing.
                unsafe { libc::munmap(ptr, len) };
                return Err((file, why));
            }
            let map = Arc::new(LeasedMap {
                file,
                path: path.to_path_buf(),
                ptr,
                len,
                private: AtomicBool::new(false),
                swap: Mutex::new(()),
            });
            let mut leased = LEASED.lock().unwrap_or_else(|p| p.into_inner());
            leased.retain(|w| w.strong_count() > 0);
            leased.push(Arc::downgrade(&map));
            drop(leased);
            // A break that came before the map was on the list sent its SIGIO to
            // nobody: look once ourselves.
            map.on_break();
            // Read ahead in the background; the first forward pass faults in the rest.
            // SAFETY: advice on our own mapping.
            unsafe { libc::madvise(map.ptr, map.len, libc::MADV_WILLNEED) };
            Ok(map)
        }

        pub fn bytes(&self) -> &[u8] {
            // SAFETY: `ptr..ptr+len` is mapped readable for the value's lifetime (the
            // swap keeps the address range and the bytes).
            unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
        }

        pub fn is_private(&self) -> bool {
            self.private.load(Ordering::Acquire)
        }

        /// The lease is being broken (someone opens the file for writing or truncates
        /// it): copy the bytes privately over the mapping, then let them go ahead.
        fn on_break(&self) {
            let _one = self.swap.lock().unwrap_or_else(|p| p.into_inner());
            let fd = self.file.as_raw_fd();
            // SAFETY: fcntl on our own open descriptor.
            let lease = unsafe { libc::fcntl(fd, libc::F_GETLEASE) };
            if lease == libc::F_RDLCK || self.is_private() {
                return;
            }
            match self.make_private() {
                Ok(()) => tracing::warn!(
                    path = %self.path.display(),
                    "model file is being changed on disk; the loaded model keeps a private copy"
                ),
                Err(e) => tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    "model file is being changed on disk and could not be copied"
                ),
            }
            // SAFETY: fcntl on our own open descriptor.
            unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
        }

        fn make_private(&self) -> std::io::Result<()> {
            // SAFETY: a new anonymous mapping, filled from ours (still intact: the
            // writer waits for the lease), made read-only, then moved over ours in one
            // mremap, which readers see as the same bytes before and after.
            unsafe {
                let copy = libc::mmap(
                    std::ptr::null_mut(),
                    self.len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if copy == libc::MAP_FAILED {
                    return Err(std::io::Error::last_os_error());
                }
                std::ptr::copy_nonoverlapping(self.ptr as *const u8, copy as *mut u8, self.len);
                libc::mprotect(copy, self.len, libc::PROT_READ);
                let moved = libc::mremap(
                    copy,
                    self.len,
                    self.len,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                    self.ptr,
                );
                if moved == libc::MAP_FAILED {
                    let e = std::io::Error::last_os_error();
                    libc::munmap(copy, self.len);
                    return Err(e);
                }
            }
            self.private.store(true, Ordering::Release);
            Ok(())
        }
    }

    impl Drop for LeasedMap {
        fn drop(&mut self) {
            // SAFETY: our own mapping (file-backed or the private copy), unmapped once.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }

    /// A thread that wakes on SIGIO (a lease break) and handles every broken lease.
    fn start_watcher() -> Result<(), String> {
        let mut signals =
            signal_hook::iterator::Signals::new([libc::SIGIO]).map_err(|e| e.to_string())?;
        std::thread::Builder::new()
            .name("wick-lease".into())
            .spawn(move || {
                for _ in signals.forever() {
                    let maps: Vec<Arc<LeasedMap>> = LEASED
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .filter_map(Weak::upgrade)
                        .collect();
                    for m in maps {
                        m.on_break();
                    }
                }
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn truncating_a_mapped_file_leaves_the_loaded_bytes_intact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("model.gguf");
        let want: Vec<u8> = (0..3 * 4096 + 17).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &want).expect("write");
        let mf = ModelFile::open(&path, File::open(&path).expect("open")).expect("map");
        assert!(mf.is_mapped(), "a file we own is mapped under a lease");
        let bytes: &[u8] = mf.as_ref();
        assert_eq!(bytes, &want[..]);
        // Opening for writing waits for wick to copy the bytes privately.
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .expect("open for writing");
        w.write_all(b"something else").expect("write");
        drop(w);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 14);
        assert!(!mf.is_mapped(), "now a private copy");
        assert_eq!(mf.as_ref(), &want[..], "the loaded bytes did not change");
    }

    #[test]
    fn a_file_open_for_writing_is_copied_instead() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("model.gguf");
        std::fs::write(&path, b"0123456789").expect("write");
        let _writer = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open for writing");
        let mut file = File::open(&path).expect("open");
        let mut head = [0u8; 4];
        file.read_exact(&mut head).expect("read a header");
        let mf = ModelFile::open(&path, file).expect("copy");
        assert!(!mf.is_mapped());
        assert_eq!(mf.as_ref(), b"0123456789");
    }
}
