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
from _engine_jobs import SLOW, texts  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    # The workers import interpretlm and the tests' slow job kind from the same paths as this process.
    path = os.pathsep.join([str(TESTS.parent / "src"), str(TESTS), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def engine(cluster):
    """One engine for the module whose 2 workers keep their model between jobs (starting one costs seconds)."""
    eng = RayEngine(num_workers=2, keep_workers=True)
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


def _watch(markers: Path, shard: int, seen: dict, stop: threading.Event) -> None:
    """Kill the first process that starts ``shard`` while it is in the middle of it."""
    while not stop.is_set():
        for f in markers.glob(f"start-{shard}-*"):
            pid = int(f.name.rsplit("-", 1)[1])
            os.kill(pid, signal.SIGKILL)
            seen["killed"] = pid
            return
        time.sleep(0.02)


def test_a_worker_killed_mid_shard_is_retried_and_the_store_is_unchanged(engine, model, tmp_path):
    n = 8
    il.activations(model, texts(n), "resid_post", path=tmp_path / "ref", shard_size=2, batch_size=2)
    markers = tmp_path / "markers"
    markers.mkdir()
    seen, stop = {}, threading.Event()
    watcher = threading.Thread(target=_watch, args=(markers, 1, seen, stop))
    watcher.start()
    try:
        store = engine.run(SLOW, model, dict(
            texts=texts(n), components="resid_post", shard_size=2, batch_size=2, path=tmp_path / "ray",
            markers=str(markers), delay=1.0))
    finally:
        stop.set()
        watcher.join()
    starts = sorted(f.name for f in markers.iterdir())
    owners = {f.split("-")[2] for f in starts if f.startswith("start-1-")}
    assert str(seen["killed"]) in owners and len(owners) == 2   # shard 1 was started again by a new process
    assert sorted(store.computed_shards) == [0, 1, 2, 3]
    _same_store(tmp_path / "ref", tmp_path / "ray")


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
    # a model the workers cannot load
    with pytest.raises(EngineError, match="cannot load the model"):
        il.activations(str(tmp_path / "no-such-model"), texts(4), path=tmp_path / "a", engine=engine)
    assert not (tmp_path / "a").exists()
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


def test_a_driver_killed_mid_job_resumes_from_the_store(cluster, engine, model, tmp_path):
    engine.release()   # the driver below needs the cluster's 2 CPUs for its own workers
    n = 16   # 8 shards of 1 s each on 2 workers
    il.activations(model, texts(n), "resid_post", path=tmp_path / "ref", shard_size=2, batch_size=2)
    markers, store = tmp_path / "markers", tmp_path / "store"
    markers.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS.parent / "src"), str(TESTS)]))
    driver = subprocess.Popen([sys.executable, str(TESTS / "_engine_jobs.py"), cluster, model, str(store),
                               str(markers), str(n)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        recorded: dict = {}
        while time.time() < deadline and len(recorded) < 3:
            assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
            f = store / "manifest.json"
            if f.exists():
                recorded = json.loads(f.read_text())["shards"]
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    assert 3 <= len(recorded) < 8
    time.sleep(1.5)   # the dead driver's workers finish or are stopped by Ray; the manifest no longer changes
    recorded = json.loads((store / "manifest.json").read_text())["shards"]
    started = {int(f.name.split("-")[1]) for f in markers.iterdir()}
    in_flight = started - {int(k) for k in recorded}
    assert len(in_flight) <= 2   # what a kill costs: at most one shard per worker
    resumed = il.activations(model, texts(n), "resid_post", path=store, shard_size=2, batch_size=2)  # local
    assert sorted(resumed.computed_shards) == sorted(set(range(8)) - {int(k) for k in recorded})
    _same_store(tmp_path / "ref", store)


def test_the_configured_engine_is_the_one_engine_ray_names(cluster, engine, model, tmp_path):
    engine.release()   # its kept workers would hold the CPUs the configured engine's workers need
    configured = il.engine.ray(num_cpus=2, num_workers=2)   # the cluster is up: it joins it
    assert il.engine.get("ray") is configured and ray.is_initialized()
    store = il.activations(model, texts(6), "attn", pooling="last", shard_size=2, path=tmp_path / "r", engine="ray")
    il.activations(model, texts(6), "attn", pooling="last", shard_size=2, path=tmp_path / "l")
    assert store.computed_shards == [0, 1, 2] and len(configured.workers) == 2
    _same_store(tmp_path / "l", tmp_path / "r")
