"""tunnel-inspector: what every CONNECT tunnel's TLS handshake did, and why it failed."""
