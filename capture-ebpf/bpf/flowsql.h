/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The contract between the kernel programs (flowsql.bpf.c) and the loader
 * (src/abi.rs): every record the kernel puts in the ring buffer, the map
 * names, and the counter slots. The Rust mirror of each struct is checked
 * against this object's debug info by a test (tests in src/abi.rs), so the
 * two cannot drift apart unnoticed.
 *
 * Rules: a record starts with struct flowsql_event_header; kinds and counter
 * slots are numbered explicitly and a number is never reused; multi-byte fields
 * in network byte order end in _be, all others are host order.
 */
#ifndef FLOWSQL_H
#define FLOWSQL_H

/* Map names, also used by the loader. */
#define FLOWSQL_MAP_EVENTS flowsql_events
#define FLOWSQL_MAP_COUNTERS flowsql_counters
#define FLOWSQL_MAP_CONNECTIONS flowsql_connections
#define FLOWSQL_MAP_DNS_SCRATCH flowsql_dns_scratch

/* Record kinds. */
#define FLOWSQL_KIND_FLOW_BEGIN 1
#define FLOWSQL_KIND_DNS_RESPONSE 2

/* Values of flowsql_flow_event.direction. */
#define FLOWSQL_DIRECTION_OUTGOING 1 /* a local socket initiated */
#define FLOWSQL_DIRECTION_INCOMING 2 /* a local socket accepted */

/* Slots of the per-CPU counter array. */
#define FLOWSQL_COUNTER_FLOW_EVENTS 0          /* flow records submitted */
#define FLOWSQL_COUNTER_FLOW_RINGBUF_FULL 1    /* flow records lost: ring buffer full */
#define FLOWSQL_COUNTER_SYNACK_DUPLICATE 2     /* SYN-ACKs of a connection already reported */
#define FLOWSQL_COUNTER_HEADER_UNREADABLE 3    /* packets whose headers could not be loaded */
#define FLOWSQL_COUNTER_IPV6_EXT_TOO_DEEP 4    /* IPv6 chains longer than the walk's bound */
#define FLOWSQL_COUNTER_CONNECTION_MAP_ERROR 5 /* dedup map insert failed (row still sent) */
#define FLOWSQL_COUNTER_DNS_EVENTS 6           /* DNS records submitted */
#define FLOWSQL_COUNTER_DNS_RINGBUF_FULL 7     /* DNS records lost: ring buffer full */
#define FLOWSQL_COUNTER_DNS_TRUNCATED 8        /* DNS records cut at FLOWSQL_DNS_PAYLOAD_MAX */
#define FLOWSQL_COUNTER_SLOTS 16

/*
 * Bytes of a DNS message copied to user space. 4096 holds every UDP answer
 * under the EDNS buffer sizes resolvers use (1232 since DNS Flag Day 2020,
 * 4096 the historic default) and all but the largest TCP answers; a longer
 * message is cut here, flagged FLOWSQL_DNS_TRUNCATED, and user space parses
 * the records that fit. A power of two, so the verifier can bound the copy.
 */
#define FLOWSQL_DNS_PAYLOAD_MAX 4096

/* Bits of flowsql_dns_event.flags. */
#define FLOWSQL_DNS_TRUNCATED 1 /* the packet's payload is longer than payload[] */

/* Values of flowsql_dns_event.transport (IP protocol numbers). */
#define FLOWSQL_TRANSPORT_TCP 6
#define FLOWSQL_TRANSPORT_UDP 17

struct flowsql_event_header {
	__u16 kind;    /* FLOWSQL_KIND_* */
	__u16 length;  /* bytes of the whole record, this header included */
	__u32 reserved;
	__u64 boot_ns; /* CLOCK_BOOTTIME when the packet was seen */
};

/* One TCP connection begin (a SYN-ACK), from one local endpoint's view. */
struct flowsql_flow_event {
	struct flowsql_event_header header;
	__u64 cgroup_id;     /* cgroup v2 id of the local socket */
	__u64 socket_cookie; /* cookie of the local socket (the listener's for incoming) */
	__u8 ip_version;     /* 4 or 6: the packet's version, not the socket's */
	__u8 direction;      /* FLOWSQL_DIRECTION_* */
	__be16 src_port_be;  /* initiator */
	__be16 dst_port_be;  /* responder */
	__u16 reserved;
	__u8 src_addr_be[16]; /* initiator; IPv4 in the first 4 bytes */
	__u8 dst_addr_be[16]; /* responder; IPv4 in the first 4 bytes */
};

/*
 * A packet from port 53 with a payload: a whole DNS message (UDP) or a TCP
 * segment of a DNS stream, which user space reassembles by tcp_seq. The record
 * is variable-length: header.length = offsetof(payload) + captured_len.
 */
struct flowsql_dns_event {
	struct flowsql_event_header header;
	__u64 cgroup_id;
	__u64 socket_cookie;
	__u32 tcp_seq;      /* TCP: sequence number of payload[0]; UDP: 0 */
	__u16 payload_len;  /* L4 payload bytes in the packet (at most 65535) */
	__u16 captured_len; /* bytes in payload[] */
	__u8 ip_version;    /* 4 or 6 */
	__u8 transport;     /* FLOWSQL_TRANSPORT_* */
	__u8 egress;        /* 1: sent by a local socket (a local server), 0: received */
	__u8 flags;         /* FLOWSQL_DNS_* bits */
	__be16 src_port_be;
	__be16 dst_port_be;
	__u8 src_addr_be[16];
	__u8 dst_addr_be[16];
	__u8 payload[FLOWSQL_DNS_PAYLOAD_MAX];
};

/*
 * Key of the connection map that makes a begin be reported once per local
 * socket and connection. Local/remote and the two initial sequence numbers are
 * normalised so that both SYN-ACKs of a simultaneous open, and every
 * retransmission of a SYN-ACK, give the same key; a later connection on the
 * same 4-tuple has new sequence numbers and so a new key.
 */
struct flowsql_connection_key {
	__u64 socket_cookie;
	__u8 local_addr_be[16];
	__u8 remote_addr_be[16];
	__be16 local_port_be;
	__be16 remote_port_be;
	__u32 local_isn;
	__u32 remote_isn;
	__u32 ip_version;
};

#endif
