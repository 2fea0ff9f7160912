"""The ``sidegate`` command: run, web, validate, schema, demo-backend.

``sidegate run`` starts mitmproxy with only the built-in addons a sidecar needs (see
``SIDECAR_ADDONS``); ``sidegate web`` starts mitmweb with its full set. Both load
``mitm_config.yaml`` through mitmproxy's own option loader, then apply ``--set`` overrides.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mitmproxy import exceptions, hooks, master, options, optmanager
from mitmproxy.addons import (
    core,
    disable_h2c,
    errorcheck,
    next_layer,
    proxyserver,
    save,
    script,
    termlog,
    tlsconfig,
)

from addons.gateway import Sidegate, reverse_target
from addons.policy.errors import PolicyError
from addons.policy.policyset import load_policy_set

DEFAULT_CONFIG = "mitm_config.yaml"


def sidecar_addons() -> list[Any]:
    """Built-in addons ``sidegate run`` keeps: the proxy itself, TLS, scripts, saving flows.

    Left out, because a sidecar in reverse mode does not use them and each top-level addon
    costs time on every hook of every request: the interactive and forward-proxy features
    (intercept, replay, map/modify, sticky auth/cookies, anticache/anticomp, proxy auth, blocklists,
    upstream auth, DNS, export/cut, onboarding, browser) and the flow printer (sidegate writes
    one JSON line per request instead). ``sidegate web`` keeps mitmproxy's full set.
    """
    return [
        core.Core(),
        proxyserver.Proxyserver(),
        script.ScriptLoader(),
        next_layer.NextLayer(),
        tlsconfig.TlsConfig(),
        disable_h2c.DisableH2C(),  # refuses h2c upgrades, a request-smuggling vector
        save.Save(),  # -w / save_stream_file: record flows for later evaluation
        errorcheck.ErrorCheck(),  # startup errors end the process with a non-zero exit
    ]


class SidecarMaster(master.Master):
    def __init__(self, opts: options.Options) -> None:
        super().__init__(opts, with_termlog=False)
        # stdout carries the JSON request lines; mitmproxy's own event log goes to stderr.
        self.addons.add(termlog.TermLog(out=sys.stderr), *sidecar_addons())


def _place_after_scripts(m: master.Master, addon: Sidegate) -> None:
    """Sit where ``-s`` scripts sit in mitmproxy's chain, ahead of the view in mitmweb."""
    m.addons.add(addon)
    chain = m.addons.chain
    loader = m.addons.get("scriptloader")
    if loader is not None and addon in chain:
        chain.remove(addon)
        chain.insert(chain.index(loader) + 1, addon)


def launch(kind: str, config: Path, sets: Sequence[str], demo: bool) -> int:
    async def main() -> int:
        # As mitmproxy's own launcher does: the root logger passes everything to the event log
        # (sidegate's info lines included); chatty libraries stay at warnings.
        logging.getLogger().setLevel(logging.DEBUG)
        for noisy in ("tornado", "asyncio", "hpack", "aiohttp"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        opts = options.Options()
        if kind == "web":
            from mitmproxy.tools.web.master import WebMaster

            m: master.Master = WebMaster(opts, with_termlog=False)
            m.addons.add(termlog.TermLog(out=sys.stderr))
        else:
            m = SidecarMaster(opts)
        try:
            if not config.is_file():
                raise exceptions.OptionsError(f"{config}: configuration file not found")
            try:
                optmanager.load_paths(opts, config)
                opts.set(*sets, defer=True)
            except exceptions.OptionsError as e:  # YAML errors come as several lines: keep one
                raise exceptions.OptionsError(" ".join(p.strip() for p in str(e).splitlines() if p.strip())) from None
            gate = Sidegate()
            _place_after_scripts(m, gate)
            if kind == "run":
                # One config file serves both commands: mitmweb's own options wait for `sidegate web`.
                for name in [n for n in opts.deferred if n.startswith("web_")]:
                    del opts.deferred[name]
            if opts.deferred:
                unknown = ", ".join(sorted(opts.deferred))
                hint = " (sidegate run leaves out mitmproxy's interactive addons; sidegate web has them)"
                raise exceptions.OptionsError(f"unknown option(s): {unknown}{hint if kind == 'run' else ''}")
            # Like mitmproxy's script loader: a late addon sees every option once.
            m.addons.invoke_addon_sync(gate, hooks.ConfigureHook(set(opts.keys())))
        except exceptions.OptionsError as e:
            print(f"sidegate: {e}", file=sys.stderr)
            return 1
        backend = _start_demo_backend(reverse_target(opts.mode)) if demo else None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, m.shutdown)
        if hasattr(signal, "SIGPIPE"):
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        _announce(opts, kind, demo)
        try:
            await m.run()
        finally:
            if backend is not None:
                backend.terminate()
                backend.wait(timeout=5)
        return 0

    return asyncio.run(main())


def _announce(opts: options.Options, kind: str, demo: bool) -> None:
    host = opts.listen_host or "127.0.0.1"
    port = opts.listen_port or 8080
    target = reverse_target(opts.mode) or "(Api.upstream)"
    lines = [
        f"sidegate {kind}: send requests to http://{host}:{port}/ (backend {target}"
        + (", demo backend started by sidegate" if demo else "")
        + ")",
    ]
    if opts.sidegate_admin:
        lines.append(f"sidegate {kind}: metrics at http://{opts.sidegate_admin}/metrics")
    if kind == "web":
        lines.append(f"sidegate web: mitmweb at http://{opts.web_host}:{opts.web_port}/")
    if demo:
        lines.append(f"sidegate {kind}: try  curl -i http://{host}:{port}/books")
    print("\n".join(lines), flush=True)


def _start_demo_backend(target: str | None) -> subprocess.Popen[bytes] | None:
    if target is None or not target.startswith("http://"):
        print(
            "sidegate: --demo needs a reverse:http://HOST:PORT mode to know where the backend listens", file=sys.stderr
        )
        return None
    hostport = target.removeprefix("http://")
    host, _, port = hostport.rpartition(":")
    proc = subprocess.Popen([sys.executable, "-m", "addons.demo", "--host", host.strip("[]"), "--port", port])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=0.5):
                return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    print(f"sidegate: the demo backend did not start on {hostport}", file=sys.stderr)
    proc.terminate()
    return None


def show_keys(admin: str | None, config: Path, as_json: bool) -> int:
    import urllib.error
    import urllib.request

    from addons.throttle.report import render

    if admin is None:
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError

        try:
            data = YAML(typ="safe").load(config.read_text(encoding="utf-8")) if config.is_file() else {}
        except (YAMLError, OSError) as e:
            print(f"sidegate: {config}: {' '.join(str(e).split())}", file=sys.stderr)
            return 1
        admin = str((data or {}).get("sidegate_admin", "127.0.0.1:9901"))
    if not admin:
        print("sidegate: no admin endpoint configured (sidegate_admin)", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(f"http://{admin}/keys", timeout=10) as resp:
            entries = json.loads(resp.read())
    except (urllib.error.URLError, OSError) as e:
        print(f"sidegate: cannot reach the admin endpoint at {admin} ({e}); is the sidecar running?", file=sys.stderr)
        return 1
    print(json.dumps(entries, indent=2) if as_json else render(entries))
    return 0


def validate(directory: Path, mode: str) -> int:
    try:
        policy = load_policy_set(directory, "report" if mode == "report" else "enforce")
    except PolicyError as e:
        for issue in e.issues:
            print(issue)
        print(f"{len(e.issues)} error(s) in {directory}", file=sys.stderr)
        return 1
    print(f"{directory}: valid ({policy.summary()})")
    return 0


def schema() -> dict[str, Any]:
    from typing import Annotated, Union

    from pydantic import Field, TypeAdapter

    from addons.policy.models import KINDS

    document: Any = Annotated[Union[tuple(KINDS.values())], Field(discriminator="kind")]  # noqa: UP007
    out: dict[str, Any] = TypeAdapter(document).json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "sidegate policy document",
        **out,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sidegate", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "start the sidecar (mitmdump, lean addon set)"), ("web", "start with mitmweb")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", default=DEFAULT_CONFIG, help="mitmproxy option file (default: %(default)s)")
        p.add_argument("--set", dest="sets", action="append", default=[], metavar="OPTION=VALUE",
                       help="override an option from the config file; repeatable")  # fmt: skip
        p.add_argument("--demo", action="store_true", help="also start the demo backend at the reverse target")
    p = sub.add_parser("validate", help="check a policy directory; exit 1 on errors")
    p.add_argument("directory", nargs="?", default="policies")
    p.add_argument("--mode", choices=("enforce", "report"), default="enforce")
    sub.add_parser("schema", help="print the JSON Schema of policy documents")
    p = sub.add_parser("keys", help="show API keys: plan, remaining quota, bucket state (from a running sidecar)")
    p.add_argument("--admin", help="admin endpoint HOST:PORT (default: sidegate_admin from the config file)")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("certs", help="create a development PKI (CA, intermediate, server and client certs, CRL)")
    p.add_argument("folder", nargs="?", type=Path, default=Path("certs/dev"))
    p.add_argument("--force", action="store_true", help="overwrite an existing development PKI")
    p = sub.add_parser("demo-backend", help="run only the demo backend")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    args = parser.parse_args(argv)

    if args.command in ("run", "web"):
        return launch(args.command, Path(args.config), args.sets, args.demo)
    if args.command == "validate":
        return validate(Path(args.directory), args.mode)
    if args.command == "schema":
        print(json.dumps(schema(), indent=2))
        return 0
    if args.command == "keys":
        return show_keys(args.admin, Path(args.config), args.json)
    if args.command == "certs":
        from addons import pki

        return pki.run_certs_command(args.folder, args.force)
    from addons import demo

    demo.serve(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
