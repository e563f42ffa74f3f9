"""Fetching an http(s) image URL, only where the configuration allows it (`server.media.allow_remote_urls` and the
host in `server.media.remote_hosts`): a size limit counted while streaming, a total deadline, no redirect to another
host, no proxy from the environment, no compression (so the bytes counted are the bytes kept).

The URL is parsed by httpx itself, the same parser that then connects, so the host checked is the host contacted.
"""

from __future__ import annotations

import time

import httpx

from mlx_router.errors import InvalidRequestError
from mlx_router.vision.limits import KEY, MB, MediaLimits, limit_mb, split_host_entry

MAX_REDIRECTS = 3


def _host_allowed(url: httpx.URL, hosts: list[str]) -> bool:
    host = url.host.lower()
    port = url.port or (443 if url.scheme == "https" else 80)
    for entry in hosts:
        name, entry_port = split_host_entry(entry)
        if name == host and entry_port in (None, port):
            return True
    return False


def check_remote_url(url: str, limits: MediaLimits, label: str, param: str | None) -> httpx.URL:
    """The parsed URL if this server may fetch it; else the 400 that says why (nothing is contacted)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise InvalidRequestError(f"{label} is not a valid URL", param=param, code="invalid_image_url") from None
    if not limits.allow_remote_urls:
        raise InvalidRequestError(
            f"{label} is a remote URL ({parsed.scheme}://{parsed.host}/...); this server does not fetch URLs "
            f"({KEY}allow_remote_urls is false): send the image inline as a data: URI",
            param=param,
            code="remote_url_disabled",
        )
    if parsed.userinfo or not parsed.host:
        raise InvalidRequestError(f"{label} is not a fetchable URL", param=param, code="invalid_image_url")
    if not _host_allowed(parsed, limits.remote_hosts):
        raise InvalidRequestError(
            f"{label} names host {parsed.host}, which is not in {KEY}remote_hosts",
            param=param,
            code="remote_host_not_allowed",
        )
    return parsed


def fetch_remote(url: httpx.URL, limits: MediaLimits, max_bytes: int, label: str, param: str | None) -> bytes:
    """The body at `url` (already checked by `check_remote_url`), at most `max_bytes` (also capped by
    `remote_max_mb`), within `remote_timeout_s` in all."""
    limit = min(max_bytes, int(limits.remote_max_mb * MB))
    deadline = time.monotonic() + limits.remote_timeout_s
    headers = {"Accept-Encoding": "identity", "Accept": "image/*, application/pdf"}
    try:
        with httpx.Client(follow_redirects=False, trust_env=False, timeout=limits.remote_timeout_s) as client:
            for _ in range(MAX_REDIRECTS + 1):
                with client.stream("GET", url, headers=headers) as response:
                    if response.is_redirect:
                        url = _redirect_target(url, response, limits, label, param)
                        continue
                    return _read_body(response, limit, deadline, limits, label, param)
    except httpx.TimeoutException:
        raise _timeout(limits, label, param) from None
    except httpx.HTTPError as e:
        raise InvalidRequestError(
            f"{label} could not be fetched: {type(e).__name__}", param=param, code="remote_fetch_failed"
        ) from None
    raise InvalidRequestError(
        f"{label} redirects more than {MAX_REDIRECTS} times", param=param, code="remote_fetch_failed"
    )


def _redirect_target(
    url: httpx.URL, response: httpx.Response, limits: MediaLimits, label: str, param: str | None
) -> httpx.URL:
    try:
        target = url.join(response.headers.get("location", ""))
    except (httpx.InvalidURL, ValueError):
        target = httpx.URL("invalid:")
    same_host = target.host.lower() == url.host.lower() and target.scheme in ("http", "https")
    if not same_host or not _host_allowed(target, limits.remote_hosts):
        raise InvalidRequestError(
            f"{label} redirects to another host, which is not followed", param=param, code="remote_fetch_failed"
        )
    return target


def _read_body(
    response: httpx.Response, limit: int, deadline: float, limits: MediaLimits, label: str, param: str | None
) -> bytes:
    if response.status_code != 200:
        raise InvalidRequestError(
            f"{label} could not be fetched: HTTP {response.status_code}", param=param, code="remote_fetch_failed"
        )

    def too_large(size: str) -> InvalidRequestError:
        return InvalidRequestError(
            f"{label} is {size}; the limit for a fetched URL is {limit_mb(limit / MB)} ({KEY}remote_max_mb, and "
            f"the file size limits)",
            param=param,
            code="image_too_large",
        )

    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(f"{int(declared) / MB:.1f} MB")
    body = bytearray()
    for chunk in response.iter_raw():
        body += chunk
        if len(body) > limit:
            raise too_large(f"more than {limit_mb(limit / MB)}")
        if time.monotonic() > deadline:
            raise _timeout(limits, label, param)
    return bytes(body)


def _timeout(limits: MediaLimits, label: str, param: str | None) -> InvalidRequestError:
    return InvalidRequestError(
        f"{label} took more than {limits.remote_timeout_s:g} s to fetch ({KEY}remote_timeout_s)",
        param=param,
        code="remote_fetch_failed",
    )
