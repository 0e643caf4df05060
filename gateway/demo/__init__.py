"""`gateway demo`: a returns dock on one machine, with nothing configured.

A simulated LLRP portal speaks real LLRP over TCP at the receiving door; scripted handhelds scan
over TCP at the door (RMA labels and untagged returns), the inspection bench (dispositions), the
restock station (locations) and the recycling bench; the real daemon buffers and publishes; the
reference WMS consumer stores and acknowledges (`delivery = "wms"`, the end-to-end guarantee).
Keys (or `--chaos`) stop the broker for a while and drop the reader's connection.

`run` wires it together, `broker` finds or starts the MQTT broker, `script` is what the demo does
by itself (scans, chaos), `screen` is what it shows and the keys it reads.
"""

from gateway.demo.run import run_demo

__all__ = ["run_demo"]
