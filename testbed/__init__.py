"""The lab: the harness that runs the real controller process against a
Mininet network with real traffic (lab, halab, pgcluster, dhcp, capture,
leftovers), the topologies, and the main job (python -m testbed.run).

Imported by the Mininet tests, the benches and the main job. Not `mininet`:
a package of that name would shadow the Mininet library. What a Mininet host
runs by path stays in the top-level mininet/ folder (lab.HOST_SCRIPTS), with
the topologies file `mn --custom` loads.
"""
