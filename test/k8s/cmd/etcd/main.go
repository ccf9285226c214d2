// Command etcd is etcd's own server entry point (go.etcd.io/etcd/server/v3/etcdmain), built from the
// etcd server module so the test cluster's etcd comes from the same module graph as the Kubernetes
// components; etcd's main package lives in a module of its own that this one does not need.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
