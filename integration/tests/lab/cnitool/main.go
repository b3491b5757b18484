// cnitool: libcni's command-line driver, rewritten for rnet's lab tests
// (Debian's golang-github-appc-cni-dev ships libcni and the cnitool docs but
// not cnitool's source) and built offline against those libcni sources.
//
// Same interface as upstream cnitool 1.1:
//
//	cnitool add|check|del <network name> <netns path>
//
// NETCONFPATH (default /etc/cni/net.d) is searched for the conflist of that
// name (libcni.LoadConfList); CNI_PATH holds the plugins; CNI_ARGS
// ("K=V;K=V") and CAP_ARGS (JSON capability arguments, e.g. portMappings)
// are passed on; CNI_IFNAME (default eth0). The container ID is derived from
// the namespace path, as upstream does. One addition: CNI_CACHE_DIR sets
// libcni's result cache directory (upstream always uses /var/lib/cni), so a
// test never writes outside its temp dir.
package main

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintf(os.Stderr, "usage: %s add|check|del <net> <netns>\n", filepath.Base(os.Args[0]))
		os.Exit(1)
	}
	netdir := os.Getenv("NETCONFPATH")
	if netdir == "" {
		netdir = "/etc/cni/net.d"
	}
	list, err := libcni.LoadConfList(netdir, os.Args[2])
	if err != nil {
		fail(err)
	}
	var capArgs map[string]interface{}
	if s := os.Getenv("CAP_ARGS"); s != "" {
		if err := json.Unmarshal([]byte(s), &capArgs); err != nil {
			fail(fmt.Errorf("CAP_ARGS: %v", err))
		}
	}
	var cniArgs [][2]string
	if s := os.Getenv("CNI_ARGS"); s != "" {
		for _, kv := range strings.Split(s, ";") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				fail(fmt.Errorf("CNI_ARGS: %q is not KEY=VALUE", kv))
			}
			cniArgs = append(cniArgs, [2]string{k, v})
		}
	}
	ifname := os.Getenv("CNI_IFNAME")
	if ifname == "" {
		ifname = "eth0"
	}
	netns, err := filepath.Abs(os.Args[3])
	if err != nil {
		fail(err)
	}
	// As upstream: a stable container ID per namespace path.
	containerID := fmt.Sprintf("cnitool-%x", sha512.Sum512([]byte(netns)))[:len("cnitool-")+20]
	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(os.Getenv("CNI_PATH")), os.Getenv("CNI_CACHE_DIR"), nil)
	rt := &libcni.RuntimeConf{
		ContainerID:    containerID,
		NetNS:          netns,
		IfName:         ifname,
		Args:           cniArgs,
		CapabilityArgs: capArgs,
	}
	ctx := context.TODO()
	switch os.Args[1] {
	case "add":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if result != nil {
			_ = result.Print()
		}
		if err != nil {
			fail(err)
		}
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
	default:
		fail(fmt.Errorf("unknown command %q: add, check or del", os.Args[1]))
	}
}
