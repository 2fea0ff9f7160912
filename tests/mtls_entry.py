"""Test-only mitmdump entry: sidegate's ``Sidegate`` with ``ClientTls`` wired into mitmproxy's TLS hooks.

``mitmdump -s tests/mtls_entry.py --set sidegate_policies=...``. It does, from outside, what the
real wiring in ``addons/gateway.py`` and ``addons/policy/policyset.py`` is to do: ``kind:
ClientTls`` documents load through the normal loader, each installed policy set gets the
compiled ``ClientTls`` at the front of method request and integration request, and the TLS hooks
reach the ``ClientTls`` of the policy set serving now (so a reload applies to new handshakes).
Once that wiring is in (``PolicySet.client_tls`` exists), this entry only adds ``Sidegate``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from mitmproxy import ctx, tls  # noqa: E402

from addons.gateway import Sidegate  # noqa: E402
from addons.mtls import ClientTls, ClientTlsPolicy  # noqa: E402
from addons.plugins import slots_for  # noqa: E402
from addons.policy import models  # noqa: E402
from addons.policy.policyset import PolicySet  # noqa: E402


class MtlsWiring:
    def __init__(self, gate: Sidegate) -> None:
        models.KINDS.setdefault("ClientTls", ClientTlsPolicy)  # before Sidegate loads the policy directory
        self.gate = gate
        self.client_tls: ClientTls | None = None
        self._install = gate.install
        gate.install = self.install  # type: ignore[method-assign]

    def install(self, policy: PolicySet) -> None:
        if hasattr(policy, "client_tls"):  # gateway.py and policyset.py do it themselves now
            self.client_tls = None
            self._install(policy)
            return
        doc = next((d for d in policy.documents if isinstance(d.model, ClientTlsPolicy)), None)
        client_tls = None
        if doc is not None:
            assert isinstance(doc.model, ClientTlsPolicy)
            mode = doc.model.mode or ctx.options.sidegate_mode
            client_tls = ClientTls(doc.model, doc.source, enforced=mode == "enforce")
            slots = slots_for(client_tls, enforced=client_tls.enforced, source=doc.source)
            plugins = dict(policy.plugins)
            for method in ("method_request", "integration_request"):
                plugins[method] = (slots[method], *plugins[method])
            policy = dataclasses.replace(policy, plugins=plugins)
            client_tls.log_warnings()
        self.client_tls = client_tls
        self._install(policy)

    def tls_start_client(self, data: tls.TlsData) -> None:
        if self.client_tls is not None:
            self.client_tls.tls_start_client(data)

    def tls_established_client(self, data: tls.TlsData) -> None:
        if self.client_tls is not None:
            self._count(self.client_tls.tls_established_client(data))

    def tls_failed_client(self, data: tls.TlsData) -> None:
        if self.client_tls is not None:
            self._count(self.client_tls.tls_failed_client(data))

    def _count(self, failure: dict[str, Any] | None) -> None:
        if failure is not None:
            self.gate.metrics.rejection("client_tls", failure["reason"], failure["enforced"])


gate = Sidegate()
addons = [MtlsWiring(gate), gate]
