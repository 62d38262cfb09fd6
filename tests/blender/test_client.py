"""The add-on's HTTP client, without Blender: URL handling and every error path against a real local socket.

The happy path against the real sidecar is covered end to end in test_end_to_end.py.
"""

import hashlib
import http.server
import json
import socket
import threading
import time

import pytest

from droplet_blender.client import DropletClient, DropletClientError, is_loopback, normalize_url


class Handler(http.server.BaseHTTPRequestHandler):
    """Answers from a per-server script: path → list of (status, body, delay) consumed in order."""

    def log_message(self, *args):
        pass

    def _answer(self):
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        script = self.server.script.get(self.path) or [(404, b'{"detail": "Not Found"}', 0)]
        status, body, delay = script.pop(0) if len(script) > 1 else script[0]
        time.sleep(delay)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.script, srv.seen = {}, []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url_of(srv):
    return f"http://127.0.0.1:{srv.server_address[1]}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("localhost:8765", "http://localhost:8765"),
        ("  http://127.0.0.1:8765/ ", "http://127.0.0.1:8765"),
        ("https://gpu.example.org/droplet/v1/", "https://gpu.example.org/droplet"),
        ("[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_server_url_is_tolerant_of_missing_scheme_and_trailing_slash(given, expected):
    assert normalize_url(given) == expected


@pytest.mark.parametrize("bad", ["", "ftp://host:1", "http://:80", "localhost:notaport"])
def test_nonsense_url_is_rejected_with_bad_url(bad):
    with pytest.raises(DropletClientError) as err:
        normalize_url(bad)
    assert err.value.code == "bad_url"


def test_remote_server_is_refused_when_online_access_is_off_but_loopback_is_allowed():
    assert is_loopback("localhost:1") and is_loopback("127.0.0.2:5") and not is_loopback("10.0.0.1")
    with pytest.raises(DropletClientError) as err:
        DropletClient("http://gpu.example.org:8765", online_access=False)
    assert err.value.code == "offline" and "Allow Online Access" in err.value.message
    DropletClient("http://127.0.0.1:8765", online_access=False)


def test_server_not_running_says_connection_refused():
    client = DropletClient(f"127.0.0.1:{free_port()}", retries=1, backoff=0.01)
    with pytest.raises(DropletClientError) as err:
        client.health()
    assert err.value.code == "unreachable" and "connection refused" in err.value.message


def test_slow_server_times_out_with_the_timeout_in_the_message(server):
    server.script["/v1/health"] = [(200, b'{"status": "ok"}', 1.0)]
    client = DropletClient(url_of(server), timeout=0.2, retries=0)
    with pytest.raises(DropletClientError) as err:
        client.health()
    assert err.value.code == "timeout" and "0.2 s" in err.value.message


def test_wrong_port_answering_404_is_named_not_a_droplet_server(server):
    with pytest.raises(DropletClientError) as err:
        DropletClient(url_of(server), retries=0).health()
    assert err.value.code == "not_droplet" and "wrong port" in err.value.message


def test_non_json_answer_is_not_a_droplet_server(server):
    server.script["/v1/health"] = [(200, b"<html>router login</html>", 0)]
    with pytest.raises(DropletClientError) as err:
        DropletClient(url_of(server)).health()
    assert err.value.code == "not_droplet"


def test_server_4xx_text_and_field_reach_the_caller(server, tmp_path):
    error = {"code": "invalid_input", "message": "width must be a multiple of 16", "field": "width"}
    body = json.dumps({"error": error})
    server.script["/v1/jobs"] = [(422, body.encode(), 0)]
    image = tmp_path / "in.png"
    image.write_bytes(b"\x89PNG fake")
    with pytest.raises(DropletClientError) as err:
        DropletClient(url_of(server)).submit({"mode": "orbit", "prompt": "x"}, image)
    assert err.value.message == "width must be a multiple of 16"
    assert (err.value.status, err.value.field, err.value.code) == (422, "width", "invalid_input")
    assert len([s for s in server.seen if s[0] == "POST"]) == 1  # a POST is never retried


def test_idempotent_get_retries_through_503_then_succeeds(server):
    server.script["/v1/jobs/abc"] = [(503, b"{}", 0), (503, b"{}", 0), (200, b'{"id": "abc", "status": "running"}', 0)]
    status = DropletClient(url_of(server), retries=2, backoff=0.01).job("abc")
    assert status["status"] == "running"
    assert [s[1] for s in server.seen] == ["/v1/jobs/abc"] * 3


def test_bearer_token_is_sent_and_401_explains_where_to_set_it(server):
    # as the real server does: health is open, every other route answers 401 without the right token
    server.script["/v1/jobs/j"] = [(401, b'{"error": {"code": "unauthorized", "message": "Missing token."}}', 0)]
    with pytest.raises(DropletClientError) as err:
        DropletClient(url_of(server), token=" s3cret ").job("j")
    assert server.seen[0][2]["Authorization"] == "Bearer s3cret"
    assert "Missing token." in err.value.message and "Preferences" in err.value.message


def test_download_streams_to_file_and_rejects_a_checksum_mismatch(server, tmp_path):
    payload = bytes(range(256)) * 5000
    server.script["/v1/jobs/j/artifacts/mesh.glb"] = [(200, payload, 0)]
    client = DropletClient(url_of(server))
    seen = []
    path = client.download("/v1/jobs/j/artifacts/mesh.glb", tmp_path / "out" / "mesh.glb",
                           sha256=hashlib.sha256(payload).hexdigest(), progress=seen.append)
    assert path.read_bytes() == payload and seen[-1] == len(payload) and len(seen) >= 2
    with pytest.raises(DropletClientError) as err:
        client.download("/v1/jobs/j/artifacts/mesh.glb", tmp_path / "bad.glb", sha256="0" * 64)
    assert err.value.code == "corrupt"
    assert not (tmp_path / "bad.glb").exists() and not (tmp_path / "bad.glb.part").exists()
