"""Link discovery: OS-Ken's LLDP bookkeeping, authenticated probes sent on a schedule
under a budget (settled subscriber lines rarely), links counted only when both
directions are heard."""
