#!/usr/bin/env bash
# Installs what is needed, then runs the main job: the controller with its
# defaults (gRPC on 127.0.0.1:50051, OpenFlow on 127.0.0.1:6653) and a Mininet
# topology connected to it. Arguments go to testbed/run.py (--help); with
# --ha N, N controllers (gRPC 50051..., OpenFlow 6653...) share a throwaway
# PostgreSQL database and every switch connects to all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m testbed.run "$@"
