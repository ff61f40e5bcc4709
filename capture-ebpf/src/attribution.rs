//! Naming what the kernel identifies by number: a process's executable by
//! its (device, inode), a cgroup by its id, and the owner of a socket older
//! than the capture. Each name is learned when it comes into being (an exec,
//! a cgroup's creation, both reported by the kernel through the ring buffer
//! ahead of the flows that need them), so a row carries what was true at the
//! time even when the process or cgroup is gone before the row is read.
//!
//! Every cache is bounded in entries (the oldest entry goes first) and
//! reports its size in [`AttributionStats`]; what cannot be named is counted,
//! never guessed.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use flowsql_event::Attribution;

use crate::abi::Process;
use crate::existing::kernel_dev;

/// Bounds of the caches, in entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributionLimits {
    pub cgroups: usize,
    pub executables: usize,
    pub names: usize,
    pub precapture_owners: usize,
}

impl Default for AttributionLimits {
    fn default() -> Self {
        AttributionLimits { cgroups: 65_536, executables: 16_384, names: 4_096, precapture_owners: 65_536 }
    }
}

/// What the attribution side did and holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttributionStats {
    /// Rows (begins and ends) whose process could not be named.
    pub unattributed: u64,
    /// Rows whose socket's cgroup had no known path.
    pub cgroup_unknown: u64,
    /// Rows whose process's executable could not be named.
    pub executable_unknown: u64,
    /// Entries in the caches, and roughly the memory they hold.
    pub entries: usize,
    pub bytes: usize,
}

/// A map that keeps at most `max` entries, dropping the oldest insertion.
#[derive(Debug)]
pub struct Bounded<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    max: usize,
}

impl<K: Hash + Eq + Clone, V> Bounded<K, V> {
    pub fn new(max: usize) -> Self {
        Bounded { map: HashMap::new(), order: VecDeque::new(), max: max.max(1) }
    }

    /// Inserts or replaces; returns the key of the entry evicted to make
    /// room, if one was.
    pub fn insert(&mut self, key: K, value: V) -> Option<K> {
        if let Some(slot) = self.map.get_mut(&key) {
            *slot = value;
            return None;
        }
        let mut evicted = None;
        while self.map.len() >= self.max {
            match self.order.pop_front() {
                Some(old) => {
                    if self.map.remove(&old).is_some() {
                        evicted = Some(old);
                    }
                }
                None => break,
            }
        }
        self.order.push_back(key.clone());
        self.map.insert(key, value);
        evicted
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        // Its place in `order` goes when it reaches the front.
        self.map.remove(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values()
    }
}

/// The container runtime's id in a cgroup path, when a component follows a
/// runtime's naming: `docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope` (systemd drivers, also inside
/// kubepods slices), `/docker/<id>` and `/kubepods/.../<id>` (cgroupfs
/// drivers). Ids are 64 hex digits; the innermost match wins.
pub fn container_id(cgroup_path: &str) -> Option<&str> {
    let is_id = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let components: Vec<&str> = cgroup_path.split('/').filter(|c| !c.is_empty()).collect();
    for (i, component) in components.iter().enumerate().rev() {
        if let Some(scope) = component.strip_suffix(".scope") {
            for prefix in ["docker-", "cri-containerd-", "crio-", "libpod-"] {
                if let Some(id) = scope.strip_prefix(prefix)
                    && is_id(id)
                {
                    return Some(id);
                }
            }
            continue;
        }
        if is_id(component) && components[..i].iter().any(|c| *c == "docker" || c.starts_with("kubepods")) {
            return Some(component);
        }
    }
    None
}

/// A cgroup's path and container id.
#[derive(Debug, Clone)]
struct CgroupName {
    path: Arc<str>,
    container: Arc<str>,
}

impl CgroupName {
    fn new(path: &str) -> Self {
        CgroupName { path: path.into(), container: container_id(path).unwrap_or("").into() }
    }
}

/// The (device, inode) of `/proc/<pid>/exe` and its path.
fn proc_exe(pid: u32) -> Option<((u32, u64), String)> {
    let link = format!("/proc/{pid}/exe");
    let path = std::fs::read_link(&link).ok()?;
    let metadata = std::fs::metadata(&link).ok()?;
    let path = path.to_str()?.to_owned();
    Some(((kernel_dev(metadata.dev()), metadata.ino()), path))
}

/// See the module documentation.
#[derive(Debug)]
pub struct Attributor {
    cgroups: Bounded<u64, CgroupName>,
    executables: Bounded<(u32, u64), Arc<str>>,
    names: Bounded<[u8; 16], Arc<str>>,
    /// Owners of sockets older than the capture, by socket cookie.
    precapture: Bounded<u64, Attribution>,
    stats: AttributionStats,
}

impl Attributor {
    /// Learns the cgroups of the unified hierarchy (mounted at `cgroup_root`,
    /// if any) and the executables of the running processes.
    pub fn new(limits: AttributionLimits, cgroup_root: Option<&Path>) -> Self {
        let mut attributor = Attributor {
            cgroups: Bounded::new(limits.cgroups),
            executables: Bounded::new(limits.executables),
            names: Bounded::new(limits.names),
            precapture: Bounded::new(limits.precapture_owners),
            stats: AttributionStats::default(),
        };
        if let Some(root) = cgroup_root {
            attributor.learn_cgroups(root);
        }
        attributor.learn_running_executables();
        attributor
    }

    /// An attributor that knows nothing yet (tests).
    pub fn empty(limits: AttributionLimits) -> Self {
        Attributor::new(limits, None)
    }

    /// Walks the hierarchy: a cgroup's id is its directory's inode number.
    fn learn_cgroups(&mut self, root: &Path) {
        let mut stack = vec![(root.to_owned(), String::from("/"))];
        while let Some((dir, path)) = stack.pop() {
            if self.cgroups.len() >= self.cgroups.max {
                tracing::debug!("more cgroups than the cache holds: the rest are named as they are used");
                return;
            }
            let Ok(metadata) = std::fs::metadata(&dir) else { continue };
            self.cgroups.insert(metadata.ino(), CgroupName::new(&path));
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir())
                    && let Some(name) = entry.file_name().to_str()
                {
                    let child = if path == "/" { format!("/{name}") } else { format!("{path}/{name}") };
                    stack.push((entry.path(), child));
                }
            }
        }
    }

    fn learn_running_executables(&mut self) {
        let Ok(processes) = std::fs::read_dir("/proc") else { return };
        for process in processes.flatten() {
            if let Some(pid) = process.file_name().to_str().and_then(|p| p.parse::<u32>().ok())
                && let Some((key, path)) = proc_exe(pid)
            {
                self.executables.insert(key, path.into());
            }
        }
    }

    /// An exec record: the names from the file up to the root, leaf first,
    /// each NUL-terminated; `truncated` when some are missing (the path is
    /// then not learned: a partial path is not the executable's).
    pub fn learn_exec(&mut self, exe_dev: u32, exe_ino: u64, names: &[u8], truncated: bool) {
        if truncated {
            return;
        }
        let components: Vec<&[u8]> = names.split(|&b| b == 0).filter(|c| !c.is_empty()).collect();
        let mut path = String::new();
        for component in components.iter().rev() {
            path.push('/');
            path.push_str(&String::from_utf8_lossy(component));
        }
        if path.is_empty() {
            path.push('/');
        }
        self.executables.insert((exe_dev, exe_ino), path.into());
    }

    /// A cgroup appeared or was renamed. A removed cgroup stays known (its
    /// sockets may outlive it) until newer ones push it out.
    pub fn learn_cgroup(&mut self, id: u64, path: &str) {
        self.cgroups.insert(id, CgroupName::new(path));
    }

    /// The cgroup's path and container id, if known.
    pub fn cgroup(&self, id: u64) -> Option<(Arc<str>, Arc<str>)> {
        self.cgroups.get(&id).map(|c| (Arc::clone(&c.path), Arc::clone(&c.container)))
    }

    fn name(&mut self, comm: &[u8; 16]) -> Arc<str> {
        if let Some(name) = self.names.get(comm) {
            return Arc::clone(name);
        }
        let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
        let name: Arc<str> = String::from_utf8_lossy(&comm[..end]).into();
        self.names.insert(*comm, Arc::clone(&name));
        name
    }

    /// The path of the executable with this identity; for a process still
    /// running whose exec came before the capture, read from `/proc`.
    fn executable(&mut self, process: &Process) -> Arc<str> {
        let key = (process.exe_dev, process.exe_ino);
        if process.exe_ino == 0 {
            return Arc::default();
        }
        if let Some(path) = self.executables.get(&key) {
            return Arc::clone(path);
        }
        match proc_exe(process.tgid) {
            Some((found, path)) if found == key => {
                let path: Arc<str> = path.into();
                self.executables.insert(key, Arc::clone(&path));
                path
            }
            _ => Arc::default(),
        }
    }

    /// Who a row names: the process the kernel recorded on the socket, or,
    /// for a socket older than the capture, the one found holding it (by
    /// `cookie`); and the socket's cgroup.
    pub fn attribute(&mut self, process: &Process, cookie: u64, cgroup_id: u64) -> Attribution {
        let mut attribution = if process.known() {
            let executable = self.executable(process);
            if executable.is_empty() && process.exe_ino != 0 {
                self.stats.executable_unknown += 1;
            }
            Attribution {
                process_id: Some(process.tgid),
                process_name: self.name(&process.comm),
                user_id: Some(process.uid),
                executable,
                ..Attribution::default()
            }
        } else {
            match self.precapture.get(&cookie) {
                Some(known) => known.clone(),
                None => {
                    self.stats.unattributed += 1;
                    Attribution::default()
                }
            }
        };
        match self.cgroup(cgroup_id) {
            Some((path, container)) => {
                attribution.cgroup_path = path;
                attribution.container_id = container;
            }
            None => self.stats.cgroup_unknown += 1,
        }
        attribution
    }

    /// A socket older than the capture, adopted when it started: the process
    /// found holding it then (`process`, filled from `/proc` by the loader;
    /// unknown when none or several unrelated ones held it).
    pub fn learn_precapture_socket(&mut self, cookie: u64, process: &Process) {
        if !process.known() {
            return;
        }
        let mut attribution = self.attribute(process, 0, 0);
        // Only the process: the cgroup is the socket's, taken at each row.
        self.stats.cgroup_unknown = self.stats.cgroup_unknown.saturating_sub(1);
        attribution.cgroup_path = Arc::default();
        attribution.container_id = Arc::default();
        self.precapture.insert(cookie, attribution);
    }

    pub fn stats(&self) -> AttributionStats {
        let strings = |s: &str| s.len() + 16;
        let bytes =
            self.cgroups.values().map(|c| strings(&c.path) + strings(&c.container) + 32).sum::<usize>()
                + self.executables.values().map(|p| strings(p) + 24).sum::<usize>()
                + self.names.values().map(|n| strings(n) + 24).sum::<usize>()
                + self
                    .precapture
                    .values()
                    .map(|a| strings(&a.process_name) + strings(&a.executable) + 64)
                    .sum::<usize>();
        AttributionStats {
            entries: self.cgroups.len() + self.executables.len() + self.names.len() + self.precapture.len(),
            bytes,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn container_ids_by_runtime_naming() {
        let cases = [
            (format!("/system.slice/docker-{ID}.scope"), Some(ID)),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{ID}.scope"
                ),
                Some(ID),
            ),
            (format!("/machine.slice/libpod-{ID}.scope/container"), Some(ID)),
            (format!("/crio-{ID}.scope"), Some(ID)),
            (format!("/docker/{ID}"), Some(ID)),
            (format!("/kubepods/besteffort/pod5e3b/{ID}"), Some(ID)),
            ("/system.slice/nginx.service".to_owned(), None),
            ("/user.slice/user-1000.slice/session-2.scope".to_owned(), None),
            ("/system.slice/docker-abc.scope".to_owned(), None),
            (format!("/srv/{ID}"), None),
            ("/".to_owned(), None),
        ];
        for (path, want) in cases {
            assert_eq!(container_id(&path), want, "{path}");
        }
    }

    #[test]
    fn bounded_drops_the_oldest() {
        let mut map = Bounded::new(2);
        assert_eq!(map.insert(1, "a"), None);
        assert_eq!(map.insert(2, "b"), None);
        assert_eq!(map.insert(1, "A"), None, "replacing is not evicting");
        assert_eq!(map.insert(3, "c"), Some(1));
        assert_eq!(map.get(&1), None);
        assert_eq!(map.get(&2), Some(&"b"));
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn exec_paths_read_leaf_first() {
        let mut a = Attributor::empty(AttributionLimits::default());
        a.learn_exec(7, 9, b"netpeer\0debug\0target\0work\0", false);
        a.learn_exec(7, 10, b"x\0", true);
        let process = Process {
            tgid: 1,
            uid: 0,
            exe_ino: 9,
            exe_dev: 7,
            reserved: 0,
            comm: *b"netpeer\0\0\0\0\0\0\0\0\0",
        };
        let attribution = a.attribute(&process, 0, 0);
        assert_eq!(&*attribution.executable, "/work/target/debug/netpeer");
        assert_eq!(&*attribution.process_name, "netpeer");
        assert_eq!((attribution.process_id, attribution.user_id), (Some(1), Some(0)));
        let unknown = Process { exe_ino: 10, tgid: u32::MAX - 1, ..process };
        assert_eq!(&*a.attribute(&unknown, 0, 0).executable, "", "a truncated path is not learned");
        assert_eq!(a.stats().executable_unknown, 1);
        assert_eq!(a.stats().cgroup_unknown, 2);
    }

    #[test]
    fn unknown_owners_are_counted_not_guessed() {
        let mut a = Attributor::empty(AttributionLimits::default());
        a.learn_cgroup(5, &format!("/system.slice/docker-{ID}.scope"));
        let attribution = a.attribute(&Process::default(), 42, 5);
        assert_eq!(attribution.process_id, None);
        assert_eq!(&*attribution.container_id, ID);
        assert_eq!(a.stats().unattributed, 1);
    }

    #[test]
    fn owners_of_older_sockets_are_named_by_cookie() {
        let mut a = Attributor::empty(AttributionLimits::default());
        let owner =
            Process { tgid: 42, uid: 7, exe_ino: 0, exe_dev: 0, reserved: 0, comm: *b"redis-server\0\0\0\0" };
        a.learn_precapture_socket(99, &owner);
        a.learn_cgroup(3, "/system.slice/redis.service");
        let attribution = a.attribute(&Process::default(), 99, 3);
        assert_eq!((attribution.process_id, attribution.user_id), (Some(42), Some(7)));
        assert_eq!(&*attribution.process_name, "redis-server");
        assert_eq!(&*attribution.cgroup_path, "/system.slice/redis.service");
        assert_eq!(a.stats().cgroup_unknown, 0);
    }
}
