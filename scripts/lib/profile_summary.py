#!/usr/bin/env python3
"""Summarizes `perf script -F comm,tid,ip,sym,dso` output of a node under single votes.

Usage: profile_summary.py PERF_SCRIPT_TEXT [CPU_US_PER_VOTE]

Each sample goes to ONE part: walking its call stack from the leaf towards the root, the
first frame that names a part below decides (generic arguments stripped, so `poll<Observed<…>>`
is just `poll`). Frames that name no part (malloc, memcpy, most kernel functions) are charged
to the nearest caller that does, so "the handler's JSON answer" includes the allocations it
makes. The parts add up to 100%; with the node's CPU µs per vote measured over the same run,
each is also shown in µs per vote. A second list shows the leaf functions (self time) that
take the most samples, and the allocator's and the kernel's share of leaves.
"""
import collections
import re
import sys

# (part, pattern over one frame with generic arguments stripped). Order only breaks ties
# between patterns that match the same frame.
PARTS = [
    ("log: fdatasync", r"sync_data|fdatasync|sync_file_range|ext4_sync_file"),
    ("log: frames, checksums, write", r"wal::log::Wal|encode_frame|crc32c|wal::format|MemoryFile|StorageFile|DirFile"),
    ("log: writer loop, report", r"group_commit::run_writer|group_commit::Group"),
    ("engine: accept vote (tally-core)", r"^tally_core::|accept_local"),
    ("engine: answer durable votes", r"Engine::answer_durable|Engine::on_durable|engine::answer\b"),
    ("engine: hand the group to the log", r"Engine::submit"),
    ("engine: loop, clock, metrics", r"Engine::run|Engine::handle|engine::Engine"),
    ("handler: parse JSON vote, vote ID", r"votes::parse_vote|serde_json::de|VoteIdKey|uuid::"),
    ("handler: ask engine (queue, oneshot)", r"votes::ask|tokio::sync::mpsc|tokio::sync::oneshot"),
    ("handler: read body", r"http::body::TimelyBody|http_body_util|Bytes as axum_core::extract::FromRequest"),
    ("handler: JSON answer, receipt", r"serde_json::ser|VoteResponse|Receipt|ActorId|Json as axum_core::response::IntoResponse|core::fmt|alloc::fmt"),
    ("handler: metrics", r"prometheus_client|count_votes|count_rejections"),
    ("handler: poll lookup, headers, rest", r"http::votes::"),
    ("front: route timer, body limit, log", r"http::front|http::Observe|RouteSeconds|Instant::now|clock_gettime|Instant::elapsed"),
    ("CORS layer", r"tower_http::cors"),
    ("axum: routing, extractors, handler future", r"axum::routing|axum::handler|axum::extract|axum_core|matchit|axum::util"),
    ("tower: service plumbing (boxing, cloning)", r"^<?tower::"),
    ("hyper: parse request head", r"Http1Transaction>::parse|role::parse_headers|httparse"),
    ("hyper: encode response head", r"Http1Transaction>::encode"),
    ("socket write (writev; runs the loopback delivery)", r"writev|poll_write|tcp_sendmsg|sock_write_iter"),
    ("socket read", r"poll_read_from_io|readv|tcp_recvmsg|recvfrom|sock_read_iter"),
    ("hyper: connection state machine", r"^<?hyper::|hyper_util"),
    ("tokio: park (futex or epoll wait)", r"runtime::park|park_condvar|park_timeout|Parker|epoll_wait|mio::poll"),
    ("tokio: wake another thread", r"unpark|Unparker|futex_wake|mio::waker|notify_parked|wake_up_q"),
    ("tokio: scheduler, timers, other", r"^<?tokio::"),
    ("connection accept, stall guard", r"connections::serve|stall_guard"),
]


def strip_generics(frame):
    previous = None
    while previous != frame:
        previous = frame
        frame = re.sub(r"(?<=[\w\]])<[^<>]*>", "", frame)
    return frame


def samples(path):
    comm, frames = None, []
    for line in open(path, errors="replace"):
        if not line.strip():
            continue
        if not line[0].isspace():
            if comm is not None:
                yield comm, frames
            comm, frames = line.split()[0], []
            continue
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            frames.append(parts[1].rsplit(" (", 1)[0])
    if comm is not None:
        yield comm, frames


ALLOC = re.compile(r"^(_int_malloc|_int_free|malloc|cfree|free|realloc|_int_realloc|malloc_consolidate"
                   r"|unlink_chunk|__GI___libc_malloc|__libc_free|tcache_get|tcache_put|sysmalloc|__GI___libc_free)")
KERNEL = re.compile(r"^[a-z_0-9.]+$")


def main():
    path = sys.argv[1]
    per_vote = float(sys.argv[2]) if len(sys.argv) > 2 else None
    parts = [(name, re.compile(p)) for name, p in PARTS]
    cache = {}

    def part_of(frame):
        if frame not in cache:
            bare = strip_generics(frame)
            cache[frame] = next((name for name, p in parts if p.search(bare)), None)
        return cache[frame]

    counts, leaves, threads = collections.Counter(), collections.Counter(), collections.Counter()
    alloc = kernel = total = 0
    for comm, frames in samples(path):
        if not frames:
            continue
        total += 1
        threads[comm] += 1
        part = next((p for p in map(part_of, frames) if p), None)
        if part is None:
            part = "log writer thread, other" if comm == "tally-wal" else "other"
        counts[part] += 1
        leaf = strip_generics(frames[0])
        leaves[leaf[:110]] += 1
        alloc += bool(ALLOC.match(leaf))
        kernel += bool(KERNEL.match(leaf)) and not ALLOC.match(leaf) and not leaf.startswith("__")
    print(f"{total} samples; by thread: "
          + ", ".join(f"{t} {n * 100 / total:.1f}%" for t, n in threads.most_common()))
    print()
    print("| part (each sample charged to the leaf-most frame that names one) | share |"
          + (" µs per vote |" if per_vote else ""))
    print("|---|---:|" + ("---:|" if per_vote else ""))
    for name in [n for n, _ in PARTS] + ["log writer thread, other", "other"]:
        n = counts[name]
        if n:
            print(f"| {name} | {n * 100 / total:.1f}% |"
                  + (f" {per_vote * n / total:.2f} |" if per_vote else ""))
    print()
    print(f"Leaves in the allocator (malloc, free and helpers): {alloc * 100 / total:.1f}% of samples; "
          f"in the kernel: {kernel * 100 / total:.1f}%.")
    print()
    print("Top leaf functions (self time):")
    for leaf, n in leaves.most_common(25):
        print(f"  {n * 100 / total:5.1f}%  {leaf}")


if __name__ == "__main__":
    main()
