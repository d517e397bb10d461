"""The OS-Ken application: a thin shell of OpenFlow events, and the packet-in worker's glue."""
