"""Stand-in for the Go backend's job status endpoint, for local runs and tests.

`PATCH /api/v1/indexing/jobs/{job_id}/status` validates the body like the real API would and
records every call (also to a JSON-lines file, so records survive a restart). It can be told
to answer with an error status for a while or to be slow, and shows what it received:

- `GET  /calls[?job_id=N]`  every recorded call, oldest first
- `GET  /jobs`              the last accepted status per job
- `POST /control`           `{"fail_status": 500, "fail_seconds": 60, "delay_ms": 0,
                              "hang_seconds": 0}` (hang: hold every request, answering
                              none, until that many seconds have passed)
- `POST /reset`             forget all calls
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web

STATUSES = ("completed", "failed")
MAX_ERROR_MSG = 4000

log = logging.getLogger("go_api_stand_in")


class StatusRecorder:
    def __init__(self, record_file: Path | None) -> None:
        self.record_file = record_file
        self.calls: list[dict[str, Any]] = []
        self.fail_status: int | None = None
        self.fail_until = 0.0
        self.delay_ms = 0
        self.hang_until = 0.0
        if record_file and record_file.exists():
            for line in record_file.read_text().splitlines():
                if line.strip():
                    self.calls.append(json.loads(line))

    def record(self, call: dict[str, Any]) -> None:
        self.calls.append(call)
        if self.record_file:
            with self.record_file.open("a") as f:
                f.write(json.dumps(call) + "\n")

    def failing(self) -> int | None:
        if self.fail_status and time.time() < self.fail_until:
            return self.fail_status
        return None


def _validate(job_id_text: str, body: Any) -> tuple[int | None, str | None]:
    try:
        job_id = int(job_id_text)
    except ValueError:
        return None, "job_id in the path must be an integer"
    if job_id <= 0 or job_id >= 2**63:
        return None, "job_id must be a positive 64-bit integer"
    if not isinstance(body, dict):
        return job_id, "body must be a JSON object"
    unknown = set(body) - {"status", "error_msg"}
    if unknown:
        return job_id, f"unknown fields: {sorted(unknown)}"
    if body.get("status") not in STATUSES:
        return job_id, f"status must be one of {list(STATUSES)}"
    error_msg = body.get("error_msg")
    if error_msg is not None and not isinstance(error_msg, str):
        return job_id, "error_msg must be a string"
    if body["status"] == "failed" and not error_msg:
        return job_id, "error_msg is required when status is failed"
    if error_msg and len(error_msg) > MAX_ERROR_MSG:
        return job_id, f"error_msg longer than {MAX_ERROR_MSG} characters"
    return job_id, None


def build_app(recorder: StatusRecorder) -> web.Application:
    routes = web.RouteTableDef()

    @routes.patch("/api/v1/indexing/jobs/{job_id}/status")
    async def patch_status(request: web.Request) -> web.Response:
        if recorder.hang_until > time.time():
            await asyncio.sleep(recorder.hang_until - time.time())
        if recorder.delay_ms:
            await asyncio.sleep(recorder.delay_ms / 1000)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        job_id, problem = _validate(request.match_info["job_id"], body)
        key = request.headers.get("Idempotency-Key")
        call = {
            "received_at": time.time(),
            "job_id": job_id,
            "status": body.get("status") if isinstance(body, dict) else None,
            "error_msg": body.get("error_msg") if isinstance(body, dict) else None,
            "idempotency_key": key,
        }
        failing = recorder.failing()
        if failing:
            call["answered"] = failing
            recorder.record(call)
            return web.json_response({"error": "injected failure"}, status=failing)
        if problem:
            call["answered"] = 400
            recorder.record(call)
            return web.json_response({"error": problem}, status=400)
        replay = key is not None and any(
            c.get("idempotency_key") == key and c.get("answered") == 200 for c in recorder.calls
        )
        call["answered"] = 200
        call["replay"] = replay
        recorder.record(call)
        return web.json_response({"job_id": job_id, "status": call["status"], "replay": replay})

    @routes.get("/health")
    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "calls": len(recorder.calls)})

    @routes.get("/calls")
    async def calls(request: web.Request) -> web.Response:
        job_id = request.query.get("job_id")
        found = recorder.calls
        if job_id is not None:
            found = [c for c in found if str(c.get("job_id")) == job_id]
        return web.json_response(found)

    @routes.get("/jobs")
    async def jobs(_: web.Request) -> web.Response:
        last: dict[str, Any] = {}
        for c in recorder.calls:
            if c.get("answered") == 200:
                last[str(c["job_id"])] = {"status": c["status"], "error_msg": c["error_msg"]}
        return web.json_response(last)

    @routes.post("/control")
    async def control(request: web.Request) -> web.Response:
        body = await request.json()
        recorder.fail_status = body.get("fail_status")
        recorder.fail_until = time.time() + float(body.get("fail_seconds", 3600))
        recorder.delay_ms = int(body.get("delay_ms", 0))
        recorder.hang_until = time.time() + float(body.get("hang_seconds", 0))
        return web.json_response({"fail_status": recorder.fail_status,
                                  "delay_ms": recorder.delay_ms,
                                  "hang_seconds": float(body.get("hang_seconds", 0))})

    @routes.post("/reset")
    async def reset(_: web.Request) -> web.Response:
        recorder.calls.clear()
        if recorder.record_file:
            recorder.record_file.write_text("")
        return web.json_response({"ok": True})

    app = web.Application()
    app.add_routes(routes)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--record-file", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    log.info("Go API stand-in (not the real backend) on http://%s:%s", args.host, args.port)
    web.run_app(build_app(StatusRecorder(args.record_file)), host=args.host, port=args.port,
                access_log=None, print=None)


if __name__ == "__main__":
    main()
