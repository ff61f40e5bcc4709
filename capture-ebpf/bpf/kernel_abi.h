/* SPDX-License-Identifier: (GPL-2.0-only WITH Linux-syscall-note) OR Apache-2.0 */
/*
 * The few pieces of the kernel's BPF ABI that flowsql.bpf.c uses, declared here
 * instead of included from linux/bpf.h and libbpf's bpf_helpers.h.
 *
 * Why: the compiled object is committed and a CI step rebuilds it and compares
 * bytes. Its debug info records the line of every declaration it uses, so
 * building against whatever linux-libc-dev a machine happens to have would make
 * the object depend on that package's version. Everything below is stable
 * kernel ABI (UAPI struct layouts, helper numbers, map types) and is checked by
 * the verifier at load time: a wrong offset is refused, never silently misread.
 */
#ifndef FLOWSQL_KERNEL_ABI_H
#define FLOWSQL_KERNEL_ABI_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed int __s32;
typedef signed long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;

#define NULL ((void *)0)

#define SEC(name) __attribute__((section(name), used))
#define __always_inline inline __attribute__((always_inline))

/* BTF-defined map attributes, as libbpf and aya read them. */
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

/* enum bpf_map_type */
#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_SK_STORAGE 24
#define BPF_MAP_TYPE_RINGBUF 27

/* map update flags */
#define BPF_ANY 0
#define BPF_NOEXIST 1

/* map_flags */
#define BPF_F_NO_PREALLOC 1
#define BPF_F_NO_COMMON_LRU 2
#define BPF_F_CLONE 512 /* socket storage: copied to the sockets a listener accepts */

/* bpf_sk_storage_get flags */
#define BPF_SK_STORAGE_GET_F_CREATE 1

/* bpf_ringbuf_submit/output flags and bpf_ringbuf_query questions */
#define BPF_RB_NO_WAKEUP 1
#define BPF_RB_FORCE_WAKEUP 2
#define BPF_RB_AVAIL_DATA 0
#define BPF_RB_RING_SIZE 1

/* EtherType values as skb->protocol carries them (network byte order). */
#define ETH_P_IP_BE 0x0008   /* htons(0x0800) */
#define ETH_P_IPV6_BE 0xDD86 /* htons(0x86DD) */

#define AF_INET 2
#define AF_INET6 10

/* enum sock_flags: bits of sock_common.skc_flags */
#define SOCK_DEAD 0 /* orphaned: no process holds it */
#define SOCK_DONE 1 /* the peer's FIN arrived */

#define IPPROTO_HOPOPTS 0
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_AH 51
#define IPPROTO_DSTOPTS 60

/* include/net/tcp_states.h */
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_FIN_WAIT1 4
#define TCP_FIN_WAIT2 5
#define TCP_TIME_WAIT 6
#define TCP_CLOSE 7
#define TCP_CLOSE_WAIT 8
#define TCP_LAST_ACK 9
#define TCP_LISTEN 10
#define TCP_CLOSING 11

/*
 * struct __sk_buff (include/uapi/linux/bpf.h): the context of a cgroup_skb
 * program. Declared up to the last field this program reads; the verifier
 * validates every context access by offset.
 */
struct bpf_sock;
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
	__u32 napi_id;
	__u32 family;
	__u32 remote_ip4;
	__u32 local_ip4;
	__u32 remote_ip6[4];
	__u32 local_ip6[4];
	__u32 remote_port;
	__u32 local_port;
	__u32 data_meta;
	union { struct bpf_flow_keys *flow_keys; __u64 :64; } __attribute__((aligned(8)));
	__u64 tstamp;
	__u32 wire_len;
	__u32 gso_segs;
	union { struct bpf_sock *sk; __u64 :64; } __attribute__((aligned(8)));
};

/* struct bpf_sock (include/uapi/linux/bpf.h). */
struct bpf_sock {
	__u32 bound_dev_if;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 mark;
	__u32 priority;
	__u32 src_ip4;
	__u32 src_ip6[4];
	__u32 src_port; /* host byte order */
	__be16 dst_port; /* network byte order */
	__u16 :16;
	__u32 dst_ip4;
	__u32 dst_ip6[4];
	__u32 state;
	__s32 rx_queue_mapping;
};

/*
 * Kernel types read through BTF (tracing programs, iterators, and the
 * pointers helpers such as bpf_skc_to_tcp_sock return). Only the fields
 * flowsql reads are declared: preserve_access_index makes clang record each
 * access by name (CO-RE), and the loader moves it to wherever this kernel's
 * BTF puts the field; the verifier checks every access against that BTF.
 * A field this kernel lacks is refused at load, never misread.
 */
#define __kernel_struct __attribute__((preserve_access_index))
/* Offset of a field in this kernel (a CO-RE relocation). */
#define kernel_offsetof(type, field) __builtin_preserve_field_info(((type *)0)->field, 0)

struct in6_addr { __u8 s6_addr[16]; } __kernel_struct;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	unsigned char skc_state;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	unsigned long skc_flags;
} __kernel_struct;

struct kernfs_node { __u64 id; } __kernel_struct;
struct cgroup_root { int hierarchy_id; } __kernel_struct;
struct cgroup {
	int level;
	struct kernfs_node *kn;
	struct cgroup_root *root;
	struct cgroup *ancestors[0];
} __kernel_struct;
struct sock_cgroup_data { struct cgroup *cgroup; } __kernel_struct;

struct qstr { const unsigned char *name; } __kernel_struct;
struct super_block { __u32 s_dev; } __kernel_struct;
struct inode { unsigned long i_ino; struct super_block *i_sb; } __kernel_struct;
struct dentry { struct dentry *d_parent; struct qstr d_name; } __kernel_struct;
struct vfsmount { struct dentry *mnt_root; } __kernel_struct;
struct mount { struct mount *mnt_parent; struct dentry *mnt_mountpoint; struct vfsmount mnt; } __kernel_struct;
struct path { struct vfsmount *mnt; struct dentry *dentry; } __kernel_struct;
struct file { struct path f_path; struct inode *f_inode; } __kernel_struct;
struct socket { struct file *file; } __kernel_struct;

struct sock {
	struct sock_common __sk_common;
	int sk_err;
	int sk_err_soft;
	__u16 sk_protocol;
	struct socket *sk_socket;
	struct sock_cgroup_data sk_cgrp_data;
} __kernel_struct;
struct inet_sock { struct sock sk; __be16 inet_sport; } __kernel_struct;
struct inet_connection_sock { struct inet_sock icsk_inet; } __kernel_struct;
struct request_sock;
struct tcp_sock {
	struct inet_connection_sock inet_conn;
	__u32 segs_in;
	__u32 segs_out;
	__u32 rcv_nxt;
	__u32 snd_una;
	__u32 write_seq;
	__u32 srtt_us;
	__u32 total_retrans;
	__u64 bytes_received;
	__u64 bytes_acked;
	struct request_sock *fastopen_rsk;
} __kernel_struct;

struct mm_struct { struct file *exe_file; } __kernel_struct;
struct task_struct {
	int tgid;
	struct task_struct *group_leader;
	struct mm_struct *mm;
	char comm[16];
} __kernel_struct;
struct linux_binprm { struct file *file; } __kernel_struct;

/* Contexts of the iterators (include/linux/bpf.h, net/ipv4/tcp_ipv4.c). */
struct seq_file;
struct bpf_iter_meta { struct seq_file *seq; __u64 session_id; __u64 seq_num; } __kernel_struct;
struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
	__u32 uid;
} __kernel_struct;
struct bpf_map;
struct bpf_iter__bpf_sk_storage_map {
	struct bpf_iter_meta *meta;
	struct bpf_map *map;
	struct sock *sk;
	void *value;
} __kernel_struct;

/* Helper functions, by their number in enum bpf_func_id. */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static long (*bpf_skb_load_bytes)(const void *skb, __u32 offset, void *to, __u32 len) = (void *)26;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static __u64 (*bpf_get_current_uid_gid)(void) = (void *)15;
static __u64 (*bpf_get_socket_cookie)(void *ctx) = (void *)46;
static __u64 (*bpf_skb_cgroup_id)(struct __sk_buff *skb) = (void *)79;
static struct bpf_sock *(*bpf_sk_fullsock)(struct bpf_sock *sk) = (void *)95;
static void *(*bpf_sk_storage_get)(void *map, void *sk, void *value, __u64 flags) = (void *)107;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)113;
static long (*bpf_probe_read_kernel_str)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)115;
static __u64 (*bpf_ktime_get_boot_ns)(void) = (void *)125;
static long (*bpf_ringbuf_output)(void *ringbuf, void *data, __u64 size, __u64 flags) = (void *)130;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;
static void (*bpf_ringbuf_discard)(void *data, __u64 flags) = (void *)133;
static __u64 (*bpf_ringbuf_query)(void *ringbuf, __u64 flags) = (void *)134;
static long (*bpf_seq_write)(struct seq_file *m, const void *data, __u32 len) = (void *)127;
static struct tcp_sock *(*bpf_skc_to_tcp_sock)(void *sk) = (void *)137;
static struct task_struct *(*bpf_get_current_task_btf)(void) = (void *)158;

#define bpf_htons(x) __builtin_bswap16(x)
#define bpf_ntohs(x) __builtin_bswap16(x)
#define bpf_ntohl(x) __builtin_bswap32(x)

#endif
