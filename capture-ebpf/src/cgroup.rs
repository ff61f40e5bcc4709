//! Finding and checking cgroup v2 directories.
//!
//! The unified hierarchy is wherever `/proc/mounts` says a `cgroup2` file
//! system is mounted (`/sys/fs/cgroup` on most systems, `/sys/fs/cgroup/unified`
//! on hybrid ones): never assumed.

use std::path::{Path, PathBuf};

/// `CGROUP2_SUPER_MAGIC` from linux/magic.h.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read /proc/mounts")]
    Mounts(#[source] std::io::Error),
    #[error("no cgroup v2 hierarchy is mounted (no cgroup2 entry in /proc/mounts)")]
    NoUnifiedHierarchy,
    #[error("cgroup {0} does not exist")]
    Missing(PathBuf),
    #[error("{0} is not a cgroup v2 directory")]
    NotCgroup2(PathBuf),
    #[error("cannot inspect cgroup {path}")]
    Inspect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The mount point of the cgroup v2 (unified) hierarchy.
pub fn unified_mount() -> Result<PathBuf, CgroupError> {
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(CgroupError::Mounts)?;
    unified_mount_in(&mounts).ok_or(CgroupError::NoUnifiedHierarchy)
}

/// The first `cgroup2` mount point in the text of `/proc/mounts`.
pub fn unified_mount_in(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_device, mount_point, fs_type) = (fields.next()?, fields.next()?, fields.next()?);
        (fs_type == "cgroup2").then(|| PathBuf::from(unescape_mount_field(mount_point)))
    })
}

/// `/proc/mounts` writes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4].iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks that `path` is a directory of a cgroup v2 file system.
pub fn check_cgroup2_dir(path: &Path) -> Result<(), CgroupError> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| CgroupError::NotCgroup2(path.to_owned()))?;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: c_path is a valid NUL-terminated string and stat points to
    // writable memory the size of a statfs; statfs only writes into it.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        return Err(match error.kind() {
            std::io::ErrorKind::NotFound => CgroupError::Missing(path.to_owned()),
            _ => CgroupError::Inspect { path: path.to_owned(), source: error },
        });
    }
    // SAFETY: statfs returned 0, so it filled the whole struct.
    let stat = unsafe { stat.assume_init() };
    #[expect(clippy::useless_conversion, reason = "f_type is i64 on x86_64 but narrower elsewhere")]
    let f_type = i64::from(stat.f_type);
    if f_type != CGROUP2_SUPER_MAGIC || !path.is_dir() {
        return Err(CgroupError::NotCgroup2(path.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unified_mount_in_a_hybrid_layout() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(unified_mount_in(mounts), Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn finds_nothing_without_cgroup2() {
        assert_eq!(unified_mount_in("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"), None);
        assert_eq!(unified_mount_in(""), None);
    }

    #[test]
    fn unescapes_octal_in_mount_points() {
        let mounts = "none /mnt/my\\040cgroups cgroup2 rw 0 0\n";
        assert_eq!(unified_mount_in(mounts), Some(PathBuf::from("/mnt/my cgroups")));
    }

    #[test]
    fn a_plain_directory_is_not_a_cgroup() {
        let dir = std::env::temp_dir();
        assert!(matches!(check_cgroup2_dir(&dir), Err(CgroupError::NotCgroup2(_))));
        let missing = dir.join("flowsql-no-such-cgroup");
        assert!(matches!(check_cgroup2_dir(&missing), Err(CgroupError::Missing(_))));
    }
}
