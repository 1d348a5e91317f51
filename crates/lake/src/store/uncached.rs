//! Writing a whole file past the page cache (`O_DIRECT`, on Linux), for the large files a
//! build writes and does not read again in the same run: copying each byte into the cache
//! costs the kernel about as much CPU as encoding it cost the build, while the disk takes it
//! straight from memory. A later run reads such a file from disk.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// How much one write hands the disk.
pub(super) const CHUNK: usize = 4 << 20;

/// Creates `path` holding `bytes`: past the cache where the system allows it, through the
/// cache otherwise (another system than Linux, a file system that refuses direct writes, or one
/// that wants a coarser alignment than 4 KiB).
pub(super) fn write(path: &Path, bytes: &[u8]) -> io::Result<File> {
    match direct::write(path, bytes) {
        Err(e) if direct::refused(&e) => {
            tracing::debug!(path = %path.display(), "direct write refused, writing through the cache");
            let mut file = File::create(path)?;
            file.write_all(bytes)?;
            Ok(file)
        }
        done => done,
    }
}

#[cfg(target_os = "linux")]
pub(super) mod direct {
    use std::cell::RefCell;
    use std::fs::{File, OpenOptions};
    use std::io::{self, Write};
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::Path;

    use super::CHUNK;

    /// What direct I/O asks to be aligned (buffer address, length, file offset): 4 KiB, a
    /// multiple of the logical block size of the disks and file systems a lake lives on.
    const ALIGN: usize = 4096;

    thread_local! {
        /// An aligned copy of each chunk: the encoded file sits wherever the allocator put it.
        static BOUNCE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    /// Whether `e` is the system refusing a direct write (`EINVAL`), which a write through the
    /// cache then replaces.
    pub(in crate::store) fn refused(e: &io::Error) -> bool {
        e.raw_os_error() == Some(libc::EINVAL)
    }

    /// Writes whole aligned chunks, the last one padded with zeros, then cuts the file to its
    /// length. A short write leaves the next one misaligned, which the system refuses with
    /// `EINVAL`: the caller then writes the file again through the cache.
    pub(in crate::store) fn write(path: &Path, bytes: &[u8]) -> io::Result<File> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)?;
        BOUNCE.with_borrow_mut(|buf| {
            if buf.len() < CHUNK + ALIGN {
                *buf = vec![0; CHUNK + ALIGN];
            }
            let start = buf.as_ptr().align_offset(ALIGN);
            let block = &mut buf[start..start + CHUNK];
            for chunk in bytes.chunks(CHUNK) {
                let padded = chunk.len().next_multiple_of(ALIGN);
                block[..chunk.len()].copy_from_slice(chunk);
                block[chunk.len()..padded].fill(0);
                file.write_all(&block[..padded])?;
            }
            io::Result::Ok(())
        })?;
        file.set_len(bytes.len() as u64)?;
        Ok(file)
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) mod direct {
    use std::fs::File;
    use std::io;
    use std::path::Path;

    pub(in crate::store) fn refused(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::Unsupported
    }

    /// No direct writes here: always refused.
    pub(in crate::store) fn write(_: &Path, _: &[u8]) -> io::Result<File> {
        Err(io::ErrorKind::Unsupported.into())
    }
}
