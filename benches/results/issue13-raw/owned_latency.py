import random, statistics, subprocess, sys, json
sys.path[:0] = ["./tests/support", "./benches/release"]
from sigint import interrupt_after_ready
CHILD = '''
import gilkit_testext as ext
print("READY", flush=True)
try:
    ext.sleep_uncooperative(30.0, 200)
except KeyboardInterrupt:
    print("CAUGHT", flush=True)
'''
print(json.dumps([interrupt_after_ready(CHILD, settle=random.uniform(0.2, 0.3))[0]*1e3 for _ in range(int(sys.argv[1]))]))
