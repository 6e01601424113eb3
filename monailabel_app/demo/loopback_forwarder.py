"""Runs a server that can't be told which address to listen on (Orthanc listens on every interface: it has no bind
address setting) so that only this machine can reach it.

The server runs in a network namespace of its own, whose only interface is its own loopback: no other host, and no
other process of this machine, can connect to it there. This process forwards `127.0.0.1:PORT` of the machine into it:
it opens that listening socket first, then moves itself into the new namespace (a socket stays in the namespace it
was made in), starts the server there, and for each connection accepted on the machine's loopback opens one to the
server's `127.0.0.1:PORT` inside and copies bytes both ways.

It needs no privilege: as a normal user the namespace comes with a user namespace of its own, mapping the user to
itself (the server runs as that user, with no capabilities), which Linux allows unless the admin turned unprivileged
user namespaces off (`user.max_user_namespaces=0`, or Ubuntu's AppArmor restriction). Root gets a network namespace
only. Where neither works, the server runs as before, on every interface, and a warning says so: then only its own
fences remain (for Orthanc, `RemoteAccessAllowed: false` and its password).

A stop (SIGTERM, SIGINT, SIGHUP) stops the server, then this process; if this process dies anyway, the kernel sends
the server SIGTERM (`PR_SET_PDEATHSIG`); if the server ends, this process ends with its status.

    python -m monailabel_app.demo.loopback_forwarder PORT LOG -- COMMAND...   # the server's output goes to LOG
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional, Sequence

LOOPBACK = "127.0.0.1"
CLONE_NEWUSER = 0x10000000  # <linux/sched.h>
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1  # <linux/sockios.h>, <net/if.h>
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
CHUNK = 256 * 1024
STOP_TIMEOUT_S = 20

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def _write(path: str, text: str) -> None:
    with open(path, "w") as stream:
        stream.write(text)


def _loopback_up() -> None:
    """`ip link set lo up` in the current network namespace (a new one starts with its loopback down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def enter_private_network() -> None:
    """Moves this (single-threaded) process into a new network namespace with its loopback up; OSError if it can't.
    Sockets made before stay where they were."""
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        try:
            _check(_libc.unshare(CLONE_NEWNET))
            _loopback_up()
            return
        except PermissionError:  # root without CAP_SYS_ADMIN (a container): a user namespace may still work
            pass
    _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNET))
    _write("/proc/self/setgroups", "deny")  # an unprivileged process may only map its own ids, and only after this
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")
    _loopback_up()


def private_network_refusal() -> Optional[str]:
    """None if `enter_private_network` works here, else why not; tried in a child process, since a half-made
    namespace can't be left."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once, whatever happens (it must never go on as a second forwarder)
        try:
            os.close(read_end)
            try:
                enter_private_network()
                message = b""
            except OSError as error:
                message = str(error).encode() or b"refused"
            except BaseException as error:  # anything else is a refusal too
                message = f"{type(error).__name__}: {error}".encode()
            os.write(write_end, message)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as stream:
        message = stream.read().decode(errors="replace")
    os.waitpid(pid, 0)
    return message or None


def _die_with_parent() -> None:
    """In the server's process before it starts: SIGTERM when this forwarder dies, however it dies."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, other: asyncio.StreamWriter) -> None:
    """One direction; at its end the other side learns it (half-close), and after an error both sides are closed."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()
        other.close()


async def _forward(port: int, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
    try:
        # made now, so in the server's namespace: its 127.0.0.1, not the machine's
        server_reader, server_writer = await asyncio.open_connection(LOOPBACK, port)
    except OSError:  # not listening yet (starting) or gone: the client sees the connection closed
        client_writer.close()
        return
    try:
        await asyncio.gather(
            _copy(client_reader, server_writer, client_writer), _copy(server_reader, client_writer, server_writer)
        )
    finally:
        client_writer.close()
        server_writer.close()


async def _serve(listener: socket.socket, port: int, server: subprocess.Popen) -> int:
    """Forwards until a stop signal (then stops the server: status 0) or the server's end (its status)."""
    loop = asyncio.get_running_loop()
    stop_asked, server_ended = asyncio.Event(), asyncio.Event()
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        if signal.getsignal(number) != signal.SIG_IGN:  # a shell's background job ignores Ctrl-C: its script stops it
            loop.add_signal_handler(number, stop_asked.set)

    def watch() -> None:
        server.wait()
        loop.call_soon_threadsafe(server_ended.set)

    threading.Thread(target=watch, daemon=True).start()
    forwarder = await asyncio.start_server(lambda r, w: _forward(port, r, w), sock=listener)
    waits = [asyncio.create_task(stop_asked.wait()), asyncio.create_task(server_ended.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    forwarder.close()
    if not server_ended.is_set():
        await asyncio.to_thread(_stop, server)
        return 0
    return server.returncode if server.returncode >= 0 else 128 - server.returncode


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def run(command: Sequence[str], port: int, log_path: Path, name: str = "") -> int:
    """Runs `command` (a server listening on `port`) so that only `127.0.0.1:port` of this machine reaches it; its
    exit status. Call it before starting any thread."""
    name = name or Path(command[0]).name
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((LOOPBACK, port))
    except OSError as error:
        print(f"{name}: can't listen on {LOOPBACK}:{port} ({error.strerror}); is the port taken?", file=sys.stderr)
        return 1
    listener.listen(128)
    refusal = private_network_refusal()
    log = open(log_path, "wb")
    if refusal is not None:
        listener.close()
        print(
            f"WARNING: {name} listens on every network interface of this machine (port {port}), not on 127.0.0.1 "
            f"only: it could not be given a network namespace of its own ({refusal}). Only its own access control "
            "keeps other hosts out. Unprivileged user namespaces are off here? (sysctl user.max_user_namespaces; "
            "on Ubuntu also kernel.apparmor_restrict_unprivileged_userns)",
            file=sys.stderr,
            flush=True,
        )
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        os.execvp(command[0], list(command))  # the server in this process's place: a stop reaches it directly
    enter_private_network()
    server = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    log.close()
    return asyncio.run(_serve(listener, port, server))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int)
    parser.add_argument("log", type=Path, help="the server's output goes here (emptied first)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the server's command line")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no server command")
    sys.exit(run(command, args.port, args.log))


if __name__ == "__main__":
    main()
