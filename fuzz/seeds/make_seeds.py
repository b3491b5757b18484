#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ from real inputs
(unit-test and documentation examples). Re-run after changing it; the
output is committed. Files are named by content hash, as libFuzzer does."""
import hashlib, json, os, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")

def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)

def j(v):
    return json.dumps(v, separators=(",", ":"))

def env(pairs, doc):
    head = "\n".join(f"{k}={v}" for k, v in pairs)
    return (head + "\n\n" if head else "") + (doc if isinstance(doc, str) else j(doc))

VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]

# ---- results of every version
RES_LEGACY = {"cniVersion": "0.2.0", "ip4": {"ip": "10.88.0.2/16", "gateway": "10.88.0.1",
              "routes": [{"dst": "0.0.0.0/0"}]}, "ip6": {"ip": "fd00::2/64"},
              "dns": {"nameservers": ["10.88.0.1"], "domain": "dns.rnet", "search": ["dns.rnet"]}}
RES_030 = {"cniVersion": "0.3.1", "interfaces": [{"name": "cni0", "mac": "aa:bb:cc:dd:ee:ff"},
           {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/c1"}],
           "ips": [{"version": "4", "interface": 1, "address": "10.88.0.2/16", "gateway": "10.88.0.1"},
                   {"version": "6", "interface": 1, "address": "fd00::2/64", "gateway": "fd00::1"}],
           "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}, {"dst": "::/0"}],
           "dns": {"nameservers": ["10.88.0.1"], "search": ["dns.rnet"], "options": ["ndots:1"]}}
RES_110 = {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:02", "mtu": 1500,
           "sandbox": "/run/netns/c1", "socketPath": "/tmp/s", "pciID": "0000:00:1f.0"}],
           "ips": [{"interface": 0, "address": "10.88.0.2/16", "gateway": "10.88.0.1"}],
           "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1", "mtu": 1400, "advmss": 1360, "priority": 10,
                       "table": 100, "scope": 0}], "dns": {}}
RES_IPAM = {"cniVersion": "1.0.0", "ips": [{"address": "10.22.0.5/16", "gateway": "10.22.0.1"}]}
RES_BAD = {"cniVersion": "1.0.0", "interfaces": [], "ips": [{"interface": 3, "address": "10.0.0.2/24"}]}
for i, r in enumerate([RES_LEGACY, RES_030, RES_110, RES_IPAM, RES_BAD, {"ips": "x"}]):
    for sel in {0, 3, 5, 6}:
        put("cni_result", bytes([sel]) + j(r).encode())
put("cni_result", bytes([6]) + j(dict(RES_030, cniVersion="")).encode())

# ---- plugin configs
def conf(ver, typ, **kw):
    d = {"cniVersion": ver, "name": "demo", "type": typ}
    d.update(kw)
    return d

IPAM = {"type": "rnet-ipam", "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}],
                                         [{"subnet": "fd00::/64"}]],
        "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/run/rnet/ipam"}
BRIDGE = conf("1.1.0", "rnet-bridge", bridge="rnet0", isGateway=True, ipMasq=True, hairpinMode=True, ipam=IPAM)
netconfs = [
    BRIDGE,
    conf("0.3.1", "bridge", bridge="cni0", isDefaultGateway=True, mtu=1400, vlan=100, ipam={"type": "host-local", "subnet": "10.22.0.0/16"}),
    conf("1.0.0", "rnet-bridge", vlanTrunk=[{"id": 5}, {"minID": 10, "maxID": 20}], preserveDefaultVlan=False, macspoofchk=True,
         runtimeConfig={"mac": "02:11:22:33:44:55"}, args={"cni": {"mac": "02:00:00:00:00:09"}}, ipam={}),
    conf("1.1.0", "rnet-bridge", disableContainerInterface=True, portIsolation=True, isolation=True, enabledad=True, rnetStateDir="/run/rnet"),
    conf("0.4.0", "rnet-none", prevResult=RES_030),
    conf("0.2.0", "loopback", prevResult=RES_LEGACY),
    conf("1.1.0", "rnet-host", prevResult=RES_110, dns={"nameservers": ["1.1.1.1"]}),
    conf("1.1.0", "rnet-bridge", **{"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}),
    conf("1.1.0", "rnet-bridge", **{"cni.dev/attachments": [{"containerID": "c2", "ifname": "eth1"}]}),
    conf("0.1.0", "rnet-none"),
    {"cniVersion": "2.0.0", "name": "x", "type": "t"},
    {"cniVersion": "1.0.0"},
    {"cniVersion": "1.0.0", "name": "a/b", "type": "t"},
    {"cniVersion": 1, "name": "n"},
]
for c in netconfs:
    put("cni_netconf", j(c))
put("cni_netconf", "{nope")
put("cni_netconf", "[1,2]")
put("cni_netconf", json.dumps(BRIDGE, indent=2))

def prev(ver, res):
    r = dict(res)
    r["cniVersion"] = ver
    return r

BRIDGE_ENV = [("CNI_ARGS", "IgnoreUnknown=1;MAC=02:00:00:00:00:42")]
for c in netconfs[:4]:
    put("bridge_config", env(BRIDGE_ENV, c))
put("bridge_config", env([("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth1")], conf("1.0.0", "rnet-bridge", isGateway=True, prevResult=RES_IPAM)))
put("bridge_config", env([], conf("0.3.1", "bridge", isDefaultGateway=True, prevResult=prev("0.3.1", RES_030))))
for bad in [{"isGateway": "yes"}, {"mtu": 70000}, {"vlan": 4095}, {"vlanTrunk": [{"minID": 5, "maxID": 4095}]},
            {"bridge": "a-very-long-bridge-name"}, {"hairpinMode": True, "promiscMode": True}, {"mac": "zz"}]:
    put("bridge_config", env([], conf("1.1.0", "rnet-bridge", **bad)))

PM = conf("1.1.0", "rnet-portmap", snat=True, capabilities={"portMappings": True},
          runtimeConfig={"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                                          {"hostPort": "8000-8010", "containerPort": "9000-9010", "protocol": "udp", "hostIP": "127.0.0.1"},
                                          {"hostPort": 5353, "containerPort": 53, "range": 3, "protocol": "sctp", "hostIP": "::1"}]},
          prevResult=RES_030)
put("portmap_config", env([("CNI_IFNAME", "eth0")], PM))
put("portmap_config", env([], conf("0.4.0", "portmap", markMasqBit=13, backend="nftables", masqAll=True,
                                   runtimeConfig={"portMappings": [{"hostPort": 80, "containerPort": 80}]}, prevResult=prev("0.4.0", RES_030))))
put("portmap_config", env([], conf("1.0.0", "portmap", externalSetMarkChain="KUBE-MARK-MASQ", rnetRouted=True,
                                   conditionsV4=["-s", "10.0.0.0/8"], runtimeConfig={"portMappings": [{"hostPort": 443, "containerPort": 8443, "hostIP": "[fd00::1]"}]},
                                   prevResult=RES_110)))
for bad in [{"markMasqBit": 32}, {"markMasqBit": 1, "externalSetMarkChain": "X"}, {"backend": "pf"},
            {"runtimeConfig": {"portMappings": [{"hostPort": 0, "containerPort": 80}]}},
            {"runtimeConfig": {"portMappings": [{"hostPort": "1-5", "containerPort": "1-4"}]}},
            {"runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}]}}]:
    put("portmap_config", env([], conf("1.1.0", "rnet-portmap", **bad)))
put("portmap_config", j({"network": "demo", "container_id": "c1", "ifname": "eth0", "bridge": "rnet0",
                         "ipv4": "10.88.0.2", "ports": [], "hairpin": True, "published": False}))

FW = [conf("1.0.0", "firewall", backend="nftables", ingressPolicy="same-bridge", prevResult=RES_030),
      conf("0.4.0", "firewall", backend="iptables", iptablesAdminChainName="CNI-ADMIN", firewalldZone="trusted"),
      conf("1.1.0", "rnet-firewall", ingressPolicy="isolated", rnetStateDir="/run/rnet"),
      conf("0.3.1", "firewall"), conf("1.1.0", "firewall", ingressPolicy="closed"), conf("1.1.0", "firewall", rnetStateDir="rel")]
for c in FW:
    put("firewall_config", env([], c))

TU = [conf("1.0.0", "tuning", sysctl={"net.core.somaxconn": "500", "net.ipv4.conf.IFNAME.arp_filter": "1",
                                      "net/ipv6/conf/IFNAME/accept_ra": "0"}, mac="02:00:00:00:00:07", mtu=1400,
           promisc=True, allmulti=True, txQLen=2000, dataDir="/run/cni/tuning", prevResult=RES_030),
      conf("1.1.0", "tuning", runtimeConfig={"mac": "02:00:00:00:00:08"}, args={"cni": {"mtu": 9000, "sysctl": {"net.ipv4.ip_forward": "1"}}}),
      conf("1.1.0", "tuning", sysctl={"kernel.panic": "1"}), conf("1.1.0", "tuning", sysctl={"net.ipv4.conf.IFNAME.../x": "1"}),
      conf("1.1.0", "tuning", mtu=-1)]
for c in TU:
    put("tuning_config", env([("CNI_ARGS", "MAC=02:00:00:00:00:09"), ("CNI_IFNAME", "eth0")], c))
put("tuning_config", env([], '{"cniVersion":"1.0.0","name":"t","type":"tuning","sysctl":{"net.a":"1","net.a":"2"}}'))

DN = [conf("1.1.0", "rnet-dnsname", domainName="dns.rnet", capabilities={"aliases": True},
           runtimeConfig={"aliases": {"demo": ["www", "Web-1"]}}, upstreams=["1.1.1.1", "[2606:4700::1111]:53"],
           rnetDefaultUpstreams=["9.9.9.9:53"], rnetDnsPort=5353, internal=False, prevResult=RES_030),
      conf("0.4.0", "dnsname", domainName="dns.podman", prevResult=prev("0.4.0", RES_030)),
      conf("1.0.0", "dnsname", internal=True, prevResult=RES_IPAM),
      conf("1.0.0", "dnsname", runtimeConfig={"aliases": {"demo": "x"}}, prevResult=RES_030),
      conf("1.0.0", "dnsname", upstreams=["nope"], prevResult=RES_030)]
for c in DN:
    put("dnsname_config", env([("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"),
                               ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")], c))
put("dnsname_config", env([], DN[0]))

IP = [conf("1.0.0", "bridge", ipam=IPAM),
      conf("0.3.1", "bridge", ipam={"type": "host-local", "subnet": "10.22.0.0/16", "rangeStart": "10.22.0.10",
                                    "rangeEnd": "10.22.0.20", "gateway": "10.22.0.1", "routes": [{"dst": "0.0.0.0/0", "gw": "10.22.0.1"}],
                                    "resolvConf": "/etc/resolv.conf"}),
      conf("1.1.0", "bridge", ipam={"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/30"}, {"subnet": "10.2.0.0/24", "rangeStart": "10.2.0.100"}]]},
           runtimeConfig={"ips": ["10.2.0.150/24"], "ipRanges": [[{"subnet": "192.168.5.0/28"}]]}, args={"cni": {"ips": ["192.168.5.4"]}}),
      conf("0.2.0", "bridge", ipam={"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/24"}]]}),
      conf("1.0.0", "bridge", ipam={"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.128/25"}]]}),
      conf("1.0.0", "bridge", ipam={"type": "host-local", "ranges": [[{"subnet": "10.0.0.1/24"}]]}),
      conf("1.0.0", "bridge", ipam={"type": "host-local", "ranges": [[{"subnet": "::ffff:10.0.0.0/120"}]]}),
      conf("1.0.0", "bridge", ipam={"type": "host-local", "subnet": "fd00::/126", "routes": [{"dst": "::/0"}]})]
for c in IP:
    put("ipam_config", env([("CNI_ARGS", "IP=10.88.0.42")], c))
put("ipam_config", env([("CNI_ARGS", "IP=10.22.0.15,fd00::5")], IP[1]))

# ---- runtime side
CL = {"cniVersion": "1.0.0", "name": "demo", "plugins": [BRIDGE, {"type": "rnet-portmap", "capabilities": {"portMappings": True}},
      {"type": "rnet-dnsname", "domainName": "dns.rnet", "capabilities": {"aliases": True}}, {"type": "rnet-firewall"}]}
put("cni_conflist", j(CL))
put("cni_conflist", j(dict(CL, cniVersions=["0.4.0", "1.1.0", "9.9.9"], disableCheck=True, disableGC=True)))
put("cni_conflist", j({"cniVersion": "1.1.0", "name": "x", "plugins": []}))
put("cni_conflist", j({"cniVersion": "1.1.0", "name": "x", "plugins": [{"type": "../../sbin/reboot"}]}))
import base64
put("cni_conflist", j({"kind": "cniCacheV1", "containerId": "c1", "config": base64.b64encode(j(CL).encode()).decode(),
                       "ifName": "eth0", "networkName": "demo", "netns": "/run/netns/c1",
                       "cniArgs": [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "web"]],
                       "capabilityArgs": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
                       "result": RES_110}))
put("cni_conflist", j({"kind": "cniCacheV1", "containerId": "c1", "config": "!!", "ifName": "eth0", "networkName": "demo"}))

for s in ["IgnoreUnknown=1;IP=10.0.0.5;;K8S_POD_NAME=web", "novalue", "=x", "MAC=02:00:00:00:00:01;IP=10.0.0.5,fd00::5",
          "c1\neth0\nlo\n..\na/b\ntoo-long-interface-name\nrnet-bridge\n../x\n0.4.0\n1.1.0\n\nADD\nDEL\nCHECK\nGC\nSTATUS\nVERSION\n-x\n",
          "nameserver 10.0.0.1\nnameserver fd00::1 # c\nsearch a.example b.example\ndomain example\noptions ndots:2 edns0\n; x\n"]:
    put("cni_args", s)

FULL = [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"), ("CNI_NETNS", "/run/netns/c1"), ("CNI_IFNAME", "eth0"), ("CNI_PATH", "/opt/cni/bin")]
def with_cmd(cmd, extra=()):
    return [(k, cmd if k == "CNI_COMMAND" else v) for k, v in FULL] + list(extra)
for v in VERSIONS:
    put("cni_dispatch", env(with_cmd("ADD", [("CNI_ARGS", "K8S_POD_NAME=web")]), conf(v, "rnet-none")))
put("cni_dispatch", env(with_cmd("ADD"), conf("0.4.0", "rnet-none", prevResult=prev("0.4.0", RES_030))))
put("cni_dispatch", env(with_cmd("CHECK"), conf("0.3.1", "rnet-none")))
put("cni_dispatch", env(with_cmd("DEL"), conf("1.0.0", "rnet-none")))
put("cni_dispatch", env(with_cmd("GC"), conf("1.1.0", "rnet-none", **{"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]})))
put("cni_dispatch", env(with_cmd("STATUS"), conf("1.0.0", "rnet-none")))
put("cni_dispatch", env([("CNI_COMMAND", "VERSION")], ""))
put("cni_dispatch", env([("CNI_COMMAND", "FROB")], ""))
put("cni_dispatch", env([("CNI_COMMAND", "ADD")], conf("1.1.0", "rnet-none")))
put("cni_dispatch", env(with_cmd("ADD", [("CNI_ARGS", "novalue")]), conf("1.1.0", "rnet-none")))
put("cni_dispatch", env(with_cmd("ADD", [("CNI_IFNAME", "a/b")]), conf("1.1.0", "rnet-none")))

for s in ["8080:80", "127.0.0.1:8080:80/udp", "[::1]:8000-8010:80-90", "1.2.3.4:8000-8001:80-81/sctp", "80",
          "a:80", "8080:80/icmp", "8000-8010:80-85", "0:80", "70000:80", "65535:1/TCP"]:
    put("cli_port", s)

# ---- DNS
def dq(name, qtype, id_=0x1234, flags=0x0100, edns=False):
    m = id_.to_bytes(2, "big") + flags.to_bytes(2, "big") + b"\x00\x01\x00\x00\x00\x00" + (b"\x00\x01" if edns else b"\x00\x00")
    for l in [x for x in name.split(".") if x]:
        m += bytes([len(l)]) + l.encode()
    m += b"\x00" + qtype.to_bytes(2, "big") + b"\x00\x01"
    if edns:
        m += b"\x00\x00\x29\x10\x00\x00\x00\x80\x00\x00\x00"
    return m
for name, t in [("web", 1), ("Web.DNS.rnet", 28), ("www.dns.rnet", 255), ("2.0.88.10.in-addr.arpa", 12),
                ("2.0" + ".0" * 28 + ".d.f.ip6.arpa", 12), ("example.com", 1), ("db", 1)]:
    put("dns_wire", dq(name, t))
put("dns_wire", dq("web.dns.rnet", 1, edns=True))
put("dns_wire", dq("web", 1, flags=0x2900))
put("dns_wire", b"\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00\x03web\x00\x00\x01\x00\x01")
# An upstream answer: A record with a compressed owner, and a negative answer with SOA.
ans = (b"\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
       b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04\x5d\xb8\xd8\x22")
put("dns_wire", ans)
soa = (b"\x12\x34\x81\x83\x00\x01\x00\x00\x00\x01\x00\x00\x04nope\x03com\x00\x00\x01\x00\x01"
       b"\xc0\x11\x00\x06\x00\x01\x00\x00\x03\x84\x00\x26\x01a\xc0\x11\x01b\xc0\x11"
       b"\x00\x00\x00\x01\x00\x00\x0e\x10\x00\x00\x02\x58\x00\x09\x3a\x80\x00\x00\x01\x2c")
put("dns_wire", soa)
put("dns_wire", len(ans).to_bytes(2, "big") + ans + len(soa).to_bytes(2, "big") + soa)

NET = {"name": "n1", "domain": "dns.rnet", "internal": False, "listen": ["10.88.0.1"], "upstreams": []}
REG = {"op": "register", "network": NET, "attachment": {"containerID": "c1", "ifname": "eth0"},
       "names": ["web", "www"], "addrs": ["10.88.0.2", "fd00::2"]}
REG2 = {"op": "register", "network": dict(NET, internal=True, upstreams=["1.1.1.1:53"]), "attachment": {"containerID": "c2", "ifname": "eth0"},
        "names": ["DB", "db.alias"], "addrs": ["10.88.0.3"]}
REG3 = {"op": "register", "network": {"name": "n2", "domain": "other.test", "listen": ["10.89.0.1"]},
        "attachment": {"containerID": "c1", "ifname": "eth1"}, "names": ["web"], "addrs": ["10.89.0.2"]}
lines = [REG, REG2, REG3, {"op": "unregister", "network": "n1", "attachment": {"containerID": "c2", "ifname": "eth0"}},
         {"op": "gc", "network": "n2", "valid": [{"containerID": "c1", "ifname": "eth1"}]}, {"op": "list"}, {"op": "ping"}, {"op": "shutdown"}]
put("dns_control", "\n".join(j(l) for l in lines))
put("dns_control", "\n".join(j(l) for l in [REG, REG, dict(REG, names=["web2"])]))
put("dns_control", "\n".join(j(l) for l in [REG, {"op": "gc", "network": "n1", "valid": []}, REG3]))
put("dns_control", j({"ok": True, "pid": 42}) + "\n" + j({"ok": False, "kind": "closing", "error": "x"}) + "\n" + j({"ok": False, "kind": "bind"}))
put("dns_control", j({"version": 1, "networks": [NET], "records": [{"network": "n1", "attachment": {"containerID": "c1", "ifname": "eth0"},
                                                                     "names": ["web"], "addrs": ["10.88.0.2"]},
                                                                    {"network": "gone", "attachment": {"containerID": "c9", "ifname": "eth0"},
                                                                     "names": ["x"], "addrs": ["10.9.0.2"]}]}))
put("dns_control", j(dict(REG, names=["a" * 63 + "." + "b" * 63], network=dict(NET, domain="c" * 63 + "." + "d" * 63))))
put("dns_control", j(dict(REG, names=["bad name"])) + "\n" + j(dict(REG, addrs=[])) + "\n{\"op\":\"register\"")

# ---- IPAM on-disk store
put("ipam_lease_store", "")
put("ipam_lease_store", "=== 10.1.2.2\nc1\r\neth0\n=== last_reserved_ip.0\n10.1.2.2\n=== .rnet/indexed\nrnet-indexed 1\ncursor 0 10.1.2.2\n"
    "=== .rnet/attach/c1@eth0\nrnet-attachment 1\nowner c1@eth0\ncreated 1700000000\nip 10.1.2.2\n")
put("ipam_lease_store", "=== 10.1.2.3\nc9\n=== 10.1.2.4\n\n=== fd00::2\nc2\r\neth0\n=== last_reserved_ip.1\nfd00::2\n=== last_reserved_ip.0\n10.1.2.6\n"
    "=== ops\nleases\ngc c2/eth0\nadd c1 eth0\nstatus\n")
put("ipam_lease_store", "=== 10.1.2.2\nc1\r\neth0\n=== 10.1.2.3\nc2\r\neth0\n=== 10.1.2.4\nc3\r\neth0\n=== 10.1.2.5\nc4\r\neth0\n=== 10.1.2.6\nc5\r\neth0\n"
    "=== ops\nadd c6 eth0\nstatus\ndel c3 eth0\nadd c6 eth0\ncheck c6 eth0\n")
put("ipam_lease_store", "=== .rnet/indexed\nrnet-indexed 1\ncursor 0 10.1.2.9\n=== .rnet/attach/c1@eth0\nrnet-attachment 1\nowner c2@eth0\ncreated 1\nip 10.1.2.2\n"
    "=== .rnet/tmp/s0\njunk\n=== .rnet/tmp/s1\n=== ops\nadd c1 eth0\nadd c2 eth0\ndel c1 eth0\ngc\n")
put("ipam_lease_store", "=== .rnet/attach/c%2Fx@eth0\nrnet-attachment 1\nowner c%2Fx@eth0\ncreated 5\nip 10.1.2.3\n=== 10.1.2.3\nc/x\r\neth0\n"
    "=== ops\nleases\ndel c/x eth0\nadd c/x eth0\n")
print("seeds written to", os.path.normpath(ROOT))
