//! Sockets older than the capture: when it starts, `iter/tcp` gives storage
//! to the watched cgroup's TCP sockets that have none (in every network
//! namespace: it walks the namespace of the thread that reads it), so that
//! the connections they accept or end are followed; and the process holding
//! each one is looked up in `/proc` at once, before it can go, and written
//! into the record's `owner` (the kernel cannot know who called `connect()`
//! or `listen()` before it watched).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::abi::{self, EventHeader, Process, SocketEvent};
use crate::iter::IterLink;
use crate::loader::split_records;

/// The network namespaces of the host, each once: this process's, those of
/// every process, and the named ones (`ip netns`).
fn network_namespaces() -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    let mut found = Vec::new();
    let mut consider = |path: PathBuf| {
        if let Ok(metadata) = std::fs::metadata(&path)
            && seen.insert((metadata.dev(), metadata.ino()))
        {
            found.push(path);
        }
    };
    consider(PathBuf::from("/proc/thread-self/ns/net"));
    for dir in ["/proc", "/run/netns"] {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if dir == "/proc" {
                if name.to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) {
                    consider(entry.path().join("ns/net"));
                }
            } else {
                consider(entry.path());
            }
        }
    }
    found
}

/// Runs `iter/tcp` in every network namespace: the watched cgroup's sockets
/// older than the capture get storage, and are returned as records. On a
/// thread of its own, which enters each namespace in turn and then ends.
fn walk(link: &IterLink) -> Vec<Vec<u8>> {
    let namespaces = network_namespaces();
    let started = std::time::Instant::now();
    let walked = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut records = Vec::new();
                let mut entered = 0usize;
                for (i, path) in namespaces.iter().enumerate() {
                    if i > 0 {
                        let file = match File::open(path) {
                            Ok(file) => file,
                            Err(error) => {
                                tracing::debug!(path = %path.display(), %error, "network namespace gone");
                                continue;
                            }
                        };
                        // SAFETY: file is an open namespace descriptor for the
                        // whole call; setns changes only this thread's
                        // network namespace, and this thread ends after the walk.
                        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                            tracing::debug!(path = %path.display(), error = %io::Error::last_os_error(), "cannot enter network namespace");
                            continue;
                        }
                    }
                    match link.read() {
                        Ok(bytes) => {
                            entered += 1;
                            records.extend(split_records(&bytes));
                        }
                        Err(error) => tracing::warn!(path = %path.display(), %error, "cannot list the sockets of a network namespace"),
                    }
                }
                (records, entered)
            })
            .join()
    });
    match walked {
        Ok((records, namespaces)) => {
            tracing::info!(sockets = records.len(), namespaces, took = ?started.elapsed(), "sockets older than the capture adopted");
            records
        }
        Err(_) => {
            tracing::error!("the thread adopting existing sockets panicked");
            Vec::new()
        }
    }
}

/// Adopts the sockets older than the capture and names who holds them: the
/// records for the reader to hand out first.
pub(crate) fn adopt(link: &IterLink) -> Vec<Vec<u8>> {
    let mut records = walk(link);
    if records.is_empty() {
        return records;
    }
    let holders = socket_holders();
    let mut named = 0usize;
    for record in &mut records {
        if let Some(owner) = owner_of(record, &holders) {
            named += 1;
            write_owner(record, &owner);
        }
    }
    tracing::info!(
        sockets = records.len(),
        named,
        "owners of sockets older than the capture looked up in /proc"
    );
    records
}

/// The process that holds the socket of an adopted record, if it is known.
fn owner_of(record: &[u8], holders: &HashMap<u64, Vec<u32>>) -> Option<Process> {
    let event = match abi::decode(record) {
        Ok(abi::KernelRecord::Socket(event)) => event,
        _ => return None,
    };
    let pid = common_ancestor(holders.get(&event.socket_inode)?)?;
    proc_process(pid)
}

/// Writes `owner` into the record's `socket.owner` (the record is a
/// `SocketEvent` as the kernel wrote it).
fn write_owner(record: &mut [u8], owner: &Process) {
    let offset = std::mem::offset_of!(SocketEvent, socket) + std::mem::offset_of!(abi::Socket, owner);
    let size = std::mem::size_of::<Process>();
    if record.len() < offset + size || record.len() < std::mem::size_of::<EventHeader>() {
        return;
    }
    // SAFETY: Process is #[repr(C)] plain data without padding (its layout
    // test proves it), so its bytes are initialized; the range was checked.
    let bytes = unsafe { std::slice::from_raw_parts((owner as *const Process).cast::<u8>(), size) };
    record[offset..offset + size].copy_from_slice(bytes);
}

/// The kernel's encoding of a device number (`major << 20 | minor`), from
/// user space's (`st_dev`).
pub(crate) fn kernel_dev(dev: u64) -> u32 {
    (libc::major(dev) << 20) | libc::minor(dev)
}

/// What `/proc` says of a process, as the kernel would have recorded it:
/// its id, real uid, its leader's name and its executable's identity.
fn proc_process(pid: u32) -> Option<Process> {
    let name = std::fs::read(format!("/proc/{pid}/comm")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let mut comm = [0u8; 16];
    let name = name.strip_suffix(b"\n").unwrap_or(&name);
    let len = name.len().min(15);
    comm[..len].copy_from_slice(&name[..len]);
    let exe = std::fs::metadata(format!("/proc/{pid}/exe")).ok();
    Some(Process {
        tgid: pid,
        uid,
        exe_ino: exe.as_ref().map_or(0, MetadataExt::ino),
        exe_dev: exe.as_ref().map_or(0, |m| kernel_dev(m.dev())),
        reserved: 0,
        comm,
    })
}

fn proc_parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: the name may hold anything, the ppid
    // follows the last ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// The processes (thread groups) holding each socket, by the socket's
/// inode, from `/proc/*/fd`.
fn socket_holders() -> HashMap<u64, Vec<u32>> {
    let mut holders: HashMap<u64, Vec<u32>> = HashMap::new();
    let Ok(processes) = std::fs::read_dir("/proc") else { return holders };
    for process in processes.flatten() {
        let Some(pid) = process.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            let entry = holders.entry(inode).or_default();
            if !entry.contains(&pid) {
                entry.push(pid);
            }
        }
    }
    holders
}

/// The process that owns a socket several processes hold: the one that is
/// an ancestor of all the others (a pre-fork server's parent, which opened
/// it before forking), if there is one.
fn common_ancestor(holders: &[u32]) -> Option<u32> {
    match holders {
        [] => None,
        [only] => Some(*only),
        _ => holders.iter().copied().find(|&candidate| {
            holders.iter().all(|&other| {
                let mut pid = other;
                for _ in 0..64 {
                    if pid == candidate {
                        return true;
                    }
                    match proc_parent(pid) {
                        Some(parent) if parent != 0 && parent != pid => pid = parent,
                        _ => return false,
                    }
                }
                false
            })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_found_holding_its_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", listener.as_raw_fd())).expect("fd").ino();
        let holders = socket_holders();
        let pid = common_ancestor(&holders[&inode]).expect("one holder");
        assert_eq!(pid, std::process::id());
        let process = proc_process(pid).expect("in /proc");
        let exe = std::fs::metadata("/proc/self/exe").expect("exe");
        assert_eq!((process.exe_ino, process.exe_dev), (exe.ino(), kernel_dev(exe.dev())));
    }

    #[test]
    fn a_parent_holding_what_its_children_hold_owns_it() {
        let me = std::process::id();
        let parent = proc_parent(me).expect("a parent");
        assert_eq!(common_ancestor(&[me, parent]), Some(parent));
        assert_eq!(common_ancestor(&[]), None);
    }
}
