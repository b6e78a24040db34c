//! vCPU limits of local replicas through the kernel's CPU controller: each replica in a
//! control group of its own whose CFS quota is its vCPUs (`cpus: 0.5` is 5 ms of CPU
//! time every 10 ms, over all its threads and children), changed in place when its
//! service is resized - the local engine's form of a pod's CPU limit. The period is
//! short so that a small replica's request waits for its quota in slices of a few
//! milliseconds, not tens (a request of 2 ms of CPU on 0.1 vCPU takes about 20 ms, not
//! 2 ms or 92 ms); sizes under 0.1 vCPU, whose quota would be below the kernel's least
//! (1 ms), get a 100 ms period.
//!
//! Both hierarchies are handled: the unified one (cgroup v2, `cpu.max`, the `cpu`
//! controller enabled for the children of `/sys/fs/cgroup`) and the legacy `cpu`
//! hierarchy (cgroup v1, `cpu.cfs_quota_us`). The groups live under
//! `<hierarchy>/pharos-<id>/`, `<id>` naming the server's data directory, so that
//! servers sharing a machine keep apart; a replica's group is `<service>.<replica>`.
//! Writing needs root (or a delegated hierarchy); [`CpuLimits::detect`] says why not.
//!
//! Groups outlive a server while its replicas run (they are adopted at its next start).
//! A group left empty - its server gone with its data directory, or stopped with no
//! replica - is removed by the next server that starts on the machine: at start a
//! server removes every empty `pharos-*` group beside its own (the kernel refuses to
//! remove one that holds a replica's group), and a server whose own group was removed
//! that way makes it again for its next replica.
//!
//! A replica joins its group between fork and exec (it writes `0` to the group's
//! `cgroup.procs`, a descriptor the server opened), so nothing it runs escapes the
//! limit.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The CFS period: a quota is vCPUs times this.
const PERIOD_US: u64 = 10_000;
/// The period of sizes whose quota would be below [`MIN_QUOTA_US`] in [`PERIOD_US`].
const LONG_PERIOD_US: u64 = 100_000;
/// The least quota the kernel takes (1 ms).
const MIN_QUOTA_US: u64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Hierarchy {
    V2,
    V1,
}

/// Where this server's replicas' groups are.
#[derive(Debug, Clone)]
pub struct CpuLimits {
    root: PathBuf,
    kind: Hierarchy,
}

impl CpuLimits {
    /// The groups of the server whose data directory is `data_dir`, created under the
    /// CPU controller's hierarchy mounted at `/sys/fs/cgroup`; an error says why none
    /// can be used.
    pub fn detect(data_dir: &Path) -> Result<Self, String> {
        Self::under(Path::new("/sys/fs/cgroup"), data_dir)
    }

    fn under(mount: &Path, data_dir: &Path) -> Result<Self, String> {
        let id = fnv(data_dir.as_os_str().as_encoded_bytes());
        let name = format!("pharos-{id:016x}");
        let v2 = mount.join("cgroup.controllers");
        let (kind, root) = if v2.is_file() {
            let controllers =
                std::fs::read_to_string(&v2).map_err(|e| format!("{}: {e}", v2.display()))?;
            if !controllers.split_whitespace().any(|c| c == "cpu") {
                return Err(format!(
                    "{}: the cpu controller is not available",
                    v2.display()
                ));
            }
            (Hierarchy::V2, mount.join(name))
        } else if mount.join("cpu/cpu.cfs_quota_us").is_file() {
            (Hierarchy::V1, mount.join("cpu").join(name))
        } else {
            return Err(format!(
                "no CPU controller mounted at {} (neither cgroup v2 nor v1's cpu)",
                mount.display()
            ));
        };
        if kind == Hierarchy::V2 {
            // The children of the mount, and of our group, may use the controller.
            enable_cpu(&mount.join("cgroup.subtree_control"))?;
        }
        let limits = Self { root, kind };
        limits.sweep();
        limits.make_root()?;
        Ok(limits)
    }

    /// This server's group, made (again) if missing.
    fn make_root(&self) -> Result<(), String> {
        mkdir(&self.root)?;
        if self.kind == Hierarchy::V2 {
            enable_cpu(&self.root.join("cgroup.subtree_control"))?;
        }
        Ok(())
    }

    /// Removes the empty `pharos-*` groups beside this server's (the kernel refuses any
    /// that still holds a group); returns how many went.
    fn sweep(&self) -> usize {
        let (Some(parent), Some(own)) = (self.root.parent(), self.root.file_name()) else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(parent) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                n != own
                    && n.to_str().is_some_and(|n| n.starts_with("pharos-"))
                    && e.file_type().is_ok_and(|t| t.is_dir())
            })
            .filter(|e| std::fs::remove_dir(e.path()).is_ok())
            .count()
    }

    /// The group of a service's replica.
    fn group(&self, service: &str, replica: u64) -> PathBuf {
        self.root.join(format!("{service}.{replica}"))
    }

    /// Creates the replica's group with its limit and opens its `cgroup.procs`, for the
    /// replica to join before it runs anything ([`join_in_child`]).
    pub fn prepare(&self, service: &str, replica: u64, cpus: f64) -> Result<std::fs::File, String> {
        let g = self.group(service, replica);
        // This server's group may have been removed while empty (see the module docs).
        if mkdir(&g).is_err() {
            self.make_root()?;
            mkdir(&g)?;
        }
        self.set(service, replica, cpus)?;
        let procs = g.join("cgroup.procs");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .map_err(|e| format!("{}: {e}", procs.display()))
    }

    /// Sets a replica's limit to `cpus` vCPUs.
    pub fn set(&self, service: &str, replica: u64, cpus: f64) -> Result<(), String> {
        let g = self.group(service, replica);
        let (quota, period) = limit_us(cpus);
        match self.kind {
            Hierarchy::V2 => write(&g.join("cpu.max"), &format!("{quota} {period}")),
            Hierarchy::V1 => {
                write(&g.join("cpu.cfs_period_us"), &period.to_string())?;
                write(&g.join("cpu.cfs_quota_us"), &quota.to_string())
            }
        }
    }

    /// The limit a replica's group has now, in vCPUs (None: no group, or no limit).
    pub fn get(&self, service: &str, replica: u64) -> Option<f64> {
        let g = self.group(service, replica);
        let (quota, period) = match self.kind {
            Hierarchy::V2 => {
                let t = std::fs::read_to_string(g.join("cpu.max")).ok()?;
                let mut it = t.split_whitespace();
                (it.next()?.parse().ok()?, it.next()?.parse().ok()?)
            }
            Hierarchy::V1 => (
                read_number(&g.join("cpu.cfs_quota_us"))?,
                read_number(&g.join("cpu.cfs_period_us"))?,
            ),
        };
        (quota > 0.0 && period > 0.0).then(|| quota / period)
    }

    /// Whether process `pid` is in the replica's group.
    pub fn holds(&self, service: &str, replica: u64, pid: i32) -> bool {
        std::fs::read_to_string(self.group(service, replica).join("cgroup.procs"))
            .is_ok_and(|t| t.lines().any(|l| l.trim() == pid.to_string()))
    }

    /// Removes a replica's group (the kernel refuses while a process is in it; a later
    /// call removes it then).
    pub fn remove(&self, service: &str, replica: u64) {
        let _ = std::fs::remove_dir(self.group(service, replica));
    }

    /// Removes this server's group (refused by the kernel while a replica's is in it).
    pub fn remove_all(&self) {
        let _ = std::fs::remove_dir(&self.root);
    }
}

/// The quota for `cpus` vCPUs and its period, in microseconds.
fn limit_us(cpus: f64) -> (u64, u64) {
    let period = if cpus * PERIOD_US as f64 >= MIN_QUOTA_US as f64 {
        PERIOD_US
    } else {
        LONG_PERIOD_US
    };
    let quota = ((cpus * period as f64).round() as u64).max(MIN_QUOTA_US);
    (quota, period)
}

/// In the child, between fork and exec: joins the group whose `cgroup.procs` is open
/// as `fd` (writing `0` moves the writer). Only async-signal-safe calls.
pub fn join_in_child(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: write(2) on a descriptor the parent opened, from a static buffer.
    let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    if n == 1 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn enable_cpu(subtree_control: &Path) -> Result<(), String> {
    let now = std::fs::read_to_string(subtree_control).unwrap_or_default();
    if now.split_whitespace().any(|c| c == "cpu") {
        return Ok(());
    }
    write(subtree_control, "+cpu")
}

/// Creates a group's directory (one already there is fine).
fn mkdir(path: &Path) -> Result<(), String> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn read_number(path: &Path) -> Option<f64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// FNV-1a: a stable name for a data directory.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_are_vcpus_times_the_period_and_never_below_the_kernels_least() {
        assert_eq!(limit_us(1.0), (10_000, 10_000));
        assert_eq!(limit_us(0.25), (2_500, 10_000));
        assert_eq!(limit_us(2.5), (25_000, 10_000));
        assert_eq!(limit_us(0.1), (1_000, 10_000));
        // Below 0.1 vCPU the 10 ms period's quota would be under 1 ms: 100 ms instead.
        assert_eq!(limit_us(0.05), (5_000, 100_000));
        assert_eq!(limit_us(0.001), (MIN_QUOTA_US, 100_000));
    }

    #[test]
    fn servers_on_one_machine_get_their_own_groups() {
        assert_ne!(fnv(b"/var/lib/pharos"), fnv(b"/var/lib/pharos2"));
        assert_eq!(fnv(b"/a"), fnv(b"/a"));
    }

    /// At start a server removes the empty groups other servers left (not one that
    /// holds a replica's group, not what is not pharos's); a server whose group was
    /// removed so makes it again for its next replica. (A plain directory refuses to go
    /// while it holds one, as the kernel does with a group.)
    #[test]
    fn empty_groups_left_behind_are_swept_and_made_again_when_needed() {
        let m = tempfile::tempdir().unwrap();
        let cpu = m.path().join("cpu");
        std::fs::create_dir(&cpu).unwrap();
        std::fs::write(cpu.join("cpu.cfs_quota_us"), "-1").unwrap();
        std::fs::create_dir(cpu.join("pharos-00000000000000aa")).unwrap();
        std::fs::create_dir_all(cpu.join("pharos-00000000000000bb/web.1")).unwrap();
        std::fs::create_dir(cpu.join("other")).unwrap();
        let a = CpuLimits::under(m.path(), Path::new("/srv/a")).unwrap();
        assert!(a.root.is_dir());
        assert!(!cpu.join("pharos-00000000000000aa").exists());
        assert!(cpu.join("pharos-00000000000000bb/web.1").is_dir());
        assert!(cpu.join("other").is_dir());
        // b starts while a has no replica: a's group goes, and comes back with a's next
        // replica's (whose limit files a plain directory does not have).
        let _b = CpuLimits::under(m.path(), Path::new("/srv/b")).unwrap();
        assert!(!a.root.exists());
        assert!(a.prepare("web", 1, 0.5).is_err());
        assert!(a.root.join("web.1").is_dir());
    }

    #[test]
    fn no_controller_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let e = CpuLimits::under(d.path(), Path::new("/x")).unwrap_err();
        assert!(e.contains("no CPU controller"), "{e}");
    }
}
