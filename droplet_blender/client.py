"""HTTP client for the Droplet sidecar (contract v1 in docs/design.md §5). Stdlib only, no ``bpy``.

Every request has a timeout; idempotent calls (GET, DELETE) retry with exponential backoff on
connection failures, timeouts and 502/503/504. Failures become :class:`DropletClientError` whose
message a person can act on (server not running, wrong port, timeout, the server's own 4xx text).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import mimetypes
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8765"
RETRY_STATUS = {502, 503, 504}
CHUNK = 1 << 20


class DropletClientError(Exception):
    """A failed call, with a one-line message meant for the artist.

    ``code`` is the server's error code or one of ``unreachable``, ``timeout``, ``bad_url``,
    ``not_droplet``, ``offline``, ``http_<status>``; ``field`` names the parameter the server rejected.
    """

    def __init__(self, message: str, *, code: str = "error", status: int | None = None, field: str | None = None):
        super().__init__(message)
        self.code, self.status, self.field = code, status, field

    @property
    def message(self) -> str:
        return str(self)


def normalize_url(url: str) -> str:
    """A tolerant server URL: ``localhost:8765/`` → ``http://localhost:8765``; raises on nonsense."""
    text = (url or "").strip()
    if not text:
        raise DropletClientError("No server URL set (Preferences → Add-ons → Droplet).", code="bad_url")
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise DropletClientError(f"Server URL must start with http:// or https://, got {url!r}.", code="bad_url")
    try:
        port = parts.port
    except ValueError:
        raise DropletClientError(f"Server URL {url!r} has an invalid port.", code="bad_url") from None
    if not parts.hostname or " " in parts.netloc:
        raise DropletClientError(f"Server URL {url!r} has no host name.", code="bad_url")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):  # people paste the API root; the client adds /v1 itself
        path = path[:-3]
    netloc = parts.hostname if port is None else f"{parts.hostname}:{port}"
    if ":" in parts.hostname:  # IPv6 literal
        netloc = f"[{parts.hostname}]" + ("" if port is None else f":{port}")
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, "", ""))


def is_loopback(url: str) -> bool:
    """True for a server on this machine (allowed even when Blender's online access is off)."""
    host = urllib.parse.urlsplit(normalize_url(url)).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _multipart(fields: dict[str, str], files: list[tuple[str, Path]]) -> tuple[bytes, str]:
    boundary = "droplet-" + uuid.uuid4().hex
    out = bytearray()
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    for name, path in files:
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n'
            f"Content-Type: {mime}\r\n\r\n"
        ).encode()
        out += path.read_bytes() + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _server_error_text(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(message, code, field) from an ``{error: {code, message, field}}`` body, or FastAPI's ``detail``."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None, None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        return err.get("message"), err.get("code"), err.get("field")
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"]), None, None
    return None, None, None


class DropletClient:
    """One sidecar. ``timeout`` bounds every socket operation; ``retries`` applies to idempotent calls."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str = "",
        *,
        timeout: float = 10.0,
        upload_timeout: float = 120.0,
        retries: int = 2,
        backoff: float = 0.25,
        online_access: bool = True,
    ):
        self.url = normalize_url(url)
        if not online_access and not is_loopback(self.url):
            raise DropletClientError(
                f"Blender's online access is off, so the add-on only talks to a server on this machine "
                f"(localhost / 127.0.0.1), not {self.url}. Turn on Preferences → System → Network → "
                f"Allow Online Access to use a remote server.",
                code="offline",
            )
        self.token = token.strip()
        self.timeout, self.upload_timeout = timeout, upload_timeout
        self.retries, self.backoff = retries, backoff

    # -- the contract -------------------------------------------------------------------------

    def health(self) -> dict:
        data = self._json("GET", "/v1/health")
        if not isinstance(data, dict) or "status" not in data:
            raise DropletClientError(
                f"Something answers at {self.url} but it is not a Droplet server (wrong port?).", code="not_droplet"
            )
        return data

    def submit(self, params: dict, image: Path | None = None, frames: list[Path] | None = None,
               video: Path | None = None) -> dict:
        """``POST /v1/jobs``: an image (orbit, video) or, for reconstruct, frames in order (or a zip) or a video.

        Not retried: a second POST would queue a second job.
        """
        uploads = [("image", Path(image))] if image is not None else []
        uploads += [("frames", Path(p)) for p in frames or []]
        uploads += [("video", Path(video))] if video is not None else []
        for field, path in uploads:
            if not path.is_file():
                raise DropletClientError(f"Input file not found: {path}", code="invalid_input", field=field)
        body, ctype = _multipart({"params": json.dumps(params)}, uploads)
        return self._json("POST", "/v1/jobs", body=body, headers={"Content-Type": ctype}, retries=0,
                          timeout=self.upload_timeout)

    def job(self, job_id: str) -> dict:
        return self._json("GET", f"/v1/jobs/{urllib.parse.quote(job_id)}")

    def jobs(self, owner: str | None = None) -> list[dict]:
        """``GET /v1/jobs``: every job the server keeps, or only ``owner``'s."""
        query = "" if owner is None else "?" + urllib.parse.urlencode({"owner": owner})
        data = self._json("GET", f"/v1/jobs{query}")
        return data.get("jobs", []) if isinstance(data, dict) else data

    def cancel(self, job_id: str) -> dict:
        """``DELETE /v1/jobs/{id}``: cancels a queued/running job at its next denoising step."""
        return self._json("DELETE", f"/v1/jobs/{urllib.parse.quote(job_id)}")

    def download(
        self,
        url_or_path: str,
        dest: Path,
        *,
        sha256: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Path:
        """Stream one artifact to ``dest`` (via ``dest.part``, renamed when complete and verified)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        digest = hashlib.sha256()
        with self._open("GET", url_or_path, retries=self.retries) as response, open(part, "wb") as fh:
            done = 0
            while True:
                try:
                    chunk = response.read(CHUNK)
                except TimeoutError:
                    part.unlink(missing_ok=True)
                    raise DropletClientError(
                        f"Download of {dest.name} stalled for {self.timeout:g} s.", code="timeout"
                    ) from None
                if not chunk:
                    break
                fh.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done)
        if sha256 and digest.hexdigest() != sha256:
            part.unlink(missing_ok=True)
            raise DropletClientError(f"Download of {dest.name} is corrupt (checksum mismatch).", code="corrupt")
        os.replace(part, dest)
        return dest

    def download_job(self, status: dict, folder: Path) -> list[Path]:
        """Fetch every artifact of a finished job into ``folder``; ``frames.zip`` is unpacked to ``frames/``."""
        folder = Path(folder)
        artifacts = status.get("artifacts") or []
        names = {a["name"] for a in artifacts}
        written = []
        for art in artifacts:
            name = art["name"]
            if name.startswith("frames/") and "frames.zip" in names:
                continue  # the zip carries them in one request
            rel = Path(*[p for p in name.split("/") if p not in ("", ".", "..")])
            url = art.get("url") or f"/v1/jobs/{status['id']}/artifacts/{name}"
            path = self.download(url, folder / rel, sha256=art.get("sha256"))
            if name == "frames.zip":
                with zipfile.ZipFile(path) as zf:
                    for member in zf.namelist():
                        target = (folder / "frames" / Path(member).name)
                        if member.endswith("/") or not Path(member).name:
                            continue
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(zf.read(member))
                        written.append(target)
            written.append(path)
        return written

    # -- plumbing -----------------------------------------------------------------------------

    def _json(self, method: str, path: str, **kw) -> dict | list:
        with self._open(method, path, **kw) as response:
            body = response.read()
        try:
            return json.loads(body) if body else {}
        except ValueError:
            raise DropletClientError(
                f"Something answers at {self.url} but it is not a Droplet server (wrong port?).", code="not_droplet"
            ) from None

    def _open(self, method: str, path: str, *, body: bytes | None = None, headers: dict | None = None,
              retries: int | None = None, timeout: float | None = None):
        url = path if path.startswith(("http://", "https://")) else self.url + path
        hdrs = {"Accept": "application/json", "User-Agent": "droplet-blender"}
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        hdrs.update(headers or {})
        retries = self.retries if retries is None else retries
        for attempt in range(retries + 1):
            request = urllib.request.Request(url, data=body, method=method, headers=hdrs)
            try:
                return urllib.request.urlopen(request, timeout=timeout or self.timeout)
            except urllib.error.HTTPError as exc:
                error = self._http_error(exc)
                if exc.code not in RETRY_STATUS or attempt == retries:
                    raise error from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                error = self._network_error(exc, timeout or self.timeout)
                if attempt == retries:
                    raise error from None
            time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _http_error(self, exc: urllib.error.HTTPError) -> DropletClientError:
        body = exc.read() if exc.fp else b""
        message, code, field = _server_error_text(body)
        if exc.code == 401:
            message = (message or "The server needs an access token").rstrip(". ")
            message += ". Set the token in Preferences → Add-ons → Droplet."
        elif exc.code == 404 and code is None:  # no error envelope: the route itself is unknown
            message = f"{exc.url} was not found: is {self.url} a Droplet server (wrong port?)"
            code = "not_droplet"
        elif message is None:
            message = f"The server answered {exc.code} {exc.reason}."
        return DropletClientError(message, code=code or f"http_{exc.code}", status=exc.code, field=field)

    def _network_error(self, exc: BaseException, timeout: float) -> DropletClientError:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            return DropletClientError(f"The Droplet server at {self.url} did not answer within {timeout:g} s.",
                                      code="timeout")
        if isinstance(reason, ConnectionRefusedError):
            return DropletClientError(
                f"Cannot reach the Droplet server at {self.url}: connection refused. Is it running "
                f"(`droplet3d serve`) and on this port?", code="unreachable")
        if isinstance(reason, socket.gaierror):
            return DropletClientError(f"Unknown server host in {self.url}.", code="unreachable")
        if isinstance(reason, ConnectionError):
            return DropletClientError(f"The connection to {self.url} broke ({reason}). Did the server stop?",
                                      code="unreachable")
        return DropletClientError(f"Cannot reach the Droplet server at {self.url}: {reason}.", code="unreachable")
