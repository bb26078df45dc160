"""Generates the repository the git workload repacks: python3 gitrepo.py DIR OBJECTS.

A deterministic history written through `git fast-import` (no working tree, no checkout): about OBJECTS
objects in commits that each change 4 of 600 text files in 30 folders (each commit: 4 blobs, up to 5 trees,
1 commit), the files growing and changing a few lines at a time, so that `git repack -adf` finds long delta
chains, as in a real source repository. Fixed names and dates: the same OBJECTS gives the same objects.
DIR is made anew (removed first if it exists); it is a bare repository.
"""
import os
import random
import shutil
import subprocess
import sys

FOLDERS = 30
FILES_PER_FOLDER = 20
CHANGED_PER_COMMIT = 4
OBJECTS_PER_COMMIT = 10  # 4 blobs, about 5 trees, 1 commit
WORDS = ("alloc free slot block arena handle generation epoch segment purge remote owner class size "
         "bump freelist page cache thread lock fence atomic retire collect commit decommit map unmap").split()


def line(rng, k):
    """A line of source-like text."""
    n = rng.randrange(3, 12)
    return f"{k:5d} " + " ".join(rng.choice(WORDS) for _ in range(n))


def stream(objects, out):
    """Writes the fast-import stream of about `objects` objects to the binary file out."""
    rng = random.Random(95)
    files = {}
    for d in range(FOLDERS):
        for f in range(FILES_PER_FOLDER):
            files[f"src{d:02d}/file{f:02d}.txt"] = [line(rng, k) for k in range(rng.randrange(20, 80))]
    commits = max(2, objects // OBJECTS_PER_COMMIT)
    names = sorted(files)
    mark = 0
    when = 1700000000
    for c in range(commits):
        changed = names if c == 0 else rng.sample(names, CHANGED_PER_COMMIT)
        blobs = []
        for path in changed:
            text = files[path]
            if c:
                for _ in range(rng.randrange(1, 4)):  # edit, insert or delete a line or two
                    op = rng.random()
                    k = rng.randrange(len(text))
                    if op < 0.5:
                        text[k] = line(rng, k)
                    elif op < 0.85 or len(text) < 10:
                        text.insert(k, line(rng, k))
                    else:
                        del text[k]
            data = ("\n".join(text) + "\n").encode()
            mark += 1
            out.write(b"blob\nmark :%d\ndata %d\n" % (mark, len(data)) + data + b"\n")
            blobs.append((path, mark))
        msg = f"change {c}: {', '.join(p for p, _ in blobs[:4])}\n".encode()
        when += 600
        head = b"commit refs/heads/main\n"
        head += b"committer Perf Harness <perf@example.org> %d +0000\n" % when
        head += b"data %d\n" % len(msg) + msg
        out.write(head)
        for path, m in blobs:
            out.write(b"M 100644 :%d %s\n" % (m, path.encode()))
        out.write(b"\n")


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: gitrepo.py DIR OBJECTS")
    repo, objects = sys.argv[1], int(sys.argv[2])
    shutil.rmtree(repo, ignore_errors=True)
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    env.pop("LD_PRELOAD", None)
    subprocess.run(["git", "init", "-q", "--bare", repo], check=True, env=env)
    p = subprocess.Popen(["git", "-C", repo, "fast-import", "--quiet"], stdin=subprocess.PIPE, env=env)
    stream(objects, p.stdin)
    p.stdin.close()
    if p.wait() != 0:
        sys.exit("git fast-import failed")


if __name__ == "__main__":
    main()
