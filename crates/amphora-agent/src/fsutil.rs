//! Durable file-system writes: every piece of state the agent keeps is
//! replaced atomically (temporary file in the same directory, fsync, rename,
//! fsync of the directory), so a crash or power loss leaves either the old
//! or the new content, never a torn file.
//!
//! Each fsync can take milliseconds (much more on a busy disk), and an
//! amphora with one vCPU has one runtime worker: async code calls the
//! `*_async` forms, which do the same on tokio's blocking pool, so TLS
//! handshakes, `/info` and heartbeats go on meanwhile. A caller that is
//! cancelled does not cancel the write: it completes on its own.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, PermissionsExt};
use std::path::Path;

/// The longest part of the final name a temporary file name repeats.
const TEMP_NAME_MAX: usize = 200;

/// Replaces `path` with `data`, with permission bits `mode`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent(path)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    // The temporary name adds 12 bytes to the final one: a name near the
    // file system's limit (255) is shortened in it.
    let mut cut = name.len().min(TEMP_NAME_MAX);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", &name[..cut]))
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Runs blocking file-system work on tokio's blocking pool and waits for it.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// [`write_atomic`] off the runtime.
pub async fn write_atomic_async(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let (path, data) = (path.to_owned(), data.to_vec());
    blocking(move || write_atomic(&path, &data, mode)).await
}

/// [`rename_durable`] off the runtime.
pub async fn rename_durable_async(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (from.to_owned(), to.to_owned());
    blocking(move || rename_durable(&from, &to)).await
}

/// [`sync_dir`] off the runtime.
pub async fn sync_dir_async(dir: &Path) -> io::Result<()> {
    let dir = dir.to_owned();
    blocking(move || sync_dir(&dir)).await
}

/// Whether an error means the file system has no room left (or the quota
/// is used up).
pub fn is_full(error: &io::Error) -> bool {
    // `tempfile` wraps the OS error (adding the path), keeping its kind.
    error.kind() == io::ErrorKind::StorageFull || matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Rewrites an existing small file in place, for a file system too full to
/// take the replacement [`write_atomic`] needs. Refused unless `data` fits
/// in the file's current length, so no block is allocated: one write at
/// offset 0 of a file of one block, then fsync. Only a record that must
/// change on a full disk uses it (a stop must be remembered).
pub fn overwrite_in_place(path: &Path, data: &[u8]) -> io::Result<()> {
    let file = fs::OpenOptions::new().write(true).open(path)?;
    if data.len() as u64 > file.metadata()?.len() {
        return Err(io::Error::from_raw_os_error(libc::ENOSPC));
    }
    file.write_all_at(data, 0)?;
    file.set_len(data.len() as u64)?;
    file.sync_all()
}

/// Renames `from` to `to` and makes the rename durable.
pub fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    sync_dir(parent(to)?)
}

/// Flushes a directory's entries (creations, renames, removals) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Creates `dir` (and missing parents) with permission bits `mode`.
pub fn create_dir_all(dir: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(mode).create(dir)
}

/// Removes a file; a file that is already gone is not an error.
pub fn remove_file_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes a directory tree; a tree that is already gone is not an error.
pub fn remove_dir_all_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn parent(path: &Path) -> io::Result<&Path> {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_content_and_sets_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("haproxy.cfg");
        write_atomic(&path, b"one", 0o600).expect("write");
        write_atomic(&path, b"two", 0o600).expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> =
            fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("haproxy.cfg")]);
    }

    #[test]
    fn names_at_the_file_system_limit_can_be_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(format!("{}.pem", "x".repeat(251)));
        write_atomic(&path, b"data", 0o600).expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"data");
    }

    #[test]
    fn overwriting_in_place_never_grows_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("record");
        write_atomic(&path, b"{\"desired\":\"running\"}", 0o600).expect("write");
        overwrite_in_place(&path, b"{\"desired\":\"stopped\"}").expect("same length");
        assert_eq!(fs::read(&path).expect("read"), b"{\"desired\":\"stopped\"}");
        overwrite_in_place(&path, b"{}").expect("shorter");
        assert_eq!(fs::read(&path).expect("read"), b"{}");
        assert!(is_full(&overwrite_in_place(&path, b"{\"longer\":1}").expect_err("longer")));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn async_forms_write_durably_from_a_single_threaded_runtime() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (staged, path) = (dir.path().join("staged"), dir.path().join("final"));
        write_atomic_async(&staged, b"content", 0o640).await.expect("write");
        rename_durable_async(&staged, &path).await.expect("rename");
        sync_dir_async(dir.path()).await.expect("sync");
        assert_eq!(fs::read(&path).expect("read"), b"content");
        assert!(!staged.exists());
        assert_eq!(fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o640);
        let missing = write_atomic_async(&dir.path().join("no/such/dir/file"), b"x", 0o600).await;
        assert_eq!(missing.expect_err("no directory").kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn removing_missing_things_is_fine() {
        let dir = tempfile::tempdir().expect("tempdir");
        remove_file_if_exists(&dir.path().join("nope")).expect("file");
        remove_dir_all_if_exists(&dir.path().join("nope")).expect("dir");
    }
}
