"""End-to-end harness: a real Kubernetes control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok) on loopback for tests."""
