"""The checked-in stubs must be exactly what the proto generates."""
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "tools" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_stubs_match_the_proto(tmp_path):
    generator = load_generator()
    for fresh in generator.generate(tmp_path):
        relative = fresh.relative_to(tmp_path)
        checked_in = ROOT / relative
        assert checked_in.exists(), f"{relative} is not checked in; run tools/gen_protos.py"
        assert checked_in.read_bytes() == fresh.read_bytes(), (
            f"{relative} is stale; run: python tools/gen_protos.py")
