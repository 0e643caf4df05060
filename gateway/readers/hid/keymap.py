"""Keyboard-wedge decoding, pure: Linux key events (code, value) with shift state -> scans.

US layout. A character is produced on key down (value 1); key up (0) only matters for the shift
keys; autorepeat (2) is ignored, because a scanner never holds a key and a repeat means a late
key-up, not a second character. The configured GS key (default KEY_F8) stands for 0x1D, since no
key of a US layout types it. KEY_ENTER or KEY_KPENTER ends the scan. A key outside the map rejects
the scan (the rest of it is discarded up to Enter); Ctrl, Alt, Caps and Num Lock are ignored.
Key codes are the kernel's (linux/input-event-codes.h), spelled here so this module needs no evdev.
"""

from __future__ import annotations

from typing import Final

from gateway.readers.framing import Frame, Rejected, Scan

KEY_UP: Final = 0
KEY_DOWN: Final = 1
KEY_REPEAT: Final = 2

# name -> kernel key code, for every key this module understands.
KEY_CODES: Final[dict[str, int]] = {
    "KEY_1": 2,
    "KEY_2": 3,
    "KEY_3": 4,
    "KEY_4": 5,
    "KEY_5": 6,
    "KEY_6": 7,
    "KEY_7": 8,
    "KEY_8": 9,
    "KEY_9": 10,
    "KEY_0": 11,
    "KEY_MINUS": 12,
    "KEY_EQUAL": 13,
    "KEY_TAB": 15,
    "KEY_Q": 16,
    "KEY_W": 17,
    "KEY_E": 18,
    "KEY_R": 19,
    "KEY_T": 20,
    "KEY_Y": 21,
    "KEY_U": 22,
    "KEY_I": 23,
    "KEY_O": 24,
    "KEY_P": 25,
    "KEY_LEFTBRACE": 26,
    "KEY_RIGHTBRACE": 27,
    "KEY_ENTER": 28,
    "KEY_LEFTCTRL": 29,
    "KEY_A": 30,
    "KEY_S": 31,
    "KEY_D": 32,
    "KEY_F": 33,
    "KEY_G": 34,
    "KEY_H": 35,
    "KEY_J": 36,
    "KEY_K": 37,
    "KEY_L": 38,
    "KEY_SEMICOLON": 39,
    "KEY_APOSTROPHE": 40,
    "KEY_GRAVE": 41,
    "KEY_LEFTSHIFT": 42,
    "KEY_BACKSLASH": 43,
    "KEY_Z": 44,
    "KEY_X": 45,
    "KEY_C": 46,
    "KEY_V": 47,
    "KEY_B": 48,
    "KEY_N": 49,
    "KEY_M": 50,
    "KEY_COMMA": 51,
    "KEY_DOT": 52,
    "KEY_SLASH": 53,
    "KEY_RIGHTSHIFT": 54,
    "KEY_KPASTERISK": 55,
    "KEY_LEFTALT": 56,
    "KEY_SPACE": 57,
    "KEY_CAPSLOCK": 58,
    "KEY_F1": 59,
    "KEY_F2": 60,
    "KEY_F3": 61,
    "KEY_F4": 62,
    "KEY_F5": 63,
    "KEY_F6": 64,
    "KEY_F7": 65,
    "KEY_F8": 66,
    "KEY_F9": 67,
    "KEY_F10": 68,
    "KEY_NUMLOCK": 69,
    "KEY_KP7": 71,
    "KEY_KP8": 72,
    "KEY_KP9": 73,
    "KEY_KPMINUS": 74,
    "KEY_KP4": 75,
    "KEY_KP5": 76,
    "KEY_KP6": 77,
    "KEY_KPPLUS": 78,
    "KEY_KP1": 79,
    "KEY_KP2": 80,
    "KEY_KP3": 81,
    "KEY_KP0": 82,
    "KEY_KPDOT": 83,
    "KEY_F11": 87,
    "KEY_F12": 88,
    "KEY_KPENTER": 96,
    "KEY_RIGHTCTRL": 97,
    "KEY_KPSLASH": 98,
    "KEY_RIGHTALT": 100,
}

_K = KEY_CODES
_SHIFTS: Final = frozenset({_K["KEY_LEFTSHIFT"], _K["KEY_RIGHTSHIFT"]})
_ENDS: Final = frozenset({_K["KEY_ENTER"], _K["KEY_KPENTER"]})
_IGNORED: Final = frozenset(
    _K[name]
    for name in (
        "KEY_LEFTCTRL",
        "KEY_RIGHTCTRL",
        "KEY_LEFTALT",
        "KEY_RIGHTALT",
        "KEY_CAPSLOCK",
        "KEY_NUMLOCK",
    )
)


def _us_layout() -> dict[int, tuple[str, str]]:
    layout: dict[int, tuple[str, str]] = {}
    for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        layout[_K[f"KEY_{letter}"]] = (letter.lower(), letter)
    for digit, shifted in zip("1234567890", "!@#$%^&*()", strict=True):
        layout[_K[f"KEY_{digit}"]] = (digit, shifted)
    punctuation = {
        "KEY_MINUS": ("-", "_"),
        "KEY_EQUAL": ("=", "+"),
        "KEY_LEFTBRACE": ("[", "{"),
        "KEY_RIGHTBRACE": ("]", "}"),
        "KEY_SEMICOLON": (";", ":"),
        "KEY_APOSTROPHE": ("'", '"'),
        "KEY_GRAVE": ("`", "~"),
        "KEY_BACKSLASH": ("\\", "|"),
        "KEY_COMMA": (",", "<"),
        "KEY_DOT": (".", ">"),
        "KEY_SLASH": ("/", "?"),
        "KEY_SPACE": (" ", " "),
        "KEY_KPSLASH": ("/", "/"),
        "KEY_KPASTERISK": ("*", "*"),
        "KEY_KPMINUS": ("-", "-"),
        "KEY_KPPLUS": ("+", "+"),
        "KEY_KPDOT": (".", "."),
    }
    for name, pair in punctuation.items():
        layout[_K[name]] = pair
    for digit in "0123456789":
        layout[_K[f"KEY_KP{digit}"]] = (digit, digit)
    return layout


US_LAYOUT: Final[dict[int, tuple[str, str]]] = _us_layout()


class KeyDecoder:
    """Feeds key events one at a time; returns a `Scan` or `Rejected` when Enter ends a line."""

    def __init__(self, *, gs_key: str = "KEY_F8", max_scan_bytes: int = 4096) -> None:
        if gs_key not in KEY_CODES:
            raise ValueError(f"unknown key name {gs_key!r}")
        self._gs_code = KEY_CODES[gs_key]
        if self._gs_code in _ENDS or self._gs_code in _SHIFTS:
            raise ValueError(f"{gs_key} cannot stand for GS")
        self._max = max_scan_bytes
        self._shift_down: set[int] = set()
        self._chars: list[str] = []
        self._length = 0
        self._reject: str | None = None

    @property
    def buffered_chars(self) -> int:
        """Characters of the unfinished scan held in memory (never above max_scan_bytes)."""
        return len(self._chars)

    def feed(self, code: int, value: int) -> Frame | None:
        """One key event (EV_KEY code, value 0 up / 1 down / 2 repeat); a frame when Enter ends."""
        if code in _SHIFTS:
            if value == KEY_DOWN:
                self._shift_down.add(code)
            elif value == KEY_UP:
                self._shift_down.discard(code)
            return None
        if value != KEY_DOWN or code in _IGNORED:
            return None
        if code in _ENDS:
            return self._end()
        if code == self._gs_code:
            char = "\x1d"
        elif code in US_LAYOUT:
            char = US_LAYOUT[code][1 if self._shift_down else 0]
        else:
            self._reject = self._reject or "unknown_key"
            char = ""
        self._length += 1
        if self._reject is None and self._length > self._max:
            self._reject = "too_long"
        if self._reject is None:
            self._chars.append(char)
        else:
            self._chars.clear()
        return None

    def _end(self) -> Frame | None:
        reject, length, data = self._reject, self._length, "".join(self._chars)
        self._chars.clear()
        self._length = 0
        self._reject = None
        if reject is not None:
            return Rejected(reject, length)
        if not data:
            return None
        return Scan(data)
