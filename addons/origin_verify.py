"""Origin secret header (the CDN-to-origin pattern). Checkpoint: method request, first.
Policy: ``kind: OriginVerify``.

The CDN adds a secret header; requests without it came around the CDN and are refused with 403
``{"message":"Forbidden"}`` before any other plugin spends work on them. Several secrets may be
accepted at once (current, then the one being retired) so that rotation drops no traffic. The
header is removed from every request, so the secret never reaches the backend, logs, traces or
saved flows.
"""

from __future__ import annotations

import hmac

from addons.decision import Exchange, Reject
from addons.policy.models import OriginVerifyPolicy


class OriginVerify:
    name = "origin_verify"

    def __init__(self, policy: OriginVerifyPolicy, source: str) -> None:
        self._header = policy.header.lower().encode()
        self._secrets = tuple(s.reveal().encode() for s in policy.secrets)  # current, then previous
        self._exempt = frozenset(policy.exempt_routes)
        self._allow_preflight = policy.allow_preflight
        self.source = source

    def method_request(self, ex: Exchange) -> Reject | None:
        # One pass over the raw fields: the sent values (bytes, as received) and the header removed,
        # so that it is never forwarded upstream and never recorded.
        headers = ex.request.headers
        sent: list[bytes] = []
        kept: list[tuple[bytes, bytes]] = []
        for field in headers.fields:
            if field[0].lower() == self._header:
                sent.append(field[1])
            else:
                kept.append(field)
        if sent:
            headers.fields = tuple(kept)
        # Compare against every accepted secret without short-circuiting: constant time in which
        # secret matched (or whether any did). A repeated header is refused, not guessed at.
        ok = False
        for secret in self._secrets:
            ok |= len(sent) == 1 and hmac.compare_digest(sent[0], secret)
        if ok:
            return None
        if self._exempt and ex.route is not None and ex.route.key in self._exempt:
            return None
        if self._allow_preflight and _is_preflight(ex):
            return None
        reason = "origin_secret_missing" if not sent else "origin_secret_mismatch"
        return Reject("ACCESS_DENIED", reason=reason, source=self.source)


def _is_preflight(ex: Exchange) -> bool:
    h = ex.request.headers
    return ex.request.method == "OPTIONS" and "origin" in h and "access-control-request-method" in h
