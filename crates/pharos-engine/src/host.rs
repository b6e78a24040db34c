//! What the server and every engine do on this machine, written once: the atomic
//! write, a free port, the installation's id, the retry back-off, and a lock that
//! outlives a panic.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Writes `path` through a synced temporary file and a rename: never half a file. The
/// temporary file is made new (whatever was at its name removed first, and never
/// opened through a link), so a directory a learner can also write (a job's, mounted
/// into its pods) cannot turn the write into one of another file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    {
        // O_CREAT|O_EXCL: fails on anything at the name, a link included.
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// Reads `path` only if it is a regular file itself (not through a link), at most
/// `limit` bytes of it; None when it is missing, a link or anything else.
pub fn read_own_file(path: &Path, limit: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut out = Vec::new();
    f.take(limit).read_to_end(&mut out).ok()?;
    Some(out)
}

/// The id of the installation whose data lives in `data_dir`: 8 random hex digits made
/// at the first start and kept in `<data_dir>/installation-id`.
pub fn installation_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("installation-id");
    if let Ok(id) = fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(id);
        }
    }
    fs::create_dir_all(data_dir)?;
    let mut bytes = [0u8; 4];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_atomic(&path, id.as_bytes())?;
    Ok(id)
}

/// A free TCP port on `host` (the OS picks it; another process may take it before it is
/// used, which the caller's bind then reports).
pub fn free_port(host: &str) -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind((host, 0))?;
    Ok(l.local_addr()?.port())
}

/// Exponential back-off: `base` after the first failure, doubling with each further
/// one, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// 1 s, 2 s, 4 s, ... up to `max_s` seconds.
    pub const fn seconds(max_s: u64) -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(max_s),
        }
    }

    /// The wait after `failures` failures in a row (none: no wait).
    pub fn after(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 2f64.powi((failures - 1).min(62) as i32);
        let wait = self.base.as_secs_f64() * factor;
        if wait.is_finite() && wait < self.max.as_secs_f64() {
            Duration::from_secs_f64(wait)
        } else {
            self.max
        }
    }
}

/// A mutex whose holder panicked is still used: what it guards is plain data that every
/// writer leaves consistent between statements (counters, maps, caches), and one failed
/// request must not take the server down with it.
pub trait LockExt<T> {
    fn lock_or_recover(&self) -> MutexGuard<'_, T>;
}

impl<T> LockExt<T> for Mutex<T> {
    fn lock_or_recover(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_its_base_up_to_its_cap() {
        let b = Backoff::seconds(30);
        let waits: Vec<u64> = (0..8).map(|n| b.after(n).as_secs()).collect();
        assert_eq!(waits, vec![0, 1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.after(u32::MAX), Duration::from_secs(30));
        let b = Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(3),
        };
        assert_eq!(b.after(3), Duration::from_secs(2));
        assert_eq!(b.after(4), Duration::from_secs(3));
    }

    #[test]
    fn an_atomic_write_leaves_the_old_file_or_the_new_one() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        assert_ne!(free_port("127.0.0.1").unwrap(), 0);
    }

    #[test]
    fn a_lock_whose_holder_panicked_is_still_used() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("the holder fails");
        })
        .join();
        assert!(m.is_poisoned());
        *m.lock_or_recover() += 1;
        assert_eq!(*m.lock_or_recover(), 2);
    }
}
