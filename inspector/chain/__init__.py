"""The chain verdict: trust profiles (`trust`) and the pure verifier (`verify`).

`trust` loads the root stores a chain is judged against (Mozilla's, the system's, a
user's PEM bundle); `verify` turns the certificates a server sent into findings and
the record's "chain" object. Neither does network I/O; neither imports mitmproxy.
"""
