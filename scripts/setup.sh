#!/usr/bin/env bash
# Installs everything the controller and its tests need on a Debian machine,
# as root, and starts Open vSwitch. Safe to run again: it only adds what is
# missing. Used by scripts/run.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (Open vSwitch and Mininet need it): sudo $0" >&2
  exit 1
fi

packages=(
  openvswitch-switch   # the switches (userspace datapath)
  mininet              # hosts and links, /usr/bin/mnexec, Python library
  python3 python3-venv # Debian's Python: the one Mininet's library is built for
  iperf3 ethtool iputils-ping netcat-openbsd iproute2 psmisc procps
  hping3 tcpdump       # forged packets and proof they never arrive
  dnsmasq-base busybox # a real DHCP server and client in the lab (the binary only:
                       # the dnsmasq package would start a machine-wide service)
  isc-dhcp-client      # dhclient: busybox has no DHCPv6 client
  postgresql           # the store tests run on PostgreSQL as well as SQLite
  e2fsprogs mount      # a disk the store tests make fail (testbed/disk.py: mkfs, losetup)
  chromium             # browser tests of the topology view (headless)
  systemd              # systemd-analyze checks the unit file (deploy/)
)
# Node and npm, for the latency bench's grpc-js client (a client in another
# language than ours): Debian's, unless a Node is there already (some
# machines ship their own, which Debian's npm would conflict with).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# A venv from Debian's interpreter, with its site-packages, so that the
# Debian-packaged Mininet library imports next to what pip installs.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import mininet.net" 2>/dev/null; then
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test,dev]'
  touch "$stamp"
fi

# The grpc-js client's packages, pinned by its lockfile.
if [ ! -d bench/js/node_modules ]; then
  echo "setup: installing the bench's grpc-js client (npm ci)"
  npm ci --prefix bench/js --silent --no-audit --no-fund
fi

# The topology view's Cytoscape.js, pinned by its lockfile and shipped inside
# the controller package (controller/view/static/, package data; the page never
# fetches anything from elsewhere). The copy is generated: not in git.
# Again when the lockfile changed since (npm ci records what it installed).
view_installed=controller/view/viewsrc/node_modules/.package-lock.json
if [ ! -f "$view_installed" ] || [ controller/view/viewsrc/package-lock.json -nt "$view_installed" ]; then
  echo "setup: installing the topology view's Cytoscape.js (npm ci)"
  npm ci --prefix controller/view/viewsrc --silent --no-audit --no-fund
fi
cp controller/view/viewsrc/node_modules/cytoscape/dist/cytoscape.min.js controller/view/static/

# The kernel may lack the openvswitch module: ovs-ctl then warns and the
# switches run in userspace (datapath_type=netdev), which is what we use.
if ! ovs-vsctl --timeout=2 show >/dev/null 2>&1; then
  echo "setup: starting Open vSwitch"
  /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >/dev/null 2>&1 || true
  ovs-vsctl --timeout=10 show >/dev/null
fi
echo "setup: ready ($(ovs-vsctl --version | head -1), $(.venv/bin/python --version))"
