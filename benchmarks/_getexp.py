import os, sys, time, itertools
import numpy as np
from hcstore import LocalCluster
c = LocalCluster.create('/tmp/hcg', agents=6, durability='none'); c.start()
data = np.random.default_rng(1).integers(0,256,1<<30,dtype=np.uint8).tobytes()
c.client().put('bench','large',data)
for io, ahead, batch in itertools.product([1, 4], [2, 4, 8], [4, 8]):
    cl = c.client(io_threads=io, read_ahead=ahead, read_batch=batch)
    best = 0
    for _ in range(2):
        t=time.perf_counter(); cl.get('bench','large'); best=max(best, (1<<30)/(time.perf_counter()-t)/1e6)
    buf = bytearray(1<<30)
    t=time.perf_counter(); cl.get_into('bench','large', buf); into=(1<<30)/(time.perf_counter()-t)/1e6
    print(f"io={io} ahead={ahead} batch={batch} get {best:.0f} MB/s get_into {into:.0f} MB/s", flush=True)
    cl.close()
c.destroy()
