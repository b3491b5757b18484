// cnidrive: a minimal libcni driver (ADD/CHECK/DEL of a conflist, as
// cnitool does), built offline by rnet's lab tests from Debian's
// golang-github-appc-cni-dev sources.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: cnidrive add|check|del CONFLIST NETNS [IFNAME]")
		os.Exit(2)
	}
	list, err := libcni.ConfListFromFile(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ifname := "eth0"
	if len(os.Args) > 4 {
		ifname = os.Args[4]
	}
	netns, _ := filepath.Abs(os.Args[3])
	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(os.Getenv("CNI_PATH")), os.Getenv("CNI_CACHE_DIR"), nil)
	rt := &libcni.RuntimeConf{ContainerID: "cnidrive-" + strings.ReplaceAll(filepath.Base(netns), "/", "_"), NetNS: netns, IfName: ifname}
	if id := os.Getenv("CONTAINER_ID"); id != "" {
		rt.ContainerID = id
	}
	for _, kv := range strings.Split(os.Getenv("DRIVE_ARGS"), ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			rt.Args = append(rt.Args, [2]string{k, v})
		}
	}
	ctx := context.Background()
	switch os.Args[1] {
	case "add":
		r, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		_ = r.Print()
	case "check":
		err = cni.CheckNetworkList(ctx, list, rt)
	case "del":
		err = cni.DelNetworkList(ctx, list, rt)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
