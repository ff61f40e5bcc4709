#!/usr/bin/env bash
# A demo lab: captures made-up traffic between two network namespaces (and a
# dnsmasq that answers made-up names) into a data directory, default
# /tmp/flowsql-demo, without touching the host's own traffic. The README's
# query examples come from it. As root, after
#   cargo build -p flowsql -p flowsql-tests
# run: contrib/demo-lab.sh [DATA_DIR]; then
#   target/debug/flowsql shell --data-dir /tmp/flowsql-demo
#
# The client programs are copies of netpeer under service-like names
# (shop-frontend, billing-worker, pg-sync), so that flows name processes and
# executables; the far side's servers answer fixed amounts of data, so that
# flow_ends has bytes to add up; some attempts fail (nothing listening, SYNs
# dropped, no such host).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROFILE=${PROFILE:-debug}   # PROFILE=release after cargo build --release ...
NP=$ROOT/target/$PROFILE/netpeer
FS=$ROOT/target/$PROFILE/flowsql
DATA=${1:-/tmp/flowsql-demo}
BIN=/opt/flowsql-demo/bin
CG=$(awk '$3=="cgroup2"{print $2; exit}' /proc/mounts)/flowsql-demo
rm -rf "$DATA"; mkdir -p "$CG" "$BIN"
for name in shop-frontend billing-worker pg-sync sshd-lab; do install -m 0755 "$NP" "$BIN/$name"; done
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  # Everything still running in the lab's namespaces (servers, dnsmasq).
  for ns in demo-c demo-s; do kill $(ip netns pids $ns 2>/dev/null) 2>/dev/null || true; done
  sleep 0.5
  for p in $(cat $CG/cgroup.procs 2>/dev/null); do kill -9 $p; done
  rmdir $CG 2>/dev/null || true; rm -rf /opt/flowsql-demo
  ip netns del demo-c 2>/dev/null || true; ip netns del demo-s 2>/dev/null || true
}
trap cleanup EXIT
ip netns add demo-c; ip netns add demo-s
ip -n demo-c link set lo up; ip -n demo-s link set lo up
ip link add demo-a netns demo-c type veth peer name demo-b netns demo-s
ip -n demo-c addr add 10.20.0.1/24 dev demo-a; ip -n demo-s addr add 10.20.0.2/24 dev demo-b
ip -n demo-s addr add 10.20.0.3/24 dev demo-b; ip -n demo-s addr add 10.20.0.4/24 dev demo-b
ip -n demo-c link set demo-a up; ip -n demo-s link set demo-b up
# The far side drops SYNs to port 9000 (attempts time out).
printf 'table inet demo {\n chain input {\n  type filter hook input priority 0;\n  tcp dport 9000 drop\n }\n}\n' | ip netns exec demo-s nft -f -
dns() { ip netns exec demo-c dnsmasq -d --conf-file=/dev/null --no-resolv --no-hosts --user=root --group=root --pid-file= --port=53 --listen-address=127.0.0.1 --bind-interfaces "$@" >/dev/null 2>&1 & echo $!; }
D=$(dns --host-record=api.example.com,10.20.0.2,20 --cname=www.shop.example,edge.cdn.example.net,20 --host-record=edge.cdn.example.net,10.20.0.3,20 --host-record=db.internal.example,10.20.0.4,20)
sleep 0.5
# Servers on the far side (not watched), each answering a fixed amount.
far() { (sleep 1000 | ip netns exec demo-s $NP exchange-serve --listen $1 --receive $2 --send $3 >/dev/null) & }
far 10.20.0.2:443 300 12000
far 10.20.0.3:443 500 240000
far 10.20.0.4:443 300 12000
far 10.20.0.4:5432 1500 90000
# Watched local services: a pre-fork "sshd" (its parent listens, two
# workers accept) and an admin page.
(sleep 1000 | $BIN/sshd-lab --cgroup $CG --netns demo-c serve --listen 10.20.0.1:22 --prefork 2 --read >/dev/null) &
(sleep 1000 | $NP --cgroup $CG --netns demo-c serve --listen 10.20.0.1:8080 >/dev/null) &
sleep 0.5
$FS capture --cgroup $CG --data-dir $DATA --export-every 1h >/dev/null 2>&1 & CAP=$!
sleep 2
resolve() { $NP --cgroup $CG --netns demo-c resolve --server 127.0.0.1:53 --name $1 | awk '{print $2}'; }
# PROGRAM NAME PORT SEND RECEIVE COUNT: COUNT exchanges with each address of NAME.
fetch() {
  for ip in $(resolve $2); do
    for _ in $(seq $6); do $BIN/$1 --cgroup $CG --netns demo-c exchange --to $ip:$3 --send $4 --receive $5 >/dev/null; done
  done
}
round() {
  fetch shop-frontend www.shop.example 443 500 240000 $1
  fetch shop-frontend api.example.com 443 300 12000 $1
  fetch billing-worker api.example.com 443 300 12000 $1
  fetch pg-sync db.internal.example 5432 1500 90000 $1
  ip netns exec demo-s $NP connect --to 10.20.0.1:22 --count 2 --send-bytes 100 --fin >/dev/null
  ip netns exec demo-s $NP connect --to 10.20.0.1:8080 --count 1 >/dev/null
}
round 4; round 2
# Attempts that fail: nothing listens on 5433 (refused), port 9000 drops
# SYNs (timeout, after about 3 s with one retry), 10.20.0.9 does not exist
# (unreachable, after about 3 s of ARP).
$BIN/pg-sync --cgroup $CG --netns demo-c connect --to 10.20.0.4:5433 --count 3 --expect refused >/dev/null
$BIN/billing-worker --cgroup $CG --netns demo-c connect --to 10.20.0.2:9000 --syn-count 1 --expect timeout --timeout-ms 10000 >/dev/null &
$BIN/billing-worker --cgroup $CG --netns demo-c connect --to 10.20.0.2:9000 --syn-count 1 --expect timeout --timeout-ms 10000 >/dev/null &
$BIN/shop-frontend --cgroup $CG --netns demo-c connect --to 10.20.0.9:443 --expect unreachable --timeout-ms 10000 >/dev/null &
round 3
wait $(jobs -p | tail -n 3) 2>/dev/null || true
sleep 1
$FS export --data-dir $DATA >/dev/null 2>&1 || true
# api.example.com moves to another address; 10.20.0.2 becomes a new name.
kill $D; sleep 0.3
D=$(dns --host-record=api.example.com,10.20.0.4,20 --host-record=pay.example.org,10.20.0.2,20 --cname=www.shop.example,edge.cdn.example.net,20 --host-record=edge.cdn.example.net,10.20.0.3,20 --host-record=db.internal.example,10.20.0.4,20)
sleep 0.5
fetch billing-worker pay.example.org 443 300 12000 4
fetch billing-worker api.example.com 443 300 12000 4
round 2
sleep 1
kill -INT $CAP; wait $CAP || true
echo done
