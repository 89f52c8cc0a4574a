"""The inspector as a mitmproxy script, for `mitmdump -s addons/tunnel_inspector.py`.

The addon itself is packaged (inspector/mitm/addon.py); this file only hands it to
mitmproxy, which loads scripts by path. It is not installed.
"""

from inspector.mitm.addon import addons  # noqa: F401
