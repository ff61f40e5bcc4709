// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * flowsql's kernel programs: report the beginning of every TCP connection of
 * the sockets in a cgroup, who made it, and how it ended (see
 * docs/architecture.md, "The event contract", and README.md, "How it works").
 *
 * EVERY PATH OF THE cgroup_skb AND cgroup/sock_release PROGRAMS RETURNS 1
 * ("allow"). These programs observe; they never drop or alter a packet or
 * refuse an operation, whatever they find. The tracing programs' return
 * value is ignored by the kernel (they return 0).
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
 *
 * Who and how it ended, without kprobes and without BPF LSM or trampolines
 * (fentry/fexit/lsm programs are refused on some kernels that list bpf as an
 * active LSM): every TCP socket of the watched cgroup gets socket-local
 * storage (flowsql_sockets, struct flowsql_socket) when connect() or listen()
 * moves it out of CLOSE: the tp_btf/inet_sock_set_state program runs in the
 * caller's context there and writes down the process. A listener's storage
 * is copied to each connection it accepts (BPF_F_CLONE). The same
 * tracepoint reads the kernel's per-socket counters once, when the
 * connection moves to CLOSE, and reports the end; the reset tracepoints say
 * who reset it, tcp_destroy_sock reports what had to wait, and
 * cgroup/sock_release names the process that held an accepted socket last.
 * Nothing of this runs per packet: the cgroup_skb programs read the storage
 * only on the SYN-ACK branch. Exec and cgroup tracepoints name executables
 * and cgroups as they appear; two iterators adopt sockets older than the
 * capture and list the open connections.
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
	__type(value, struct flowsql_connection_value);
} FLOWSQL_MAP_CONNECTIONS SEC(".maps");

/* Room to build a variable-length DNS record before copying it to the ring. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flowsql_dns_event);
} FLOWSQL_MAP_DNS_SCRATCH SEC(".maps");

/*
 * The socket-local storage of the watched sockets. No preallocation: memory
 * is used (and charged to the capture's memory cgroup) only for sockets that
 * exist, and freed with them.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct flowsql_socket);
} FLOWSQL_MAP_SOCKETS SEC(".maps");

/* Room for the exec, cgroup and iterator records. */
union flowsql_scratch {
	struct flowsql_exec_event exec;
	struct flowsql_cgroup_event cgroup;
	struct flowsql_socket_event socket;
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, union flowsql_scratch);
} FLOWSQL_MAP_SCRATCH SEC(".maps");

/*
 * The local ports listening in the network namespace an iterator walks, so
 * that an established socket older than the capture can be told accepted
 * (its port listens) from connected. Keyed by the iterator's session.
 */
struct flowsql_listen_port {
	__u64 session_id;
	__u32 port;
	__u32 reserved;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct flowsql_listen_port);
	__type(value, __u8);
} FLOWSQL_MAP_LISTEN_PORTS SEC(".maps");

/* Set by the loader before loading (see flowsql.h). */
const volatile __u32 FLOWSQL_GLOBAL_FEATURES = 0;
const volatile __u64 FLOWSQL_GLOBAL_WATCHED_CGROUP_ID = 0;
const volatile __u32 FLOWSQL_GLOBAL_WATCHED_LEVEL = 0;

/* The last flow number given out: flowId = a per-capture base + this. */
__u64 flowsql_flow_seq = 0;

static __always_inline int feature(__u32 bit)
{
	return (FLOWSQL_GLOBAL_FEATURES & bit) != 0;
}

static __always_inline __u64 next_flow_seq(void)
{
	return __sync_fetch_and_add(&flowsql_flow_seq, 1) + 1;
}

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

/* The cgroup (v2) of a socket, read through BTF. */
static __always_inline struct cgroup *socket_cgroup(struct sock *sk)
{
	struct cgroup *cgroup = NULL;

	bpf_probe_read_kernel(&cgroup, sizeof(cgroup), &sk->sk_cgrp_data.cgroup);
	return cgroup;
}

/* A cgroup's id: the inode number of its directory, as user space sees it. */
static __always_inline __u64 cgroup_id(struct cgroup *cgroup)
{
	struct kernfs_node *kn = NULL;
	__u64 id = 0;

	if (!cgroup)
		return 0;
	bpf_probe_read_kernel(&kn, sizeof(kn), &cgroup->kn);
	if (kn)
		bpf_probe_read_kernel(&id, sizeof(id), &kn->id);
	return id;
}

/* Whether a cgroup is the watched one or below it. */
static __always_inline int cgroup_watched(struct cgroup *cgroup)
{
	__u32 watched_level = FLOWSQL_GLOBAL_WATCHED_LEVEL;
	struct cgroup *ancestor = NULL;
	int level = 0;

	if (!cgroup)
		return 0;
	if (watched_level == 0)
		return 1; /* the root: the whole host */
	bpf_probe_read_kernel(&level, sizeof(level), &cgroup->level);
	if (level < (int)watched_level)
		return 0;
	bpf_probe_read_kernel(&ancestor, sizeof(ancestor), &cgroup->ancestors[watched_level & 0xff]);
	return cgroup_id(ancestor) == FLOWSQL_GLOBAL_WATCHED_CGROUP_ID;
}

/* The calling process: called where the kernel runs on its behalf. */
static __always_inline void current_process(struct flowsql_process *process)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct task_struct *leader = NULL;
	struct mm_struct *mm = NULL;
	struct file *exe = NULL;
	struct inode *inode = NULL;
	struct super_block *sb = NULL;

	process->tgid = bpf_get_current_pid_tgid() >> 32;
	process->uid = (__u32)bpf_get_current_uid_gid();
	process->exe_ino = 0;
	process->exe_dev = 0;
	process->reserved = 0;
	bpf_probe_read_kernel(&leader, sizeof(leader), &task->group_leader);
	if (!leader || bpf_probe_read_kernel(process->comm, sizeof(process->comm), &leader->comm))
		__builtin_memset(process->comm, 0, sizeof(process->comm));
	/* The executable: mm->exe_file, which a fork shares until an exec. */
	bpf_probe_read_kernel(&mm, sizeof(mm), &task->mm);
	if (!mm)
		return; /* a kernel thread */
	bpf_probe_read_kernel(&exe, sizeof(exe), &mm->exe_file);
	if (!exe)
		return;
	bpf_probe_read_kernel(&inode, sizeof(inode), &exe->f_inode);
	if (!inode)
		return;
	bpf_probe_read_kernel(&process->exe_ino, sizeof(process->exe_ino), &inode->i_ino);
	bpf_probe_read_kernel(&sb, sizeof(sb), &inode->i_sb);
	if (sb)
		bpf_probe_read_kernel(&process->exe_dev, sizeof(process->exe_dev), &sb->s_dev);
}

/* The leader's name of the calling process. */
static __always_inline void current_leader_comm(char *comm)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct task_struct *leader = NULL;

	bpf_probe_read_kernel(&leader, sizeof(leader), &task->group_leader);
	if (!leader || bpf_probe_read_kernel(comm, 16, &leader->comm))
		__builtin_memset(comm, 0, 16);
}

static __always_inline int v4_mapped(const __u8 *addr)
{
	for (int i = 0; i < 10; i++)
		if (addr[i])
			return 0;
	return addr[10] == 0xff && addr[11] == 0xff;
}

/*
 * A TCP socket's addresses (by the traffic's version: IPv4 on a dual-stack
 * IPv6 socket reads as IPv4, as the begin's packet does) and counters.
 */
static __always_inline void snapshot(struct sock *sk, struct flowsql_tcp_snapshot *t, __u8 state)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	unsigned short family = 0;
	unsigned long flags = 0;

	__builtin_memset(t, 0, sizeof(*t));
	t->state = state;
	bpf_probe_read_kernel(&family, sizeof(family), &sk->__sk_common.skc_family);
	t->ip_version = 4;
	if (family == AF_INET6) {
		bpf_probe_read_kernel(t->local_addr_be, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_probe_read_kernel(t->remote_addr_be, 16, &sk->__sk_common.skc_v6_daddr);
		if (v4_mapped(t->remote_addr_be)) {
			__builtin_memset(t->local_addr_be, 0, 16);
			__builtin_memset(t->remote_addr_be, 0, 16);
		} else {
			t->ip_version = 6;
		}
	}
	if (t->ip_version == 4) {
		bpf_probe_read_kernel(t->local_addr_be, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_probe_read_kernel(t->remote_addr_be, 4, &sk->__sk_common.skc_daddr);
	}
	bpf_probe_read_kernel(&t->remote_port_be, sizeof(t->remote_port_be), &sk->__sk_common.skc_dport);
	bpf_probe_read_kernel(&t->sk_err, sizeof(t->sk_err), &sk->sk_err);
	bpf_probe_read_kernel(&t->sk_err_soft, sizeof(t->sk_err_soft), &sk->sk_err_soft);
	bpf_probe_read_kernel(&flags, sizeof(flags), &sk->__sk_common.skc_flags);
	t->fin_received = (flags >> SOCK_DONE) & 1;
	if (!tp)
		return;
	/* Not skc_num: the CLOSE transition has already released the port. */
	bpf_probe_read_kernel(&t->local_port_be, sizeof(t->local_port_be), &tp->inet_conn.icsk_inet.inet_sport);
	bpf_probe_read_kernel(&t->srtt_us, sizeof(t->srtt_us), &tp->srtt_us);
	t->srtt_us >>= 3; /* the kernel keeps it times eight */
	bpf_probe_read_kernel(&t->total_retrans, sizeof(t->total_retrans), &tp->total_retrans);
	bpf_probe_read_kernel(&t->segs_in, sizeof(t->segs_in), &tp->segs_in);
	bpf_probe_read_kernel(&t->segs_out, sizeof(t->segs_out), &tp->segs_out);
	bpf_probe_read_kernel(&t->snd_una, sizeof(t->snd_una), &tp->snd_una);
	bpf_probe_read_kernel(&t->write_seq, sizeof(t->write_seq), &tp->write_seq);
	bpf_probe_read_kernel(&t->bytes_acked, sizeof(t->bytes_acked), &tp->bytes_acked);
	bpf_probe_read_kernel(&t->bytes_received, sizeof(t->bytes_received), &tp->bytes_received);
}

static __always_inline int socket_dead(struct sock *sk)
{
	unsigned long flags = 0;

	bpf_probe_read_kernel(&flags, sizeof(flags), &sk->__sk_common.skc_flags);
	return (flags >> SOCK_DEAD) & 1;
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

	/*
	 * Ingress: we sent the SYN, the local side initiated. Egress from a
	 * listener (the hook sees the listener for its request sockets): we
	 * accepted. Egress from a SYN_RECV socket: a TCP Fast Open connection
	 * sends its own SYN-ACK from the accepted socket, which then has
	 * fastopen_rsk set; any other is a simultaneous open, where the local
	 * socket called connect() too: outgoing.
	 */
	int incoming = egress && socket_state == TCP_LISTEN;
	if (egress && socket_state == TCP_SYN_RECV && skb->sk) {
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(skb->sk);
		struct request_sock *fastopen = NULL;

		if (tp)
			bpf_probe_read_kernel(&fastopen, sizeof(fastopen), &tp->fastopen_rsk);
		incoming = fastopen != NULL;
	}
	struct flowsql_socket *s = NULL;
	if (feature(FLOWSQL_FEATURE_ATTRIBUTION | FLOWSQL_FEATURE_ENDS) && skb->sk) {
		struct bpf_sock *full = bpf_sk_fullsock(skb->sk);

		if (full)
			s = bpf_sk_storage_get(&FLOWSQL_MAP_SOCKETS, full, NULL, 0);
	}
	/* A Fast Open connection is named by its listener, like a request socket's. */
	if (incoming && socket_state == TCP_SYN_RECV && s && s->listener_cookie)
		key.socket_cookie = s->listener_cookie;

	struct flowsql_connection_value begun = {};
	begun.flow_seq = next_flow_seq();
	begun.begin_ns = bpf_ktime_get_boot_ns();
	long inserted = bpf_map_update_elem(&FLOWSQL_MAP_CONNECTIONS, &key, &begun, BPF_NOEXIST);
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
	e->header.boot_ns = begun.begin_ns;
	e->cgroup_id = bpf_skb_cgroup_id(skb);
	e->socket_cookie = key.socket_cookie;
	e->flow_seq = begun.flow_seq;
	e->ip_version = p->ip_version;
	e->flags = 0;
	e->reserved = 0;
	e->direction = incoming ? FLOWSQL_DIRECTION_INCOMING : FLOWSQL_DIRECTION_OUTGOING;
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
	__builtin_memset(&e->owner, 0, sizeof(e->owner));
	if (s) {
		if (feature(FLOWSQL_FEATURE_ATTRIBUTION))
			e->owner = s->owner;
		/* The connection's own socket (not a listener's) keeps its begin for its end. */
		if (socket_state != TCP_LISTEN && !s->flow_seq) {
			s->flow_seq = begun.flow_seq;
			s->begin_ns = begun.begin_ns;
		}
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

/*
 * ---- Who connected, and how it ended: socket storage and tracepoints ----
 */

/*
 * connect() or listen() moved a socket of the watched cgroup out of CLOSE:
 * this runs in the caller's context, so the caller is the process that
 * connected (even with a socket it did not create: inherited, passed over
 * SCM_RIGHTS) or listened (a pre-fork server's parent).
 */
static __always_inline void track(struct sock *sk, int newstate)
{
	__u16 protocol = 0;

	bpf_probe_read_kernel(&protocol, sizeof(protocol), &sk->sk_protocol);
	if (protocol != IPPROTO_TCP)
		return; /* an MPTCP socket, whose TCP subflows are followed */
	if (!cgroup_watched(socket_cgroup(sk)))
		return;
	struct flowsql_socket *s = bpf_sk_storage_get(&FLOWSQL_MAP_SOCKETS, sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
	if (!s) {
		count(FLOWSQL_COUNTER_STORAGE_FAILED);
		return;
	}
	/* A socket connect()ed again after a failed attempt starts afresh. */
	__builtin_memset(s, 0, sizeof(*s));
	s->start_ns = bpf_ktime_get_boot_ns();
	if (newstate == TCP_LISTEN) {
		s->role = FLOWSQL_ROLE_LISTENER;
		s->listener_cookie = bpf_get_socket_cookie(sk);
	} else {
		s->role = FLOWSQL_ROLE_ACTIVE;
	}
	if (feature(FLOWSQL_FEATURE_ATTRIBUTION))
		current_process(&s->owner);
}

/* Reports a begin whose SYN-ACK was not seen, at the ESTABLISHED transition. */
static __always_inline void recover_begin(struct sock *sk, struct flowsql_socket *s, const struct flowsql_tcp_snapshot *t)
{
	s->flow_seq = next_flow_seq();
	s->begin_ns = bpf_ktime_get_boot_ns();
	count(FLOWSQL_COUNTER_BEGIN_RECOVERED);
	struct flowsql_flow_event *e = bpf_ringbuf_reserve(&FLOWSQL_MAP_EVENTS, sizeof(*e), 0);
	if (!e) {
		count(FLOWSQL_COUNTER_FLOW_RINGBUF_FULL);
		return;
	}
	int passive = s->role == FLOWSQL_ROLE_PASSIVE;
	e->header.kind = FLOWSQL_KIND_FLOW_BEGIN;
	e->header.length = sizeof(*e);
	e->header.reserved = 0;
	e->header.boot_ns = s->begin_ns;
	e->cgroup_id = cgroup_id(socket_cgroup(sk));
	e->socket_cookie = passive ? s->listener_cookie : bpf_get_socket_cookie(sk);
	e->flow_seq = s->flow_seq;
	e->ip_version = t->ip_version;
	e->direction = passive ? FLOWSQL_DIRECTION_INCOMING : FLOWSQL_DIRECTION_OUTGOING;
	e->flags = FLOWSQL_BEGIN_RECOVERED;
	e->reserved = 0;
	if (passive) {
		__builtin_memcpy(e->src_addr_be, t->remote_addr_be, 16);
		__builtin_memcpy(e->dst_addr_be, t->local_addr_be, 16);
		e->src_port_be = t->remote_port_be;
		e->dst_port_be = t->local_port_be;
	} else {
		__builtin_memcpy(e->src_addr_be, t->local_addr_be, 16);
		__builtin_memcpy(e->dst_addr_be, t->remote_addr_be, 16);
		e->src_port_be = t->local_port_be;
		e->dst_port_be = t->remote_port_be;
	}
	if (feature(FLOWSQL_FEATURE_ATTRIBUTION))
		e->owner = s->owner;
	else
		__builtin_memset(&e->owner, 0, sizeof(e->owner));
	bpf_ringbuf_submit(e, submit_flags());
	count(FLOWSQL_COUNTER_FLOW_EVENTS);
}

/*
 * The handshake completed. Its begin was reported by the SYN-ACK path:
 * directly into the storage of a connecting socket, or, for an accepted
 * connection (whose SYN-ACK left from a request socket), in the connection
 * map under the key both compute. No begin there: under SYN cookies the
 * SYN-ACK leaves with no socket and no program sees it; this reports it.
 */
static __always_inline void established(struct sock *sk, struct flowsql_socket *s)
{
	struct flowsql_tcp_snapshot t;

	s->flags |= FLOWSQL_SOCKET_ESTABLISHED;
	if (s->flow_seq)
		return;
	snapshot(sk, &t, TCP_ESTABLISHED);
	if (s->role == FLOWSQL_ROLE_PASSIVE) {
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
		struct flowsql_connection_key key = {};
		__u32 rcv_nxt = 0;

		key.socket_cookie = s->listener_cookie;
		__builtin_memcpy(key.local_addr_be, t.local_addr_be, 16);
		__builtin_memcpy(key.remote_addr_be, t.remote_addr_be, 16);
		key.local_port_be = t.local_port_be;
		key.remote_port_be = t.remote_port_be;
		if (tp)
			bpf_probe_read_kernel(&rcv_nxt, sizeof(rcv_nxt), &tp->rcv_nxt);
		/* The SYN-ACK's (seq, ack - 1): our SYN is acked, theirs (and any Fast Open data) received. */
		key.local_isn = t.snd_una - 1;
		key.remote_isn = rcv_nxt - 1;
		key.ip_version = t.ip_version;
		struct flowsql_connection_value *begun = bpf_map_lookup_elem(&FLOWSQL_MAP_CONNECTIONS, &key);
		if (begun) {
			s->flow_seq = begun->flow_seq;
			s->begin_ns = begun->begin_ns;
			return;
		}
	}
	recover_begin(sk, s, &t);
}

/* Submits the end record of a socket whose end is decided. */
static __always_inline void report_end(struct sock *sk, struct flowsql_socket *s)
{
	s->flags = (s->flags | FLOWSQL_SOCKET_REPORTED) & ~FLOWSQL_SOCKET_DEFERRED;
	struct flowsql_socket_event *e = bpf_ringbuf_reserve(&FLOWSQL_MAP_EVENTS, sizeof(*e), 0);
	if (!e) {
		count(FLOWSQL_COUNTER_END_RINGBUF_FULL);
		return;
	}
	e->header.kind = FLOWSQL_KIND_FLOW_END;
	e->header.length = sizeof(*e);
	e->header.reserved = 0;
	e->header.boot_ns = s->end_ns;
	e->cgroup_id = cgroup_id(socket_cgroup(sk));
	e->socket_cookie = bpf_get_socket_cookie(sk);
	e->socket_inode = 0;
	e->socket = *s;
	bpf_ringbuf_submit(e, submit_flags());
	count(FLOWSQL_COUNTER_END_EVENTS);
}

/*
 * The end is decided: the counters are read now. An accepted connection
 * that a process still holds (reset by the peer, timed out) is reported
 * when that process closes it, so that its end names the process.
 */
static __always_inline void end(struct sock *sk, struct flowsql_socket *s, __u8 state)
{
	s->flags = (s->flags | FLOWSQL_SOCKET_ENDED) & ~FLOWSQL_SOCKET_RST_PENDING;
	snapshot(sk, &s->tcp, state);
	if (feature(FLOWSQL_FEATURE_ATTRIBUTION) && s->role == FLOWSQL_ROLE_PASSIVE &&
	    !(s->flags & FLOWSQL_SOCKET_RELEASED) && !socket_dead(sk)) {
		s->flags |= FLOWSQL_SOCKET_DEFERRED;
		return;
	}
	report_end(sk, s);
}

static __always_inline void closed(struct sock *sk, struct flowsql_socket *s, int oldstate)
{
	int error = 0;

	s->end_ns = bpf_ktime_get_boot_ns();
	bpf_probe_read_kernel(&error, sizeof(error), &sk->sk_err);
	if ((oldstate == TCP_ESTABLISHED || oldstate == TCP_CLOSE_WAIT) && error == 0 &&
	    !(s->flags & FLOWSQL_SOCKET_RST_RECEIVED)) {
		/*
		 * close() with unread data, SO_LINGER 0, an abort: the kernel
		 * moves to CLOSE first and sends the RST right after
		 * (tcp_send_reset decides; tcp_destroy_sock if none comes).
		 */
		s->flags |= FLOWSQL_SOCKET_RST_PENDING;
		s->tcp.state = oldstate;
		return;
	}
	end(sk, s, oldstate);
}

SEC("tp_btf/inet_sock_set_state")
int flowsql_state(__u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	int oldstate = (int)ctx[1];
	int newstate = (int)ctx[2];

	if (oldstate == TCP_CLOSE && (newstate == TCP_SYN_SENT || newstate == TCP_LISTEN)) {
		track(sk, newstate);
		return 0;
	}
	if (!feature(FLOWSQL_FEATURE_ENDS))
		return 0;
	/* Every TCP socket of the host passes here: ours carry storage. */
	struct flowsql_socket *s = bpf_sk_storage_get(&FLOWSQL_MAP_SOCKETS, sk, NULL, 0);
	if (!s)
		return 0;
	if (s->role == FLOWSQL_ROLE_LISTENER) {
		if (oldstate != TCP_LISTEN || newstate != TCP_SYN_RECV)
			return 0; /* the listener itself */
		/* A connection the listener accepted: its storage is a copy of the listener's. */
		s->role = FLOWSQL_ROLE_PASSIVE;
		s->flags = 0;
		s->flow_seq = 0;
		s->begin_ns = 0;
		s->start_ns = bpf_ktime_get_boot_ns();
	}
	if (s->flags & FLOWSQL_SOCKET_ENDED)
		return 0;
	if (newstate == TCP_ESTABLISHED) {
		established(sk, s);
		return 0;
	}
	if (oldstate == TCP_ESTABLISHED && !s->first_close)
		s->first_close = newstate;
	if (newstate == TCP_CLOSE)
		closed(sk, s, oldstate);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int flowsql_receive_reset(__u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	struct flowsql_socket *s = bpf_sk_storage_get(&FLOWSQL_MAP_SOCKETS, sk, NULL, 0);

	if (s)
		s->flags |= FLOWSQL_SOCKET_RST_RECEIVED;
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int flowsql_send_reset(__u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];

	if (!sk)
		return 0; /* a reset for a segment no socket owns */
	/* NULL for request and time-wait sockets, which carry no storage. */
	struct flowsql_socket *s = bpf_sk_storage_get(&FLOWSQL_MAP_SOCKETS, sk, NULL, 0);
	if (!s)
		return 0;
	s->flags |= FLOWSQL_SOCKET_RST_SENT;
	if (s->flags & FLOWSQL_SOCKET_RST_PENDING)
		end(sk, s, s->tcp.state);
	return 0;
}

SEC("tp_btf/tcp_destroy_sock")
int flowsql_destroy(__u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	struct flowsql_socket *s = bpf_sk_storage_get(&FLOWSQL_MAP_SOCKETS, sk, NULL, 0);

	if (!s || s->role == FLOWSQL_ROLE_LISTENER || (s->flags & FLOWSQL_SOCKET_REPORTED))
		return 0;
	/*
	 * Ended and not reported: deferred until its holder let go. ENDED
	 * alone says so too: the closing process sets RELEASED from another
	 * CPU without the socket lock, and its write may undo DEFERRED.
	 */
	if (s->flags & (FLOWSQL_SOCKET_DEFERRED | FLOWSQL_SOCKET_ENDED)) {
		report_end(sk, s);
		return 0;
	}
	/* A pending RST that never came, or a socket that never passed CLOSE. */
	if (!s->end_ns)
		s->end_ns = bpf_ktime_get_boot_ns();
	s->flags |= FLOWSQL_SOCKET_ENDED;
	snapshot(sk, &s->tcp, s->tcp.state);
	report_end(sk, s);
	return 0;
}

/*
 * The last close of a socket of the watched cgroup: for an accepted
 * connection, the process that held it (the one that accepted it, unless it
 * handed it on). Every path returns 1.
 */
SEC("cgroup/sock_release")
int flowsql_release(struct bpf_sock *sk)
{
	if (sk->protocol != IPPROTO_TCP)
		return 1;
	struct flowsql_socket *s = bpf_sk_storage_get(&FLOWSQL_MAP_SOCKETS, sk, NULL, 0);
	if (!s)
		return 1;
	if (s->role == FLOWSQL_ROLE_PASSIVE && !s->acceptor_tgid) {
		s->acceptor_tgid = bpf_get_current_pid_tgid() >> 32;
		current_leader_comm(s->acceptor_comm);
	}
	s->flags |= FLOWSQL_SOCKET_RELEASED;
	return 1;
}

/* Bytes of one path component read at most (NAME_MAX and its NUL). */
#define EXEC_NAME_MAX 256
/* Components walked at most (mount crossings included). */
#define EXEC_WALK_MAX 48

/*
 * A process executed a program: its path, walked from the file up through
 * the mounts to its mount namespace's root, and the (device, inode) that
 * sockets name it by. Every exec of the host is reported, not only those in
 * the watched cgroup: a process may join the cgroup after its exec (a
 * supervisor that moves it), and a short-lived one is gone before /proc
 * could name it. Execs are rare next to packets; user space keeps a bounded
 * cache of the paths.
 */
SEC("tp_btf/sched_process_exec")
int flowsql_exec(__u64 *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx[0];
	struct linux_binprm *bprm = (struct linux_binprm *)ctx[2];
	__u32 zero = 0;
	union flowsql_scratch *scratch = bpf_map_lookup_elem(&FLOWSQL_MAP_SCRATCH, &zero);
	if (!scratch)
		return 0;
	struct flowsql_exec_event *e = &scratch->exec;
	struct file *file = NULL;
	struct inode *inode = NULL;
	struct super_block *sb = NULL;
	struct dentry *dentry = NULL;
	struct vfsmount *vfsmnt = NULL;

	e->tgid = 0;
	bpf_probe_read_kernel(&e->tgid, sizeof(e->tgid), &task->tgid);
	e->exe_dev = 0;
	e->exe_ino = 0;
	e->reserved = 0;
	bpf_probe_read_kernel(&file, sizeof(file), &bprm->file);
	if (!file)
		return 0;
	bpf_probe_read_kernel(&inode, sizeof(inode), &file->f_inode);
	if (inode) {
		bpf_probe_read_kernel(&e->exe_ino, sizeof(e->exe_ino), &inode->i_ino);
		bpf_probe_read_kernel(&sb, sizeof(sb), &inode->i_sb);
		if (sb)
			bpf_probe_read_kernel(&e->exe_dev, sizeof(e->exe_dev), &sb->s_dev);
	}
	bpf_probe_read_kernel(&dentry, sizeof(dentry), &file->f_path.dentry);
	bpf_probe_read_kernel(&vfsmnt, sizeof(vfsmnt), &file->f_path.mnt);
	struct mount *mnt = (struct mount *)((char *)vfsmnt - kernel_offsetof(struct mount, mnt));
	__u32 off = 0;
	__u16 components = 0;

	for (int i = 0; i < EXEC_WALK_MAX; i++) {
		struct dentry *mnt_root = NULL;
		struct dentry *parent = NULL;
		const unsigned char *name = NULL;

		bpf_probe_read_kernel(&mnt_root, sizeof(mnt_root), &mnt->mnt.mnt_root);
		if (dentry == mnt_root) {
			struct mount *up = NULL;

			bpf_probe_read_kernel(&up, sizeof(up), &mnt->mnt_parent);
			if (!up || up == mnt)
				break; /* the root of the mount namespace */
			bpf_probe_read_kernel(&dentry, sizeof(dentry), &mnt->mnt_mountpoint);
			mnt = up;
			continue;
		}
		bpf_probe_read_kernel(&parent, sizeof(parent), &dentry->d_parent);
		if (!parent || parent == dentry)
			break; /* a file system's root */
		if (off > FLOWSQL_EXEC_PATH_MAX - EXEC_NAME_MAX) {
			components |= FLOWSQL_EXEC_TRUNCATED;
			break;
		}
		bpf_probe_read_kernel(&name, sizeof(name), &dentry->d_name.name);
		long n = bpf_probe_read_kernel_str(&e->path[off], EXEC_NAME_MAX, name);
		if (n <= 0) {
			components |= FLOWSQL_EXEC_TRUNCATED;
			break;
		}
		off += n;
		components++;
		dentry = parent;
		if (i == EXEC_WALK_MAX - 1)
			components |= FLOWSQL_EXEC_TRUNCATED;
	}
	if (off > FLOWSQL_EXEC_PATH_MAX)
		off = FLOWSQL_EXEC_PATH_MAX;
	e->path_len = off;
	e->components = components;
	__u32 length = sizeof(*e) - FLOWSQL_EXEC_PATH_MAX + off;
	e->header.kind = FLOWSQL_KIND_EXEC;
	e->header.length = length;
	e->header.reserved = 0;
	e->header.boot_ns = bpf_ktime_get_boot_ns();
	if (bpf_ringbuf_output(&FLOWSQL_MAP_EVENTS, e, length, submit_flags()))
		count(FLOWSQL_COUNTER_INFO_RINGBUF_FULL);
	else
		count(FLOWSQL_COUNTER_INFO_EVENTS);
	return 0;
}

/* A cgroup of the unified hierarchy appeared, was renamed or went away. */
static __always_inline void report_cgroup(__u64 *ctx, __u8 op)
{
	struct cgroup *cgroup = (struct cgroup *)ctx[0];
	const char *path = (const char *)ctx[1];
	struct cgroup_root *root = NULL;
	int hierarchy = -1;

	bpf_probe_read_kernel(&root, sizeof(root), &cgroup->root);
	if (root)
		bpf_probe_read_kernel(&hierarchy, sizeof(hierarchy), &root->hierarchy_id);
	if (hierarchy != 0)
		return; /* a cgroup v1 hierarchy (hybrid layouts) */
	__u32 zero = 0;
	union flowsql_scratch *scratch = bpf_map_lookup_elem(&FLOWSQL_MAP_SCRATCH, &zero);
	if (!scratch)
		return;
	struct flowsql_cgroup_event *e = &scratch->cgroup;
	long n = bpf_probe_read_kernel_str(e->path, FLOWSQL_CGROUP_PATH_MAX, path);
	if (n <= 0 || n > FLOWSQL_CGROUP_PATH_MAX)
		return;
	e->cgroup_id = cgroup_id(cgroup);
	e->op = op;
	e->truncated = n == FLOWSQL_CGROUP_PATH_MAX;
	e->path_len = n;
	e->reserved = 0;
	__u32 length = sizeof(*e) - FLOWSQL_CGROUP_PATH_MAX + n;
	e->header.kind = FLOWSQL_KIND_CGROUP;
	e->header.length = length;
	e->header.reserved = 0;
	e->header.boot_ns = bpf_ktime_get_boot_ns();
	if (bpf_ringbuf_output(&FLOWSQL_MAP_EVENTS, e, length, submit_flags()))
		count(FLOWSQL_COUNTER_INFO_RINGBUF_FULL);
	else
		count(FLOWSQL_COUNTER_INFO_EVENTS);
}

SEC("tp_btf/cgroup_mkdir")
int flowsql_cgroup_mkdir(__u64 *ctx)
{
	report_cgroup(ctx, FLOWSQL_CGROUP_MKDIR);
	return 0;
}

SEC("tp_btf/cgroup_rmdir")
int flowsql_cgroup_rmdir(__u64 *ctx)
{
	report_cgroup(ctx, FLOWSQL_CGROUP_RMDIR);
	return 0;
}

SEC("tp_btf/cgroup_rename")
int flowsql_cgroup_rename(__u64 *ctx)
{
	report_cgroup(ctx, FLOWSQL_CGROUP_RENAME);
	return 0;
}

/* The inode of a socket's file (0: no file, e.g. not accepted yet). */
static __always_inline __u64 socket_inode(struct sock *sk)
{
	struct socket *sock = NULL;
	struct file *file = NULL;
	struct inode *inode = NULL;
	__u64 ino = 0;

	bpf_probe_read_kernel(&sock, sizeof(sock), &sk->sk_socket);
	if (sock)
		bpf_probe_read_kernel(&file, sizeof(file), &sock->file);
	if (file)
		bpf_probe_read_kernel(&inode, sizeof(inode), &file->f_inode);
	if (inode)
		bpf_probe_read_kernel(&ino, sizeof(ino), &inode->i_ino);
	return ino;
}

/* Writes a socket record to an iterator's output. */
static __always_inline void write_socket(struct seq_file *seq, struct sock *sk, struct flowsql_socket *s,
					 __u8 state, __u64 inode)
{
	__u32 zero = 0;
	union flowsql_scratch *scratch = bpf_map_lookup_elem(&FLOWSQL_MAP_SCRATCH, &zero);
	if (!scratch)
		return;
	struct flowsql_socket_event *e = &scratch->socket;
	e->header.kind = FLOWSQL_KIND_SOCKET;
	e->header.length = sizeof(*e);
	e->header.reserved = 0;
	e->header.boot_ns = bpf_ktime_get_boot_ns();
	e->cgroup_id = cgroup_id(socket_cgroup(sk));
	e->socket_cookie = bpf_get_socket_cookie(sk);
	e->socket_inode = inode;
	e->socket = *s;
	snapshot(sk, &e->socket.tcp, state);
	bpf_seq_write(seq, e, sizeof(*e));
}

/*
 * Run once per network namespace when the capture starts: gives storage to
 * the watched cgroup's TCP sockets that are older than the capture, so that
 * the connections they accept or end are followed. Listeners come first in
 * the walk, so an established socket on a listening port is known to have
 * been accepted.
 */
SEC("iter/tcp")
int flowsql_iter_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct bpf_iter_meta *meta = ctx->meta;
	__u8 state = 0;
	__u16 port = 0;

	if (!skc)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0; /* request and time-wait sockets */
	struct sock *sk = (struct sock *)tp;
	bpf_probe_read_kernel(&state, sizeof(state), &skc->skc_state);
	bpf_probe_read_kernel(&port, sizeof(port), &skc->skc_num);
	if (state == TCP_CLOSE)
		return 0;
	struct flowsql_listen_port listening = {};
	listening.session_id = meta->session_id;
	listening.port = port;
	if (state == TCP_LISTEN) {
		__u8 one = 1;

		bpf_map_update_elem(&FLOWSQL_MAP_LISTEN_PORTS, &listening, &one, BPF_ANY);
	}
	if (bpf_sk_storage_get(&FLOWSQL_MAP_SOCKETS, sk, NULL, 0))
		return 0; /* already followed */
	if (!cgroup_watched(socket_cgroup(sk)))
		return 0;
	struct flowsql_socket *s = bpf_sk_storage_get(&FLOWSQL_MAP_SOCKETS, sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
	if (!s) {
		count(FLOWSQL_COUNTER_STORAGE_FAILED);
		return 0;
	}
	__builtin_memset(s, 0, sizeof(*s));
	s->flags = FLOWSQL_SOCKET_PRECAPTURE;
	if (state == TCP_LISTEN) {
		s->role = FLOWSQL_ROLE_LISTENER;
		s->listener_cookie = bpf_get_socket_cookie(sk);
	} else {
		s->role = bpf_map_lookup_elem(&FLOWSQL_MAP_LISTEN_PORTS, &listening) ? FLOWSQL_ROLE_PASSIVE
										     : FLOWSQL_ROLE_ACTIVE;
		/* A connect() still under way: its begin is still to come. */
		if (state != TCP_SYN_SENT) {
			s->flags |= FLOWSQL_SOCKET_ESTABLISHED;
			s->flow_seq = next_flow_seq();
		}
	}
	write_socket(meta->seq, sk, s, state, socket_inode(sk));
	return 0;
}

/*
 * Walks flowsql's own socket storage (every network namespace at once):
 * the connections begun and not ended, with their counters now.
 */
SEC("iter/bpf_sk_storage_map")
int flowsql_iter_open(struct bpf_iter__bpf_sk_storage_map *ctx)
{
	struct sock *sk = ctx->sk;
	struct flowsql_socket *s = ctx->value;
	__u8 state = 0;

	if (!sk || !s)
		return 0;
	if (s->role == FLOWSQL_ROLE_LISTENER || !s->flow_seq || (s->flags & FLOWSQL_SOCKET_ENDED))
		return 0;
	bpf_probe_read_kernel(&state, sizeof(state), &sk->__sk_common.skc_state);
	write_socket(ctx->meta->seq, sk, s, state, 0);
	return 0;
}
