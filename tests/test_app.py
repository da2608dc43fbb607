"""The web app's API on a tiny model: the schema comes from the registry, jobs compute what the
library computes, progress streams, cancelling, saved results reopen, limits answer 4xx, no path
leaves the data folder, and strings are escaped."""

import io
import json
import zipfile

import pytest
import torch

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

import interpretlm as il  # noqa: E402
from interpretlm.app import Limits, create_app  # noqa: E402
from interpretlm.app.jobs import CALL_LOCK  # noqa: E402
from interpretlm.app.schema import annotation_schema  # noqa: E402
from interpretlm.errors import InterpretLMError  # noqa: E402
from interpretlm.registry import REQUIRED  # noqa: E402
from interpretlm.testing import tiny_lm  # noqa: E402

IOI = "When Mary and John went to the store, John gave a drink to"
MARY = {"kind": "NextToken", "token": " Mary"}


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama", seed=0)


@pytest.fixture()
def app_client(lm, tmp_path):
    def make(**limits):
        app = create_app({"tiny": lm}, tmp_path / "runs", Limits(**limits))
        client = TestClient(app)
        client.__enter__()
        made.append(client)
        return app, client
    made = []
    yield make
    for c in made:
        c.__exit__(None, None, None)


def run(app, client, body, timeout=120):
    r = client.post("/api/jobs", json=body)
    assert r.status_code == 202, r.text
    job = app.state.jobs.wait(r.json()["id"], timeout)
    assert job.state == "done", job.error
    return job


def test_methods_and_openapi_come_from_the_registry(app_client):
    app, client = app_client()
    listed = {m["name"]: m for m in client.get("/api/methods").json()["methods"]}
    assert set(listed) == set(il.methods().names())
    for m in il.methods():
        props = listed[m.name]["options"]["properties"]
        assert set(props) == set(m.options) - {"path"}  # a file path is never an option of the app
        for name, o in m.options.items():
            if name in props and o.default is not REQUIRED and isinstance(o.default, (int, float, str, bool)):
                assert props[name]["default"] == o.default
        assert listed[m.name]["takes"] == m.takes and listed[m.name]["target"] == m.target
    ig = listed["integrated_gradients"]["options"]["properties"]
    assert ig["tol"]["type"] == "number" and ig["n_steps"]["type"] == ["integer", "null"]
    assert listed["path_patch"]["options"]["required"] == ["senders"]
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    runs = {k for k in doc["components"]["schemas"] if k.startswith("Run_")}
    assert runs == {f"Run_{n}" for n in il.methods().names()}
    assert "429" in doc["paths"]["/api/jobs"]["post"]["responses"]


def test_annotation_schemas():
    assert annotation_schema("bool") == {"type": "boolean"}
    assert annotation_schema("str | int | None") == {"type": ["string", "integer", "null"]}
    assert annotation_schema("Sequence[tuple[int, int] | str] | None")["anyOf"][1] == {"type": "null"}
    assert annotation_schema("str | _Probe") == {}  # no JSON form: any value


def test_a_job_computes_what_the_library_computes_and_reopens_in_python(app_client, lm):
    app, client = app_client()
    job = run(app, client, {"method": "integrated_gradients", "prompt": IOI, "target": MARY,
                            "options": {"tol": 0.05, "granularity": "token"}})
    (name,) = job.results
    direct = il.attribute(lm, IOI, il.NextToken(" Mary"), method="integrated_gradients", tol=0.05)
    saved = il.Result.load(app.state.store.root / name)
    assert type(saved) is type(direct)
    torch.testing.assert_close(torch.as_tensor(saved.scores), torch.as_tensor(direct.scores), rtol=1e-4, atol=1e-6)
    assert saved.options["tol"] == 0.05 and saved.target == il.NextToken(" Mary").to_dict()
    view = client.get(f"/api/results/{name}").json()
    assert view["check"]["name"] == "completeness_error" and view["check"]["passed"] is True
    assert [f["name"] for f in view["figures"]] == list(direct.figures())
    from interpretlm.viz import render
    assert view["figures"][0]["html"] == render(direct.figures()["scores"])  # one renderer per picture
    data = client.get(f"/api/results/{name}/data").json()
    assert data["method"] == "integrated_gradients" and len(data["scores"]) == len(direct.tokens)
    assert name in [r["name"] for r in client.get("/api/results").json()["results"]]


def test_progress_streams_and_a_list_gives_one_result_per_prompt(app_client):
    app, client = app_client()
    prompts = ["The cat sat on the mat", "When Tom and Anna went", "Paris is a city"]
    r = client.post("/api/jobs", json={"method": "saliency", "prompt": prompts, "target": MARY})
    jid = r.json()["id"]
    events = []
    with client.stream("GET", f"/api/jobs/{jid}/events") as s:
        for line in s.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["state"] == "done" and len(events[-1]["results"]) == 3
    steps = sorted({d for e in events for name, d, t in e["loops"] if (name, t) == ("saliency", 3)})
    # quick steps may arrive merged in one event; the last one always arrives
    assert steps[-1] == 3
    for p, name in zip(prompts, events[-1]["results"]):
        assert il.Result.load(app.state.store.root / name).inputs == p


def test_a_job_finishing_while_its_stream_sends_still_sends_its_final_state(app_client, monkeypatch):
    # the stream's first snapshot is taken while the job is not over, and the job ends before the
    # stream looks again: the last event must still be the final state, with the results
    import time

    from interpretlm.app.jobs import Job
    app, client = app_client()
    original, armed = Job.to_dict, {"on": False}

    def late_snapshot(self):
        snap = original(self)
        if armed["on"] and snap["state"] not in ("done", "error", "cancelled"):
            armed["on"] = False
            CALL_LOCK.release()  # the job runs only after this snapshot is taken
            stop = time.monotonic() + 60
            while self.state not in ("done", "error", "cancelled") and time.monotonic() < stop:
                time.sleep(0.01)
        return snap
    monkeypatch.setattr(Job, "to_dict", late_snapshot)
    # held, so a fast job cannot end before the stream's first snapshot (the race would skip the case)
    CALL_LOCK.acquire()
    try:
        r = client.post("/api/jobs", json={"method": "saliency", "prompt": IOI, "target": MARY})
        armed["on"] = True
        with client.stream("GET", f"/api/jobs/{r.json()['id']}/events") as s:
            events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: ")]
    finally:
        if armed["on"]:  # no snapshot released the lock: free the worker for the other tests
            CALL_LOCK.release()
    assert not armed["on"]  # the stale snapshot was sent
    assert events[0]["state"] != "done"
    assert events[-1]["state"] == "done" and len(events[-1]["results"]) == 1


def test_cancel_a_queued_and_a_running_job(app_client):
    app, client = app_client(max_queued=4)
    with CALL_LOCK:  # the worker takes the first job and waits for the lock: the second stays queued
        first = client.post("/api/jobs", json={"method": "saliency", "prompt": [IOI] * 60,
                                               "target": MARY}).json()["id"]
        second = client.post("/api/jobs", json={"method": "saliency", "prompt": IOI, "target": MARY}).json()["id"]
        assert client.post(f"/api/jobs/{second}/cancel").json()["state"] == "cancelled"
    jobs = app.state.jobs
    while (jobs.jobs[first].loop("saliency", 60) or 0) < 2:  # running, two of the 60 prompts explained
        assert jobs.jobs[first].state in ("queued", "running")
    client.post(f"/api/jobs/{first}/cancel")
    j = jobs.wait(first, 60)
    assert j.state == "cancelled" and 2 <= j.loop("saliency", 60) < 60 and j.results == []
    assert not list(app.state.store.root.glob(f"{first}*"))  # nothing saved
    assert jobs.wait(second, 5).state == "cancelled" and jobs.jobs[second].started is None


def test_limits_answer_4xx(app_client):
    app, client = app_client(max_queued=1, max_prompt_chars=100, max_prompts=3, max_body=4096)
    ok = {"method": "saliency", "prompt": IOI, "target": MARY}
    r = client.post("/api/jobs", content=json.dumps({**ok, "prompt": "x" * 5000}),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.post("/api/jobs", json={**ok, "prompt": "x" * 101}).status_code == 422
    assert client.post("/api/jobs", json={**ok, "prompt": ["a"] * 4}).status_code == 422
    assert client.post("/api/jobs", json={**ok, "target": {"kind": "NextToken", "token": "y" * 101}}).status_code == 422
    assert client.post("/api/jobs", json={"method": "patch", "dataset": "ioi", "n": 10_000}).status_code == 422
    assert client.post("/api/jobs", content=b"not json", headers={"content-type": "application/json"}).status_code == 400
    with CALL_LOCK:
        assert client.post("/api/jobs", json=ok).status_code == 202  # taken by the worker, waiting for the lock
        while app.state.jobs.counts().get("running", 0) == 0:
            pass
        assert client.post("/api/jobs", json=ok).status_code == 202  # the one queued job
        full = client.post("/api/jobs", json=ok)
        assert full.status_code == 429 and "waiting" in full.json()["error"] and full.headers["retry-after"]


def test_bad_requests_are_clear_4xx(app_client):
    app, client = app_client()
    cases = [({"method": "nope", "prompt": IOI}, 404, "Unknown method"),
             ({"method": "saliency", "prompt": IOI, "target": MARY, "model": "gpt-5"}, 404, "not served"),
             ({"method": "saliency", "prompt": IOI, "target": MARY, "options": {"bogus": 1}}, 422, "takes no option"),
             ({"method": "saliency", "prompt": IOI, "target": MARY, "options": {"batch_size": "many"}}, 422, "integer"),
             ({"method": "saliency", "prompt": IOI}, 422, "needs a target"),
             ({"method": "saliency", "prompt": IOI, "target": {"kind": "FunctionTarget", "fn": "os:system"}}, 422,
              "kind among"),
             ({"method": "probe", "task": "sentiment", "options": {"path": "/tmp/x"}}, 422, "cannot be set"),
             ({"method": "probe", "task": "../tasks.jsonl"}, 422, "built-in name"),
             ({"method": "patch", "dataset": "/etc/passwd.jsonl"}, 422, "built-in name")]
    for body, code, words in cases:
        r = client.post("/api/jobs", json=body)
        assert (r.status_code, words in r.json()["error"]) == (code, True), (body, r.text)


def test_no_path_leaves_the_data_folder(app_client, tmp_path):
    app, client = app_client()
    store = app.state.store
    secret = tmp_path / "secret.json"
    il.attribute(tiny_lm("llama"), "a b", il.NextToken(5), method="saliency").save(secret)
    (store.root / "link.json").symlink_to(secret)  # a link out of the folder is refused too
    for name in ["../secret.json", "..%2Fsecret.json", "%2E%2E%2Fsecret.json", str(secret),
                 secret.as_posix().replace("/", "%2F"), "..", "link.json", ".hidden.json", "a/../../secret.json"]:
        for suffix in ("", "/data", "/download", "/report"):
            r = client.get(f"/api/results/{name}{suffix}")
            assert r.status_code in (400, 404), (name, suffix, r.status_code)
            assert "saliency" not in r.text
    for bad in ["../secret.json", str(secret), "link.json"]:
        r = client.post("/api/jobs", json={"method": "faithfulness", "result": bad})
        assert r.status_code == 422 or app.state.jobs.wait(r.json()["id"], 30).state == "error", bad
    with pytest.raises(ValueError):
        store.path(str(secret))
    assert [r["name"] for r in client.get("/api/results").json()["results"]] == []  # the link is not listed either


def test_script_in_a_prompt_is_escaped(app_client):
    app, client = app_client()
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    job = run(app, client, {"method": "saliency", "prompt": evil, "target": {"kind": "Continuation", "text": "<b>x</b>"}})
    view = client.get(f"/api/results/{job.results[0]}").json()
    html = view["subject_html"] + "".join(f["html"] for f in view["figures"]) + view["diagnostics_html"]
    assert "<script>alert" not in html and "<img" not in html and "<b>x" not in html
    assert "&lt;script&gt;" in html
    r = client.get("/")
    assert "script-src 'self'" in r.headers["content-security-policy"]  # and no inline script may run


def test_saved_results_reopen_download_and_python_saves_appear(app_client, lm, tmp_path):
    app, client = app_client()
    mine = il.attribute(lm, IOI, il.NextToken(" Mary"), method="input_x_gradient")
    mine.save(app.state.store.root / "from-python.json")
    listed = client.get("/api/results").json()["results"]
    assert [r["name"] for r in listed] == ["from-python.json"] and listed[0]["method"] == "input_x_gradient"
    z = zipfile.ZipFile(io.BytesIO(client.get("/api/results/from-python.json/download").content))
    assert sorted(z.namelist()) == ["from-python.json", "from-python.safetensors"]
    z.extractall(tmp_path / "unzipped")
    back = il.Result.load(tmp_path / "unzipped" / "from-python.json")
    assert torch.equal(torch.as_tensor(back.scores), torch.as_tensor(mine.scores))
    report = client.get("/api/results/from-python.json/report")
    assert report.headers["content-disposition"].startswith("attachment") and "<!doctype html>" in report.text
    # faithfulness takes a saved result: the app reads it from the data folder
    job = run(app, client, {"method": "faithfulness", "result": "from-python.json",
                            "options": {"bins": [0.1, 0.5]}})
    f = il.Result.load(app.state.store.root / job.results[0])
    assert f.method == "faithfulness" and f.check is not None


def test_three_families_run(app_client):
    app, client = app_client()
    kinds = {}
    for body in [{"method": "attention", "prompt": IOI},
                 {"method": "logit_lens", "prompt": IOI, "target": MARY},
                 {"method": "patch", "clean": IOI, "corrupted": IOI.replace("John gave", "Mary gave"),
                  "target": {"kind": "Contrast", "a": " Mary", "b": " John"}},
                 {"method": "patch", "dataset": "induction", "n": 4}]:
        job = run(app, client, body)
        v = client.get(f"/api/results/{job.results[0]}").json()
        kinds[body["method"]] = [f["kind"] for f in v["figures"]]
    assert "AttentionView" in kinds["attention"] and "TokenGrid" in kinds["logit_lens"] and kinds["patch"] == ["Heatmap"]


def test_binding_other_than_loopback_needs_a_flag(capsys):
    from interpretlm.app import serve

    with pytest.raises(InterpretLMError, match="allow-remote"):
        serve("tiny", host="0.0.0.0")


def test_serve_command_binds_loopback_and_warns_for_other_addresses(monkeypatch, tmp_path):
    import uvicorn
    from click.testing import CliRunner

    from interpretlm.cli import app as cli

    bound = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: bound.append((host, port, app)))
    out = CliRunner().invoke(cli, ["serve", "--data-dir", str(tmp_path / "d"), "--port", "8123"])
    assert out.exit_code == 0, out.output
    assert bound[-1][:2] == ("127.0.0.1", 8123) and "WARNING" not in out.output
    with TestClient(bound[-1][2]) as client:  # the default model is named, loaded on the first job only
        assert client.get("/api/models").json() == {"models": [{"name": "smollm2-135m", "loaded": False}],
                                                     "default": "smollm2-135m"}
    out = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d")])
    assert out.exit_code == 2 and "allow-remote" in out.output and len(bound) == 1
    out = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--allow-remote", "--data-dir", str(tmp_path / "d")])
    assert out.exit_code == 0 and "WARNING" in out.output and bound[-1][0] == "0.0.0.0"


def test_random_requests_never_get_a_5xx(app_client):
    """Any JSON body (and some that are not JSON) is answered 202 or a 4xx, never a server error."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    app, client = app_client(max_queued=2)
    scalars = st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=8), inner, max_size=3), max_leaves=8)
    names = st.sampled_from(il.methods().names() + ["nope", ""])
    kinds = st.sampled_from(["NextToken", "Contrast", "Continuation", "Label", "FunctionTarget", "Nope"])
    target = st.none() | values | st.fixed_dictionaries({"kind": kinds}, optional={
        "token": values, "a": values, "b": values, "text": values, "label": values, "verbalizers": values})
    body = st.fixed_dictionaries({"method": names | values}, optional={
        "prompt": values, "prompts": values, "clean": values, "corrupted": values, "dataset": values, "n": values,
        "task": values, "result": values, "model": values, "target": target,
        "options": st.dictionaries(st.sampled_from(["batch_size", "tol", "layers", "heads", "k", "bogus", "path",
                                                    "granularity", "n_samples"]), values, max_size=3) | values})
    seen = set()

    @settings(max_examples=200, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(body)
    def one(b):
        with CALL_LOCK:  # accepted jobs wait, so the queue fills and the rest is about the request itself
            r = client.post("/api/jobs", json=b)
        seen.add(r.status_code)
        assert r.status_code in (202, 400, 404, 413, 422, 429), (b, r.status_code, r.text)
        assert "error" in r.json() or r.status_code == 202

    one()
    for raw in [b"[" * 20000 + b"]" * 20000, b"\xff\xfe", b"{", b"null", b"[]"]:
        assert client.post("/api/jobs", content=raw, headers={"content-type": "application/json"}).status_code \
            in (400, 413)
    assert {422, 404} <= seen


def test_a_file_naming_a_foreign_class_is_refused_not_imported(app_client):
    """Results are JSON + safetensors read by Result.load: a file that names a class outside
    interpretlm (what a pickle would run) is refused with 422, and nothing is imported."""
    import sys

    app, client = app_client()
    doc = {"interpretlm_result": "antigravity.Fly", "format": 1, "arrays": None, "fields": {}}
    (app.state.store.root / "foreign.json").write_text(json.dumps(doc))
    for suffix in ("", "/data", "/report"):
        r = client.get(f"/api/results/foreign.json{suffix}")
        assert r.status_code == 422 and "does not know" in r.json()["error"]
    assert "antigravity" not in sys.modules
