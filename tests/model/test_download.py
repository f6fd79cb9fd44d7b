"""Downloading official checkpoints through HF_ENDPOINT, against a server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

from napari_hq_sam import cli, weights
from napari_hq_sam.loading import load_model
from napari_hq_sam.weights import CheckpointFile, DownloadError, download_checkpoint


class HubServer:
    """Serves ``/<repo>/resolve/<revision>/<file>`` like the hub, with sha256 headers.

    ``announce`` is the content whose hash and size the headers promise; ``body``
    is what is actually sent (they differ to simulate a corrupt transfer).
    """

    def __init__(self):
        self.files: dict[str, tuple[bytes, bytes | None]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _headers(self):
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append(f"{self.command} {self.path}")
                if name not in server.files:
                    self.send_response(404)
                    self.end_headers()
                    return None
                body, announce = server.files[name]
                self.send_response(200)
                if announce is not None:
                    self.send_header("X-Linked-Etag", f'"{hashlib.sha256(announce).hexdigest()}"')
                    self.send_header("X-Linked-Size", str(len(announce)))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                return body

            def do_HEAD(self):
                self._headers()

            def do_GET(self):
                body = self._headers()
                if body is not None:
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hub(monkeypatch, tmp_path):
    server = HubServer()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("NAPARI_HQ_SAM_CACHE", str(tmp_path / "cache"))
    yield server
    server.close()


def _register(monkeypatch, content: bytes, **overrides) -> CheckpointFile:
    digest = hashlib.sha256(content).hexdigest()
    entry = CheckpointFile("sam_hq_vit_tiny.pth", "a3a77cd0a2e5e50eaa76faccf61b964732d9b35f",
                           overrides.get("size", len(content)),
                           overrides.get("sha256_prefix", digest[:8]))
    monkeypatch.setitem(weights.REGISTRY, "vit_tiny", entry)
    return entry


def _usable_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.pth")) if folder.exists() else []


def test_download_verifies_and_caches(hub, monkeypatch, tiny_checkpoint, tmp_path):
    content = tiny_checkpoint.read_bytes()
    _register(monkeypatch, content)
    hub.files["sam_hq_vit_tiny.pth"] = (content, content)
    path = download_checkpoint("vit_tiny", progress=False)
    assert path == tmp_path / "cache" / "sam_hq_vit_tiny.pth"
    assert path.read_bytes() == content
    assert any("/lkeab/hq-sam/resolve/a3a77cd0a2e5e50eaa76faccf61b964732d9b35f/" in r
               for r in hub.requests)
    served = len(hub.requests)
    assert download_checkpoint("vit_tiny", progress=False) == path
    assert len(hub.requests) == served, "a verified cached file must not be fetched again"
    # The convenience loader takes the cached file and builds the model from it.
    model = load_model("vit_tiny", device="cpu", progress=False)
    saved = torch.load(tiny_checkpoint, weights_only=True)
    assert torch.equal(model.state_dict()["mask_decoder.hf_token.weight"],
                       saved["mask_decoder.hf_token.weight"])


def test_corrupt_transfer_is_deleted(hub, monkeypatch, tmp_path):
    good = b"official checkpoint bytes" * 1000
    corrupt = bytearray(good)
    corrupt[100] ^= 0xFF
    _register(monkeypatch, good)
    hub.files["sam_hq_vit_tiny.pth"] = (bytes(corrupt), good)
    with pytest.raises(DownloadError, match="does not match|was deleted"):
        download_checkpoint("vit_tiny", progress=False)
    assert _usable_files(tmp_path / "cache") == []
    assert weights.cached_checkpoint("vit_tiny") is None


def test_unexpected_file_is_refused_before_download(hub, monkeypatch, tmp_path):
    official = b"the official file" * 100
    other = b"some other file of the same name" * 100
    _register(monkeypatch, official)
    hub.files["sam_hq_vit_tiny.pth"] = (other, other)
    with pytest.raises(DownloadError, match="refusing an unexpected file"):
        download_checkpoint("vit_tiny", progress=False)
    assert not any(r.startswith("GET") for r in hub.requests)
    assert _usable_files(tmp_path / "cache") == []


def test_server_without_hash_header_checked_against_known_prefix(hub, monkeypatch, tmp_path):
    official = b"the official file" * 100
    _register(monkeypatch, official)
    hub.files["sam_hq_vit_tiny.pth"] = (b"x" * len(official), None)
    with pytest.raises(DownloadError, match="is not the official"):
        download_checkpoint("vit_tiny", progress=False)
    assert _usable_files(tmp_path / "cache") == []
    hub.files["sam_hq_vit_tiny.pth"] = (official, None)
    assert download_checkpoint("vit_tiny", progress=False).read_bytes() == official


def test_unverified_leftover_is_never_used(hub, monkeypatch, tmp_path):
    content = b"official" * 500
    _register(monkeypatch, content)
    hub.files["sam_hq_vit_tiny.pth"] = (content, content)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "sam_hq_vit_tiny.pth").write_bytes(content[:100])  # e.g. a killed copy
    assert weights.cached_checkpoint("vit_tiny") is None
    assert download_checkpoint("vit_tiny", progress=False).read_bytes() == content


def test_no_network_gives_clear_advice(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NAPARI_HQ_SAM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DownloadError) as err:
        download_checkpoint("vit_b", progress=False)
    message = str(err.value)
    assert "sam_hq_vit_b.pth" in message and "--checkpoint" in message
    assert "HF_ENDPOINT" in message
    assert _usable_files(tmp_path / "cache") == []


def test_missing_file_on_server(hub, monkeypatch):
    _register(monkeypatch, b"abc")
    with pytest.raises(DownloadError, match="404"):
        download_checkpoint("vit_tiny", progress=False)


def test_cli_download_and_info(hub, monkeypatch, capsys):
    content = b"cli checkpoint" * 100
    _register(monkeypatch, content)
    hub.files["sam_hq_vit_tiny.pth"] = (content, content)
    assert cli.main(["info"]) == 0
    assert "vit_tiny" in capsys.readouterr().out.split("missing")[0]
    assert cli.main(["download", "vit_tiny", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("sam_hq_vit_tiny.pth")
    assert cli.main(["info"]) == 0
    info = capsys.readouterr().out
    assert "present" in info and "cpu" in info
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert cli.main(["download", "vit_b", "--quiet"]) == 2
    assert "error: Could not download the vit_b checkpoint" in capsys.readouterr().err
