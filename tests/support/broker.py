"""The private mosquitto and the free-port helper, from the package, where tests always found them.

`gateway.runtime.mosquitto` holds the one copy (the demo uses it too; product code may not import
tests); `.ci/run` installs the binary.
"""

from __future__ import annotations

from gateway.runtime.loopback import free_port
from gateway.runtime.mosquitto import Mosquitto

__all__ = ["Mosquitto", "free_port"]
