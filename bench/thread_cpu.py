"""CPU time of a server's threads while a command (a load) runs: where a process spends its cores.

usage: thread_cpu.py PID -- COMMAND ...
Prints the command's output, then each thread's CPU seconds over the command (user + system, from
/proc/PID/task/*/stat); the main thread (the event loop, for mlx-router) is marked. Linux only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def thread_cpu(pid: int) -> dict[int, float]:
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def main() -> None:
    pid = int(sys.argv[1])
    cmd = sys.argv[sys.argv.index("--") + 1 :]
    before, t0 = thread_cpu(pid), time.monotonic()
    print(subprocess.run(cmd, capture_output=True, text=True).stdout.strip(), flush=True)
    after, wall = thread_cpu(pid), time.monotonic() - t0
    print(f"wall {wall:.2f} s")
    for tid, cpu in sorted(after.items(), key=lambda kv: before.get(kv[0], 0.0) - kv[1]):
        used = cpu - before.get(tid, 0.0)
        if used >= 0.05:
            print(f"  thread {tid}{' (main)' if tid == pid else ''}: {used:.2f} s CPU")


if __name__ == "__main__":
    main()
