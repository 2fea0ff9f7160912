"""The module mitmproxy loads: ``mitmdump -s addons/entry.py --set sidegate_policies=policies``.

It only builds the ordered addon list; the checkpoints are nested inside ``Sidegate``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    # Loaded by path through mitmproxy's script loader: make this checkout's package importable.
    sys.path.insert(0, _ROOT)

from addons.gateway import Sidegate  # noqa: E402

addons = [Sidegate()]
