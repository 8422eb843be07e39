"""What answering one scrape costs: ``/metrics`` and ``/stats`` rendered N times in-process.

The rule: for counting instructions, not timing. Run it under valgrind for two values of
``SCRAPES`` and divide the difference by the difference in scrapes:

    SCRAPES=10  valgrind --tool=callgrind python3.11 bench/scrape_cost.py
    SCRAPES=110 valgrind --tool=callgrind python3.11 bench/scrape_cost.py

(give valgrind the interpreter itself, not a shell shim). Compare with the instructions
per message of ``bench/engine_fanin.py`` counted the same way. Nothing here is asserted.
"""

from __future__ import annotations

import os

import anyio
import h11

from midge import Broker, ListenerSettings, Settings
from midge.listeners.http import App

SCRAPES = int(os.environ.get("SCRAPES", "10"))


async def main() -> None:
    settings = Settings(listeners=(ListenerSettings(port=0, allow_anonymous=True),))
    async with Broker(settings) as broker:
        app = App(broker.observatory, None)
        for _ in range(SCRAPES):
            for path in (b"/metrics", b"/stats"):
                request = h11.Request(method="GET", target=path, headers=[("Host", "x")])
                await app.respond(request, b"")


if __name__ == "__main__":
    anyio.run(main)
