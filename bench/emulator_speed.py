"""Time the emulated API server itself: creates, gets, patches and lists at operator scale.

    PYTHONPATH=operator:tests .venv/bin/python bench/emulator_speed.py [--per-kind 1000]

One object of each of six kinds per job (a FineTuneJob, its ConfigMap, Service, StatefulSet,
PVC and a pod), as 1,000 jobs leave in the API server; every request goes over one keep-alive
HTTP connection, so the figures are the server's cost plus a small, constant client cost.
"""

import argparse
import http.client
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from operator_harness import Harness  # noqa: E402

PATHS = {  # kind: collection path in namespace ml
    "FineTuneJob": "/apis/kubetune.io/v1alpha1/namespaces/ml/finetunejobs",
    "ConfigMap": "/api/v1/namespaces/ml/configmaps",
    "Service": "/api/v1/namespaces/ml/services",
    "PersistentVolumeClaim": "/api/v1/namespaces/ml/persistentvolumeclaims",
    "Pod": "/api/v1/namespaces/ml/pods",
    "StatefulSet": "/apis/apps/v1/namespaces/ml/statefulsets",
}


def timed(connection: http.client.HTTPConnection, requests: list[tuple[str, str, object]]) -> float:
    started = time.perf_counter()
    for method, path, body in requests:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/merge-patch+json" if method == "PATCH" else "application/json",
                   "User-Agent": "emulator-speed"}
        connection.request(method, path, data, headers)
        response = connection.getresponse()
        response.read()
        assert response.status < 300, (method, path, response.status)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-kind", type=int, default=1000)
    count = parser.parse_args().per_kind
    with Harness() as harness:
        host, port = harness.url.split("//")[1].split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        names = [f"job-{index}" for index in range(count)]
        creates = [("POST", path, {"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "ml",
                                                                                   "labels": {"job": name}}})
                   for kind, path in PATHS.items() for name in names]
        gets = [("GET", f"{path}/{name}", None) for path in PATHS.values() for name in names]
        patches = [("PATCH", f"{path}/{name}", {"metadata": {"annotations": {"a": "b"}}})
                   for path in PATHS.values() for name in names]
        lists = [("GET", f"{PATHS['Pod']}?labelSelector=job%3D{name}", None) for name in names[:100]]
        total = len(creates)
        print(f"{total} creates: {timed(connection, creates):.2f} s", flush=True)
        print(f"{total} gets: {timed(connection, gets):.2f} s", flush=True)
        print(f"{total} patches: {timed(connection, patches):.2f} s", flush=True)
        print(f"100 pod lists by label: {timed(connection, lists):.2f} s", flush=True)


if __name__ == "__main__":
    main()
