"""The emulated API server's own behaviour: injected faults, request stats, and the indexes
that answer gets, lists and garbage collection."""

import asyncio
import json

import kmock

from kube_emulator import STATS_PATH, FaultPlan, make_api_server

OPERATOR = {"User-Agent": "kubetune-operator/0.1.0"}
TESTS = {"User-Agent": "kubetune-tests"}
CONFIGMAPS = "/api/v1/namespaces/ml/configmaps"


def config_map(name, **meta):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta}, "data": {}}


def serve(scenario, faults=None):
    """Run scenario(client) against a fresh server (faults set after any set-up it does)."""
    async def main():
        async with make_api_server() as api_server, kmock.Server(api_server) as server:
            return await scenario(api_server, server.client, faults)
    return asyncio.run(main())


async def call(client, method, path, headers, json=None):
    async with client.request(method, path, headers=headers, json=json) as response:
        return response.status, response.headers, await response.json()


def test_a_server_error_plan_fails_the_operators_requests_only():
    async def scenario(api_server, client, faults):
        await call(client, "POST", CONFIGMAPS, TESTS, config_map("c"))
        api_server.faults = faults
        operator = await call(client, "GET", f"{CONFIGMAPS}/c", OPERATOR)
        tests = await call(client, "GET", f"{CONFIGMAPS}/c", TESTS)
        return operator, tests

    plan = FaultPlan(server_error=1.0, slow=0.0)
    (status, _, body), (other_status, _, other_body) = serve(scenario, plan)
    assert status == 500 and body["kind"] == "Status" and body["code"] == 500 and body["reason"] == "InternalError"
    assert other_status == 200 and other_body["metadata"]["name"] == "c"
    assert plan.injected["500"] == 1


def test_a_throttled_request_says_when_to_retry():
    async def scenario(api_server, client, faults):
        api_server.faults = faults
        return await call(client, "GET", CONFIGMAPS, OPERATOR)

    plan = FaultPlan(server_error=0.0, conflict=0.0, throttle=1.0, slow=0.0)
    status, headers, body = serve(scenario, plan)
    assert status == 429 and headers["Retry-After"] == "1"
    assert body["code"] == 429 and body["details"]["retryAfterSeconds"] == 1
    assert plan.injected == {"429": 1}


def test_a_faulted_create_creates_nothing():
    async def scenario(api_server, client, faults):
        api_server.faults = faults
        failed = await call(client, "POST", CONFIGMAPS, OPERATOR, config_map("c"))
        faults.server_error, faults.conflict = 0.0, 1.0
        conflict = await call(client, "POST", CONFIGMAPS, OPERATOR, config_map("c"))
        read = await call(client, "GET", f"{CONFIGMAPS}/c", TESTS)
        stored = [obj for obj in api_server.objects.values() if not obj.deleted]
        return failed[0], conflict[0], read[0], len(stored)

    plan = FaultPlan(server_error=1.0, slow=0.0)
    assert serve(scenario, plan) == (500, 409, 404, 0)
    assert plan.injected == {"500": 1, "409": 1}


def test_conflicts_only_on_writes_and_latency_before_the_answer():
    async def scenario(api_server, client, faults):
        api_server.faults = faults
        loop = asyncio.get_running_loop()
        started = loop.time()
        status = (await call(client, "GET", CONFIGMAPS, OPERATOR))[0]
        return status, loop.time() - started

    plan = FaultPlan(server_error=0.0, conflict=1.0, throttle=0.0, slow=1.0, delay=0.2)
    status, seconds = serve(scenario, plan)
    assert status == 200 and seconds >= 0.2
    assert plan.injected == {"latency": 1}


def test_stats_count_requests_by_agent_verb_and_resource():
    async def scenario(api_server, client, faults):
        await call(client, "POST", CONFIGMAPS, OPERATOR, config_map("c"))
        await call(client, "GET", f"{CONFIGMAPS}/c", TESTS)
        await call(client, "PATCH", f"{CONFIGMAPS}/c", OPERATOR, {"data": {"a": "b"}})
        return (await call(client, "GET", STATS_PATH, TESTS))[2]

    stats = serve(scenario)
    counts = {(row["agent"], row["verb"], row["resource"]): row["count"] for row in stats["requests"]}
    assert counts == {("operator", "create", "configmaps"): 1, ("other", "get", "configmaps"): 1,
                      ("operator", "patch", "configmaps"): 1}
    assert stats["total"] == 3 and stats["cpu_seconds"] > 0 and stats["objects"] == 1


def test_lists_keep_to_their_namespace_and_selector_and_gc_follows_owners_set_later():
    async def scenario(api_server, client, faults):
        owner = (await call(client, "POST", CONFIGMAPS, TESTS, config_map("owner")))[2]
        await call(client, "POST", CONFIGMAPS, TESTS, config_map("a", labels={"x": "1"}))
        await call(client, "POST", "/api/v1/namespaces/other/configmaps", TESTS, config_map("a", labels={"x": "1"}))
        listed = (await call(client, "GET", f"{CONFIGMAPS}?labelSelector=x%3D1", TESTS))[2]["items"]
        everywhere = (await call(client, "GET", "/api/v1/configmaps", TESTS))[2]["items"]
        reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
        await call(client, "PATCH", f"{CONFIGMAPS}/a", TESTS, {"metadata": {"ownerReferences": [reference]}})
        await call(client, "DELETE", f"{CONFIGMAPS}/owner", TESTS)
        gone = (await call(client, "GET", f"{CONFIGMAPS}/a", TESTS))[0]
        kept = (await call(client, "GET", "/api/v1/namespaces/other/configmaps/a", TESTS))[0]
        return [item["metadata"]["namespace"] for item in listed], len(everywhere), gone, kept

    assert serve(scenario) == (["ml"], 3, 404, 200)


async def watch_lines(client, path, headers, seconds):
    """The events a watch delivers until it ends or `seconds` pass (None: it was still open)."""
    events = []
    async with client.get(path, headers=headers) as response:
        try:
            async with asyncio.timeout(seconds):
                async for line in response.content:
                    if line.strip():
                        events.append(json.loads(line)["type"])
        except TimeoutError:
            return events, None
    return events, "ended"


def test_a_watch_ends_after_its_timeout_seconds():
    async def scenario(api_server, client, faults):
        await call(client, "POST", CONFIGMAPS, TESTS, config_map("c"))
        return await watch_lines(client, f"{CONFIGMAPS}?watch=true&timeoutSeconds=1", TESTS, seconds=10)

    assert serve(scenario) == (["ADDED"], "ended")


def test_a_silenced_watch_delivers_nothing_and_stays_open_past_its_timeout():
    async def scenario(api_server, client, faults):
        await call(client, "POST", CONFIGMAPS, TESTS, config_map("before"))
        watching = asyncio.create_task(
            watch_lines(client, f"{CONFIGMAPS}?watch=true&timeoutSeconds=1", TESTS, seconds=3))
        await asyncio.sleep(0.3)
        api_server.silence_watches()
        await call(client, "POST", CONFIGMAPS, TESTS, config_map("after"))
        silenced = await watching
        served_later = await watch_lines(client, f"{CONFIGMAPS}?watch=true&timeoutSeconds=1", TESTS, seconds=10)
        return silenced, served_later

    silenced, served_later = serve(scenario)
    assert silenced == (["ADDED"], None)  # "before" only; still open at 3 s though asked to end at 1 s
    assert served_later == (["ADDED", "ADDED"], "ended")
