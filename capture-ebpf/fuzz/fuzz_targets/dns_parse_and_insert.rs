//! Fuzzes the path untrusted DNS bytes take through user space: TCP
//! reassembly, parsing, associations, and the name cache.
//!
//! Input: byte 0 picks the transport; for TCP, bytes 1..3 cut the rest into
//! up to three segments (with one retransmission and one gap when asked).
//! Invariants: no panic, no hang, and every name the cache hands out is
//! printable ASCII.
#![no_main]

use flowsql_capture::dns::tcp::{Segment, StreamKey, TcpDnsStreams};
use flowsql_capture::dns::{NameCache, NameCacheConfig, parse_response};
use libfuzzer_sys::fuzz_target;

fn learn(message: &[u8], cache: &mut NameCache) {
    let Ok(answer) = parse_response(message) else { return };
    assert!(answer.question.chars().all(|c| c.is_ascii_graphic()));
    for association in answer.associations() {
        assert!(association.name.chars().all(|c| c.is_ascii_graphic()), "{:?}", association.name);
        let expires = i64::from(association.ttl).saturating_mul(1_000_000_000);
        cache.insert(association.ip, association.name, 0, expires);
        for name in cache.lookup(association.ip, 1).iter() {
            assert!(name.chars().all(|c| c.is_ascii_graphic()));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let config = NameCacheConfig { max_addresses: 64, max_names_per_address: 8, max_bytes: 64 << 10 };
    let mut cache = NameCache::new(config);
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 || rest.len() < 3 {
        learn(rest, &mut cache);
        return;
    }
    let (cuts, stream) = rest.split_at(3);
    let mut streams = TcpDnsStreams::new();
    let key = StreamKey {
        src: "127.0.0.1:53".parse().expect("literal"),
        dst: "127.0.0.1:40000".parse().expect("literal"),
        egress: false,
    };
    let mut points: Vec<usize> = cuts.iter().map(|&c| usize::from(c) % (stream.len() + 1)).collect();
    points.push(0);
    points.push(stream.len());
    points.sort_unstable();
    let base = u32::from_le_bytes([cuts[0], cuts[1], cuts[2], mode]);
    for (i, window) in points.windows(2).enumerate() {
        let (start, end) = (window[0], window[1]);
        if mode & 2 != 0 && i == 1 {
            continue; // a lost segment
        }
        let bytes = &stream[start..end];
        // Sometimes the kernel copied only part of the segment.
        let copied = if mode & 4 != 0 { &bytes[..bytes.len() / 2] } else { bytes };
        let segment = Segment { seq: base.wrapping_add(start as u32), bytes: copied, length: bytes.len() };
        let mut messages = Vec::new();
        streams.push(key, segment, |m, _| messages.push(m.to_vec()));
        if mode & 8 != 0 {
            streams.push(key, segment, |m, _| messages.push(m.to_vec())); // retransmitted
        }
        for message in messages {
            learn(&message, &mut cache);
        }
    }
});
