"""The engines: the Ray engine writes the local engine's store byte for byte, survives a killed worker
and a killed driver, and refuses bad input before any work. One local Ray cluster (2 CPUs) for the module."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import interpretlm as il
from interpretlm.jobs import EngineError, Job, LoadSpec
from interpretlm.testing import save_tiny, tiny_lm

ray = pytest.importorskip("ray")
from interpretlm.engine.ray_engine import RayEngine  # noqa: E402

TESTS = Path(__file__).parent
from _engine_jobs import MINE_OPTIONS, SLOW, SLOW_MINE, mine_units, texts  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    # The workers import interpretlm and the tests' slow job kind from the same paths as this process.
    path = os.pathsep.join([str(TESTS.parent / "src"), str(TESTS), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def engine(cluster, model):
    """One engine for the module whose 2 workers keep their model between jobs (starting one costs seconds)."""
    eng = RayEngine(num_workers=2, keep_workers=True)
    eng.start(model, wait=True)   # both workers ready: the tests below see both take shards
    yield eng
    eng.release()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny-llama"), "llama", seed=4)


def _same_store(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert "manifest.json" in names and len(names) > 2
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n


def _same_mining_folder(a: Path, b: Path) -> None:
    """Two finished mining folders (stores of shard states): the same files, byte for byte (each shard's
    state is computed alone, whichever engine ran it)."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and "manifest.json" in names and len(names) >= 2
    assert all(n == "manifest.json" or n.startswith("shard-") for n in names)
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n


def test_a_job_is_plain_data():
    spec = LoadSpec.of({"name": "some/folder", "dtype": "bfloat16", "device_map": {"model.layers.0": "cpu"}})
    job = Job("activations", spec.to_dict(), {"manifest": {"n_shards": 3}}, 1, {"texts": ["a b"], "rows": [2, 3]},
              "/store")
    assert Job.from_dict(json.loads(json.dumps(job.to_dict()))) == job
    assert LoadSpec.from_dict(job.model) == spec and spec.options["dtype"] == "bfloat16"
    with pytest.raises(EngineError, match="built in memory"):
        LoadSpec.of(tiny_lm("llama"))


def test_load_records_its_spec_and_the_local_engine_loads_a_spec(model, tmp_path):
    lm = il.load(model)
    assert lm.load_spec == {"name": model, "dtype": "float32", "device": "cpu"}
    by_spec = il.activations(model, texts(5), "resid_post", path=tmp_path / "a", shard_size=2)
    by_lm = il.activations(lm, texts(5), "resid_post", path=tmp_path / "b", shard_size=2, engine="local")
    _same_store(tmp_path / "a", tmp_path / "b")
    assert by_spec.computed_shards == [0, 1, 2] and by_lm["blocks.1.resid_post"].shape[1] == lm.d_model


@pytest.mark.parametrize("pooling", ["none", "mean"])
def test_ray_store_is_the_local_store_byte_for_byte(engine, model, tmp_path, pooling):
    kw = dict(components="resid_post", pooling=pooling, shard_size=3, batch_size=2)
    local = il.activations(model, texts(10), path=tmp_path / "local", **kw)
    far = il.activations(model, texts(10), path=tmp_path / "ray", engine=engine, **kw)
    pids = {w["pid"] for w in engine.workers}
    assert len(pids) == 2 and os.getpid() not in pids
    assert far.computed_shards == [0, 1, 2, 3] == local.computed_shards
    _same_store(tmp_path / "local", tmp_path / "ray")
    for c in local.components:
        assert torch.equal(far[c], local[c])


def test_either_engine_resumes_the_other(engine, model, tmp_path):
    kw = dict(components="mlp", layers=[0, 1], shard_size=2, batch_size=2)
    il.activations(model, texts(8), path=tmp_path / "ref", **kw)
    # a local run stopped after two of its four shards (its manifest then lists only those)
    il.activations(model, texts(8), path=tmp_path / "s", **kw)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    for k in ("2", "3"):
        (tmp_path / "s" / manifest["shards"].pop(k)["file"]).unlink()
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(manifest, indent=1))
    resumed = il.activations(model, texts(8), path=tmp_path / "s", engine=engine, **kw)
    assert resumed.computed_shards == [2, 3]
    _same_store(tmp_path / "ref", tmp_path / "s")
    again = il.activations(model, texts(8), path=tmp_path / "s", **kw)   # and the local engine finds it finished
    assert again.computed_shards == []


MINED = ("top_values", "top_windows", "top_positions", "quantile_values", "quantile_windows", "quantile_positions",
         "hist_counts", "hist_range", "mean", "std", "frequency", "glu_values", "glu_windows", "glu_frequency")


def _same_mining(a, b) -> None:
    """Two mining results hold the same numbers (the state's sums are float64, added in another order by
    the Ray engine: 1e-6 there; everything else exactly)."""
    for f in MINED:
        x, y = getattr(a, f), getattr(b, f)
        if f in ("mean", "std"):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-9)
        else:
            assert torch.equal(torch.nan_to_num(x, nan=-7.0), torch.nan_to_num(y, nan=-7.0)), f
    assert a.examples == b.examples and a.logit_effects == b.logit_effects and a.dead == b.dead
    assert a.n_windows == b.n_windows and a.diagnostics["forward_passes"] == b.diagnostics["forward_passes"]


def test_ray_mining_is_the_local_mining(engine, model, tmp_path):
    """il.maximize(spec, Unit.all(...), corpus=, path=, engine="ray"): shards of the corpus mined on two
    workers merge into the local pass's folder, byte for byte, and the same result."""
    kw = dict(corpus=texts(30), **MINE_OPTIONS)
    local = il.maximize(model, mine_units(), path=str(tmp_path / "local"), **kw)
    far = il.maximize(model, mine_units(), path=str(tmp_path / "ray"), engine=engine, **kw)
    assert len({w["pid"] for w in engine.workers}) == 2
    assert local.n_windows >= 4 * MINE_OPTIONS["checkpoint_every"] and far.check.passed
    _same_mining(local, far)
    _same_mining_folder(tmp_path / "local", tmp_path / "ray")
    assert (far.top_values[:, 0] >= far.top_values[:, -1]).all() and far.units == local.units


def _recorded(model, path: Path, kw: dict, shards: tuple[int, ...]) -> None:
    """What a Ray driver leaves when shards ``shards`` finished and nothing else did: the job kind's steps,
    run here (plan, prepare, then compute, write and record of those shards)."""
    from interpretlm.maximization import MINE

    lm = il.load(model)
    plan = MINE.plan(lm, dict(units=mine_units(), method="mine", **kw))
    MINE.prepare(path, plan, False)
    rows = MINE.shard_rows(plan)
    for k in shards:
        payload = MINE.compute(lm, plan, MINE.shard_args(plan["args"], *rows[k]))
        MINE.record(path, plan, k, MINE.write(path, plan, k, payload))
    MINE.release(path)


def test_either_engine_resumes_the_others_mining(engine, model, tmp_path, monkeypatch):
    kw = dict(corpus=texts(30), **MINE_OPTIONS)
    ref = il.maximize(model, mine_units(), path=str(tmp_path / "ref"), **kw)
    batches = ref.diagnostics["forward_passes"]
    per = MINE_OPTIONS["checkpoint_every"] // MINE_OPTIONS["batch_size"]   # batches a shard
    lm = il.load(model)
    # a local pass interrupted in its 6th batch (its last checkpoint: after the 4th, window 16)
    calls, real_run = {"n": 0}, type(lm).run

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real_run(self, *a, **k)
    monkeypatch.setattr(type(lm), "run", flaky)
    with pytest.raises(KeyboardInterrupt):
        il.maximize(lm, mine_units(), path=str(tmp_path / "s"), **kw)
    monkeypatch.setattr(type(lm), "run", real_run)
    assert sorted(json.loads((tmp_path / "s" / "manifest.json").read_text())["shards"]) == ["0", "1"]   # 16 windows
    resumed = il.maximize(model, mine_units(), path=str(tmp_path / "s"), engine=engine, **kw)   # Ray resumes it
    assert resumed.diagnostics["forward_passes"] == batches - 4
    _same_mining_folder(tmp_path / "ref", tmp_path / "s")
    # a Ray job stopped with shards 1 and 3 recorded (shard 0 never finished): the local pass reads them when
    # it reaches them and runs only the other shards' batches
    _recorded(model, tmp_path / "t", kw, (1, 3))
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["manifest.json", "shard-00001.safetensors",
                                                                 "shard-00003.safetensors"]
    again = il.maximize(model, mine_units(), path=str(tmp_path / "t"), **kw)
    assert again.diagnostics["forward_passes"] == batches - 2 * per
    _same_mining_folder(tmp_path / "ref", tmp_path / "t")
    for f in MINED:
        assert torch.equal(torch.nan_to_num(getattr(ref, f), nan=-7.0), torch.nan_to_num(getattr(again, f), nan=-7.0)), f


def _watch(markers: Path, shard: int, seen: dict, stop: threading.Event) -> None:
    """Kill the first process that starts ``shard`` while it is in the middle of it."""
    while not stop.is_set():
        for f in markers.glob(f"start-{shard}-*"):
            pid = int(f.name.rsplit("-", 1)[1])
            os.kill(pid, signal.SIGKILL)
            seen["killed"] = pid
            return
        time.sleep(0.02)


def _slow_job(kind: str, model: str, n: int, path: Path, markers: Path) -> tuple:
    """The slow job of ``kind`` and a reference folder of the same request written by the local engine."""
    if kind == "activations":
        il.activations(model, texts(n), "resid_post", path=path / "ref", shard_size=2, batch_size=2)
        return SLOW, dict(texts=texts(n), components="resid_post", shard_size=2, batch_size=2, path=path / "ray",
                          markers=str(markers), delay=1.0)
    il.maximize(model, mine_units(), corpus=texts(n), path=str(path / "ref"), **MINE_OPTIONS)
    return SLOW_MINE, dict(units=mine_units(), corpus=texts(n), path=str(path / "ray"), markers=str(markers),
                           delay=1.0, **MINE_OPTIONS)


@pytest.mark.parametrize("kind", ["activations", "mine"])
def test_a_worker_killed_mid_shard_is_retried_and_the_store_is_unchanged(engine, model, tmp_path, kind):
    markers = tmp_path / "markers"
    markers.mkdir()
    job, values = _slow_job(kind, model, 8, tmp_path, markers)
    seen, stop = {}, threading.Event()
    watcher = threading.Thread(target=_watch, args=(markers, 1, seen, stop))
    watcher.start()
    try:
        store = engine.run(job, model, values)
    finally:
        stop.set()
        watcher.join()
    starts = sorted(f.name for f in markers.iterdir())
    owners = {f.split("-")[2] for f in starts if f.startswith("start-1-")}
    assert str(seen["killed"]) in owners and len(owners) == 2   # shard 1 was started again by a new process
    shards = {int(f.split("-")[1]) for f in starts}
    assert shards == set(range(4 if kind == "activations" else len(shards))) and len(shards) >= 3
    if kind == "activations":
        assert sorted(store.computed_shards) == [0, 1, 2, 3]
        _same_store(tmp_path / "ref", tmp_path / "ray")
    else:
        _same_mining_folder(tmp_path / "ref", tmp_path / "ray")


def test_bad_input_fails_before_any_work(engine, model, tmp_path):
    # an address nothing listens on: refused at once, not after a minute of retries
    t = time.time()
    with pytest.raises(EngineError, match="No Ray cluster answers"):
        il.engine.ray(address="127.0.0.1:9")
    assert time.time() - t < 10
    # a store path no worker can write (its parent is a file)
    (tmp_path / "file").write_text("x")
    with pytest.raises(EngineError, match="cannot write the store"):
        il.activations(model, texts(4), path=tmp_path / "file" / "acts", engine=engine)
    # a bad request is the family's own error, raised before anything is written
    with pytest.raises(il.ComponentError, match="Unknown component"):
        il.activations(model, texts(4), "resid_mid", path=tmp_path / "b", engine=engine)
    assert not (tmp_path / "b" / "manifest.json").exists()
    with pytest.raises(EngineError, match="give path="):
        il.activations(model, texts(4), engine=engine)
    with pytest.raises(EngineError, match="built in memory"):
        il.activations(tiny_lm("llama"), texts(4), path=tmp_path / "c", engine=engine)
    with pytest.raises(EngineError, match="engine='spark'"):
        il.activations(model, texts(4), engine="spark")
    # mining: a method that is not a corpus pass, and a bad request, refused before anything is written
    with pytest.raises(EngineError, match="only 'mine'"):
        il.maximize(model, mine_units(), method="epo", path=str(tmp_path / "m"), engine=engine)
    with pytest.raises(il.OptionError, match="no option 'topk'"):
        il.maximize(model, mine_units(), corpus=texts(4), topk=3, path=str(tmp_path / "m"), engine=engine)
    with pytest.raises(il.InterpretLMError, match="larger than the corpus"):
        il.maximize(model, mine_units(), corpus=texts(2), k=500, window=8, path=str(tmp_path / "m"), engine=engine)
    with pytest.raises(il.InterpretLMError, match="No corpus at"):
        il.maximize(model, mine_units(), corpus=str(tmp_path / "none.txt"), path=str(tmp_path / "m"), engine=engine)
    assert not (tmp_path / "m" / "manifest.json").exists()
    # a model the workers cannot load (last: its workers replace the kept ones)
    with pytest.raises(EngineError, match="cannot load the model"):
        il.activations(str(tmp_path / "no-such-model"), texts(4), path=tmp_path / "a", engine=engine)
    with pytest.raises(EngineError, match="cannot load the model"):
        il.maximize(str(tmp_path / "no-such-model"), mine_units(), corpus=texts(4), path=str(tmp_path / "m2"),
                    engine=engine)
    assert not (tmp_path / "a").exists() and not (tmp_path / "m2").exists()


@pytest.mark.parametrize("kind", ["activations", pytest.param("mine", marks=pytest.mark.slow)])
def test_a_driver_killed_mid_job_resumes_from_the_store(cluster, engine, model, tmp_path, kind):
    engine.release()   # the driver below needs the cluster's 2 CPUs for its own workers
    n = 16   # activations: 8 shards of 1 s each on 2 workers; mining: 8+ shards of 8 windows
    markers, store = tmp_path / "markers", tmp_path / "store"
    markers.mkdir()
    if kind == "activations":
        il.activations(model, texts(n), "resid_post", path=tmp_path / "ref", shard_size=2, batch_size=2)
    else:
        ref = il.maximize(model, mine_units(), corpus=texts(n), path=str(tmp_path / "ref"), **MINE_OPTIONS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS.parent / "src"), str(TESTS)]))
    driver = subprocess.Popen([sys.executable, str(TESTS / "_engine_jobs.py"), cluster, model, str(store),
                               str(markers), str(n)] + ([] if kind == "activations" else ["mine"]), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def finished() -> set[int]:
        """The shards the folder holds: recorded in its manifest (an activation store's or a mining folder's,
        both written through the core's shard_store)."""
        f = store / "manifest.json"
        if not f.exists():
            return set()
        return {int(k) for k in json.loads(f.read_text())["shards"]}
    try:
        deadline = time.time() + 120
        recorded: set[int] = set()
        while time.time() < deadline and len(recorded) < 3:
            assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
            recorded = finished()
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    assert 3 <= len(recorded) and len(recorded) < 8
    time.sleep(1.5)   # the dead driver's workers finish or are stopped by Ray; the folder no longer changes
    recorded = finished()
    started = {int(f.name.split("-")[1]) for f in markers.iterdir()}
    in_flight = started - recorded
    assert len(in_flight) <= 2   # what a kill costs: at most one shard per worker
    if kind == "activations":
        resumed = il.activations(model, texts(n), "resid_post", path=store, shard_size=2, batch_size=2)  # local
        assert sorted(resumed.computed_shards) == sorted(set(range(8)) - recorded)
    else:
        resumed = il.maximize(model, mine_units(), corpus=texts(n), path=str(store), **MINE_OPTIONS)  # local
        per, batch = MINE_OPTIONS["checkpoint_every"], MINE_OPTIONS["batch_size"]
        shards = range(-(-ref.n_windows // per))
        # the local pass runs exactly the batches of the shards the folder does not hold
        assert resumed.diagnostics["forward_passes"] == sum(-(-(min(ref.n_windows, (k + 1) * per) - k * per) // batch)
                                                            for k in shards if k not in recorded)
    (_same_store if kind == "activations" else _same_mining_folder)(tmp_path / "ref", store)


def test_the_configured_engine_is_the_one_engine_ray_names(cluster, engine, model, tmp_path):
    engine.release()   # its kept workers would hold the CPUs the configured engine's workers need
    configured = il.engine.ray(num_cpus=2, num_workers=2)   # the cluster is up: it joins it
    assert il.engine.get("ray") is configured and ray.is_initialized()
    store = il.activations(model, texts(6), "attn", pooling="last", shard_size=2, path=tmp_path / "r", engine="ray")
    il.activations(model, texts(6), "attn", pooling="last", shard_size=2, path=tmp_path / "l")
    # every worker starts at once and takes shards as soon as it is ready: a fast one may do all three
    pids = {w["pid"] for w in configured.workers}
    assert store.computed_shards == [0, 1, 2] and 1 <= len(pids) <= 2 and os.getpid() not in pids
    _same_store(tmp_path / "l", tmp_path / "r")


def test_workers_per_job_on_this_machine_follow_its_free_cores(cluster, monkeypatch):
    """A fresh worker costs seconds of CPU (torch, transformers, the model): on a cluster that is this machine
    alone, the default is one worker per free core (the local engine's torch threads follow the same rule)."""
    import interpretlm.runtime as runtime
    from interpretlm.engine.ray_engine import _this_machine_alone

    assert _this_machine_alone(ray)   # the test's local cluster: one node, this one
    for free, expected in ((1, 1), (2, 2), (8, 2)):   # never more than the cluster's 2 CPUs
        monkeypatch.setattr(runtime, "free_cores", lambda free=free: free)
        assert RayEngine().worker_count(ray) == expected
    assert RayEngine(num_workers=3).worker_count(ray) == 3   # asked for: as asked
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "NodeID": "elsewhere"}])
    assert not _this_machine_alone(ray) and RayEngine().worker_count(ray) == 2   # a real cluster: all its CPUs
