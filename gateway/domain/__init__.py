"""Pure domain code: no I/O, no asyncio, no third-party adapters; time is always passed in."""
