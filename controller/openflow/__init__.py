"""The OpenFlow side: the pipeline as rules and meters, compiled to OpenFlow 1.3, pushed,
confirmed with barriers, audited; roles and the packet-in queue."""
