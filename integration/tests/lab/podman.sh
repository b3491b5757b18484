#!/usr/bin/env bash
# Podman 4 (CNI backend) on a plugin directory, confined: run by the lab test
# inside the lab host network namespace and a private mount namespace, with
# tmpfs over /run, /var/lib and /dev/shm, Podman's storage and config in a temp dir,
# cgroups disabled. Prints "ok NAME" / "FAIL NAME: detail" lines.
# Args: PLUGIN_DIR WORK_DIR OUTSIDE_NETNS_PATH WITH_DNS(1/0) FORWARD_DROP(1/0)
set -u
PLUGINS=$1 T=$2 OUTSIDE=$3 DNS=$4 FWDROP=${5:-0}
BB=$(command -v busybox)
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/lib
# Podman's shared-memory lock file (libpod_lock) stays in this mount namespace too.
mount -t tmpfs tmpfs /dev/shm
# Upstream DNS is a local fake in the outside namespace, never a real resolver:
# the resolver reads this namespace's /etc/resolv.conf.
echo "nameserver 198.51.100.2" > "$T/resolv.conf" 2>/dev/null || { mkdir -p "$T"; echo "nameserver 198.51.100.2" > "$T/resolv.conf"; }
mount --bind "$T/resolv.conf" /etc/resolv.conf
# crun refuses hybrid cgroup hierarchies; containers run without cgroups here.
umount -l /sys/fs/cgroup 2>/dev/null; mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null
mkdir -p "$T/root/bin" "$T/storage" "$T/runroot" "$T/net.d" "$T/www1" "$T/www2"
cp "$BB" "$T/root/bin/busybox"
for c in sh httpd wget nslookup sleep cat hostname; do ln -sf busybox "$T/root/bin/$c"; done
echo "this is web1" > "$T/root/web1.html"
cat > "$T/containers.conf" <<EOC
[containers]
cgroups = "disabled"
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["$PLUGINS"]
network_config_dir = "$T/net.d"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "none"
runtime = "crun"
EOC
cat > "$T/storage.conf" <<EOS
[storage]
driver = "vfs"
graphroot = "$T/storage"
runroot = "$T/runroot"
EOS
export CONTAINERS_CONF="$T/containers.conf" CONTAINERS_STORAGE_CONF="$T/storage.conf"
ok() { echo "ok $1"; }
fail() { echo "FAIL $1: $2"; }
check() { # NAME EXPECTED COMMAND...
  local name=$1 want=$2; shift 2
  local got; got=$(timeout 10 "$@" 2>&1)
  if printf '%s' "$got" | grep -q -- "$want"; then ok "$name"; else fail "$name" "want '$want', got '$(printf '%s' "$got" | head -c 300)'"; fi
}
# A host as Docker leaves it: iptables' FORWARD chain drops by default (in
# this lab host namespace only). The firewall plugin must admit the containers,
# published ports included (the reference plugins do not admit DNATed
# connections from outside, so their run leaves the policy alone).
if [ "$FWDROP" = 1 ]; then
  iptables -w 5 -P FORWARD DROP && ip6tables -w 5 -P FORWARD DROP || fail forward-drop "iptables -P FORWARD DROP"
fi
FAKE_PID=
if [ "$DNS" = 1 ]; then
  nsenter --net="$OUTSIDE" dnsmasq --no-daemon --no-resolv --no-hosts --port=53 \
    --listen-address=198.51.100.2 --bind-interfaces --address=/upstream.test/192.0.2.99 \
    --pid-file="$T/dnsmasq.pid" >/dev/null 2>&1 &
  FAKE_PID=$!
fi
cleanup() {
  [ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null
  podman rm -f -a -t 0 >/dev/null 2>&1
  podman network rm -f pnet >/dev/null 2>&1
  [ -f /run/rnet/dns/rnet-dns.pid ] && kill "$(cat /run/rnet/dns/rnet-dns.pid)" 2>/dev/null
  return 0
}
trap cleanup EXIT
( cd "$T/root" && tar -cf "$T/rootfs.tar" . )
podman import -q "$T/rootfs.tar" localhost/bb:1 >/dev/null || { fail import "podman import"; exit 0; }
podman network create --subnet 10.89.7.0/24 pnet >/dev/null && ok network-create || fail network-create "$(podman network create pnet 2>&1)"
check conflist-plugins '"type": "bridge"' cat "$T/net.d/pnet.conflist"
podman run -d --name web1 --network pnet -p 8080:80 localhost/bb:1 httpd -f -p 80 -h / >/dev/null && ok run-web1 || fail run-web1 "$(podman logs web1 2>&1)"
podman run -d --name web2 --network pnet --network-alias w2 -p 8081:80 localhost/bb:1 httpd -f -p 80 -h / >/dev/null && ok run-web2 || fail run-web2 "start"
IP1=$(podman inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' web1)
check ip-assigned "10.89.7." echo "$IP1"
check by-ip "this is web1" "$BB" wget -qO- "http://$IP1/web1.html"
check port-localhost "this is web1" "$BB" wget -qO- http://127.0.0.1:8080/web1.html
check port-uplink-from-outside "this is web1" nsenter --net="$OUTSIDE" "$BB" wget -qO- http://198.51.100.1:8080/web1.html
check from-other-container "this is web1" podman exec web2 wget -qO- "http://$IP1/web1.html"
check hairpin "this is web1" podman exec web1 wget -qO- http://198.51.100.1:8080/web1.html
if [ "$DNS" = 1 ]; then
  check dns-name "this is web1" podman exec web2 wget -qO- http://web1/web1.html
  check dns-alias "this is web1" podman exec web1 wget -qO- http://w2/web1.html
  check dns-upstream "192.0.2.99" podman exec web1 nslookup upstream.test
fi
# stop tears the container's network down (CNI DEL): its published port
# closes, its name goes, its lease is released; start brings them back.
IP2=$(podman inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' web2)
podman stop -t 0 web2 >/dev/null && ok stop || fail stop "podman stop"
check port-closed-after-stop "exit=1" sh -c "timeout 3 $BB wget -qO- http://127.0.0.1:8081/web1.html; echo exit=\$?"
check lease-released-after-stop "gone" sh -c "test -e /var/lib/cni/networks/pnet/$IP2 && echo held || echo gone"
if [ "$DNS" = 1 ]; then
  check dns-name-gone-after-stop "NXDOMAIN\|can't find\|server can't" "$BB" nslookup web2 10.89.7.1
fi
podman start web2 >/dev/null && ok start || fail start "podman start"
check port-after-start "this is web1" "$BB" wget -qO- http://127.0.0.1:8081/web1.html
if [ "$DNS" = 1 ]; then
  check dns-name-after-start "this is web1" podman exec web1 wget -qO- http://web2/web1.html
fi
podman restart -t 0 web1 >/dev/null && ok restart || fail restart "podman restart"
check after-restart "this is web1" "$BB" wget -qO- http://127.0.0.1:8080/web1.html
podman rm -f -t 0 web1 web2 >/dev/null && ok rm || fail rm "podman rm"
check port-closed-after-rm "exit=1" sh -c "timeout 3 $BB wget -qO- http://127.0.0.1:8080/web1.html; echo exit=\$?"
if [ "$DNS" = 1 ]; then
  check dns-name-gone-after-rm "NXDOMAIN\|can't find\|server can't" "$BB" nslookup web1 10.89.7.1
fi
podman network rm pnet >/dev/null && ok network-rm || fail network-rm "podman network rm"
echo "LEASES $(find /var/lib/cni/networks -type f 2>/dev/null | grep -vc -e lock -e last_reserved -e '/\.' )"
