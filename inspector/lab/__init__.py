"""The built-in lab: PKIs and TLS servers on 127.0.0.1 that reproduce real breakage.

Used by the tests and by `tunnel-inspector demo`; nothing here listens beyond loopback.
"""
