"""The tables redraw only the lines whose content changed (VirtualTable.rows_changed):
after any sequence of user actions and arriving rows, what Textual's line cache holds,
as the terminal got it, equals a fresh full render. A line that changed but was not
redrawn would differ. A random walk over the UI's actions, a few seeds per run
(REDRAW_SEEDS / REDRAW_STEPS run more)."""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from textual import events

from inspector.tui import InspectorApp

from .test_tui import SIZE, ListFeed, real  # noqa: F401  (real: a fixture)


def _strips(table):
    if not table.display or not table.size.height:
        return None
    return [[(s.text, s.style) for s in strip] for strip in table.render_lines(table.size.region)]


def _fresh(table):
    kept = table._lines  # kept: a stale strip under an unchanged key must stay findable
    table._lines = type(kept)(256)
    table._styles_cache.clear()
    try:
        return _strips(table)
    finally:
        table._lines = kept


def _diff(table):
    cached = _strips(table)
    fresh = _fresh(table)
    if cached == fresh:
        return None
    bad = [y for y, (a, b) in enumerate(zip(cached, fresh)) if a != b]
    y = bad[0]
    return bad, "".join(t for t, _ in cached[y]), "".join(t for t, _ in fresh[y]), cached[y][-1], fresh[y][-1]


def record(records, i, rnd):
    kind = rnd.choice(["ok", "ok", "no-sni", "mismatch", "rejected"])
    r = {**records[kind], "id": f"t{i}"}
    r["connect"] = {**r["connect"], "host": f"h{rnd.randrange(30)}.lab.test"}
    return r


ACTIONS = ["push", "push", "push1", "up", "down", "pageup", "pagedown", "home", "end", "f", "search",
           "enter", "escape", "c", "p", "h", "resize", "wheel_down", "wheel_up", "bar_click", "theme",
           "l", "hostenter", "tab", "rowclick", "pushnowait", "blur", "narrow"]


@pytest.mark.parametrize("seed", range(int(os.environ.get("REDRAW_SEEDS", "3"))))
def test_random_walk_never_leaves_a_stale_line(seed, tmp_path, real, running_app):  # noqa: F811
    steps = int(os.environ.get("REDRAW_STEPS", "60"))

    async def run(seed):
        rnd = random.Random(seed)
        feed = ListFeed()
        app = InspectorApp(feed, export_dir=tmp_path, log_path=None)
        n = 0
        history = []
        async with running_app(app, SIZE) as ui:
            await ui.wait_for(lambda: feed.on_record is not None, what="the feed to start")
            for step in range(steps):
                a = rnd.choice(ACTIONS)
                history.append(a)
                view = app.hosts if app.hosts.display else app.table
                if a == "push":
                    k = rnd.choice([5, 40, 120])
                    feed.push(*(record(real, n + i, rnd) for i in range(k)))
                    n += k
                    await ui.wait_for(lambda: not app._pending or app.paused, what="applied")
                elif a == "push1":
                    feed.push(record(real, n, rnd))
                    n += 1
                    await ui.wait_for(lambda: not app._pending or app.paused, what="applied")
                elif a in ("up", "down", "pageup", "pagedown", "home", "end", "f", "enter", "escape",
                           "c", "p", "h", "l"):
                    await ui.press(a)
                elif a == "hostenter":
                    await ui.press("h")
                    await ui.pilot.pause()
                    await ui.press("down", "enter")
                elif a == "search":
                    await ui.press("slash", *rnd.choice(["h1", "h2", "no", "x"]), "enter")
                elif a == "resize":
                    await ui.pilot.resize_terminal(rnd.choice([160, 120, 80]), rnd.choice([45, 30, 20]))
                elif a in ("wheel_down", "wheel_up"):
                    cls = events.MouseScrollDown if a == "wheel_down" else events.MouseScrollUp
                    for _ in range(rnd.choice([1, 3])):
                        view.post_message(cls(view, 10, 5, 0, 1 if a == "wheel_down" else -1, 0,
                                              False, False, False))
                elif a == "bar_click":
                    if view.display and view.size.height > 2:
                        await ui.pilot.click(view, offset=(view.size.width - 1,
                                                           rnd.randrange(1, view.size.height)))
                elif a == "tab":
                    await ui.press(rnd.choice(["tab", "shift+tab"]))
                elif a == "rowclick":
                    if view.display and view.size.height > 2:
                        await ui.pilot.click(view, offset=(rnd.randrange(1, 30),
                                                           rnd.randrange(0, view.size.height)))
                elif a == "pushnowait":
                    feed.push(*(record(real, n + i, rnd) for i in range(7)))
                    n += 7
                    await ui.press(rnd.choice(["up", "down", "end", "f"]))
                elif a == "blur":
                    app.post_message(rnd.choice([events.AppBlur(), events.AppFocus()]))
                elif a == "narrow":
                    await ui.pilot.resize_terminal(rnd.choice([40, 60]), rnd.choice([12, 8]))
                elif a == "theme":
                    app.theme = rnd.choice(["textual-dark", "textual-light", "nord"])
                await ui.pilot.pause()
                await ui.pilot.pause()
                for t in (app.table, app.hosts):
                    d = _diff(t)
                    assert d is None, (seed, step, t.id, history[-12:], d)

    asyncio.run(run(seed))
