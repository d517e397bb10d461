"""What `mn --custom mininet/topologies.py --topo enf-isp ...` loads: the
lab's topologies (enf-single, enf-linear, enf-tree, enf-ring, enf-mesh,
enf-isp), whose classes live in testbed/topologies.py.

Debian's mn runs /usr/bin/python3, where this project is not installed, and
exec()s this file without a __file__: the module is then loaded from its
path, found from the name this code was compiled under. mn takes every name
left here as a setting, so only `topos` stays.
"""
try:
    from testbed.topologies import topos
except ModuleNotFoundError:
    import importlib.util
    import inspect
    import pathlib

    _path = (pathlib.Path(inspect.currentframe().f_code.co_filename).resolve().parent.parent
             / "testbed" / "topologies.py")
    _spec = importlib.util.spec_from_file_location("testbed_topologies", _path)
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    topos = _module.topos
    del importlib, inspect, pathlib, _path, _spec, _module
