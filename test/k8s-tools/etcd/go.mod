// Test dependency only: pins etcd (the version k8s.io/kubernetes v1.37 uses: v3.7).
module meshwarp.test/k8s-tools/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 v3.7.3

tool go.etcd.io/etcd/server/v3
