"""The emulator's operator knobs over HTTP: every injected fault kind as a client sees it, seeded
fault sequences, the control endpoints for faults and rate limits, and a concurrent load that
must come back clean."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from run_pipeline.emulator.faults import FaultConfig, FaultInjector

QUERY = {"query": "{ project(name: \"rl-agents\", entityName: \"demo\") { name runCount } }"}


def post(emulator, body: dict = QUERY, session: requests.Session | None = None) -> requests.Response:
    return (session or requests).post(f"{emulator.base_url}/graphql", json=body, auth=("api", emulator.api_key),
                                      timeout=10)


def control(emulator, action: str, body: dict) -> requests.Response:
    return requests.post(f"{emulator.base_url}/_control/{action}", json=body, auth=("api", emulator.api_key), timeout=10)


def expected_data(emulator) -> dict:
    return {"project": {"name": "rl-agents", "runCount": len(emulator.store.project_runs("demo", "rl-agents"))}}


def assert_serving(emulator, session: requests.Session | None = None) -> None:
    r = post(emulator, session=session)
    assert r.status_code == 200 and r.json() == {"data": expected_data(emulator)}


# -- each fault kind, as a client sees it --------------------------------------------------------
def test_429_carries_retry_after(emulator):
    emulator.set_faults(rates={"429": 1.0}, retry_after=2.5)
    r = post(emulator)
    assert r.status_code == 429 and r.headers["Retry-After"] == "2.5"
    assert r.json() == {"errors": [{"message": "injected fault 429"}]}
    emulator.clear_faults()
    assert_serving(emulator)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_error_statuses(emulator, status):
    emulator.set_faults(rates={str(status): 1.0})
    responses = [post(emulator) for _ in range(3)]
    assert [r.status_code for r in responses] == [status] * 3
    assert responses[0].json()["errors"][0]["message"] == f"injected fault {status}"
    assert "Retry-After" not in responses[0].headers
    assert emulator.app.faults.injected == {str(status): 3}
    emulator.clear_faults()
    assert_serving(emulator)


def test_reset_drops_the_connection_without_a_response(emulator):
    emulator.set_faults(rates={"reset": 1.0})
    with requests.Session() as session:
        with pytest.raises(requests.exceptions.ConnectionError):
            post(emulator, session=session)
        emulator.clear_faults()
        assert_serving(emulator, session)  # the same session reconnects


def test_truncate_cuts_the_body(emulator):
    emulator.set_faults(rates={"truncate": 1.0})
    with requests.Session() as session:
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            post(emulator, session=session)
        emulator.clear_faults()
        assert_serving(emulator, session)


def test_truncate_also_cuts_file_downloads(emulator):
    run = emulator.store.create_run("demo", "faults", "f1")
    emulator.store.write_file(run, "blob.bin", bytes(range(256)) * 40)
    url = f"{emulator.base_url}/files/demo/faults/f1/blob.bin"
    emulator.set_faults(rates={"truncate": 1.0})
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, auth=("api", emulator.api_key), timeout=10)
    emulator.clear_faults()
    assert requests.get(url, auth=("api", emulator.api_key), timeout=10).content == bytes(range(256)) * 40


def test_slow_delays_then_answers(emulator):
    emulator.set_faults(rates={"slow": 1.0}, slow_seconds=0.3)
    start = time.monotonic()
    r = post(emulator)
    elapsed = time.monotonic() - start
    assert elapsed >= 0.3
    assert r.status_code == 200 and r.json() == {"data": expected_data(emulator)}


def test_faults_only_hit_their_paths(emulator):
    emulator.set_faults(rates={"503": 1.0}, paths=["/files/"])
    assert_serving(emulator)
    assert requests.get(f"{emulator.base_url}/healthz", timeout=10).json() == {"ok": True}
    emulator.set_faults(rates={"503": 1.0})
    assert requests.get(f"{emulator.base_url}/healthz", timeout=10).status_code == 200
    assert control(emulator, "stats", {}).status_code == 200  # the control endpoint is never faulted


# -- seeded sequences ----------------------------------------------------------------------------
RATES = {"429": 0.1, "500": 0.05, "502": 0.05, "503": 0.1, "reset": 0.05, "truncate": 0.05, "slow": 0.1}


def sequence(seed: int, n: int = 2000) -> list[str | None]:
    injector = FaultInjector(FaultConfig(seed=seed, rates=RATES))
    return [injector.pick("/graphql") for _ in range(n)]


def test_same_seed_gives_the_same_fault_sequence():
    first, second = sequence(11), sequence(11)
    assert first == second
    assert sequence(12) != first
    for kind, rate in RATES.items():
        assert abs(first.count(kind) / len(first) - rate) < 0.03, kind
    assert abs(first.count(None) / len(first) - 0.5) < 0.05


def test_reconfiguring_restarts_the_sequence():
    injector = FaultInjector(FaultConfig(seed=5, rates=RATES))
    first = [injector.pick("/graphql") for _ in range(50)]
    injector.configure(FaultConfig(seed=5, rates=RATES))
    assert [injector.pick("/graphql") for _ in range(50)] == first
    assert all(injector.pick("/healthz") is None for _ in range(50))


def test_same_seed_over_http_gives_the_same_statuses(emulator):
    rates = {"500": 0.3, "503": 0.3}

    def statuses() -> list[int]:
        assert control(emulator, "faults", {"seed": 9, "rates": rates}).json() == {"ok": True}
        return [post(emulator).status_code for _ in range(30)]

    first = statuses()
    assert first == statuses()
    assert {500, 503, 200} == set(first)


# -- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("rates, message", [
    ({"418": 0.5}, "unknown fault kinds ['418']"),
    ({"500": 1.5}, "must be in [0, 1]"),
    ({"500": -0.1}, "must be in [0, 1]"),
    ({"500": 0.6, "503": 0.6}, "sum to at most 1"),
])
def test_bad_rates_are_refused(rates, message):
    with pytest.raises(ValueError) as exc:
        FaultConfig(rates=rates)
    assert message in str(exc.value)


def test_bad_rates_over_http_are_400_and_change_nothing(emulator):
    r = control(emulator, "faults", {"rates": {"explode": 1.0}})
    assert r.status_code == 400 and "unknown fault kinds ['explode']" in r.json()["errors"][0]["message"]
    r = control(emulator, "faults", {"rates": {"500": 0.7, "502": 0.7}})
    assert r.status_code == 400 and "sum to at most 1" in r.json()["errors"][0]["message"]
    assert_serving(emulator)


# -- control endpoints ---------------------------------------------------------------------------
def test_control_faults_over_http(emulator):
    assert control(emulator, "faults", {"seed": 1, "rates": {"503": 1.0}}).json() == {"ok": True}
    assert [post(emulator).status_code for _ in range(4)] == [503] * 4
    stats = control(emulator, "stats", {}).json()
    assert stats["faults"] == {"503": 4}
    assert control(emulator, "faults", {"rates": {}}).json() == {"ok": True}
    assert_serving(emulator)
    assert control(emulator, "faults", {"rates": {"503": 1.0}}).ok
    r = requests.post(f"{emulator.base_url}/_control/faults", json={"rates": {}}, timeout=10)
    assert r.status_code == 401  # needs the key like everything else
    assert post(emulator).status_code == 503


def test_control_faults_sets_slow_seconds_and_retry_after(emulator):
    assert control(emulator, "faults", {"rates": {"429": 1.0}, "retry_after": 3}).ok
    assert post(emulator).headers["Retry-After"] == "3"
    assert control(emulator, "faults", {"rates": {"slow": 1.0}, "slow_seconds": 0.3}).ok
    start = time.monotonic()
    assert post(emulator).status_code == 200
    assert 0.3 <= time.monotonic() - start < 1.5


def test_control_rate_limit_over_http(emulator):
    assert control(emulator, "rate-limit", {"requests_per_second": 2}).json() == {"ok": True}
    responses = [post(emulator) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert [r.headers["RateLimit-Remaining"] for r in responses] == ["1", "0", "0"]
    assert int(responses[2].headers["Retry-After"]) >= 1
    assert responses[2].json() == {"errors": [{"message": "rate limit exceeded"}]}
    assert control(emulator, "rate-limit", {"requests_per_second": None}).json() == {"ok": True}
    r = post(emulator)
    assert r.status_code == 200 and "RateLimit-Remaining" not in r.headers
    bad = control(emulator, "rate-limit", {"requests_per_second": 0})
    assert bad.status_code == 400 and "at least 1 request" in bad.json()["errors"][0]["message"]


def test_rate_limit_window_refills(emulator):
    emulator.set_rate_limit(1)
    assert [post(emulator).status_code for _ in range(2)] == [200, 429]
    time.sleep(1.05)
    assert post(emulator).status_code == 200


# -- concurrency ---------------------------------------------------------------------------------
def test_concurrent_clients_all_succeed(emulator):
    threads_n, per_thread = 8, 500
    want = {"data": expected_data(emulator)}
    results: list[list[tuple[int, dict | str]]] = [[] for _ in range(threads_n)]
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            with requests.Session() as session:
                session.auth = ("api", emulator.api_key)
                for _ in range(per_thread):
                    r = session.post(f"{emulator.base_url}/graphql", json=QUERY, timeout=30)
                    results[i].append((r.status_code, r.json() if r.status_code == 200 else r.text))
        except BaseException as exc:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(threads_n)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    elapsed = time.monotonic() - start
    assert not errors, errors[:3]
    flat = [x for per in results for x in per]
    assert len(flat) == threads_n * per_thread
    assert all(status == 200 and body == want for status, body in flat), [x for x in flat if x != (200, want)][:3]
    print(f"\n{threads_n} clients x {per_thread} requests: {len(flat)} in {elapsed:.2f} s "
          f"= {len(flat) / elapsed:.0f} requests/s")
