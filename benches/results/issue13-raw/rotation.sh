# Issue-13 before/after re-run: builds alternated, raw outputs kept.
# Builds: target-before/ and /tmp/site-before (d6cec41), target-after/ and /tmp/site-after (the
# candidate), /tmp/site-asy-{before,after} (d49d6ed and the candidate, with the test extension's
# feature bench-pyo3-async-runtimes); each site is an unpacked `maturin build --release` wheel.
set -u
cd "$(dirname "$0")/../../.."  # the repository root
R=./benches/results/issue13-raw
mkdir -p $R
PY=./.venv/bin/python
log() { echo "$(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) $*" >> $R/rotation.log; }
sem() { log "semaphore $1 $2"; target-$1/release/examples/bench_semaphore --rounds 3 --secs 1 > $R/semaphore-$1-$2.md 2>&1; }
rel() { log "release $1 $2"; PYTHONPATH=/tmp/site-$1 $PY benches/release/run.py --out $R/release-$1-$2.md > /dev/null 2>&1; }
nog() { log "nogil $1 $2"; PYTHONPATH=/tmp/site-$1 $PY benches/nogil/bench_nogil.py --rounds 5 > $R/nogil-$1-$2.md 2>&1; }
asy() { log "asyncio $1 $2"; PYTHONPATH=/tmp/site-asy-$1 $PY benches/asyncio/bench.py --out $R/asyncio-$1-$2.md > /dev/null 2>&1; }
sem before 1; sem after 1; sem before 2; sem after 2; sem before 3; sem after 3
rel before 1; rel after 1; rel after 2; rel before 2
nog before 1; nog after 1; nog after 2; nog before 2
asy before 1; asy after 1; asy after 2; asy before 2
log done
set -u
while ! grep -q " done" ./benches/results/issue13-raw/rotation.log; do sleep 5; done
cd "$(dirname "$0")/../../.."  # the repository root
R=./benches/results/issue13-raw
PY=./.venv/bin/python
log() { echo "$(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) $*" >> $R/rotation.log; }
rel() { log "release $1 $2"; PYTHONPATH=/tmp/site-$1 $PY benches/release/run.py --out $R/release-$1-$2.md > /dev/null 2>&1; }
nog() { log "nogil $1 $2"; PYTHONPATH=/tmp/site-$1 $PY benches/nogil/bench_nogil.py --rounds 5 > $R/nogil-$1-$2.md 2>&1; }
rel before 3; rel after 3; rel after 4; rel before 4; rel before 5; rel after 5
nog before 3; nog after 3
log done2
