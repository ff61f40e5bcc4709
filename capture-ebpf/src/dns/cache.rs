//! The in-memory cache from an address to its DNS names, as the host's own
//! resolutions taught them.
//!
//! Each (address, name) pair is valid until its own expiry (answer time plus
//! the TTL of its chain, see [`super::message::Association`]). Names of an
//! address keep the order they were first learned in: for one answer, the
//! question first, then each CNAME toward the address.
//!
//! The cache is bounded in addresses, in names per address and in bytes; when
//! full, the oldest address goes first. A lookup on the flow path is a hash
//! lookup and an `Arc` clone: the list of valid names is built once and shared
//! by every flow until one of its names expires or a new one arrives.
//! IPv4-mapped IPv6 addresses are stored and looked up as IPv4.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use flowsql_event::{DomainList, DomainName, canonical_ip};

/// Limits of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameCacheConfig {
    /// Addresses held at most.
    pub max_addresses: usize,
    /// Names held per address at most (a shared host can have thousands).
    pub max_names_per_address: usize,
    /// Approximate memory held at most, in bytes.
    pub max_bytes: usize,
}

impl Default for NameCacheConfig {
    fn default() -> Self {
        NameCacheConfig { max_addresses: 65_536, max_names_per_address: 32, max_bytes: 16 << 20 }
    }
}

/// Bytes accounted per address and per name, beyond the name's text: the
/// hash map slot, the entry, the eviction queue, the lists and `Arc` headers.
/// Calibrated against resident memory by `benches/dns.rs`.
const ADDRESS_OVERHEAD: usize = 200;
const NAME_OVERHEAD: usize = 88;

#[derive(Debug)]
struct Entry {
    /// Learned names with their expiry (UTC ns), in the order learned.
    names: Vec<(DomainName, i64)>,
    /// The valid names as of `list_from`, shared with flows.
    list: DomainList,
    /// `list` is right for lookups at times in [list_from, list_until).
    list_from: i64,
    list_until: i64,
    /// Position in the eviction queue (matches `NameCache::queue`).
    generation: u64,
    bytes: usize,
}

impl Entry {
    fn rebuild(&mut self, now: i64) {
        let valid: Vec<DomainName> =
            self.names.iter().filter(|(_, expires)| *expires > now).map(|(n, _)| n.clone()).collect();
        self.list = valid.into();
        self.list_from = now;
        // The list changes when the next listed name expires; names that
        // expired before `now` cannot come back on their own.
        self.list_until = self.names.iter().map(|(_, e)| *e).filter(|e| *e > now).min().unwrap_or(i64::MAX);
    }
}

/// Counters of the cache's life, for metrics and status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NameCacheStats {
    pub addresses: usize,
    pub bytes: usize,
    /// Addresses dropped to stay within the limits.
    pub evicted: u64,
    /// Names not stored because their address had `max_names_per_address`.
    pub names_refused: u64,
}

/// Address -> names, with expiry. See the module documentation.
#[derive(Debug)]
pub struct NameCache {
    config: NameCacheConfig,
    entries: HashMap<IpAddr, Entry>,
    /// Addresses in insertion order, with the generation they were queued
    /// at; stale queue items (address since removed or re-queued) are skipped.
    queue: VecDeque<(IpAddr, u64)>,
    next_generation: u64,
    bytes: usize,
    evicted: u64,
    names_refused: u64,
    empty: DomainList,
}

impl NameCache {
    pub fn new(config: NameCacheConfig) -> Self {
        NameCache {
            config,
            entries: HashMap::new(),
            queue: VecDeque::new(),
            next_generation: 0,
            bytes: 0,
            evicted: 0,
            names_refused: 0,
            empty: DomainList::default(),
        }
    }

    pub fn stats(&self) -> NameCacheStats {
        NameCacheStats {
            addresses: self.entries.len(),
            bytes: self.bytes,
            evicted: self.evicted,
            names_refused: self.names_refused,
        }
    }

    /// The names of `ip` valid at `at` (UTC ns), in the order learned; empty
    /// when none. Allocates only when the list changed since the last lookup.
    pub fn lookup(&mut self, ip: IpAddr, at: i64) -> DomainList {
        let ip = canonical_ip(ip);
        let Some(entry) = self.entries.get_mut(&ip) else {
            return self.empty.clone();
        };
        if at < entry.list_from || at >= entry.list_until {
            entry.rebuild(at);
        }
        entry.list.clone()
    }

    /// Learns that `name` is a name of `ip` until `expires` (UTC ns), as of
    /// `now`. A name already known keeps its place and the later expiry.
    pub fn insert(&mut self, ip: IpAddr, name: DomainName, now: i64, expires: i64) {
        if expires <= now {
            return;
        }
        let ip = canonical_ip(ip);
        if !self.entries.contains_key(&ip) {
            self.make_room(now);
            let generation = self.next_generation;
            self.next_generation += 1;
            self.queue.push_back((ip, generation));
            self.entries.insert(
                ip,
                Entry {
                    names: Vec::new(),
                    list: self.empty.clone(),
                    list_from: i64::MIN,
                    list_until: i64::MIN,
                    generation,
                    bytes: ADDRESS_OVERHEAD,
                },
            );
            self.bytes += ADDRESS_OVERHEAD;
        }
        let Some(entry) = self.entries.get_mut(&ip) else { return };
        if let Some(known) = entry.names.iter_mut().find(|(n, _)| *n == name) {
            known.1 = known.1.max(expires);
        } else {
            // Make room among this address's names: expired ones go first.
            if entry.names.len() >= self.config.max_names_per_address {
                let before = entry.bytes;
                entry.names.retain(|(_, e)| *e > now);
                entry.bytes = ADDRESS_OVERHEAD
                    + entry.names.iter().map(|(n, _)| n.len() + NAME_OVERHEAD).sum::<usize>();
                self.bytes = self.bytes + entry.bytes - before;
            }
            if entry.names.len() >= self.config.max_names_per_address {
                self.names_refused += 1;
                return;
            }
            let cost = name.len() + NAME_OVERHEAD;
            entry.names.push((name, expires));
            entry.bytes += cost;
            self.bytes += cost;
        }
        // The shared list is stale from now on.
        entry.list_until = i64::MIN;
        while self.bytes > self.config.max_bytes && self.entries.len() > 1 {
            if !self.evict_oldest(Some(ip)) {
                break;
            }
        }
    }

    /// Drops addresses whose names have all expired by `now`. Cheap enough to
    /// call every second: it walks the queue from the oldest address and
    /// stops at the first one still valid.
    pub fn purge_expired(&mut self, now: i64) {
        while let Some(&(ip, generation)) = self.queue.front() {
            match self.entries.get(&ip) {
                Some(entry) if entry.generation == generation => {
                    if entry.names.iter().any(|(_, e)| *e > now) {
                        break;
                    }
                    self.remove(ip);
                }
                _ => {}
            }
            self.queue.pop_front();
        }
    }

    fn make_room(&mut self, now: i64) {
        if self.entries.len() < self.config.max_addresses {
            return;
        }
        self.purge_expired(now);
        while self.entries.len() >= self.config.max_addresses {
            if !self.evict_oldest(None) {
                break;
            }
        }
    }

    /// Removes the oldest address other than `keep`; false when none is left.
    fn evict_oldest(&mut self, keep: Option<IpAddr>) -> bool {
        while let Some((ip, generation)) = self.queue.pop_front() {
            let current = self.entries.get(&ip).is_some_and(|e| e.generation == generation);
            if !current {
                continue;
            }
            if Some(ip) == keep {
                // Re-queue it at the back under a new generation.
                let generation = self.next_generation;
                self.next_generation += 1;
                if let Some(entry) = self.entries.get_mut(&ip) {
                    entry.generation = generation;
                }
                self.queue.push_back((ip, generation));
                if self.entries.len() == 1 {
                    return false;
                }
                continue;
            }
            self.remove(ip);
            self.evicted += 1;
            return true;
        }
        false
    }

    fn remove(&mut self, ip: IpAddr) {
        if let Some(entry) = self.entries.remove(&ip) {
            self.bytes -= entry.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn names(list: &DomainList) -> Vec<&str> {
        list.iter().map(|n| n.as_ref()).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn names_keep_their_order_and_expire_one_by_one() {
        let mut cache = NameCache::new(NameCacheConfig::default());
        let t0 = 1000 * S;
        cache.insert(ip("192.0.2.1"), "a.test".into(), t0, t0 + S);
        cache.insert(ip("192.0.2.1"), "b.test".into(), t0, t0 + 60 * S);
        cache.insert(ip("192.0.2.1"), "c.test".into(), t0, t0 + 60 * S);
        assert_eq!(names(&cache.lookup(ip("192.0.2.1"), t0)), ["a.test", "b.test", "c.test"]);
        assert_eq!(names(&cache.lookup(ip("192.0.2.1"), t0 + 3 * S)), ["b.test", "c.test"]);
        assert!(cache.lookup(ip("192.0.2.1"), t0 + 61 * S).is_empty());
        assert!(cache.lookup(ip("192.0.2.2"), t0).is_empty());
    }

    #[test]
    fn a_name_learned_twice_is_listed_once_with_the_later_expiry() {
        let mut cache = NameCache::new(NameCacheConfig::default());
        let t0 = 1000 * S;
        cache.insert(ip("192.0.2.1"), "a.test".into(), t0, t0 + 10 * S);
        cache.insert(ip("192.0.2.1"), "b.test".into(), t0, t0 + 10 * S);
        cache.insert(ip("192.0.2.1"), "a.test".into(), t0 + S, t0 + 30 * S);
        assert_eq!(names(&cache.lookup(ip("192.0.2.1"), t0 + 2 * S)), ["a.test", "b.test"]);
        assert_eq!(names(&cache.lookup(ip("192.0.2.1"), t0 + 20 * S)), ["a.test"]);
    }

    #[test]
    fn mapped_ipv6_finds_the_ipv4_entry() {
        let mut cache = NameCache::new(NameCacheConfig::default());
        cache.insert(ip("192.0.2.1"), "a.test".into(), 0, S);
        assert_eq!(names(&cache.lookup(ip("::ffff:192.0.2.1"), 1)), ["a.test"]);
        cache.insert(ip("::ffff:198.51.100.1"), "b.test".into(), 0, S);
        assert_eq!(names(&cache.lookup(ip("198.51.100.1"), 1)), ["b.test"]);
    }

    #[test]
    fn lookups_share_one_list_until_it_changes() {
        let mut cache = NameCache::new(NameCacheConfig::default());
        cache.insert(ip("192.0.2.1"), "a.test".into(), 0, 10 * S);
        let first = cache.lookup(ip("192.0.2.1"), 1);
        let second = cache.lookup(ip("192.0.2.1"), 2);
        assert!(std::sync::Arc::ptr_eq(&first, &second), "no new list per lookup");
        cache.insert(ip("192.0.2.1"), "b.test".into(), 3, 10 * S);
        let third = cache.lookup(ip("192.0.2.1"), 4);
        assert!(!std::sync::Arc::ptr_eq(&first, &third));
        assert_eq!(names(&third), ["a.test", "b.test"]);
    }

    #[test]
    fn a_lookup_before_the_list_was_built_sees_the_right_names() {
        let mut cache = NameCache::new(NameCacheConfig::default());
        cache.insert(ip("192.0.2.1"), "short.test".into(), 0, 5 * S);
        cache.insert(ip("192.0.2.1"), "long.test".into(), 0, 50 * S);
        assert_eq!(names(&cache.lookup(ip("192.0.2.1"), 10 * S)), ["long.test"]);
        // A flow stamped earlier (another CPU) still sees the name it had.
        assert_eq!(names(&cache.lookup(ip("192.0.2.1"), 4 * S)), ["short.test", "long.test"]);
    }

    #[test]
    fn bounded_in_addresses_oldest_first() {
        let config = NameCacheConfig { max_addresses: 3, ..NameCacheConfig::default() };
        let mut cache = NameCache::new(config);
        for i in 1..=5u8 {
            cache.insert(IpAddr::from([192, 0, 2, i]), format!("h{i}.test").into(), 0, 100 * S);
        }
        assert_eq!(cache.stats().addresses, 3);
        assert_eq!(cache.stats().evicted, 2);
        assert!(cache.lookup(ip("192.0.2.1"), 1).is_empty());
        assert_eq!(names(&cache.lookup(ip("192.0.2.5"), 1)), ["h5.test"]);
    }

    #[test]
    fn bounded_in_names_per_address_and_bytes() {
        let config =
            NameCacheConfig { max_names_per_address: 2, max_bytes: 4096, ..NameCacheConfig::default() };
        let mut cache = NameCache::new(config);
        for i in 0..5 {
            cache.insert(ip("192.0.2.1"), format!("n{i}.test").into(), 0, 100 * S);
        }
        assert_eq!(names(&cache.lookup(ip("192.0.2.1"), 1)), ["n0.test", "n1.test"]);
        assert_eq!(cache.stats().names_refused, 3);
        for i in 0..1000u32 {
            let [a, b, c, d] = i.to_be_bytes();
            cache.insert(IpAddr::from([10, b ^ a, c, d]), format!("{i}.test").into(), 0, 100 * S);
        }
        assert!(cache.stats().bytes <= 4096, "{:?}", cache.stats());
        assert!(cache.stats().addresses > 1);
    }

    #[test]
    fn purge_drops_what_has_expired() {
        let mut cache = NameCache::new(NameCacheConfig::default());
        cache.insert(ip("192.0.2.1"), "a.test".into(), 0, S);
        cache.insert(ip("192.0.2.2"), "b.test".into(), 0, 100 * S);
        cache.purge_expired(2 * S);
        assert_eq!(cache.stats().addresses, 1);
        assert_eq!(names(&cache.lookup(ip("192.0.2.2"), 2 * S)), ["b.test"]);
    }
}
