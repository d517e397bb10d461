import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The harness and topologies live in mininet/, which is deliberately not a
# package (it would shadow the Mininet library); put it on the path instead.
sys.path.insert(0, str(ROOT / "mininet"))
sys.path.insert(0, str(ROOT / "tests"))
