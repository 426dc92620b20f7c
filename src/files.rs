//! File helpers the SDK and its tools share: writing so that a crash never leaves a
//! half-written file (write a temporary file in the same directory, flush it to disk, then
//! rename it over the target: atomic on POSIX and on NTFS for same-volume renames), and
//! reading with a size bound.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Distinguishes the temporaries of concurrent writes from one process.
static NEXT_TEMPORARY: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically: readers see the old file or the new one, never a mix,
/// even if the process is killed mid-write. Concurrent writers of one path (threads or
/// processes) each write their own temporary; the last rename wins. A temporary left by a
/// killed writer is removed by the next successful write of the same path (on Linux, where
/// `/proc` tells whether its process is gone).
///
/// # Errors
/// [`Error::Io`] when the directory is not writable or the disk is full; the target is then
/// untouched and the temporary file removed.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{} is not a file path", path.display())))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT_TEMPORARY.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable (a power cut could otherwise undo it).
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })?;
    remove_stale_temporaries(dir, &name);
    Ok(())
}

/// Removes the temporaries of `name` in `dir` whose writing process no longer runs.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let Ok(file) = entry.file_name().into_string() else {
            continue;
        };
        let pid = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|rest| rest.split('.').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        let gone = |pid: u32| {
            cfg!(target_os = "linux")
                && pid != std::process::id()
                && !Path::new(&format!("/proc/{pid}")).exists()
        };
        if pid.is_some_and(gone) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Reads a whole file of at most `max_bytes` (`what` names it in the error). Reads at most
/// `max_bytes + 1` bytes, so a file that grows after it was opened cannot pass the bound.
///
/// # Errors
/// [`Error::Io`] when it cannot be read; [`Error::LimitExceeded`] when it is larger.
pub fn read_file_limited(path: &Path, max_bytes: u64, what: &str) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(Error::LimitExceeded(format!(
            "{}: {what} larger than {max_bytes} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("mgecl-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("out.bin");
        write_file(&target, b"old").unwrap();
        write_file(&target, b"new contents").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new contents");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(write_file(&dir.join("missing-dir/x.bin"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_writers_of_one_path_never_mix() {
        let dir = std::env::temp_dir().join(format!("mgecl-atomic-mt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("shared.bin");
        std::thread::scope(|scope| {
            for t in 0..8u8 {
                let target = &target;
                scope.spawn(move || {
                    for _ in 0..20 {
                        write_file(target, &vec![t; 64 << 10]).unwrap();
                    }
                });
            }
        });
        let bytes = std::fs::read(&target).unwrap();
        assert_eq!(bytes.len(), 64 << 10);
        assert!(bytes.iter().all(|&b| b == bytes[0]), "a mix of writers");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn removes_temporaries_of_dead_writers_only() {
        let dir = std::env::temp_dir().join(format!("mgecl-atomic-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // No process has pid u32::MAX (Linux caps pids at 2^22); pid 1 always runs.
        let dead = dir.join(format!(".out.bin.{}.0.tmp", u32::MAX));
        let alive = dir.join(".out.bin.1.0.tmp");
        let other = dir.join(format!(".other.bin.{}.0.tmp", u32::MAX));
        for p in [&dead, &alive, &other] {
            std::fs::write(p, b"partial").unwrap();
        }
        write_file(&dir.join("out.bin"), b"whole").unwrap();
        assert!(!dead.exists() && alive.exists() && other.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bounded_read_refuses_one_byte_over() {
        let dir = std::env::temp_dir().join(format!("mgecl-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ten.bin");
        std::fs::write(&path, [7u8; 10]).unwrap();
        assert_eq!(
            read_file_limited(&path, 10, "test file").unwrap(),
            [7u8; 10]
        );
        let err = read_file_limited(&path, 9, "test file").unwrap_err();
        assert!(
            matches!(err, Error::LimitExceeded(ref m) if m.contains("test file")),
            "{err}"
        );
        let err = read_file_limited(&dir.join("missing"), 9, "test file").unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
