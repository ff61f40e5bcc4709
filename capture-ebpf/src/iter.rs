//! BPF iterators, linked and read with the `bpf()` system call directly.
//!
//! aya 0.14 links an iterator without the map a map iterator
//! (`iter/bpf_sk_storage_map`) needs, and its link is read once. flowsql
//! links each iterator once, when the capture starts, and creates a new
//! reading of it each time it looks (the open connections on every query of
//! `open_flows`; `iter/tcp` in each network namespace, which the reading's
//! creator decides).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `enum bpf_cmd`.
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
/// `enum bpf_attach_type`.
const BPF_TRACE_ITER: u32 = 28;

/// `union bpf_attr`, as much of it as these commands use (the kernel reads
/// `size` bytes and wants the rest of its own union zero).
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    iter_info: u64,
    iter_info_len: u32,
    reserved: [u32; 7],
}

#[repr(C)]
#[derive(Default)]
struct IterCreateAttr {
    link_fd: u32,
    flags: u32,
}

/// `union bpf_iter_link_info`'s map member.
#[repr(C)]
struct IterMapInfo {
    map_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: attr points to a live, initialized #[repr(C)] prefix of
    // union bpf_attr of size_of::<T>() bytes for the whole call; the kernel
    // only reads it (and anything it points to, which outlives the call).
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, (attr as *mut T).cast::<libc::c_void>(), std::mem::size_of::<T>())
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("bpf() returned an impossible descriptor"))?;
    // SAFETY: on success these commands return a new descriptor that
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn raw(fd: BorrowedFd<'_>) -> io::Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::other("negative file descriptor"))
}

/// An iterator program linked, ready to be read any number of times.
#[derive(Debug)]
pub struct IterLink {
    fd: OwnedFd,
}

impl IterLink {
    /// Links the loaded iterator program `prog`; `map` is the map a map
    /// iterator walks.
    pub fn create(prog: BorrowedFd<'_>, map: Option<BorrowedFd<'_>>) -> io::Result<IterLink> {
        let info = map.map(|map| raw(map).map(|map_fd| IterMapInfo { map_fd })).transpose()?;
        let mut attr =
            LinkCreateAttr { prog_fd: raw(prog)?, attach_type: BPF_TRACE_ITER, ..Default::default() };
        if let Some(info) = &info {
            attr.iter_info = (info as *const IterMapInfo) as u64;
            attr.iter_info_len = std::mem::size_of::<IterMapInfo>() as u32;
        }
        Ok(IterLink { fd: bpf(BPF_LINK_CREATE, &mut attr)? })
    }

    /// Runs the iterator once and returns everything it wrote. A network
    /// iterator (`iter/tcp`) walks the network namespace of the calling
    /// thread.
    pub fn read(&self) -> io::Result<Vec<u8>> {
        let mut attr = IterCreateAttr { link_fd: raw(self.fd.as_fd())?, flags: 0 };
        let mut file = File::from(bpf(BPF_ITER_CREATE, &mut attr)?);
        let mut out = Vec::new();
        file.read_to_end(&mut out)?;
        Ok(out)
    }
}
