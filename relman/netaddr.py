"""Whether a host is this machine: the one loopback check for Ray addresses and hook URLs."""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or the name `localhost` (other names are not resolved: DNS can lie)."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
