"""Runs a command as `nobody` on a machine where an unprivileged user can't make user namespaces (as with
`user.max_user_namespaces=0`, or Ubuntu's AppArmor restriction), without changing this machine: the command runs in a
user namespace of its own (root and nobody mapped to themselves) whose limit of further user namespaces is 0.
Needs root. Used to show `monailabel_app/demo/loopback_forwarder.py`'s fallback.

    python -m tests.support.without_user_namespaces COMMAND...
"""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWUSER = 0x10000000
NOBODY = 65534


def main() -> None:
    command = sys.argv[1:]
    libc = ctypes.CDLL(None, use_errno=True)
    (unshared_read, unshared_write), (mapped_read, mapped_write) = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(unshared_read)
        os.close(mapped_write)
        if libc.unshare(CLONE_NEWUSER) != 0:
            os._exit(125)
        os.write(unshared_write, b"u")
        os.read(mapped_read, 1)  # until the parent has written the id maps
        with open("/proc/sys/user/max_user_namespaces", "w") as limit:  # this namespace's own limit
            limit.write("0")
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        os.execvp(command[0], command)
    os.close(unshared_write)
    os.close(mapped_read)
    if os.read(unshared_read, 1) != b"u":  # the child could not unshare
        sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    for kind in ("uid_map", "gid_map"):  # root may map more ids than its own
        with open(f"/proc/{pid}/{kind}", "w") as ids:
            ids.write(f"0 0 1\n{NOBODY} {NOBODY} 1\n")
    os.write(mapped_write, b"m")
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
