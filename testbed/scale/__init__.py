"""The scale harness: a tree of hundreds of real Open vSwitch bridges on a
private ovs-vswitchd (the dummy datapath: no namespaces, no kernel), hosts
as dummy ports made to appear by injected frames, and the real controller
process over OpenFlow 1.3 and gRPC (issue 25).

tree.py     the tree as plain data (tiers, datapath ids, ports, addresses)
bridges.py  the tree as OVSDB operations
ovs.py      the private ovsdb-server and ovs-vswitchd
frames.py   the frames hosts send (OS-Ken's packet library), captures read
hosts.py    frames injected at a pace, until the controller located them
measure.py  memory, CPU, counters, and the budget that stops a run
lab.py      ScaleLab: what a test or bench/scale.py asks of all of it
"""
