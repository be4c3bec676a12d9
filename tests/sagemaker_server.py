"""A local HTTP server speaking the SageMaker runtime ``InvokeEndpoint`` protocol.

``POST /endpoints/NAME/invocations`` with ``{"instances": [[ids...], ...]}`` answers
``{"predictions": [token matrix per instance]}``, computed by a real (tiny) BERT model.
Each endpoint has a mode the test can set, to act out the failures of a real endpoint.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

INVOCATIONS = re.compile(r"^/endpoints/([^/]+)/invocations$")


class SageMakerServer:
    """Modes: ok, error500 (ModelError-like 5xx), slow (answers after ``slow_seconds``), badjson,
    upgraded (another model behind the same endpoint: the vectors change)."""

    def __init__(self, model_dir: Path, slow_seconds: float = 3.0) -> None:
        import torch
        from transformers import AutoModel

        self._torch = torch
        self._model = AutoModel.from_pretrained(str(model_dir)).eval()
        self.slow_seconds = slow_seconds
        self.modes: dict[str, str] = {}
        self.calls: Counter[str] = Counter()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> SageMakerServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def token_embeddings(self, instances: list[list[int]]) -> list[Any]:
        out = []
        with self._torch.inference_mode():
            for ids in instances:
                tensor = self._torch.tensor([ids], dtype=self._torch.int64)
                out.append(self._model(input_ids=tensor, attention_mask=self._torch.ones_like(tensor)).last_hidden_state[0].tolist())
        return out

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- the base class's name
                pass

            def _reply(self, status: int, body: bytes, error_type: str | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if error_type:
                    self.send_header("x-amzn-ErrorType", error_type)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                match = INVOCATIONS.match(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if match is None:
                    self._reply(404, b'{"message": "no such route"}', "UnknownOperationException")
                    return
                name = match.group(1)
                server.calls[name] += 1
                mode = server.modes.get(name, "missing")
                if mode == "missing":
                    self._reply(400, json.dumps({"message": f"Endpoint {name} not found."}).encode(), "ValidationError")
                elif mode == "error500":
                    self._reply(500, b'{"message": "internal failure in the model container"}', "InternalFailure")
                elif mode == "badjson":
                    self._reply(200, b"<html>not json</html>")
                else:
                    if mode == "slow":
                        time.sleep(server.slow_seconds)
                    instances = json.loads(body)["instances"]
                    try:
                        rows = server.token_embeddings(instances)
                        if mode == "upgraded":
                            rows = [[[value * 2 + 0.5 for value in token] for token in row] for row in rows]
                        self._reply(200, json.dumps({"predictions": rows}).encode())
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client gave up waiting (the timeout test)

        return Handler
