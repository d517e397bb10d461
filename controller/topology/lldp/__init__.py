"""Link discovery: OS-Ken's LLDP, authenticated, kept on schedule, counted only when both
directions are heard."""
