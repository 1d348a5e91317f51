//! Writing a whole file past the page cache (`O_DIRECT`), for the large files a build writes
//! and does not read back: copying each byte into the cache costs the kernel about as much CPU
//! as encoding it cost the build, while the disk takes it straight from memory.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// What direct I/O asks to be aligned (buffer address, length, file offset): a page, which is a
/// multiple of the logical block size of the disks and file systems a lake lives on.
const ALIGN: usize = 4096;
/// How much one write hands the disk.
pub(super) const CHUNK: usize = 4 << 20;

thread_local! {
    /// An aligned copy of each chunk: the encoded file sits wherever the allocator put it.
    static BOUNCE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Creates `path` holding `bytes`. Where the file system refuses direct writes, or wants an
/// alignment other than a page, the file is written through the cache instead.
pub(super) fn write(path: &Path, bytes: &[u8]) -> io::Result<File> {
    match write_direct(path, bytes) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::debug!(path = %path.display(), "direct write refused, writing through the cache");
            let mut file = File::create(path)?;
            file.write_all(bytes)?;
            Ok(file)
        }
        done => done,
    }
}

/// Writes whole aligned chunks, the last one padded with zeros, then cuts the file to its
/// length. A short write leaves the next one misaligned, which the system refuses with
/// `EINVAL`: the caller then writes the file again through the cache.
fn write_direct(path: &Path, bytes: &[u8]) -> io::Result<File> {
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
