// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * flowsql's cgroup_skb programs: report the beginning of every TCP connection
 * of the sockets in a cgroup (see docs/architecture.md, "The event contract").
 *
 * EVERY PATH RETURNS 1 ("allow"). These programs observe; they never drop or
 * alter a packet, whatever they find in it.
 *
 * A connection begins with its SYN-ACK. Seen on ingress, the local socket sent
 * the SYN: the connection is outgoing. Seen on egress from a listener, the
 * local socket accepted: incoming. Each begin is reported once per local
 * socket (flowsql_connections removes retransmissions and the second SYN-ACK of
 * a simultaneous open) through the ring buffer flowsql_events. Anything that
 * is lost is counted in flowsql_counters.
 *
 * DNS responses (source port 53, UDP and TCP, both hooks) go to user space
 * through the same ring buffer, so an answer is always read before the
 * SYN-ACK of the connection it led to.
 *
 * The fast path (most packets) reads three fields of the socket and leaves
 * when its state and ports say the packet can be neither a SYN-ACK nor a DNS
 * response: see may_matter().
 *
 * Records are submitted without waking user space, which drains the ring
 * buffer on a short timer; only a ring buffer filling up (an eighth of it)
 * wakes it at once. A wakeup per event cost microseconds per connection.
 */
#include "kernel_abi.h"
#include "flowsql.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* the loader may resize it */
} FLOWSQL_MAP_EVENTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLOWSQL_COUNTER_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} FLOWSQL_MAP_COUNTERS SEC(".maps");

/*
 * Connections already reported. LRU: entries age out on their own. A SYN-ACK
 * retransmission comes within seconds of the first, long before 65536 newer
 * connections could have pushed its entry out.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	/* Per-CPU LRU lists: no lock shared by all CPUs on the event path. */
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, struct flowsql_connection_key);
	__type(value, __u8);
} FLOWSQL_MAP_CONNECTIONS SEC(".maps");

/* Room to build a variable-length DNS record before copying it to the ring. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flowsql_dns_event);
} FLOWSQL_MAP_DNS_SCRATCH SEC(".maps");

#define DNS_PORT 53
#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10
/* Bound of the IPv6 extension header walk; real packets carry one or two. */
#define IPV6_EXT_HEADERS_MAX 8

/* What parse_ip found: the packet's own IP version, addresses, L4 start. */
struct packet {
	__u8 src_addr_be[16];
	__u8 dst_addr_be[16];
	__u32 l4_offset;
	__u8 ip_version;
	__u8 l4_protocol;
};

static __always_inline void count(__u32 slot)
{
	__u64 *value = bpf_map_lookup_elem(&FLOWSQL_MAP_COUNTERS, &slot);

	if (value)
		*value += 1;
}

/* Wake user space only when the ring buffer is filling up. */
static __always_inline __u64 submit_flags(void)
{
	__u64 size = bpf_ringbuf_query(&FLOWSQL_MAP_EVENTS, BPF_RB_RING_SIZE);
	__u64 pending = bpf_ringbuf_query(&FLOWSQL_MAP_EVENTS, BPF_RB_AVAIL_DATA);

	return pending > size / 8 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline __u32 load_be32(const __u8 *bytes)
{
	return ((__u32)bytes[0] << 24) | ((__u32)bytes[1] << 16) | ((__u32)bytes[2] << 8) | bytes[3];
}

/* IPv4, options included (IHL). Returns 0 when p describes a first fragment. */
static __always_inline int parse_ipv4(struct __sk_buff *skb, struct packet *p)
{
	__u8 ip[20];

	if (bpf_skb_load_bytes(skb, 0, ip, sizeof(ip))) {
		count(FLOWSQL_COUNTER_HEADER_UNREADABLE);
		return -1;
	}
	if ((ip[0] >> 4) != 4)
		return -1;
	__u32 header_len = (ip[0] & 0x0f) * 4;
	if (header_len < 20)
		return -1;
	/* A non-first fragment carries no L4 header. */
	if ((((__u32)ip[6] & 0x1f) << 8 | ip[7]) != 0)
		return -1;
	p->ip_version = 4;
	p->l4_protocol = ip[9];
	p->l4_offset = header_len;
	__builtin_memcpy(p->src_addr_be, &ip[12], 4);
	__builtin_memcpy(p->dst_addr_be, &ip[16], 4);
	return 0;
}

/*
 * IPv6, walking hop-by-hop, routing, destination options, fragment and AH
 * headers up to IPV6_EXT_HEADERS_MAX of them. Returns 0 when p->l4_protocol
 * is TCP or UDP and p->l4_offset points at its header.
 */
static __always_inline int parse_ipv6(struct __sk_buff *skb, struct packet *p)
{
	__u8 ip[40];

	if (bpf_skb_load_bytes(skb, 0, ip, sizeof(ip))) {
		count(FLOWSQL_COUNTER_HEADER_UNREADABLE);
		return -1;
	}
	if ((ip[0] >> 4) != 6)
		return -1;
	__u8 next = ip[6];
	__u32 offset = 40;

	for (int i = 0; i < IPV6_EXT_HEADERS_MAX; i++) {
		__u8 ext[4];

		if (next == IPPROTO_TCP || next == IPPROTO_UDP)
			break;
		if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS &&
		    next != IPPROTO_FRAGMENT && next != IPPROTO_AH)
			return -1; /* ICMPv6, ESP, no next header, ...: nothing for us */
		if (bpf_skb_load_bytes(skb, offset, ext, sizeof(ext))) {
			count(FLOWSQL_COUNTER_HEADER_UNREADABLE);
			return -1;
		}
		if (next == IPPROTO_FRAGMENT) {
			/* Only the first fragment (offset 0) holds the L4 header. */
			if ((((__u32)ext[2] << 8 | ext[3]) & 0xfff8) != 0)
				return -1;
			offset += 8;
		} else if (next == IPPROTO_AH) {
			offset += ((__u32)ext[1] + 2) * 4;
		} else {
			offset += ((__u32)ext[1] + 1) * 8;
		}
		next = ext[0];
	}
	if (next != IPPROTO_TCP && next != IPPROTO_UDP) {
		count(FLOWSQL_COUNTER_IPV6_EXT_TOO_DEEP);
		return -1;
	}
	p->ip_version = 6;
	p->l4_protocol = next;
	p->l4_offset = offset;
	__builtin_memcpy(p->src_addr_be, &ip[8], 16);
	__builtin_memcpy(p->dst_addr_be, &ip[24], 16);
	return 0;
}

/* Parse by the packet's version (skb->protocol), never the socket's family. */
static __always_inline int parse_ip(struct __sk_buff *skb, struct packet *p)
{
	if (skb->protocol == ETH_P_IP_BE)
		return parse_ipv4(skb, p);
	if (skb->protocol == ETH_P_IPV6_BE)
		return parse_ipv6(skb, p);
	return -1;
}

static __always_inline int is_synack(const __u8 *tcp)
{
	return (tcp[13] & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST | TCP_FLAG_FIN)) ==
	       (TCP_FLAG_SYN | TCP_FLAG_ACK);
}

/* tcp: the first 14 bytes of the TCP header (ports, seq, ack, offset, flags). */
static __always_inline void report_begin(struct __sk_buff *skb, const struct packet *p, const __u8 *tcp,
					 int egress, __u32 socket_state)
{
	__u32 seq = load_be32(&tcp[4]);
	__u32 ack = load_be32(&tcp[8]);
	__be16 pkt_src_port_be = (__be16)(tcp[0] | (tcp[1] << 8));
	__be16 pkt_dst_port_be = (__be16)(tcp[2] | (tcp[3] << 8));

	struct flowsql_connection_key key = {};
	key.socket_cookie = bpf_get_socket_cookie(skb);
	key.ip_version = p->ip_version;
	if (egress) {
		__builtin_memcpy(key.local_addr_be, p->src_addr_be, 16);
		__builtin_memcpy(key.remote_addr_be, p->dst_addr_be, 16);
		key.local_port_be = pkt_src_port_be;
		key.remote_port_be = pkt_dst_port_be;
		key.local_isn = seq;
		key.remote_isn = ack - 1;
	} else {
		__builtin_memcpy(key.local_addr_be, p->dst_addr_be, 16);
		__builtin_memcpy(key.remote_addr_be, p->src_addr_be, 16);
		key.local_port_be = pkt_dst_port_be;
		key.remote_port_be = pkt_src_port_be;
		key.local_isn = ack - 1;
		key.remote_isn = seq;
	}

	__u8 seen = 1;
	long inserted = bpf_map_update_elem(&FLOWSQL_MAP_CONNECTIONS, &key, &seen, BPF_NOEXIST);
	if (inserted == -17 /* EEXIST */) {
		count(FLOWSQL_COUNTER_SYNACK_DUPLICATE);
		return;
	}
	if (inserted != 0)
		count(FLOWSQL_COUNTER_CONNECTION_MAP_ERROR); /* report it anyway */

	struct flowsql_flow_event *e = bpf_ringbuf_reserve(&FLOWSQL_MAP_EVENTS, sizeof(*e), 0);
	if (!e) {
		count(FLOWSQL_COUNTER_FLOW_RINGBUF_FULL);
		/* Let a retransmitted SYN-ACK try again. */
		bpf_map_delete_elem(&FLOWSQL_MAP_CONNECTIONS, &key);
		return;
	}
	e->header.kind = FLOWSQL_KIND_FLOW_BEGIN;
	e->header.length = sizeof(*e);
	e->header.reserved = 0;
	e->header.boot_ns = bpf_ktime_get_boot_ns();
	e->cgroup_id = bpf_skb_cgroup_id(skb);
	e->socket_cookie = key.socket_cookie;
	e->ip_version = p->ip_version;
	e->reserved = 0;
	/*
	 * Ingress: we sent the SYN, the local side initiated. Egress from a
	 * listener: we accepted. Egress from any other socket is a simultaneous
	 * open, where the local socket called connect() too: outgoing.
	 */
	if (!egress || socket_state != TCP_LISTEN) {
		e->direction = FLOWSQL_DIRECTION_OUTGOING;
	} else {
		e->direction = FLOWSQL_DIRECTION_INCOMING;
	}
	/* src/dst are initiator/responder: the local side's role decides. */
	if (e->direction == FLOWSQL_DIRECTION_OUTGOING) {
		__builtin_memcpy(e->src_addr_be, key.local_addr_be, 16);
		__builtin_memcpy(e->dst_addr_be, key.remote_addr_be, 16);
		e->src_port_be = key.local_port_be;
		e->dst_port_be = key.remote_port_be;
	} else {
		__builtin_memcpy(e->src_addr_be, key.remote_addr_be, 16);
		__builtin_memcpy(e->dst_addr_be, key.local_addr_be, 16);
		e->src_port_be = key.remote_port_be;
		e->dst_port_be = key.local_port_be;
	}
	bpf_ringbuf_submit(e, submit_flags());
	count(FLOWSQL_COUNTER_FLOW_EVENTS);
}

/*
 * Sends the payload that starts at payload_offset (a DNS message, or a TCP
 * segment of one) to user space.
 */
static __always_inline void report_dns(struct __sk_buff *skb, const struct packet *p, int egress,
				       __u32 payload_offset, __u32 tcp_seq)
{
	__u32 packet_len = skb->len;

	if (packet_len <= payload_offset)
		return; /* no payload: a bare ACK, FIN, ... */
	__u32 payload_len = packet_len - payload_offset;
	__u32 captured = payload_len;
	__u8 flags = 0;

	if (captured > FLOWSQL_DNS_PAYLOAD_MAX) {
		captured = FLOWSQL_DNS_PAYLOAD_MAX;
		flags |= FLOWSQL_DNS_TRUNCATED;
		count(FLOWSQL_COUNTER_DNS_TRUNCATED);
	}
	/* Re-derive the bound in a form the verifier tracks: 1..PAYLOAD_MAX. */
	captured &= 2 * FLOWSQL_DNS_PAYLOAD_MAX - 1;
	if (captured == 0 || captured > FLOWSQL_DNS_PAYLOAD_MAX)
		return;

	__u32 zero = 0;
	struct flowsql_dns_event *e = bpf_map_lookup_elem(&FLOWSQL_MAP_DNS_SCRATCH, &zero);
	if (!e)
		return;
	if (bpf_skb_load_bytes(skb, payload_offset, e->payload, captured)) {
		count(FLOWSQL_COUNTER_HEADER_UNREADABLE);
		return;
	}
	__u32 record_len = sizeof(*e) - FLOWSQL_DNS_PAYLOAD_MAX + captured;
	e->header.kind = FLOWSQL_KIND_DNS_RESPONSE;
	e->header.length = record_len;
	e->header.reserved = 0;
	e->header.boot_ns = bpf_ktime_get_boot_ns();
	e->cgroup_id = bpf_skb_cgroup_id(skb);
	e->socket_cookie = bpf_get_socket_cookie(skb);
	e->tcp_seq = tcp_seq;
	e->payload_len = payload_len > 0xffff ? 0xffff : payload_len;
	e->captured_len = captured;
	e->ip_version = p->ip_version;
	e->transport = p->l4_protocol;
	e->egress = egress;
	e->flags = flags;
	__builtin_memcpy(e->src_addr_be, p->src_addr_be, 16);
	__builtin_memcpy(e->dst_addr_be, p->dst_addr_be, 16);
	if (bpf_ringbuf_output(&FLOWSQL_MAP_EVENTS, e, record_len, submit_flags()))
		count(FLOWSQL_COUNTER_DNS_RINGBUF_FULL);
	else
		count(FLOWSQL_COUNTER_DNS_EVENTS);
}

static __always_inline void handle_tcp(struct __sk_buff *skb, const struct packet *p, int egress,
				       __u32 socket_state)
{
	__u8 tcp[14]; /* ports, seq, ack, data offset, flags */

	if (bpf_skb_load_bytes(skb, p->l4_offset, tcp, sizeof(tcp))) {
		count(FLOWSQL_COUNTER_HEADER_UNREADABLE);
		return;
	}
	if (is_synack(tcp)) {
		report_begin(skb, p, tcp, egress, socket_state);
		return;
	}
	/* A segment of a DNS-over-TCP response stream. */
	if (tcp[0] == 0 && tcp[1] == DNS_PORT) {
		__u32 header_len = (tcp[12] >> 4) * 4;
		if (header_len >= 20)
			report_dns(skb, p, egress, p->l4_offset + header_len, load_be32(&tcp[4]));
	}
}

static __always_inline void handle_udp(struct __sk_buff *skb, const struct packet *p, int egress)
{
	__u8 udp[11]; /* ports, length, checksum, and the DNS header's first 3 bytes */

	if (bpf_skb_load_bytes(skb, p->l4_offset, udp, sizeof(udp)))
		return; /* too short to be a DNS message */
	/* From port 53, with the QR bit set: a DNS response. */
	if (udp[0] == 0 && udp[1] == DNS_PORT && (udp[10] & 0x80))
		report_dns(skb, p, egress, p->l4_offset + 8, 0);
}

/*
 * Whether a packet of a socket in this state can be a SYN-ACK or a DNS
 * response. A SYN-ACK arrives (ingress) at a connecting socket (SYN_SENT, or
 * SYN_RECV in a simultaneous open) and leaves (egress) from a listener (the
 * hook sees the listener for its request sockets) or a SYN_RECV socket. DNS
 * travels from port 53. So, unless a port is 53, nothing of interest is on:
 * established and closing TCP sockets, a connected UDP socket; ingress to a
 * listener (SYNs and handshake ACKs); egress from a connecting socket (its
 * SYN) or from an unconnected UDP socket (what it sends is not from port 53).
 */
static __always_inline int may_matter(__u32 state, int egress, int dns_port)
{
	if (dns_port)
		return 1;
	switch (state) {
	case TCP_ESTABLISHED:
	case TCP_FIN_WAIT1:
	case TCP_FIN_WAIT2:
	case TCP_TIME_WAIT:
	case TCP_CLOSE_WAIT:
	case TCP_LAST_ACK:
	case TCP_CLOSING:
		return 0;
	case TCP_LISTEN:
		return egress;
	case TCP_SYN_SENT:
	case TCP_CLOSE:
		return !egress;
	default:
		return 1;
	}
}

static __always_inline void handle(struct __sk_buff *skb, int egress)
{
	struct bpf_sock *sk = skb->sk;
	__u32 socket_state = 0;

	if (sk) {
		socket_state = sk->state;
		int dns_port = sk->src_port == DNS_PORT || sk->dst_port == bpf_htons(DNS_PORT);
		if (!may_matter(socket_state, egress, dns_port))
			return;
	}

	struct packet p = {};
	if (parse_ip(skb, &p))
		return;
	if (p.l4_protocol == IPPROTO_TCP)
		handle_tcp(skb, &p, egress, socket_state);
	else
		handle_udp(skb, &p, egress);
}

SEC("cgroup_skb/ingress")
int flowsql_ingress(struct __sk_buff *skb)
{
	handle(skb, 0);
	return 1;
}

SEC("cgroup_skb/egress")
int flowsql_egress(struct __sk_buff *skb)
{
	handle(skb, 1);
	return 1;
}
