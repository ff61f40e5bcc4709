//! Reassembling DNS messages from the TCP segments the kernel copied.
//!
//! Over TCP each DNS message is preceded by its length (2 bytes, RFC 1035
//! 4.2.2), and a message or even its length may be split across segments.
//! Segments of one direction of one connection form a stream, ordered by
//! sequence number. A retransmitted segment is skipped; when bytes are missing
//! (a lost copy, or a segment longer than the kernel copies), the message they
//! belonged to is handed over as far as it goes and marked incomplete, and the
//! stream picks up again at the next message boundary it can compute.
//!
//! Memory is bounded: streams are few (the least recently used goes first)
//! and a stream holds at most one message (at most 65,535 bytes plus prefix).

use std::collections::HashMap;
use std::net::SocketAddr;

/// Streams followed at once.
pub const MAX_STREAMS: usize = 256;
/// Bytes buffered over all streams at most.
pub const MAX_BUFFERED_BYTES: usize = 8 << 20;

/// One direction of one TCP connection, as seen by one hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub egress: bool,
}

#[derive(Debug)]
struct Stream {
    /// Sequence number of the first byte not yet received.
    next_seq: u32,
    /// Bytes of the message being assembled, its length prefix included.
    buffer: Vec<u8>,
    /// While some, bytes before this sequence number are skipped: the rest of
    /// a message whose middle was lost.
    skip_until: Option<u32>,
    last_used: u64,
}

/// A segment of a DNS response stream.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub seq: u32,
    /// The bytes the kernel copied.
    pub bytes: &'a [u8],
    /// How long the segment really was (`>= bytes.len()`).
    pub length: usize,
}

/// Counters of the reassembly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStreamStats {
    pub streams: usize,
    pub buffered_bytes: usize,
    /// Streams dropped to stay within the limits.
    pub evicted: u64,
    /// Segments with payload received.
    pub segments: u64,
    /// Segments skipped as retransmissions.
    pub retransmissions: u64,
    /// Times bytes were missing from a stream.
    pub gaps: u64,
}

/// All DNS-over-TCP streams being followed.
#[derive(Debug, Default)]
pub struct TcpDnsStreams {
    streams: HashMap<StreamKey, Stream>,
    clock: u64,
    buffered: usize,
    evicted: u64,
    segments: u64,
    retransmissions: u64,
    gaps: u64,
}

/// `a` is before `b` in sequence space (RFC 1982 arithmetic).
fn seq_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl TcpDnsStreams {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> TcpStreamStats {
        TcpStreamStats {
            streams: self.streams.len(),
            buffered_bytes: self.buffered,
            evicted: self.evicted,
            segments: self.segments,
            retransmissions: self.retransmissions,
            gaps: self.gaps,
        }
    }

    /// Adds a segment; `on_message(message, complete)` gets each DNS message
    /// (without its length prefix) that the segment completes, or that a gap
    /// cut short (`complete == false`).
    pub fn push(&mut self, key: StreamKey, segment: Segment<'_>, mut on_message: impl FnMut(&[u8], bool)) {
        self.clock += 1;
        self.segments += 1;
        if !self.streams.contains_key(&key) {
            self.make_room();
            // The first segment seen is taken to start a message: true for a
            // new connection, which is how DNS over TCP is used.
            let stream = Stream { next_seq: segment.seq, buffer: Vec::new(), skip_until: None, last_used: 0 };
            self.streams.insert(key, stream);
        }
        let Some(stream) = self.streams.get_mut(&key) else { return };
        stream.last_used = self.clock;
        let buffered_before = stream.buffer.len();

        let mut seq = segment.seq;
        let mut bytes = segment.bytes;
        let mut length = segment.length;
        if seq_before(seq, stream.next_seq) {
            // Starts with bytes already received.
            let overlap = stream.next_seq.wrapping_sub(seq) as usize;
            if overlap >= length {
                self.retransmissions += 1;
                return;
            }
            bytes = bytes.get(overlap..).unwrap_or(&[]);
            length -= overlap;
            seq = stream.next_seq;
        } else if seq != stream.next_seq {
            // The bytes between next_seq and seq never came.
            self.gaps += 1;
            let received_end = stream.next_seq;
            Self::lose_rest_of_message(stream, received_end, &mut on_message);
        }
        stream.next_seq = seq.wrapping_add(length as u32);
        Self::take(stream, seq, bytes, &mut on_message);
        if bytes.len() < length {
            // The kernel copied only the start of this segment.
            self.gaps += 1;
            let copied_end = seq.wrapping_add(bytes.len() as u32);
            Self::lose_rest_of_message(stream, copied_end, &mut on_message);
        }
        self.buffered = self.buffered - buffered_before.min(self.buffered) + stream.buffer.len();
        while self.buffered > MAX_BUFFERED_BYTES && !self.streams.is_empty() {
            self.evict_lru();
        }
    }

    /// Appends bytes that start at sequence number `seq` (contiguous with the
    /// stream) and hands over every message they complete.
    fn take(stream: &mut Stream, seq: u32, mut bytes: &[u8], on_message: &mut impl FnMut(&[u8], bool)) {
        if let Some(skip_until) = stream.skip_until {
            let skip = skip_until.wrapping_sub(seq) as usize;
            if seq_before(seq, skip_until) {
                if skip >= bytes.len() {
                    return;
                }
                bytes = &bytes[skip..];
            }
            stream.skip_until = None;
        }
        stream.buffer.extend_from_slice(bytes);
        loop {
            if stream.buffer.len() < 2 {
                return;
            }
            let length = usize::from(u16::from_be_bytes([stream.buffer[0], stream.buffer[1]]));
            if stream.buffer.len() < 2 + length {
                return;
            }
            on_message(&stream.buffer[2..2 + length], true);
            stream.buffer.drain(..2 + length);
        }
    }

    /// The bytes after `received_end` (the sequence number just past the last
    /// byte in the buffer) are lost: hand over the message in progress as far
    /// as it goes, and skip to its end, which its length prefix tells. Without
    /// a complete prefix the boundary is unknown and the next bytes are taken
    /// as a new message (a wrong guess only makes that message fail to parse).
    fn lose_rest_of_message(
        stream: &mut Stream,
        received_end: u32,
        on_message: &mut impl FnMut(&[u8], bool),
    ) {
        stream.skip_until = None;
        if stream.buffer.len() >= 2 {
            let length = u32::from(u16::from_be_bytes([stream.buffer[0], stream.buffer[1]]));
            let message_start = received_end.wrapping_sub(stream.buffer.len() as u32);
            on_message(&stream.buffer[2..], false);
            stream.skip_until = Some(message_start.wrapping_add(2 + length));
        }
        stream.buffer.clear();
    }

    fn make_room(&mut self) {
        while self.streams.len() >= MAX_STREAMS {
            self.evict_lru();
        }
    }

    fn evict_lru(&mut self) {
        let oldest = self.streams.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| *k);
        if let Some(key) = oldest
            && let Some(stream) = self.streams.remove(&key)
        {
            self.buffered = self.buffered.saturating_sub(stream.buffer.len());
            self.evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StreamKey {
        StreamKey {
            src: "127.0.0.1:53".parse().expect("addr"),
            dst: "127.0.0.1:40000".parse().expect("addr"),
            egress: false,
        }
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = (message.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(message);
        out
    }

    /// Pushes (seq, bytes) segments and returns the messages handed over.
    fn run(segments: &[(u32, &[u8])]) -> Vec<(Vec<u8>, bool)> {
        let mut streams = TcpDnsStreams::new();
        let mut out = Vec::new();
        for &(seq, bytes) in segments {
            streams.push(key(), Segment { seq, bytes, length: bytes.len() }, |m, complete| {
                out.push((m.to_vec(), complete))
            });
        }
        out
    }

    #[test]
    fn one_segment_one_message() {
        let data = framed(b"hello");
        assert_eq!(run(&[(100, &data)]), vec![(b"hello".to_vec(), true)]);
    }

    #[test]
    fn a_message_and_its_length_split_across_segments() {
        let data = framed(b"abcdefgh");
        let segments: Vec<(u32, &[u8])> = vec![(7, &data[..1]), (8, &data[1..4]), (11, &data[4..])];
        assert_eq!(run(&segments), vec![(b"abcdefgh".to_vec(), true)]);
    }

    #[test]
    fn several_messages_in_one_segment_and_across() {
        let mut data = framed(b"one");
        data.extend(framed(b"two"));
        data.extend(framed(b"three"));
        let segments: Vec<(u32, &[u8])> = vec![(0, &data[..9]), (9, &data[9..])];
        assert_eq!(
            run(&segments),
            vec![(b"one".to_vec(), true), (b"two".to_vec(), true), (b"three".to_vec(), true)]
        );
    }

    #[test]
    fn retransmissions_are_skipped() {
        let data = framed(b"abcdef");
        let segments: Vec<(u32, &[u8])> = vec![(0, &data[..4]), (0, &data[..4]), (2, &data[2..])];
        assert_eq!(run(&segments), vec![(b"abcdef".to_vec(), true)]);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let data = framed(b"wrap");
        let start = u32::MAX - 2;
        let segments: Vec<(u32, &[u8])> = vec![(start, &data[..3]), (start.wrapping_add(3), &data[3..])];
        assert_eq!(run(&segments), vec![(b"wrap".to_vec(), true)]);
    }

    #[test]
    fn a_gap_hands_over_the_partial_message_and_resumes_at_the_next() {
        let mut data = framed(b"0123456789");
        let second = data.len() as u32;
        data.extend(framed(b"next"));
        // Bytes 5..8 of the first message never arrive.
        let segments: Vec<(u32, &[u8])> = vec![(0, &data[..5]), (8, &data[8..])];
        assert_eq!(run(&segments), vec![(b"012".to_vec(), false), (b"next".to_vec(), true)]);
        assert!(second > 8);
    }

    #[test]
    fn a_segment_cut_by_the_kernel_copy_limit() {
        let mut data = framed(&[7u8; 100]);
        let second = data.len();
        data.extend(framed(b"after"));
        let mut streams = TcpDnsStreams::new();
        let mut out = Vec::new();
        // The whole first message arrives in one segment of which 50 bytes were copied.
        streams.push(key(), Segment { seq: 0, bytes: &data[..50], length: second }, |m, c| {
            out.push((m.len(), c))
        });
        streams.push(
            key(),
            Segment { seq: second as u32, bytes: &data[second..], length: data.len() - second },
            |m, c| out.push((m.len(), c)),
        );
        assert_eq!(out, vec![(48, false), (5, true)]);
    }

    #[test]
    fn streams_are_bounded() {
        let mut streams = TcpDnsStreams::new();
        for port in 0..(MAX_STREAMS as u16 + 10) {
            let key = StreamKey {
                src: "127.0.0.1:53".parse().expect("addr"),
                dst: SocketAddr::from(([127, 0, 0, 1], 1000 + port)),
                egress: false,
            };
            streams.push(key, Segment { seq: 0, bytes: &[0, 200, 1, 2], length: 4 }, |_, _| {});
        }
        assert_eq!(streams.stats().streams, MAX_STREAMS);
        assert_eq!(streams.stats().evicted, 10);
    }
}
