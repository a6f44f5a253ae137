"""Suite-wide fixtures. The suite is offline by construction:

* every socket connection to anything but loopback (127.0.0.0/8, ::1, localhost) or an AF_UNIX
  path is refused with :class:`NetworkBlockedError`, and so is resolving a non-local host name;
* provider keys and base URLs are removed from the environment of every test, so a developer's
  real keys can never reach a test (tests that need one set a fake value with ``monkeypatch``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest

# Environment variables that select or authenticate an LLM provider.
PROVIDER_ENV_VARS: tuple[str, ...] = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "OPENAI_ADMIN_KEY",
    "OPENAI_CUSTOM_HEADERS",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_PROFILE",
    "ANTHROPIC_CONFIG_DIR",
    "ANTHROPIC_CUSTOM_HEADERS",
    "DEEPSEEK_API_KEY",
    "OPENROUTER_API_KEY",
    "OPENAI_COMPAT_API_KEY",
    "OPENAI_COMPAT_BASE_URL",
)


# --- network guard ---------------------------------------------------------------------------


class NetworkBlockedError(RuntimeError):
    """A test tried to reach a non-loopback address."""


_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", ""})


def _is_local_host(host: object) -> bool:
    if not isinstance(host, str):
        return False
    name = host.strip("[]").split("%", 1)[0].lower()
    if name in _LOCAL_NAMES:
        return True
    try:
        addr = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr.is_loopback or bool(mapped and mapped.is_loopback)


def _check_address(family: int, address: object) -> None:
    if getattr(socket, "AF_UNIX", None) is not None and family == socket.AF_UNIX:
        return
    host = address[0] if isinstance(address, tuple) and address else address
    if not _is_local_host(host):
        raise NetworkBlockedError(
            f"network access to {address!r} is blocked in tests: only loopback and AF_UNIX are allowed "
            f"(start a fake server on 127.0.0.1 instead)"
        )


@pytest.fixture(scope="session", autouse=True)
def _block_outside_network() -> Iterator[None]:
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_sendto = socket.socket.sendto
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: object) -> None:
        _check_address(self.family, address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        _check_address(self.family, address)
        return real_connect_ex(self, address)

    def sendto(self: socket.socket, data: bytes, *args: object) -> int:
        _check_address(self.family, args[-1])
        return real_sendto(self, data, *args)

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
        if host is not None and not _is_local_host(host.decode() if isinstance(host, bytes) else host):
            raise NetworkBlockedError(f"resolving {host!r} is blocked in tests: only loopback is allowed")
        return real_getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        mp.setattr(socket.socket, "sendto", sendto)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        yield


# --- environment -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROVIDER_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
