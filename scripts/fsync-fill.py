#!/usr/bin/env python3
"""What an fdatasync costs when the write it covers grows the file, against one that lands in
space written beforehand (zeros, or the log's fill) or allocated with posix_fallocate: the
measurement behind the write-ahead log's fill (`Wal::fill_ahead`, BENCHMARKS.md "The log's
fill"). Writes SIZE bytes then fdatasyncs, COUNT times, in a scratch file under DIR (default:
the current directory, which must be on the disk to measure), and prints the median and p99
latency and the process's CPU per sync for each way, twice, alternating.

    python3 scripts/fsync-fill.py [DIR]     # env: FSYNC_SIZES="1200 30000", FSYNC_COUNT=2000
"""
import os
import statistics
import sys
import time


def run(way, count, size, path):
    if os.path.exists(path):
        os.unlink(path)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    total = count * size + (1 << 20)
    if way == "written ahead":
        chunk = b"\0" * (1 << 20)
        for _ in range(total >> 20):
            os.write(fd, chunk)
        os.fsync(fd)
    elif way == "fallocate":
        os.posix_fallocate(fd, 0, total)
        os.fsync(fd)
    payload, offset, times = b"x" * size, 0, []
    before = os.times()
    for _ in range(count):
        started = time.perf_counter()
        os.pwrite(fd, payload, offset)
        offset += size
        os.fdatasync(fd)
        times.append(time.perf_counter() - started)
    after = os.times()
    os.close(fd)
    os.unlink(path)
    times.sort()
    cpu = (after.user + after.system) - (before.user + before.system)
    return statistics.median(times) * 1e6, times[int(len(times) * 0.99)] * 1e6, cpu / count * 1e6


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    path = os.path.join(directory, "fsync-fill.scratch")
    count = int(os.environ.get("FSYNC_COUNT", "2000"))
    sizes = [int(s) for s in os.environ.get("FSYNC_SIZES", "1200 30000").split()]
    print("bytes per sync | way | median µs | p99 µs | CPU µs per sync")
    for size in sizes:
        for _ in range(2):
            for way in ("growing the file", "written ahead", "fallocate"):
                median, p99, cpu = run(way, count if size < 10000 else count // 4, size, path)
                print(f"{size} | {way} | {median:.0f} | {p99:.0f} | {cpu:.0f}")


if __name__ == "__main__":
    main()
