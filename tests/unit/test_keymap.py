"""Keyboard-wedge decoding on recorded key-event sequences (as evdev reports a scanner)."""

from __future__ import annotations

import pytest

from gateway.readers.framing import Frame, Rejected, Scan
from gateway.readers.hid.keymap import KEY_CODES, KEY_DOWN, KEY_REPEAT, KEY_UP, KeyDecoder

K = KEY_CODES
SHIFT = K["KEY_LEFTSHIFT"]

# What a scanner in US keyboard mode sends for `]C1` + GTIN + GS (F8) + `21` + `6789` + Enter:
# every character is a press and a release; `C` is wrapped in a left-shift press/release.
RECORDED_GS1: list[tuple[int, int]] = [
    (27, 1), (27, 0),            # ]
    (42, 1), (46, 1), (46, 0), (42, 0),  # shift + c -> C
    (2, 1), (2, 0),              # 1
    (11, 1), (11, 0), (2, 1), (2, 0), (9, 1), (9, 0), (11, 1), (11, 0),  # 0180
    (7, 1), (7, 0), (2, 1), (2, 0), (5, 1), (5, 0), (2, 1), (2, 0),  # 6141
    (5, 1), (5, 0), (2, 1), (2, 0), (2, 1), (2, 0), (3, 1), (3, 0),  # 4112
    (4, 1), (4, 0), (5, 1), (5, 0), (6, 1), (6, 0), (9, 1), (9, 0),  # 3458
    (66, 1), (66, 0),            # F8 -> GS
    (3, 1), (3, 0), (2, 1), (2, 0),  # 21
    (7, 1), (7, 0), (8, 1), (8, 0), (9, 1), (9, 0), (10, 1), (10, 0),  # 6789
    (28, 1), (28, 0),            # Enter
]  # fmt: skip


def _run(events: list[tuple[int, int]], decoder: KeyDecoder | None = None) -> list[Frame]:
    decoder = decoder or KeyDecoder()
    out: list[Frame] = []
    for code, value in events:
        frame = decoder.feed(code, value)
        if frame is not None:
            out.append(frame)
    return out


def _type(text: str, *, enter: str = "KEY_ENTER") -> list[tuple[int, int]]:
    """Key events a US keyboard wedge sends for `text` (shift per character, as scanners do)."""
    shifted = {"!": "1", "@": "2", "#": "3", "$": "4", "%": "5", "^": "6", "&": "7", "*": "8"}
    shifted |= {"(": "9", ")": "0", "_": "MINUS", "+": "EQUAL", "{": "LEFTBRACE"}
    shifted |= {"}": "RIGHTBRACE", ":": "SEMICOLON", '"': "APOSTROPHE", "~": "GRAVE"}
    shifted |= {"|": "BACKSLASH", "<": "COMMA", ">": "DOT", "?": "SLASH"}
    plain = {"-": "MINUS", "=": "EQUAL", "[": "LEFTBRACE", "]": "RIGHTBRACE", ";": "SEMICOLON"}
    plain |= {"'": "APOSTROPHE", "`": "GRAVE", "\\": "BACKSLASH", ",": "COMMA", ".": "DOT"}
    plain |= {"/": "SLASH", " ": "SPACE", "\x1d": "F8"}
    events: list[tuple[int, int]] = []
    for char in text:
        shift = char.isupper() or char in shifted
        name = shifted.get(char) or plain.get(char) or char.upper()
        code = K[f"KEY_{name}"]
        if shift:
            events.append((SHIFT, KEY_DOWN))
        events += [(code, KEY_DOWN), (code, KEY_UP)]
        if shift:
            events.append((SHIFT, KEY_UP))
    return [*events, (K[enter], KEY_DOWN), (K[enter], KEY_UP)]


def test_recorded_gs1_scan_with_symbology_id_and_gs() -> None:
    assert _run(RECORDED_GS1) == [Scan("]C10180614141123458\x1d216789")]


def test_key_table_matches_the_kernel_codes() -> None:
    ecodes = pytest.importorskip("evdev.ecodes", reason="evdev not installed")
    for name, code in KEY_CODES.items():
        assert getattr(ecodes, name) == code, name


@pytest.mark.parametrize(
    "text",
    [
        "RMA-000123",
        "DISP-RESTOCK",
        "LOC-A-01-3",
        "]d2010614141123458",
        "]Q1https://id.gs1.org/01/09506000134352?x=1&y=2",
        "mixed Case !@#$%^&*()_+{}:\"~|<>? -=[];'`\\,./",
    ],
)
def test_round_trip_of_printable_text(text: str) -> None:
    assert _run(_type(text)) == [Scan(text)]


def test_keypad_enter_and_keypad_digits() -> None:
    events = [(K["KEY_KP4"], 1), (K["KEY_KP2"], 1), (K["KEY_KPDOT"], 1), (K["KEY_KPENTER"], 1)]
    assert _run(events) == [Scan("42.")]


def test_right_shift_and_held_shift_over_several_keys() -> None:
    a, b = K["KEY_A"], K["KEY_B"]
    events = [(54, 1), (a, 1), (a, 0), (b, 1), (b, 0), (54, 0), (a, 1), (a, 0), (28, 1)]
    assert _run(events) == [Scan("ABa")]


def test_repeat_and_modifiers_add_nothing() -> None:
    a = K["KEY_A"]
    events = [(a, 1), (a, KEY_REPEAT), (K["KEY_LEFTCTRL"], 1), (a, 0), (K["KEY_CAPSLOCK"], 1)]
    assert _run([*events, (28, 1)]) == [Scan("a")]


def test_unknown_key_rejects_the_scan_and_the_next_one_decodes() -> None:
    esc = 1  # KEY_ESC: not in the map
    events = [*_type("AB")[:-2], (esc, 1), (esc, 0), (K["KEY_C"], 1), (28, 1), *_type("OK")]
    assert _run(events) == [Rejected("unknown_key", 4), Scan("OK")]


def test_overlong_scan_is_rejected_without_buffering() -> None:
    decoder = KeyDecoder(max_scan_bytes=16)
    peak = 0
    for _ in range(100):
        decoder.feed(K["KEY_7"], KEY_DOWN)
        peak = max(peak, decoder.buffered_chars)
    assert peak <= 16
    assert decoder.feed(K["KEY_ENTER"], KEY_DOWN) == Rejected("too_long", 100)
    assert _run(_type("SHORT"), decoder) == [Scan("SHORT")]


def test_configurable_gs_key() -> None:
    decoder = KeyDecoder(gs_key="KEY_F12")
    f12, f8 = K["KEY_F12"], K["KEY_F8"]
    events = [(K["KEY_1"], 1), (f12, 1), (K["KEY_2"], 1), (28, 1), (f8, 1), (28, 1)]
    # F8 is an ordinary unmapped function key once another key stands for GS.
    assert _run(events, decoder) == [Scan("1\x1d2"), Rejected("unknown_key", 1)]


def test_bad_gs_key_names() -> None:
    with pytest.raises(ValueError, match="unknown key"):
        KeyDecoder(gs_key="KEY_NOPE")
    with pytest.raises(ValueError, match="cannot stand for GS"):
        KeyDecoder(gs_key="KEY_ENTER")


def test_empty_enter_is_nothing() -> None:
    assert _run([(28, 1), (28, 0), (96, 1)]) == []
