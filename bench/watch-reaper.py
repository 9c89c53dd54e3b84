#!/usr/bin/env python3
# bench/watch.ts runs under this wrapper to count what containerd's shims cost. A runc-v2 shim daemonizes (the
# `shim start` process that containerd spawned exits at once), so the running shim is an orphan: the kernel hands it
# to the nearest "child subreaper" ancestor, else to pid 1, and its CPU never shows in containerd's cutime/cstime.
# This wrapper makes itself that subreaper (prctl PR_SET_CHILD_SUBREAPER), runs the bench as its child, and for every
# orphan it reaps reads /proc/<pid>/stat while the orphan is still a zombie (waitid with WNOWAIT), so each shim's own
# utime+stime is recorded exactly, including the CPU it spent exiting. runc and the container's processes are reaped
# by the shim itself (it is their subreaper): they are in the shim's cutime/cstime, logged but not the shim's own.
#
# Usage: watch-reaper.py LOGFILE COMMAND [ARGS...]; one line per reaped orphan:
#   <monotonic seconds> <pid> <comm> <utime ticks> <stime ticks> <cutime ticks> <cstime ticks>
import ctypes
import os
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def main() -> int:
    log_path, argv = sys.argv[1], sys.argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("watch-reaper: prctl(PR_SET_CHILD_SUBREAPER) failed", file=sys.stderr)
        return 1
    log = open(log_path, "a", buffering=1)
    child = os.fork()
    if child == 0:
        os.execvp(argv[0], argv)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, _f: os.kill(child, s))
    status = 1
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if info is None:
            continue
        pid = info.si_pid
        if pid != child:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
                comm = stat[stat.index("(") + 1 : stat.rindex(")")].replace(" ", "_")
                fields = stat[stat.rindex(")") + 2 :].split(" ")
                # fields[11..14] = utime stime cutime cstime (stat fields 14..17)
                log.write(f"{time.monotonic():.3f} {pid} {comm} {fields[11]} {fields[12]} {fields[13]} {fields[14]}\n")
            except (OSError, ValueError, IndexError):
                pass
        _, st = os.waitpid(pid, 0)
        if pid == child:
            status = os.waitstatus_to_exitcode(st)
            if status < 0:
                status = 128 - status
            break
    return status


if __name__ == "__main__":
    sys.exit(main())
