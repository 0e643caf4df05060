"""Keyboard-wedge scanners through evdev; the key decoding in `keymap` is pure."""

from gateway.readers.hid.keymap import KeyDecoder

__all__ = ["KeyDecoder"]
