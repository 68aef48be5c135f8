"""The one-node cluster's files: certificates (openssl), kubeconfig, and each component's configuration.

cluster.py writes them into the cluster's directory before it starts anything. Every
component authenticates as the one admin (system:masters) except the aggregator's front proxy:
this cluster lives for one test run inside a private network namespace, so per-component
identities would add files, not safety.
"""

from __future__ import annotations

import json
from pathlib import Path

from testkit import ROOT
from testkit.pki import certificate_authority, issue, openssl

# The Kubernetes version, declared once in tools/k8s/VERSION: tools/install_k8s.sh builds it, tools/lint.sh
# validates the manifests against it, and the cluster runs it from BIN.
VERSION = (ROOT / "tools" / "k8s" / "VERSION").read_text().strip()
BIN = ROOT / ".tools" / f"k8s-{VERSION}" / "bin"
RUN = ROOT / "data" / "k8s"  # the running cluster's files: certificates, configuration, logs, holder.pid
NAMESPACE = "userprofile"  # the service's, as k8s/base/namespace.yaml names it

NODE_IP = "10.77.0.1"  # the node's address: a veth inside the private network namespace
NODE_NAME = "k8s-node"
SERVICE_CIDR = "10.96.0.0/16"
API_SERVICE_IP = "10.96.0.1"  # the `kubernetes` Service: the first address of SERVICE_CIDR
POD_CIDR = "10.244.0.0/24"
API_PORT = 6443
METRICS_PORT = 4443  # metrics-server, on the node's address


def make_pki(pki: Path) -> None:
    """A CA, the apiserver's serving certificate, the admin's and the front proxy's client certificates,
    and the service-account signing key."""
    pki.mkdir(parents=True, exist_ok=True)
    certificate_authority(pki, "ca", "/CN=userprofile-k8s-ca", cert="ca.crt")
    sans = (
        f"subjectAltName=IP:{NODE_IP},IP:{API_SERVICE_IP},IP:127.0.0.1,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    )
    for name, subject, ext in (
        ("apiserver", "/CN=kube-apiserver", sans),
        ("admin", "/O=system:masters/CN=admin", "extendedKeyUsage=clientAuth"),
        ("front-proxy", "/CN=front-proxy-client", "extendedKeyUsage=clientAuth"),
    ):
        issue(pki, name, subject, ext, "ca.crt", "ca.key")
    openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def kubeconfig(pki: Path) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "local",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": f"https://{NODE_IP}:{API_PORT}",
                        "certificate-authority": str(pki / "ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {"client-certificate": str(pki / "admin.crt"), "client-key": str(pki / "admin.key")},
                }
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
        },
        indent=1,
    )


def containerd_toml(root: Path, state: str, pause_image: str, cni_conf: Path) -> str:
    # restrict_oom_score_adj: this VM's root lacks CAP_SYS_RESOURCE, and runc fails writing the pause
    # container's oom_score_adj below its own ("can't get final child's PID from pipe: EOF").
    # The opt plugin would create /opt/containerd on the host: it is not needed.
    return f"""version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{state}/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf}"
"""


def cni_conflist(ipam_dir: Path) -> str:
    # hairpinMode: a pod reaching itself through a Service's ClusterIP.
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "k8s-pods",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(ipam_dir),
                    },
                }
            ],
        },
        indent=1,
    )


def kubelet_yaml(pki: Path, logs: Path, socket: str) -> str:
    # failCgroupV1: this machine has cgroup v1 (the kubelet only warns then). The eviction and image
    # GC thresholds are off: the node's disk is a tmpfs holding the only copies of the images.
    return json.dumps(
        {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{socket}",
            "podLogsDir": str(logs),
            "clusterDomain": "cluster.local",
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "0%",
                "imagefs.available": "0%",
                "nodefs.inodesFree": "0%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "readOnlyPort": 0,
            "serializeImagePulls": False,
            "maxPods": 40,
        },
        indent=1,
    )


def kube_proxy_yaml(kubeconfig_path: Path) -> str:
    # conntrack all 0: leave the kernel's conntrack table size and timeouts as they are.
    return json.dumps(
        {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig_path)},
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "hostnameOverride": NODE_NAME,
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "iptables": {"minSyncPeriod": "0s", "syncPeriod": "30s"},
            "metricsBindAddress": "127.0.0.1:10249",
            "healthzBindAddress": "127.0.0.1:10256",
        },
        indent=1,
    )


def commands(bin_dir: Path, run: Path) -> dict[str, list[str]]:
    """Each daemon's command line, in the order they start."""
    pki, kc = run / "pki", str(run / "kubeconfig")
    return {
        "etcd": [
            "etcd",
            "--data-dir",
            str(run / "mem" / "etcd"),
            "--listen-client-urls",
            "http://127.0.0.1:2379",
            "--advertise-client-urls",
            "http://127.0.0.1:2379",
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--log-level",
            "warn",
        ],
        "kube-apiserver": [
            str(bin_dir / "kube-apiserver"),
            "--etcd-servers=http://127.0.0.1:2379",
            f"--advertise-address={NODE_IP}",
            f"--secure-port={API_PORT}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--client-ca-file={pki}/ca.crt",
            f"--tls-cert-file={pki}/apiserver.crt",
            f"--tls-private-key-file={pki}/apiserver.key",
            f"--service-account-key-file={pki}/sa.pub",
            f"--service-account-signing-key-file={pki}/sa.key",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--authorization-mode=Node,RBAC",
            f"--kubelet-client-certificate={pki}/admin.crt",
            f"--kubelet-client-key={pki}/admin.key",
            # The aggregation layer, for metrics-server's metrics.k8s.io.
            f"--requestheader-client-ca-file={pki}/ca.crt",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki}/front-proxy.crt",
            f"--proxy-client-key-file={pki}/front-proxy.key",
            "--enable-aggregator-routing=true",
            "--kubelet-preferred-address-types=InternalIP",
        ],
        "kube-controller-manager": [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={kc}",
            "--controllers=*",
            "--allocate-node-cidrs=false",
            f"--service-account-private-key-file={pki}/sa.key",
            f"--root-ca-file={pki}/ca.crt",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--horizontal-pod-autoscaler-sync-period=5s",
            "--bind-address=127.0.0.1",
        ],
        "kube-scheduler": [
            str(bin_dir / "kube-scheduler"),
            f"--kubeconfig={kc}",
            "--leader-elect=false",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
        ],
        "containerd": ["containerd", "--config", str(run / "containerd.toml")],
        "kubelet": [
            str(bin_dir / "kubelet"),
            f"--config={run}/kubelet.yaml",
            f"--kubeconfig={kc}",
            f"--root-dir={run}/mem/kubelet",
            f"--cert-dir={run}/mem/kubelet-pki",
            f"--node-ip={NODE_IP}",
            f"--hostname-override={NODE_NAME}",
        ],
        "kube-proxy": [str(bin_dir / "kube-proxy"), f"--config={run}/kube-proxy.yaml"],
        "metrics-server": [
            str(bin_dir / "metrics-server"),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            f"--secure-port={METRICS_PORT}",
            f"--bind-address={NODE_IP}",
            f"--cert-dir={run}/mem/metrics-server",
            "--kubelet-insecure-tls",
            "--kubelet-preferred-address-types=InternalIP",
            "--metric-resolution=10s",
            "--kubelet-request-timeout=5s",
        ],
    }


# metrics-server runs on the node, as a process: the aggregator reaches it through a Service
# without selector whose endpoint is the node's address.
METRICS_API = f"""apiVersion: v1
kind: Service
metadata: {{name: metrics-server, namespace: kube-system}}
spec:
  ports: [{{name: https, port: 443, targetPort: {METRICS_PORT}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: metrics-server-node
  namespace: kube-system
  labels: {{kubernetes.io/service-name: metrics-server}}
addressType: IPv4
ports: [{{name: https, port: {METRICS_PORT}, protocol: TCP}}]
endpoints: [{{addresses: ["{NODE_IP}"], conditions: {{ready: true}}}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: metrics-server, namespace: kube-system}}
subsets: [{{addresses: [{{ip: "{NODE_IP}"}}], ports: [{{name: https, port: {METRICS_PORT}}}]}}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: v1beta1.metrics.k8s.io}}
spec:
  service: {{name: metrics-server, namespace: kube-system, port: 443}}
  group: metrics.k8s.io
  version: v1beta1
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
"""
