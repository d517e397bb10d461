"""The gRPC edge: the servicer, request checking, protobuf conversion, the guard (identity,
roles, limits), mutual TLS, and the server's worker threads."""
