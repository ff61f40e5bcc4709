//! Dropping the capabilities `flowsql capture` no longer needs once its
//! programs are attached.
//!
//! Loading and attaching need `CAP_BPF` (or `CAP_SYS_ADMIN`) and
//! `CAP_NET_ADMIN`. After that, the capture works through file descriptors
//! it already holds: the ring buffer is memory mapped, detaching a bpf_link
//! is closing it, and only reading the counters map is a `bpf()` call
//! (`BPF_MAP_LOOKUP_ELEM`), which needs no capability on kernels from 6.5 on
//! but `CAP_BPF` on older kernels where `kernel.unprivileged_bpf_disabled`
//! is set. Rather than guess from version numbers, the capture asks the
//! kernel: a helper thread drops its own capabilities (they are per thread)
//! and reads the counters; the smallest set with which that works is kept.
//! Kernels before 5.7 attach without bpf_link, and detaching then needs
//! `CAP_NET_ADMIN`, which is kept there.
//!
//! Then, for this thread and every thread it starts afterwards (the store
//! writer, the scheduled export, the runtime's blocking pool):
//! `PR_SET_NO_NEW_PRIVS`, every other capability removed from the bounding
//! set (when `CAP_SETPCAP` allows), the ambient set cleared, and the
//! effective, permitted and inheritable sets reduced to what is kept.

use std::io;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// This thread's capability sets, as 64-bit masks (effective, permitted).
fn capget() -> io::Result<(u64, u64)> {
    let mut header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget reads the header and writes two CapData (the v3
    // layout) to the pointers, which point to live locals of those types.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |low: u32, high: u32| u64::from(low) | (u64::from(high) << 32);
    Ok((join(data[0].effective, data[1].effective), join(data[0].permitted, data[1].permitted)))
}

/// Sets this thread's effective and permitted sets to `caps` (which must be
/// permitted now) and its inheritable set to nothing.
fn capset(caps: &[u32]) -> io::Result<()> {
    let mask = caps.iter().fold(0u64, |mask, &cap| mask | (1 << cap));
    let (low, high) = (mask as u32, (mask >> 32) as u32);
    let mut header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
    let data = [
        CapData { effective: low, permitted: low, inheritable: 0 },
        CapData { effective: high, permitted: high, inheritable: 0 },
    ];
    // SAFETY: capset reads the header and two CapData (the v3 layout) from
    // the pointers, which point to live locals of those types.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: these prctl options take integer arguments only.
    let rc = unsafe { libc::prctl(option, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The highest capability number this kernel knows.
fn last_capability() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(40)
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers =
        release.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    let found = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    found >= (major, minor)
}

/// A capability's name.
pub fn name(cap: u32) -> &'static str {
    match cap {
        CAP_NET_ADMIN => "CAP_NET_ADMIN",
        CAP_SYS_ADMIN => "CAP_SYS_ADMIN",
        CAP_BPF => "CAP_BPF",
        _ => "CAP_?",
    }
}

/// Why capabilities were not (all) dropped.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("cannot read this process's capabilities")]
    Read(#[source] io::Error),
    #[error("reading the capture's maps fails even with CAP_BPF kept: capabilities not dropped")]
    NothingWorks,
    #[error("cannot set no_new_privs")]
    NoNewPrivs(#[source] io::Error),
    #[error("cannot reduce the capability bounding set")]
    BoundingSet(#[source] io::Error),
    #[error("cannot clear the ambient capabilities")]
    Ambient(#[source] io::Error),
    #[error("cannot drop capabilities")]
    Drop(#[source] io::Error),
    #[error("after dropping capabilities, the capture's maps cannot be read")]
    Lost,
}

/// What [`drop_after_attach`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The capabilities kept (effective and permitted).
    pub kept: Vec<u32>,
    /// Whether the bounding set was reduced too (needs `CAP_SETPCAP`).
    pub bounding_set: bool,
}

impl Dropped {
    pub fn kept_names(&self) -> String {
        if self.kept.is_empty() {
            "none".to_owned()
        } else {
            self.kept.iter().map(|&c| name(c)).collect::<Vec<_>>().join(", ")
        }
    }
}

/// Runs `works` on a helper thread whose capabilities are only `caps`.
fn works_with(caps: &[u32], works: &(dyn Fn() -> bool + Sync)) -> bool {
    std::thread::scope(|scope| scope.spawn(|| capset(caps).is_ok() && works()).join().unwrap_or(false))
}

/// Keeps the fewest capabilities with which `works` (a read of the
/// capture's maps) still succeeds, and drops every other one from this
/// thread for good (see the module documentation).
pub fn drop_after_attach(works: &(dyn Fn() -> bool + Sync)) -> Result<Dropped, PrivilegeError> {
    let (_, permitted) = capget().map_err(PrivilegeError::Read)?;
    let has = |cap: u32| permitted & (1 << cap) != 0;
    // Without bpf_link (before 5.7), detaching is BPF_PROG_DETACH.
    let base: Vec<u32> = if kernel_at_least(5, 7) { Vec::new() } else { vec![CAP_NET_ADMIN] };
    let mut candidates = vec![base.clone()];
    for cap in [CAP_BPF, CAP_SYS_ADMIN] {
        if has(cap) {
            let mut with = base.clone();
            with.push(cap);
            candidates.push(with);
        }
    }
    let keep = candidates
        .into_iter()
        .map(|mut caps| {
            caps.retain(|&c| has(c));
            caps
        })
        .find(|caps| works_with(caps, works))
        .ok_or(PrivilegeError::NothingWorks)?;
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(PrivilegeError::NoNewPrivs)?;
    let mut bounding_set = true;
    for cap in 0..=last_capability() {
        if keep.contains(&cap) {
            continue;
        }
        match prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap)) {
            Ok(()) => {}
            // Without CAP_SETPCAP the bounding set stays; with no_new_privs
            // and nothing ever executed, it grants nothing anyway.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                bounding_set = false;
                break;
            }
            // A number this kernel does not know.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(PrivilegeError::BoundingSet(e)),
        }
    }
    prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong)
        .map_err(PrivilegeError::Ambient)?;
    capset(&keep).map_err(PrivilegeError::Drop)?;
    if !works() {
        return Err(PrivilegeError::Lost);
    }
    Ok(Dropped { kept: keep, bounding_set })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_compare() {
        assert!(kernel_at_least(2, 6));
        assert!(!kernel_at_least(99, 0));
    }

    #[test]
    fn a_helper_thread_drops_only_its_own_capabilities() {
        let before = capget().expect("capget");
        // The helper thread has no capability; this thread keeps its own.
        assert!(works_with(&[], &|| capget().is_ok_and(|(eff, prm)| eff == 0 && prm == 0)));
        assert_eq!(capget().expect("capget"), before);
    }
}
