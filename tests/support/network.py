"""Test support: this machine's addresses as another host would reach it."""

from __future__ import annotations

import ipaddress
import socket

import psutil


def machine_addresses() -> list[str]:
    """This machine's IPv4 addresses other hosts would use (not 127.0.0.0/8)."""
    found = {
        entry.address
        for entries in psutil.net_if_addrs().values()
        for entry in entries
        if entry.family == socket.AF_INET and not ipaddress.ip_address(entry.address).is_loopback
    }
    return sorted(found)
