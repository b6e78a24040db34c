//! Isolation of the code tenants run on the local backend (learners and replicas).
//!
//! When the server runs as root, each tenant's processes run as a user and group of
//! their own (ids handed out from `sandbox.uid_base`, recorded in the store), with no
//! supplementary groups and with rlimits on processes, open files and core dumps. The
//! server's own files (the store, tokens, logs, supervisor state, replica records) are
//! owner-only, so tenant code cannot read or forge them, and it cannot signal the server
//! or another tenant's processes. Where the server itself must touch a directory a
//! tenant can write (unpacking a model, storing results, a local data store's path), it
//! does so with the tenant's filesystem ids ([`as_user`]), so that a link the tenant
//! planted cannot send the server's writes or reads elsewhere.
//!
//! Without root there is no isolation on the local backend (docs/SECURITY.md).

use std::path::Path;

use crate::config::{SandboxConfig, SandboxMode};

/// The user and group a tenant's processes run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// RLIMIT_NPROC (per user) and RLIMIT_NOFILE.
    pub max_processes: u64,
    pub max_open_files: u64,
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether every directory from `/` down to `dir` lets other users pass (o+x).
pub fn reachable_by_others(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(dir) = std::path::absolute(dir) else {
        return false;
    };
    dir.ancestors().all(|a| {
        std::fs::metadata(a)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

/// Whether other users can reach the directory of this executable (where
/// `pharos-replica` and `pharos-sgd` are found).
fn exe_reachable() -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(reachable_by_others))
        .unwrap_or(false)
}

/// Whether tenants' code runs sandboxed, decided once at start: `Ok(true)` when it
/// does, `Ok(false)` with the reason logged when `auto` falls back, an error when
/// `users` cannot be had.
pub fn decide(config: &SandboxConfig, data_dir: &Path) -> anyhow::Result<(bool, String)> {
    let root = is_root();
    // The data directory's own mode is the server's to set; its parents must let
    // others pass.
    let reachable = data_dir.parent().is_none_or(reachable_by_others);
    match config.mode {
        SandboxMode::Off => Ok((false, "sandbox.mode is off".into())),
        SandboxMode::Users => {
            anyhow::ensure!(
                root,
                "sandbox.mode users: the server must run as root to start tenants' code as other users"
            );
            anyhow::ensure!(
                reachable,
                "sandbox.mode users: other users cannot reach the data directory {} (a parent directory lacks o+x)",
                data_dir.display()
            );
            Ok((true, "tenants' code runs as per-tenant users".into()))
        }
        SandboxMode::Auto if !root => Ok((
            false,
            "the server does not run as root: learners and replicas run as the server's own user, with no isolation".into(),
        )),
        SandboxMode::Auto if !reachable => Ok((
            false,
            format!(
                "other users cannot reach the data directory {} (a parent lacks o+x): learners and replicas run as the server's own user, with no isolation",
                data_dir.display()
            ),
        )),
        SandboxMode::Auto if !exe_reachable() => Ok((
            false,
            "other users cannot reach the directory of the pharos executable (its example workloads would not start): learners and replicas run as the server's own user, with no isolation".into(),
        )),
        SandboxMode::Auto => Ok((true, "tenants' code runs as per-tenant users".into())),
    }
}

/// Gives `path` (a directory the server just made) to `run_as` with `mode`; without a
/// sandbox only sets the mode.
pub fn own(path: &Path, run_as: Option<RunAs>, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(r) = run_as {
        std::os::unix::fs::lchown(path, Some(r.uid), Some(r.gid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Makes `path` belong to the server, readable by `run_as`'s group (mode 0750), or
/// owner-only without a sandbox.
pub fn server_dir_readable_by(path: &Path, run_as: Option<RunAs>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match run_as {
        Some(r) => {
            std::os::unix::fs::lchown(path, None, Some(r.gid))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o750))
        }
        None => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)),
    }
}

/// Runs `f` with this thread's filesystem user and group set to `run_as` (the rest of
/// the process keeps its ids), restored afterwards; without a sandbox just runs `f`.
/// `f` must not wait on other tasks: it runs on the calling thread only.
pub fn as_user<T>(run_as: Option<RunAs>, f: impl FnOnce() -> T) -> T {
    let Some(r) = run_as else {
        return f();
    };
    struct Restore(u32, u32);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: setfsuid/setfsgid only change this thread's filesystem ids.
            unsafe {
                libc::setfsuid(self.0);
                libc::setfsgid(self.1);
            }
        }
    }
    // SAFETY: as above; the previous ids are returned and restored by the guard.
    let (old_uid, old_gid) = unsafe {
        let g = libc::setfsgid(r.gid) as u32;
        let u = libc::setfsuid(r.uid) as u32;
        (u, g)
    };
    let _restore = Restore(old_uid, old_gid);
    f()
}

/// For `Command::pre_exec` in the child, after std has set the user and group
/// (`CommandExt::uid`/`gid`, which also drop supplementary groups): the rlimits.
/// Only async-signal-safe calls.
pub fn limit_child(r: &RunAs) -> std::io::Result<()> {
    let set = |res, n: u64| {
        let lim = libc::rlimit {
            rlim_cur: n,
            rlim_max: n,
        };
        // SAFETY: setrlimit with a valid struct.
        if unsafe { libc::setrlimit(res, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    set(libc::RLIMIT_NPROC, r.max_processes)?;
    set(libc::RLIMIT_NOFILE, r.max_open_files)?;
    set(libc::RLIMIT_CORE, 0)?;
    Ok(())
}

/// Sets the user, group and rlimits of a command that runs tenant code.
pub fn confine(cmd: &mut std::process::Command, run_as: Option<RunAs>) {
    use std::os::unix::process::CommandExt;
    if let Some(r) = run_as {
        cmd.uid(r.uid).gid(r.gid);
        // SAFETY: limit_child makes only async-signal-safe calls.
        unsafe {
            cmd.pre_exec(move || limit_child(&r));
        }
    }
}

/// Raises this process's open-file limit to its hard limit (a server holds a
/// descriptor per connection).
pub fn raise_open_files() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_under_a_private_one_is_not_reachable() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let inner = t.path().join("a/b");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!reachable_by_others(&inner));
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(t.path().join("a"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o711)).unwrap();
        assert_eq!(
            reachable_by_others(&inner),
            reachable_by_others(std::path::Path::new("/tmp"))
        );
    }

    /// Files written inside `as_user` belong to that user; the thread's ids come back.
    #[test]
    fn as_user_writes_as_the_tenant_and_restores() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let r = RunAs {
            uid: 54_321,
            gid: 54_321,
            max_processes: 64,
            max_open_files: 64,
        };
        own(t.path(), Some(r), 0o700).unwrap();
        as_user(Some(r), || std::fs::write(t.path().join("f"), b"x")).unwrap();
        let m = std::fs::metadata(t.path().join("f")).unwrap();
        assert_eq!((m.uid(), m.gid()), (54_321, 54_321));
        // A root-only file is out of the tenant's reach inside as_user, in reach after.
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), b"s").unwrap();
        std::fs::set_permissions(
            secret.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        assert!(as_user(Some(r), || std::fs::read(secret.path())).is_err());
        assert!(std::fs::read(secret.path()).is_ok());
    }
}
