"""Fetch a Twilio recording with the account's credentials, and only from Twilio.

The RecordingUrl comes from a webhook form. With signatures checked only Twilio can name it, but
with TWILIO_VALIDATE_SIGNATURES=false (or a bug) anyone can: sending Basic auth (account SID +
auth token) to whatever URL the form names would hand the token to the sender. So credentials
go only to Twilio's API hosts over https (and to the configured TWILIO_API_BASE_URL), never
across a redirect to another host (Twilio may redirect media to a storage host, which is
followed without them).
"""

from __future__ import annotations

import asyncio
import logging
import re
from urllib.parse import urljoin, urlsplit

import httpx

log = logging.getLogger("zylin.telephony.recordings")

TWILIO_API_HOST = re.compile(r"^api(\.[a-z0-9-]+)*\.twilio\.com$")   # api.twilio.com, api.dublin.ie1.twilio.com
RETRY_DELAYS_S = (0.25, 0.5, 0.5, 1.0)   # a recording can 404 for a moment after the callback
TIMEOUT = httpx.Timeout(5.0, connect=2.0)
MAX_REDIRECTS = 3


class RecordingError(RuntimeError):
    """The recording could not be fetched from Twilio."""


def credentials_allowed(url: str, api_base_url: str = "") -> bool:
    """True when `url` is on a Twilio API host over https, or under the configured REST base."""
    parts = urlsplit(url)
    if api_base_url:
        base = urlsplit(api_base_url)
        if (parts.scheme, parts.netloc) == (base.scheme, base.netloc):
            return True
    return parts.scheme == "https" and bool(TWILIO_API_HOST.match(parts.hostname or ""))


async def fetch_recording(recording_url: str, account_sid: str, auth_token: str,
                          api_base_url: str = "") -> bytes:
    """The recording as WAV. Refuses (RecordingError) a URL that is not Twilio's."""
    url = recording_url if recording_url.endswith(".wav") else recording_url + ".wav"
    if not credentials_allowed(url, api_base_url):
        log.warning("refused to fetch a recording from %s: not a Twilio API host, so the account's "
                    "credentials are not sent there", urlsplit(url).netloc or "?")
        raise RecordingError("the recording URL is not on a Twilio API host")
    async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as http:
        for delay in (*RETRY_DELAYS_S, None):
            response = await _get(http, url, (account_sid, auth_token), api_base_url)
            if response.status_code == 404 and delay is not None:
                await asyncio.sleep(delay)
                continue
            if response.status_code != 200:
                raise RecordingError(f"recording fetch answered HTTP {response.status_code}")
            return response.content
    raise RecordingError("recording fetch gave up")  # not reached: the last 404 raises above


async def _get(http: httpx.AsyncClient, url: str, auth: tuple[str, str], api_base_url: str) -> httpx.Response:
    """GET with credentials only while on a Twilio host; redirects followed by hand."""
    for _ in range(MAX_REDIRECTS + 1):
        send_auth = credentials_allowed(url, api_base_url)
        try:
            response = await http.get(url, auth=auth if send_auth else None)
        except httpx.HTTPError as exc:
            raise RecordingError(f"recording fetch failed: {type(exc).__name__}") from exc
        if not response.is_redirect:
            return response
        url = urljoin(url, response.headers.get("location", ""))
    raise RecordingError("recording fetch: too many redirects")
