"""Where a source URL may point: http(s) only, and only to public addresses unless the operator allows more.

A manifest comes from outside, so a URL in it is untrusted: fetched blindly, `http://169.254.169.254/`
would hand the cloud's metadata (and its credentials) to whoever wrote the manifest, and
`http://10.0.0.5/admin` would reach the private network behind the daemon. The rule is checked on
addresses, not names (a name can resolve anywhere), on every address a name resolves to, and again
after every redirect; fetch.py then connects to the very address that was checked.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from podspool.stages.sources.limits import SourceError

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

# cloud instance-metadata endpoints (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba); most are link-local
# too, but naming the class tells the operator what the manifest was after
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200"))
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: not global, not "private" to ipaddress


class UrlRefused(SourceError):
    """A URL that may not be fetched (its scheme, or the class of an address it reaches)."""


def address_class(ip: IP) -> str | None:
    """The class that makes `ip` off limits ("loopback", "private", ...), or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if ip in METADATA:
        return "cloud metadata"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "shared (carrier-grade NAT)"
    if ip.is_reserved or not ip.is_global:
        return "reserved"
    return None


def refusal(url: str, host: str, ip: IP, hop: str | None = None) -> UrlRefused | None:
    """The refusal for reaching `ip` (resolved from `host`, on the way to `hop` after a redirect), or None
    when it is public."""
    kind = address_class(ip)
    if kind is None:
        return None
    via = "" if host.strip("[]") == str(ip) else f" ({host} resolves to {ip})"
    after = f" after a redirect to {hop}" if hop and hop != url else ""
    return UrlRefused(f"source {url}: refused{after}: {kind} address {ip}{via}; podspool fetches only public "
                      "addresses unless [research] allow_private_urls = true")


def split_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; UrlRefused for any other scheme or a URL without a host."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"source {url}: not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UrlRefused(f"source {url}: only http and https URLs are fetched, not {scheme or 'no scheme'}")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UrlRefused(f"source {url}: no host")
    return scheme, host, port or (443 if scheme == "https" else 80)


def literal_problem(url: str, allow_private: bool) -> str | None:
    """What intake can tell without the network: a bad scheme, or a private IP literal or localhost."""
    try:
        _, host, _ = split_url(url)
    except UrlRefused as exc:
        return str(exc)
    if allow_private:
        return None
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: always loopback, never asked of DNS
        return (f"source {url}: refused: loopback address (localhost); podspool fetches only public "
                "addresses unless [research] allow_private_urls = true")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None  # a name: checked on its addresses when it is fetched
    found = refusal(url, host, ip)
    return str(found) if found else None


def resolve_checked(url: str, host: str, port: int, allow_private: bool, hop: str | None = None) -> str:
    """An address of `host` to connect to, after checking every address it resolves to.

    One private address among public ones refuses the URL: which one a connection would use is not
    ours to choose, and a name that mixes them is a known trick (DNS rebinding).
    """
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
        found = [ip]
    except ValueError:
        try:  # socket.gaierror goes to the caller: a name that does not resolve now may later
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except UnicodeError as exc:
            raise UrlRefused(f"source {url}: the name {host} is not a valid host name ({exc})") from None
        found = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
    if not found:
        raise UrlRefused(f"source {url}: the name {host} has no address")
    if not allow_private:
        for ip in found:
            refused = refusal(url, host, ip, hop)
            if refused is not None:
                raise refused
    return str(found[0])
