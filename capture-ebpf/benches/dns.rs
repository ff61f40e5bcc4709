//! How many DNS answers per second user space turns into names, and how
//! much memory a full name cache takes.
//!
//! `cargo bench -p flowsql-capture --bench dns` (release). Prints a Markdown
//! table for BENCHMARKS.md.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Instant;

use flowsql_capture::dns::{NameCache, NameCacheConfig, parse_response};

/// A DNS response in wire format, built by hand (what a resolver sends).
fn response(question: &str, cnames: &[&str], addresses: &[IpAddr], ttl: u32) -> Vec<u8> {
    fn name(n: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in n.split('.') {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }
    let answers = cnames.len() + addresses.len();
    let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, answers as u8, 0, 0, 0, 0];
    m.extend(name(question));
    m.extend_from_slice(&[0, 1, 0, 1]);
    let mut owner = question.to_owned();
    for target in cnames {
        m.extend(name(&owner));
        let rdata = name(target);
        m.extend_from_slice(&[0, 5, 0, 1]);
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend(rdata);
        owner = (*target).to_owned();
    }
    for address in addresses {
        m.extend(name(&owner));
        let (kind, rdata): (u16, Vec<u8>) = match address {
            IpAddr::V4(v4) => (1, v4.octets().to_vec()),
            IpAddr::V6(v6) => (28, v6.octets().to_vec()),
        };
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend(rdata);
    }
    m
}

/// A realistic mix: half plain A answers, a quarter CNAME chains to a CDN
/// with two addresses, a quarter AAAA; 10,000 distinct names.
fn answers() -> Vec<Vec<u8>> {
    (0..10_000u32)
        .map(|i| {
            let [_, b, c, d] = i.to_be_bytes();
            let host = format!("host{i}.service{}.example.com", i % 97);
            match i % 4 {
                0 | 1 => response(&host, &[], &[IpAddr::from([10, b, c, d])], 300),
                2 => response(
                    &host,
                    &[&format!("edge{}.cdn.example.net", i % 13), "lb.cdn.example.net"],
                    &[IpAddr::from([172, 16, c, d]), IpAddr::from([172, 17, c, d])],
                    60,
                ),
                _ => response(
                    &host,
                    &[],
                    &[IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, u16::from(c), u16::from(d)])],
                    300,
                ),
            }
        })
        .collect()
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn main() {
    let messages = answers();
    let bytes: usize = messages.iter().map(Vec::len).sum();

    // Parse only.
    let rounds = 50;
    let started = Instant::now();
    for _ in 0..rounds {
        for message in &messages {
            black_box(parse_response(black_box(message)).ok());
        }
    }
    let parse_rate = (rounds * messages.len()) as f64 / started.elapsed().as_secs_f64();

    // Parse, associate, insert (the whole per-answer path).
    let mut cache = NameCache::new(NameCacheConfig::default());
    let started = Instant::now();
    let mut now = 1_000_000_000_000i64;
    for _ in 0..rounds {
        for message in &messages {
            now += 1000;
            if let Ok(answer) = parse_response(message) {
                for a in answer.associations() {
                    cache.insert(a.ip, a.name, now, now + i64::from(a.ttl) * 1_000_000_000);
                }
            }
        }
    }
    let insert_rate = (rounds * messages.len()) as f64 / started.elapsed().as_secs_f64();

    // Lookups on the flow path (hits and misses).
    let lookups = 2_000_000u32;
    let started = Instant::now();
    for i in 0..lookups {
        let [_, b, c, d] = (i % 20_000).to_be_bytes();
        black_box(cache.lookup(IpAddr::from([10, b, c, d]), now));
    }
    let lookup_rate = f64::from(lookups) / started.elapsed().as_secs_f64();

    // A full cache: 65,536 addresses with two names each, memory unbounded
    // so that the address limit is what fills it.
    drop(cache);
    let before = rss_bytes();
    let config = NameCacheConfig { max_bytes: usize::MAX, ..NameCacheConfig::default() };
    let mut full = NameCache::new(config);
    for i in 0..config.max_addresses as u32 {
        let [_, b, c, d] = i.to_be_bytes();
        let ip = IpAddr::from([10, b, c, d]);
        full.insert(ip, format!("host{i}.service{}.example.com", i % 97).into(), 0, i64::MAX / 2);
        full.insert(ip, format!("edge{}.cdn.example.net", i % 13).into(), 0, i64::MAX / 2);
    }
    let after = rss_bytes();
    let stats = full.stats();

    println!("| measure | result |");
    println!("|---|---|");
    println!("| answers in the mix | {} ({} bytes on average) |", messages.len(), bytes / messages.len());
    println!("| parse only | {:.0} answers/s |", parse_rate);
    println!("| parse + associate + cache insert | {:.0} answers/s |", insert_rate);
    println!("| cache lookup (flow path) | {:.0} lookups/s |", lookup_rate);
    println!(
        "| full cache ({} addresses, 2 names each) | {:.1} MiB resident (cache's own accounting: {:.1} MiB; default bound {} MiB) |",
        stats.addresses,
        (after.saturating_sub(before)) as f64 / (1 << 20) as f64,
        stats.bytes as f64 / (1 << 20) as f64,
        NameCacheConfig::default().max_bytes >> 20
    );
}
