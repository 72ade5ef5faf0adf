#!/usr/bin/env python3
"""Runs a command and writes the peak of the PSS summed over its whole process tree, in kB, to a file.

Usage: scripts/bench-pss.py OUT_FILE CMD [ARGS...]   (exit status: CMD's; standard streams: CMD's)

PSS (proportional set size, /proc/PID/smaps_rollup) charges each page to the processes sharing it in
equal parts, so the sum over a tree counts pages shared after fork() (torch's libraries in nnU-Net's
loader workers, say) once, unlike a sum of RSS. GNU time's %M is the largest single process's peak
RSS, which misses the workers that nnU-Net's trainer, preprocessor and predictor spawn. The tree is
CMD and every descendant found through /proc/PID/task/TID/children; it is sampled every
BENCH_PSS_INTERVAL seconds (default 0.15; in the first 0.15 s at 10, 20, 40, 80 ms, so that a short
command is seen at all), or more sparsely when one sample costs more than a tenth of
that (smaps_rollup walks every page table of a large process), so the sampler takes under 10% of a
core. A peak shorter than the interval can be missed. CMD runs in a process group of its own (signals
to this script are passed on to it); processes of that group that outlive CMD (nnU-Net's loader
workers after its trainer's os._exit) are not counted and are killed once CMD has exited, so that they
disturb no later measurement.
"""
import os
import signal
import subprocess
import sys
import time


def children(pid):
    found = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(child) for child in f.read().split())
    except OSError:  # the process or thread ended while we looked
        pass
    return found


def tree(root):
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children(pid))
    return pids


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):  # ended, or a zombie with nothing mapped
        pass
    return 0


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__.split("\n\n")[1])
    out, command = sys.argv[1], sys.argv[2:]
    interval = float(os.environ.get("BENCH_PSS_INTERVAL", "0.15"))
    try:
        process = subprocess.Popen(command, preexec_fn=os.setpgrp)
    except OSError as e:
        sys.exit(f"bench-pss.py: cannot run {command[0]}: {e}")

    def kill_group(signum, _frame=None):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, kill_group)
    peak, wait = 0, min(0.01, interval)
    while process.poll() is None:
        start = time.monotonic()
        peak = max(peak, sum(pss_kb(pid) for pid in tree(process.pid)))
        cost = time.monotonic() - start
        try:
            process.wait(timeout=max(wait, 10 * cost))
        except subprocess.TimeoutExpired:
            wait = min(2 * wait, interval)
    kill_group(signal.SIGKILL)
    with open(out, "w") as f:
        f.write(f"{peak}\n")
    sys.exit(process.returncode if process.returncode >= 0 else 128 - process.returncode)


if __name__ == "__main__":
    main()
