"""The demo's screen and script, rendered for real: key letters shown, scans the gateway takes."""

from __future__ import annotations

import io
import itertools

from rich.console import Console

from gateway.demo.screen import KEYS_HELP, KEYS_HINT, happenings, kpis, stack_light
from gateway.demo.script import HANDHELDS, MAX_EVENTS_SHOWN, Show, scan_script
from gateway.domain.barcodes import parse_barcode
from gateway.gs1 import BIIP_GS1


def _printed(renderable: object) -> str:
    console = Console(file=io.StringIO(), width=120, color_system=None, force_terminal=False)
    console.print(renderable)
    out = console.file
    assert isinstance(out, io.StringIO)
    return out.getvalue()


def test_key_letters_are_visible_in_the_hint_line() -> None:
    text = _printed(KEYS_HINT)
    assert "[b] stop/start the broker" in text
    assert "[r] drop the reader's connection" in text
    assert "[q] finish" in text


def test_unescaped_hint_would_lose_the_letters() -> None:
    # Why KEYS_HINT exists: rich reads `[b]` as a bold tag and prints nothing for it.
    assert "[b]" not in _printed(KEYS_HELP)


def test_happenings_panel_shows_the_key_letters_and_the_events() -> None:
    show = Show()
    show.say("broker STOPPED: movements pile up in the SQLite outbox [outbox]")
    text = _printed(happenings(show))
    assert "[b] stop/start the broker" in text
    assert "[q] finish" in text
    assert "[outbox]" in text, "event text is shown as written, never read as markup"


def test_show_keeps_the_last_events_only() -> None:
    show = Show()
    for n in range(MAX_EVENTS_SHOWN + 3):
        show.say(f"event {n}")
    assert len(show.events) == MAX_EVENTS_SHOWN
    assert show.events[-1].endswith(f"event {MAX_EVENTS_SHOWN + 2}")
    assert show.events[0].endswith("event 3")


def test_kpis_format_what_the_snapshot_has() -> None:
    rows = kpis(
        {
            "recovery_rate": 0.5,
            "unexpected_share": 0.25,
            "read_to_publish_latency_s": {"p90": 0.042},
            "dispositions": {"RESTOCK": 2, "DISPOSE": 1},
        }
    )
    assert rows["recovery rate (restocked or repaired / received)"] == "50%"
    assert rows["unexpected returns"] == "25%"
    assert rows["read-to-publish p90"] == "42 ms"
    assert rows["dispositions"] == "DISPOSE 1, RESTOCK 2"
    assert kpis({})["unexpected returns"] == "-"


def test_scan_script_sends_scans_the_gateway_accepts() -> None:
    seen_kinds: set[str] = set()
    for device, data in itertools.islice(scan_script(), 200):
        assert device in HANDHELDS
        seen_kinds.add(parse_barcode(data, gs1=BIIP_GS1).kind)
    assert {"rma", "rma-close", "item", "disposition", "location"} <= seen_kinds


def test_the_stack_light_is_read_from_the_portal_gpos() -> None:
    assert stack_light({}) == "off"
    assert stack_light({1: False, 2: False, 3: False}) == "off"
    assert stack_light({1: True}) == "expected"
    assert stack_light({2: True, 3: False}) == "unexpected"
    assert stack_light({1: True, 3: True}) == "problem", "the worst shows"
