"""The composition roots: each command wires addon, proxy, sinks and report here."""
