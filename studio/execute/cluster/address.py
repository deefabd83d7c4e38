"""Where the Ray cluster is, and joining it: the address checks (done before Ray is
imported, so a wrong address is refused in words and at once), a bounded reachability
probe (Ray itself would retry for minutes), and `connect`. Ray is imported only through
`import_ray`, and only when a run asks for the cluster."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import sys
import threading
import time
from typing import Any

from studio.errors import ClusterError, UserError, clip, echo, printable
from studio.execute.cluster.output import hold_ray_output

RAY_MISSING = ("running on a Ray cluster (--executor ray, or executor: ray in the pipeline) needs Ray, which is "
               "not installed here. Install it with `pip install 'studio-media[ray]'` (or `pip install ray`), or run "
               "with --executor local")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(RAY_MISSING) from None
    return ray


def connect(address: str | None, option: str = "--ray-address") -> dict[str, float]:
    """Join the cluster at `address` (else RAY_ADDRESS, else start a local one) unless
    this process is connected already; the cluster's resources. The address is checked
    before Ray is imported, and a host:port where nothing answers is refused after a
    bounded probe (Ray itself would retry for minutes). A Ray that Studio starts here
    keeps its messages for the driver out of the terminal (see `hold_ray_output`)."""
    joined = sys.modules.get("ray")
    if joined is not None and joined.is_initialized():
        return resources(joined)  # the caller's own ray.init() chose the cluster
    address, source = resolve_address(address, option=option)
    ray = import_ray()
    if not ray.is_initialized():
        target, found_in = address, source
        if address in (None, "auto"):  # what Ray would join: the cluster `ray start` left here, if any
            target, found_in = _found_address(ray, address), "the cluster `ray start` recorded on this machine"
        problem = target not in (None, "auto", "local") and _unreachable(target)
        if problem:  # Ray itself would retry for minutes before saying so
            raise ClusterError(f"cannot reach the Ray cluster at {target!r} (from {found_in}): {problem}. Start one "
                               "with `ray start --head` and give the address it prints (see docs/scale-out.md)")
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address!r} (from {source})" if address else "a local Ray cluster"
            raise ClusterError(f"cannot reach {where}: {clip(printable(str(exc)), 300)}. Start one with `ray start "
                               "--head` and give its address with --ray-address (see docs/scale-out.md)") from None
        hold_ray_output(ray, for_good=True)  # this process is Studio's: Ray's messages never reach its terminal
    return resources(ray)


def resources(ray: Any) -> dict[str, float]:
    """The cluster's CPUs, GPUs and memory (not its per-node markers)."""
    return {k: v for k, v in ray.cluster_resources().items() if not k.startswith("node:")}


def _found_address(ray: Any, address: str | None) -> str | None:
    """The host:port Ray would join for no address or "auto" (the cluster `ray start`
    last started here), or None when it would start one (or cannot tell)."""
    try:
        found = ray._private.services.get_ray_address_from_environment(address, None)
    except Exception:  # noqa: BLE001 - Ray's own words follow in ray.init
        return None
    try:
        return check_address(found, "RAY_ADDRESS") if isinstance(found, str) else None
    except UserError:
        return None


MAX_ADDRESS = 300  # characters: a host name has at most 253, a port 5, "ray://" 6
PROBE_S = 5.0  # how long the reachability probe waits for a name lookup and a connection, in all
ADDRESS_HELP = ("an address is HOST:PORT of the head (`ray start --head` prints it, e.g. 127.0.0.1:6379), "
                "[IPv6]:PORT, ray://HOST:PORT for Ray Client, auto or local (see docs/scale-out.md)")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_PORT = re.compile(r"0*[0-9]{1,5}")  # ASCII digits only: str.isdigit() also takes "٨٠" and "²"


def resolve_address(given: Any, *, option: str = "--ray-address") -> tuple[str | None, str]:
    """The cluster address a run joins and where it came from (`option`, or RAY_ADDRESS),
    checked the way Ray would read it: `given`, unless it is absent or "auto" and
    RAY_ADDRESS is set. Raises UserError naming the source for an address Ray could not
    use, before Ray is imported or started."""
    env = os.environ.get("RAY_ADDRESS")
    if given is not None and not isinstance(given, str):
        raise UserError(f"{option}: got {echo(given)} (a {type(given).__name__}); give the address as text: "
                        f"{ADDRESS_HELP}")
    if given is not None and given != "auto":
        return check_address(given, option), option
    if env:  # Ray reads it too when the address is absent or "auto" (an empty one is unset)
        return check_address(env, "RAY_ADDRESS"), "RAY_ADDRESS"
    return given, option


def check_address(text: str, source: str) -> str:
    """`text` as Ray would take it (its canonical form: the port as plain digits), or a
    UserError naming `source` that says what is wrong."""
    def refuse(why: str) -> UserError:
        return UserError(f"{source}: got {echo(text)}; {why}. {ADDRESS_HELP[0].upper()}{ADDRESS_HELP[1:]}")

    if len(text) > MAX_ADDRESS:
        raise refuse(f"it is {len(text):,} characters long, more than the {MAX_ADDRESS} an address can have")
    if not text.strip():
        raise refuse("it is empty" if not text else "it holds only spaces")
    bad = next((c for c in text if not "!" <= c <= "~"), None)
    if bad is not None:
        what = ("a space" if bad == " " else "a control character" if bad.isascii() or not bad.isprintable()
                else "a non-ASCII character")
        raise refuse(f"it holds {what} ({bad!r}) at position {text.index(bad) + 1}; an address is plain ASCII "
                     "(write an international host name in its xn-- form)")
    if text in ("auto", "local"):
        return text
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    elif scheme in ("http", "https"):
        raise refuse("that is a web address (the dashboard's or the job API's), not the cluster's; give the "
                     "address `ray start --head` printed (port 6379 by default)")
    elif scheme != "ray":
        raise refuse(f"the only scheme Ray Client takes is ray:// (Ray would import a Python module named "
                     f"{echo(scheme, 40)} for it)")
    if rest.startswith("["):
        host, close, port = rest[1:].partition("]")
        if not close or not port.startswith(":"):
            raise refuse("an IPv6 address in brackets needs a port after it: [::1]:6379")
        port = port[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise refuse(f"{echo(host, 60)} in the brackets is not an IPv6 address") from None
    elif rest.count(":") > 1:
        raise refuse("an IPv6 address needs brackets around it and its port after them: [::1]:6379")
    else:
        host, colon, port = rest.partition(":")
        if not colon:
            raise refuse("there is no port: give HOST:PORT, e.g. 127.0.0.1:6379")
        if not host:
            raise refuse("there is no host before the port: give HOST:PORT, e.g. 127.0.0.1:6379")
        labels = host.removesuffix(".").split(".")
        if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
            raise refuse(f"{echo(host, 60)} is not a host name or IPv4 address (letters, digits, '-' and '_' "
                         "in dot-separated parts of 1 to 63 characters)")
    if not port:
        raise refuse("the port is empty: give HOST:PORT, e.g. 127.0.0.1:6379")
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise refuse(f"the port {echo(port, 20)} is not a number from 1 to 65535 written in the digits 0-9")
    bracketed = f"[{host}]" if ":" in host else host
    return f"{scheme}://{bracketed}:{int(port)}" if scheme else f"{bracketed}:{int(port)}"


def _unreachable(address: str, timeout_s: float = PROBE_S) -> str | None:
    """Why nothing answers at a host:port, [IPv6]:port or ray://host:port address as
    `check_address` returns it, or None; within `timeout_s` in all, the name lookup
    included (it runs in a thread of its own: a resolver can wait far longer)."""
    rest = address.partition("://")[2] if "://" in address else address
    host, _, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    deadline = time.monotonic() + timeout_s
    found: dict[str, Any] = {}

    def look_up() -> None:
        try:
            found["infos"] = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            found["error"] = exc

    lookup = threading.Thread(target=look_up, name="studio-ray-address-lookup", daemon=True)
    lookup.start()
    lookup.join(timeout_s)
    if lookup.is_alive():
        return f"looking up the host name {host!r} took more than {timeout_s:g} s"
    if "error" in found:
        exc = found["error"]
        return f"cannot look up the host name {host!r} ({getattr(exc, 'strerror', None) or exc})"
    problem = "the host name has no address"
    for family, kind, proto, _, where in found["infos"]:
        left = deadline - time.monotonic()
        if left <= 0:
            return f"no answer within {timeout_s:g} s ({problem})"
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(left)
                sock.connect(where)
                return None
        except OSError as exc:
            problem = exc.strerror or str(exc) or type(exc).__name__
    return problem


def resources_text(cluster: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted(cluster.items()) if k in ("CPU", "GPU")) or "none"
