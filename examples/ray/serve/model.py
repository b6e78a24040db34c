"""A small model served by Ray Serve: a two-layer network on a random input, repeated
until a request has taken about SERVICE_MS milliseconds of CPU (calibrated at start).

pharos deploys it with `external_scaler_enabled` and sets its replica count itself.
"""

import os
import time

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse


def _layer(x, w):
    return np.maximum(x @ w, 0.0)


@serve.deployment
class Model:
    def __init__(self, service_ms: float = 20.0, seed: int = 7):
        self.service_s = float(os.environ.get("SERVICE_MS", service_ms)) / 1000.0
        rng = np.random.default_rng(seed)
        self.w1 = rng.standard_normal((64, 64))
        self.w2 = rng.standard_normal((64, 8))
        self.x = rng.standard_normal((8, 64))
        # How many forward passes take service_s of CPU on this machine (CPU time, so
        # that a replica starting while the machine is busy is not calibrated short).
        t0 = time.thread_time()
        for _ in range(2000):
            self._forward()
        per = (time.thread_time() - t0) / 2000
        self.passes = max(1, round(self.service_s / per))

    def _forward(self):
        return _layer(_layer(self.x, self.w1), self.w2)

    async def __call__(self, request: Request):
        if request.url.path.endswith("/healthz"):
            return PlainTextResponse("ok")
        y = None
        for _ in range(self.passes):
            y = self._forward()
        return JSONResponse({"class": int(np.argmax(y.sum(axis=0))), "passes": self.passes})


app = Model.bind()
