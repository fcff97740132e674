"""Proxy mounts from the environment, as httpx derives them for a client without a transport.

httpx keeps this logic private (`httpx._utils.get_environment_proxies`); this is the same
mapping over the standard library's `urllib.request.getproxies`, so an httpx upgrade cannot
break it silently.
"""

from __future__ import annotations

import ipaddress
from urllib.request import getproxies

__all__ = ["environment_proxies"]


def environment_proxies() -> dict[str, str | None]:
    """URL patterns (httpx `mounts=` keys) to a proxy URL, or to None for NO_PROXY hosts.

    HTTP_PROXY / HTTPS_PROXY / ALL_PROXY (either case) map to "http://", "https://", "all://";
    a proxy given without a scheme is an http:// proxy. NO_PROXY follows curl's rules: "*"
    disables every proxy; ".example.com" exempts the subdomains of example.com;
    "example.com" exempts it and its subdomains; IP addresses and "localhost" exempt exactly
    that host; an entry with a scheme ("http://host") is kept as written.
    """
    found = getproxies()
    mounts: dict[str, str | None] = {}
    for scheme in ("http", "https", "all"):
        proxy = found.get(scheme)
        if proxy:
            mounts[f"{scheme}://"] = proxy if "://" in proxy else f"http://{proxy}"
    for host in (entry.strip() for entry in found.get("no", "").split(",")):
        if host == "*":
            return {}
        if host:
            mounts[_no_proxy_pattern(host)] = None
    return mounts


def _no_proxy_pattern(host: str) -> str:
    if "://" in host:
        return host
    if host.lower() == "localhost":
        return f"all://{host}"
    address = host.split("/")[0]  # "10.0.0.0/8" is kept whole, as httpx does
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return f"all://*{host}"
    return f"all://[{host}]" if parsed.version == 6 else f"all://{host}"
