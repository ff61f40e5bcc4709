#!/usr/bin/env bash
# A demo lab: captures made-up traffic between two network namespaces (and a
# dnsmasq that answers made-up names) into a data directory, default
# /tmp/flowsql-demo, without touching the host's own traffic. The README's
# query examples come from it. As root, after
#   cargo build -p flowsql -p flowsql-tests
# run: contrib/demo-lab.sh [DATA_DIR]; then
#   target/debug/flowsql shell --data-dir /tmp/flowsql-demo
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NP=$ROOT/target/debug/netpeer
FS=$ROOT/target/debug/flowsql
DATA=${1:-/tmp/flowsql-demo}
CG=$(awk '$3=="cgroup2"{print $2; exit}' /proc/mounts)/flowsql-demo
rm -rf "$DATA"; mkdir -p "$CG"
cleanup() { kill $(jobs -p) 2>/dev/null || true; sleep 0.5; for p in $(cat $CG/cgroup.procs 2>/dev/null); do kill -9 $p; done; rmdir $CG 2>/dev/null || true; ip netns del demo-c 2>/dev/null || true; ip netns del demo-s 2>/dev/null || true; }
trap cleanup EXIT
ip netns add demo-c; ip netns add demo-s
ip -n demo-c link set lo up; ip -n demo-s link set lo up
ip link add demo-a netns demo-c type veth peer name demo-b netns demo-s
ip -n demo-c addr add 10.20.0.1/24 dev demo-a; ip -n demo-s addr add 10.20.0.2/24 dev demo-b
ip -n demo-s addr add 10.20.0.3/24 dev demo-b; ip -n demo-s addr add 10.20.0.4/24 dev demo-b
ip -n demo-c link set demo-a up; ip -n demo-s link set demo-b up
dns() { ip netns exec demo-c dnsmasq -d --conf-file=/dev/null --no-resolv --no-hosts --user=root --group=root --pid-file= --port=53 --listen-address=127.0.0.1 --bind-interfaces "$@" >/dev/null 2>&1 & echo $!; }
D=$(dns --host-record=api.example.com,10.20.0.2,20 --cname=www.shop.example,edge.cdn.example.net,20 --host-record=edge.cdn.example.net,10.20.0.3,20 --host-record=db.internal.example,10.20.0.4,20)
sleep 0.5
# Servers on the far side (not monitored), and a monitored local service.
for port in 443 5432; do (sleep 1000 | ip netns exec demo-s $NP serve --listen 0.0.0.0:$port >/dev/null) & done
(sleep 1000 | $NP --cgroup $CG --netns demo-c serve --listen 10.20.0.1:22 >/dev/null) &
(sleep 1000 | $NP --cgroup $CG --netns demo-c serve --listen 10.20.0.1:8080 >/dev/null) &
sleep 0.5
$FS capture --cgroup $CG --data-dir $DATA --export-every 1h >/dev/null 2>&1 & CAP=$!
sleep 1
client() { $NP --cgroup $CG --netns demo-c "$@" >/dev/null; }
round() {
  for name in api.example.com www.shop.example db.internal.example; do
    ips=$($NP --cgroup $CG --netns demo-c resolve --server 127.0.0.1:53 --name $name | awk '{print $2}')
    for ip in $ips; do
      case $name in db.*) port=5432;; *) port=443;; esac
      client connect --to $ip:$port --count $1
    done
  done
  ip netns exec demo-s $NP connect --to 10.20.0.1:22 --count 2 >/dev/null
  ip netns exec demo-s $NP connect --to 10.20.0.1:8080 --count 1 >/dev/null
}
round 5; round 3; round 8
sleep 2
$FS export --data-dir $DATA >/dev/null 2>&1 || true
# api.example.com moves to another address; 10.20.0.2 becomes a new name.
kill $D; sleep 0.3
D=$(dns --host-record=api.example.com,10.20.0.4,20 --host-record=pay.example.org,10.20.0.2,20 --cname=www.shop.example,edge.cdn.example.net,20 --host-record=edge.cdn.example.net,10.20.0.3,20 --host-record=db.internal.example,10.20.0.4,20)
sleep 0.5
for name in pay.example.org api.example.com; do
  for ip in $($NP --cgroup $CG --netns demo-c resolve --server 127.0.0.1:53 --name $name | awk '{print $2}'); do client connect --to $ip:443 --count 4; done
done
round 2
sleep 1
kill -INT $CAP; wait $CAP || true
echo done
