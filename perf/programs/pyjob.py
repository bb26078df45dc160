"""The python3 workload: dicts, sorting, JSON and strings, run with PYTHONMALLOC=malloc
so that every Python object comes from the allocator under test. argv[1]: scale."""
import json
import sys

scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
n = max(1000, int(25000 * scale))

# a dict of small lists, strings and dicts
table = {f"key{i * 7919 % n}-{i}": [i, str(i * 31), {"v": i % 97, "w": [i, i + 1]}] for i in range(n)}
# sort by a string field: tuples and temporaries
rows = sorted(table.items(), key=lambda kv: (kv[1][1][::-1], kv[0]))
# JSON round trip: one big string and a fresh object graph
text = json.dumps(table)
back = json.loads(text)
# strings: split, slice, count
counts = {}
for word in text.split(","):
    k = word.strip()[:5]
    counts[k] = counts.get(k, 0) + 1
# churn: drop half of the objects, grow lists, rebuild
for i, key in enumerate(list(back)):
    if i % 2:
        del back[key]
lists = [[j for j in range(i % 50)] for i in range(n)]
joined = sum(len(x) for x in lists) + len(back) + len(rows) + len(counts)
print(f"workload=python ops={n} check={joined}")
