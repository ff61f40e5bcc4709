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
#define FLOWSQL_MAP_SOCKETS flowsql_sockets
#define FLOWSQL_MAP_SCRATCH flowsql_scratch
#define FLOWSQL_MAP_LISTEN_PORTS flowsql_listen_ports

/*
 * Settings the loader writes into the object before loading it (.rodata:
 * the verifier removes the code of a feature that is off).
 */
#define FLOWSQL_GLOBAL_FEATURES flowsql_features
#define FLOWSQL_GLOBAL_WATCHED_CGROUP_ID flowsql_watched_cgroup_id
#define FLOWSQL_GLOBAL_WATCHED_LEVEL flowsql_watched_level

/* Bits of flowsql_features. */
#define FLOWSQL_FEATURE_ATTRIBUTION 1 /* who connected: process, user, executable */
#define FLOWSQL_FEATURE_ENDS 2        /* how connections end, missed begins, open flows */

/* Record kinds. */
#define FLOWSQL_KIND_FLOW_BEGIN 1
#define FLOWSQL_KIND_DNS_RESPONSE 2
#define FLOWSQL_KIND_FLOW_END 3 /* struct flowsql_socket_event: a connection ended */
#define FLOWSQL_KIND_EXEC 4     /* struct flowsql_exec_event: a program was executed */
#define FLOWSQL_KIND_CGROUP 5   /* struct flowsql_cgroup_event: a cgroup appeared, was renamed or removed */
#define FLOWSQL_KIND_SOCKET 6   /* struct flowsql_socket_event from an iterator: a socket as it is now */

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
#define FLOWSQL_COUNTER_END_EVENTS 9           /* connection end records submitted */
#define FLOWSQL_COUNTER_END_RINGBUF_FULL 10    /* connection end records lost: ring buffer full */
#define FLOWSQL_COUNTER_BEGIN_RECOVERED 11     /* begins recorded at ESTABLISHED: the SYN-ACK went unseen */
#define FLOWSQL_COUNTER_STORAGE_FAILED 12      /* socket storage could not be created */
#define FLOWSQL_COUNTER_INFO_EVENTS 13         /* exec and cgroup records submitted */
#define FLOWSQL_COUNTER_INFO_RINGBUF_FULL 14   /* exec and cgroup records lost: ring buffer full */
#define FLOWSQL_COUNTER_SLOTS 32

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

/*
 * A process as a socket remembers it: the one that called connect() or
 * listen() on it, read in that call. tgid 0: not known.
 */
struct flowsql_process {
	__u32 tgid;    /* thread group (what user space calls the process id) */
	__u32 uid;     /* in the initial user namespace */
	__u64 exe_ino; /* inode of the executable (0: none, e.g. a kernel thread) */
	__u32 exe_dev; /* device of its file system, kernel encoding (major << 20 | minor) */
	__u32 reserved;
	char comm[16]; /* the thread-group leader's command name */
};

/* Bits of flowsql_flow_event.flags. */
#define FLOWSQL_BEGIN_RECOVERED 1 /* from the ESTABLISHED transition: no SYN-ACK was seen */

/* One TCP connection begin (a SYN-ACK), from one local endpoint's view. */
struct flowsql_flow_event {
	struct flowsql_event_header header;
	__u64 cgroup_id;     /* cgroup v2 id of the local socket */
	__u64 socket_cookie; /* cookie of the local socket (the listener's for incoming) */
	__u64 flow_seq;      /* the flow's number in this capture (flowId), shared with its end */
	__u8 ip_version;     /* 4 or 6: the packet's version, not the socket's */
	__u8 direction;      /* FLOWSQL_DIRECTION_* */
	__be16 src_port_be;  /* initiator */
	__be16 dst_port_be;  /* responder */
	__u8 flags;          /* FLOWSQL_BEGIN_* */
	__u8 reserved;
	__u8 src_addr_be[16]; /* initiator; IPv4 in the first 4 bytes */
	__u8 dst_addr_be[16]; /* responder; IPv4 in the first 4 bytes */
	struct flowsql_process owner; /* outgoing: connect()'s caller; incoming: listen()'s */
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

/* Values of flowsql_socket.role. */
#define FLOWSQL_ROLE_ACTIVE 1   /* connect() was called on it */
#define FLOWSQL_ROLE_LISTENER 2 /* listen() was called on it */
#define FLOWSQL_ROLE_PASSIVE 3  /* a connection a listener accepted (a copy of its storage) */

/* Bits of flowsql_socket.flags. */
#define FLOWSQL_SOCKET_PRECAPTURE 1    /* it existed before the capture (found by the iterator) */
#define FLOWSQL_SOCKET_ESTABLISHED 2   /* the handshake completed */
#define FLOWSQL_SOCKET_RST_RECEIVED 4  /* a RST arrived */
#define FLOWSQL_SOCKET_RST_SENT 8      /* a RST was sent */
#define FLOWSQL_SOCKET_RST_PENDING 16  /* closed without error: the RST that follows decides */
#define FLOWSQL_SOCKET_ENDED 32        /* the end is decided (tcp holds its snapshot) */
#define FLOWSQL_SOCKET_DEFERRED 64     /* ended, reported when the socket is destroyed */
#define FLOWSQL_SOCKET_RELEASED 128    /* no process holds it any more (the last close) */
#define FLOWSQL_SOCKET_REPORTED 256    /* its end record was submitted */

/*
 * A TCP socket's addresses and the kernel's own counters, read once: when
 * the connection ends, or when an iterator looks at it.
 */
struct flowsql_tcp_snapshot {
	__u8 local_addr_be[16];  /* IPv4 (also v4-mapped IPv6) in the first 4 bytes */
	__u8 remote_addr_be[16];
	__be16 local_port_be;
	__be16 remote_port_be;
	__u8 ip_version;   /* 4 or 6 */
	__u8 state;        /* at an end: the state the connection left for CLOSE; else the state now */
	__u8 fin_received; /* the peer's FIN arrived (SOCK_DONE), so bytes_received counts it */
	__u8 reserved;
	__s32 sk_err;      /* the socket's error (ECONNREFUSED, ETIMEDOUT, ...), positive */
	__s32 sk_err_soft; /* the last soft error (an ICMP unreachable during the handshake) */
	__u32 srtt_us;     /* smoothed round-trip time, microseconds */
	__u32 total_retrans; /* segments retransmitted */
	__u32 segs_in;     /* segments received */
	__u32 segs_out;    /* segments sent */
	__u32 snd_una;     /* first byte not acknowledged */
	__u32 write_seq;   /* one past the last byte queued (a FIN counts one) */
	__u64 bytes_acked;    /* sequence space acknowledged by the peer (+1 for our SYN when active, +1 for an acked FIN) */
	__u64 bytes_received; /* sequence space received in order (+1 for the peer's FIN) */
};

/*
 * What flowsql keeps on each socket it follows (socket-local storage,
 * copied to the connections a listener accepts). Sockets of the watched
 * cgroup get it when connect() or listen() is called on them, or from the
 * iterator for sockets older than the capture.
 */
struct flowsql_socket {
	__u64 flow_seq;        /* the flow's number once it began (0: no begin yet) */
	__u64 begin_ns;        /* CLOCK_BOOTTIME of the begin (0: unknown, before the capture) */
	__u64 start_ns;        /* connect() or listen() was called, or it was accepted */
	__u64 end_ns;          /* the connection ended (moved to CLOSE) */
	__u64 listener_cookie; /* a listener's own cookie, kept by the connections it accepts */
	struct flowsql_process owner; /* connect()'s or listen()'s caller */
	__u32 acceptor_tgid;   /* passive: the process that held it last (its last close) */
	char acceptor_comm[16];
	__u8 role;             /* FLOWSQL_ROLE_* */
	__u8 first_close;      /* the state it first left ESTABLISHED for: FIN_WAIT1 (we sent the first FIN), CLOSE_WAIT (the peer did) or CLOSE */
	__u16 flags;           /* FLOWSQL_SOCKET_* */
	__u32 reserved;
	struct flowsql_tcp_snapshot tcp; /* at the end */
};

/*
 * A socket's state, as a record: a connection end (FLOWSQL_KIND_FLOW_END,
 * from the ring buffer), or a socket an iterator found
 * (FLOWSQL_KIND_SOCKET: existing sockets adopted when the capture starts,
 * and the open connections).
 */
struct flowsql_socket_event {
	struct flowsql_event_header header;
	__u64 cgroup_id;
	__u64 socket_cookie;
	__u64 socket_inode; /* FLOWSQL_KIND_SOCKET: inode of its file (to find who holds it); else 0 */
	struct flowsql_socket socket;
};

/* Bytes of an executable's path an exec record carries at most. */
#define FLOWSQL_EXEC_PATH_MAX 1024
/* Bit of flowsql_exec_event.components: the path did not fit. */
#define FLOWSQL_EXEC_TRUNCATED 0x8000

/*
 * A program was executed by a process of the watched cgroup. Variable
 * length: header.length = offsetof(path) + path_len.
 */
struct flowsql_exec_event {
	struct flowsql_event_header header;
	__u32 tgid;
	__u32 exe_dev;     /* as in flowsql_process */
	__u64 exe_ino;
	__u16 path_len;    /* bytes in path[] */
	__u16 components;  /* names in path[]; FLOWSQL_EXEC_TRUNCATED when some are missing */
	__u32 reserved;
	char path[FLOWSQL_EXEC_PATH_MAX]; /* the names from the file up to the root, each NUL-terminated */
};

/* Values of flowsql_cgroup_event.op. */
#define FLOWSQL_CGROUP_MKDIR 1
#define FLOWSQL_CGROUP_RMDIR 2
#define FLOWSQL_CGROUP_RENAME 3

/* Bytes of a cgroup path a record carries at most (with its NUL). */
#define FLOWSQL_CGROUP_PATH_MAX 512

/*
 * A cgroup of the unified (v2) hierarchy appeared, was renamed or removed.
 * Variable length: header.length = offsetof(path) + path_len.
 */
struct flowsql_cgroup_event {
	struct flowsql_event_header header;
	__u64 cgroup_id;
	__u8 op;           /* FLOWSQL_CGROUP_* */
	__u8 truncated;    /* the path is longer than FLOWSQL_CGROUP_PATH_MAX - 1 */
	__u16 path_len;    /* bytes in path[], its NUL included */
	__u32 reserved;
	char path[FLOWSQL_CGROUP_PATH_MAX]; /* from the hierarchy's root: /system.slice/x.service */
};

/* Value of flowsql_connections: the begin a key was reported with. */
struct flowsql_connection_value {
	__u64 flow_seq;
	__u64 begin_ns;
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
