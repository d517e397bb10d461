"""Regenerate the Python gRPC stubs from protos/.

The stubs are checked in so that installing the controller needs no code
generator; tests/unit/test_protos_current.py regenerates them into a temporary
folder and fails when the checked-in copy differs.

    python tools/gen_protos.py            # rewrite the checked-in stubs
"""
import pathlib
import sys

import grpc_tools
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PROTOS = ["enforcement/v1/enforcement.proto"]


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Writes the stubs under out_dir (mirroring the proto package path)."""
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    for proto in PROTOS:
        rc = protoc.main([
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO_ROOT / proto),
        ])
        if rc != 0:
            raise RuntimeError(f"protoc failed on {proto} (exit {rc})")
    return [out_dir / proto.replace(".proto", suffix)
            for proto in PROTOS
            for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")]


if __name__ == "__main__":
    written = generate(ROOT)
    for path in written:
        print(path.relative_to(ROOT))
    sys.exit(0)
