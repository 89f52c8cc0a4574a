"""Each option is declared once (inspector/options.py): the addon under mitmproxy and
the command line accept and refuse the same values, with the same sentence."""

from __future__ import annotations

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from inspector import cli
from inspector.mitm.addon import TunnelInspector
from inspector.options import OPTIONS

# option -> (values both must refuse, values both must take), as a user would type them
CASES = {
    "handshake_timeout": (["0", "-1", "nan", "inf"], ["0.5", "10"]),
    "connect_head_timeout": (["0", "nan"], ["30"]),
    "probe_timeout": (["0", "-0.1", "nan"], ["5"]),
    "expiring_days": (["-5"], ["0", "30"]),
    "connect_to": (["a", "a:1:b"], ["a.test:443:127.0.0.1:8443"]),
    "relay_pump": (["kernel", "", "Splice"], ["auto", "splice", "protocol"]),
}


def _typed(option, text):
    o = next(o for o in OPTIONS if o.name == option)
    return [text] if o.repeatable else o.type(text)


def test_every_checked_option_is_covered():
    assert {o.name for o in OPTIONS if o.check is not None and o.cli} <= set(CASES) | {"trust"}


@pytest.mark.parametrize("option,text,ok", [
    (option, text, ok) for option, (bad, good) in CASES.items()
    for ok, values in ((False, bad), (True, good)) for text in values
])
def test_the_addon_and_the_cli_agree(option, text, ok, capsys):
    o = next(o for o in OPTIONS if o.name == option)
    addon = TunnelInspector()
    with taddons.context(addon) as tctx:
        if ok:
            tctx.configure(addon, **{o.mitm_name: _typed(option, text)})
        else:
            with pytest.raises(exceptions.OptionsError) as addon_error:
                tctx.configure(addon, **{o.mitm_name: _typed(option, text)})
    parser = cli.build_parser()
    args = parser.parse_args(["--headless", o.flag, text])
    if ok:
        cli._validate(args, parser)
        return
    with pytest.raises(SystemExit) as exit_:
        cli._validate(args, parser)
    assert exit_.value.code == 2
    why = str(addon_error.value).removeprefix(f"{o.mitm_name} ")
    assert f"{o.flag} {why}" in capsys.readouterr().err


def test_cli_flags_come_from_the_table():
    usage = cli.build_parser().format_help()
    assert all(o.flag in usage for o in OPTIONS if o.cli)
    assert "--log-lines" not in usage  # mitmdump -s only


def test_the_relay_a_decided_tunnel_gets():
    from inspector.options import relay_pump, splice_available

    assert relay_pump(False, "splice") is None  # --no-fast-relay wins
    assert relay_pump(True, "protocol") == "protocol"
    assert relay_pump(True, "auto") == ("splice" if splice_available() else "protocol")
