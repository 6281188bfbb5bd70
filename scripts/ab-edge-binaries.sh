#!/usr/bin/env bash
# A/B of two `tally` builds in the edge's cases (issue 22's CPU targets): copy them to
# /tmp/tally-before and /tmp/tally-after (or name them with AB_BEFORE and AB_AFTER); each round
# runs both, the order alternating from round to round, each on fresh servers (a `tally run`
# node with fsync and its poll reserved, `expected_votes` 10M, and a `tally edge` in front)
# after a 5,000-vote warm-up, with the same client (AB_CLIENT, default the before build's
# `tally load`, one thread). Per run: votes/s, p50/p99, the edge's and the node's CPU µs per
# vote (utime + stime over the run ÷ votes), mean votes per batch and votes per fsync; then the
# medians and the median of the after/before ratios within a round.
# Cases (AB_CASES, default "c64 flood"):
#   c64     one client of 64 connections, closed loop (bench-edge.sh's `edge` case);
#   half    the same, open loop at AB_RATE votes/s (10000);
#   flood   AB_FLOOD ("4x256": P clients of C connections) at once, batches of up to 1,000
#           votes and a 5 ms linger (AB_FLOOD_EDGE_ARGS), AB_FLOOD_LOAD_ARGS added to each
#           client (e.g. "--rate 6000": open loop);
#   flood2  the flood split over two edges in front of the one node;
#   hello   node/examples/hello_server (AB_HELLO) open loop at AB_RATE and flat out, once
#           per round (the same for both builds): the HTTP floor at the same rate.
# AB_NODE: serve the node from this build for both (only the edge differs). AB_EDGE_ARGS,
# AB_EDGE_ARGS_AFTER, AB_FLOOD_EDGE_ARGS_AFTER: edge flags (the _AFTER ones for the after
# run only: the same build with other settings, e.g. "--batch-interval-ms 10").
# AB_ROUNDS (3), AB_SECONDS (6), AB_OUT (a new directory under /tmp: every run's rows).
# Only 127.0.0.1 ports 18281-18284 are contacted; every run is bounded in time.
set -u
BEFORE=${AB_BEFORE:-/tmp/tally-before}; AFTER=${AB_AFTER:-/tmp/tally-after}
CLIENT=${AB_CLIENT:-$BEFORE}; HELLO_BIN=${AB_HELLO:-target/release/examples/hello_server}
ROUNDS=${AB_ROUNDS:-3}; SECS=${AB_SECONDS:-6}; CASES=${AB_CASES:-"c64 flood"}
RATE=${AB_RATE:-10000}; FLOOD=${AB_FLOOD:-4x256}
EDGE_ARGS=${AB_EDGE_ARGS:-}; FLOOD_EDGE_ARGS=${AB_FLOOD_EDGE_ARGS:---batch-votes-max 1000 --linger-ms 5}
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/local-server.sh
. scripts/lib/local-server.sh
N=127.0.0.1:18281; E=127.0.0.1:18283; H=127.0.0.1:18282
OUT=${AB_OUT:-$(mktemp -d /tmp/ab-edge-XXXX)}; mkdir -p $OUT; RES=$OUT/rows; : > $RES
echo "ab-edge-binaries: out $OUT load $(cut -d' ' -f1-3 /proc/loadavg)"
node_up() { # BIN DIR
  printf 'listen = "%s"\ndata_dir = "%s"\n[[polls]]\nid = "superbowl"\noptions = ["green", "blue"]\nopen = true\nexpected_votes = 10000000\n' "$N" "$2/data" >"$2/node.toml"
  require_free_port ab $N
  RUST_LOG=warn ${AB_NODE:-$1} run --config $2/node.toml >$2/node.log 2>&1 & NPID=$!
  wait_ready $NPID 18281
}
edge_up() { # BIN DIR ARGS...
  local bin=$1 dir=$2; shift 2
  require_free_port ab $E
  RUST_LOG=warn $bin edge --listen $E --upstream http://$N "$@" >>$dir/edge.log 2>&1 & EPID=$!
  wait_ready $EPID 18283
}
metric() { curl -sf "http://$1/metrics" | awk -v m="$2" '$1==m {printf "%d\n", $2; f=1} END {if(!f) print 0}'; }
row() { # round bin case report eticks nticks batchvotes fsyncs
  python3 - "$@" "$(getconf CLK_TCK)" <<'PY' | tee -a $RES
import json, sys
rnd, b, case, rep, et, nt, bv, fs, tick = sys.argv[1:10]
r = json.load(open(rep)); v = max(1, r["votes_sent"]); tick = int(tick)
pv = lambda t: "%.2f" % (int(t) / tick * 1e6 / v) if t != "-" else "-"
print(rnd, b, case, round(r["votes_per_s"]), "p50=%.2f" % (r["latency"]["p50_us"]/1000), "p99=%.2f" % (r["latency"]["p99_us"]/1000),
      "edge=" + pv(et), "node=" + pv(nt), "batch=" + bv, "vpf=" + fs)
PY
}
load1() { # target report conns extra...
  local t=$1 rep=$2 c=$3; shift 3
  $CLIENT load --target http://$t --no-progress --check off --options green,blue --threads 1 --connections $c --duration ${SECS}s --json-report $rep "$@" >/dev/null 2>&1
}
for round in $(seq $ROUNDS); do
  order="before after"; [ $((round % 2)) = 0 ] && order="after before"
  for case in $CASES; do
    for b in $order; do
      [ $b = before ] && bin=$BEFORE || bin=$AFTER
      d=$(mktemp -d $OUT/r-XXXX)
      case $case in
        hello)
          [ $b = after ] && continue
          require_free_port ab $H
          $HELLO_BIN $H >/dev/null 2>&1 & hp=$!; wait_for_server ab $hp $H; warm_up $CLIENT $H
          h0=$(cpu_ticks $hp); load1 $H $d/r.json 64 --rate $RATE; h1=$(cpu_ticks $hp)
          row $round - hello@$RATE $d/r.json $((h1-h0)) - - -
          h0=$(cpu_ticks $hp); load1 $H $d/r2.json 64; h1=$(cpu_ticks $hp)
          row $round - hello-max $d/r2.json $((h1-h0)) - - -
          kill $hp; wait $hp 2>/dev/null ;;
        direct)
          node_up $bin $d; warm_up $CLIENT $N
          n0=$(cpu_ticks $NPID); f0=$(metric $N tally_wal_fsync_duration_seconds_count)
          load1 $N $d/r.json 64 --rate $RATE; n1=$(cpu_ticks $NPID); f1=$(metric $N tally_wal_fsync_duration_seconds_count)
          row $round $b direct@$RATE $d/r.json - $((n1-n0)) - $(python3 -c "import json;print('%.0f'%(json.load(open('$d/r.json'))['votes_sent']/max(1,$f1-$f0)))")
          kill $NPID; wait $NPID 2>/dev/null ;;
        flood2)
          node_up $bin $d
          E2=127.0.0.1:18284
          edge_up $bin $d $FLOOD_EDGE_ARGS; EP1=$EPID
          require_free_port ab $E2
          RUST_LOG=warn $bin edge --listen $E2 --upstream http://$N $FLOOD_EDGE_ARGS >>$d/edge2.log 2>&1 & EP2=$!
          wait_ready $EP2 18284
          warm_up $CLIENT $E; warm_up $CLIENT $E2
          e0=$(( $(cpu_ticks $EP1) + $(cpu_ticks $EP2) )); n0=$(cpu_ticks $NPID); f0=$(metric $N tally_wal_fsync_duration_seconds_count)
          s0=$(( $(metric $E tally_edge_batch_votes_sum) + $(metric $E2 tally_edge_batch_votes_sum) )); k0=$(( $(metric $E tally_edge_batch_votes_count) + $(metric $E2 tally_edge_batch_votes_count) ))
          p=${FLOOD%x*}; c=${FLOOD#*x}; ls=()
          # shellcheck disable=SC2086 # AB_FLOOD_LOAD_ARGS is a list of flags
          for i in $(seq $p); do t=$E; [ $((i % 2)) = 0 ] && t=$E2; load1 $t $d/l$i.json $c ${AB_FLOOD_LOAD_ARGS:-} & ls+=($!); done; wait "${ls[@]}"
          python3 - $d $p <<'PY'
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
rs = [json.load(open(f"{d}/l{i}.json")) for i in range(1, n + 1)]
json.dump({"votes_sent": sum(r["votes_sent"] for r in rs), "votes_per_s": sum(r["votes_per_s"] for r in rs),
  "latency": {k: max(r["latency"][k] for r in rs) for k in ("p50_us", "p99_us")}}, open(f"{d}/r.json", "w"))
PY
          e1=$(( $(cpu_ticks $EP1) + $(cpu_ticks $EP2) )); n1=$(cpu_ticks $NPID); f1=$(metric $N tally_wal_fsync_duration_seconds_count)
          s1=$(( $(metric $E tally_edge_batch_votes_sum) + $(metric $E2 tally_edge_batch_votes_sum) )); k1=$(( $(metric $E tally_edge_batch_votes_count) + $(metric $E2 tally_edge_batch_votes_count) ))
          bv=$(python3 -c "print('%.1f'%(($s1-$s0)/max(1,$k1-$k0)))")
          vpf=$(python3 -c "import json;print('%.0f'%(json.load(open('$d/r.json'))['votes_sent']/max(1,$f1-$f0)))")
          row $round $b flood2e$FLOOD $d/r.json $((e1-e0)) $((n1-n0)) $bv $vpf
          kill $EP1 $EP2 $NPID; wait $EP1 $EP2 $NPID 2>/dev/null ;;
        c64|half|flood)
          node_up $bin $d
          fa=$FLOOD_EDGE_ARGS; ea=$EDGE_ARGS
          [ $b = after ] && fa=${AB_FLOOD_EDGE_ARGS_AFTER:-$fa} && ea=${AB_EDGE_ARGS_AFTER:-$ea}
          if [ $case = flood ]; then edge_up $bin $d $fa; else edge_up $bin $d $ea; fi
          warm_up $CLIENT $E
          e0=$(cpu_ticks $EPID); n0=$(cpu_ticks $NPID); f0=$(metric $N tally_wal_fsync_duration_seconds_count)
          s0=$(metric $E tally_edge_batch_votes_sum); k0=$(metric $E tally_edge_batch_votes_count)
          if [ $case = c64 ]; then load1 $E $d/r.json 64
          elif [ $case = half ]; then load1 $E $d/r.json 64 --rate $RATE
          else
            p=${FLOOD%x*}; c=${FLOOD#*x}; ls=()
            # shellcheck disable=SC2086 # AB_FLOOD_LOAD_ARGS is a list of flags
            for i in $(seq $p); do load1 $E $d/l$i.json $c ${AB_FLOOD_LOAD_ARGS:-} & ls+=($!); done; wait "${ls[@]}"
            python3 - $d $p <<'PY'
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
rs = [json.load(open(f"{d}/l{i}.json")) for i in range(1, n + 1)]
json.dump({"votes_sent": sum(r["votes_sent"] for r in rs), "votes_per_s": sum(r["votes_per_s"] for r in rs),
  "latency": {k: max(r["latency"][k] for r in rs) for k in ("p50_us", "p99_us")}}, open(f"{d}/r.json", "w"))
PY
          fi
          e1=$(cpu_ticks $EPID); n1=$(cpu_ticks $NPID); f1=$(metric $N tally_wal_fsync_duration_seconds_count)
          s1=$(metric $E tally_edge_batch_votes_sum); k1=$(metric $E tally_edge_batch_votes_count)
          bv=$(python3 -c "print('%.1f'%(($s1-$s0)/max(1,$k1-$k0)))")
          vpf=$(python3 -c "import json;print('%.0f'%(json.load(open('$d/r.json'))['votes_sent']/max(1,$f1-$f0)))")
          cn=$case; [ $case = half ] && cn=half@$RATE; [ $case = flood ] && cn=flood$FLOOD
          row $round $b $cn $d/r.json $((e1-e0)) $((n1-n0)) $bv $vpf
          kill $EPID $NPID; wait $EPID $NPID 2>/dev/null ;;
      esac
      rm -rf $d
    done
  done
done
echo "ab-edge-binaries: load after $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - $RES <<'PY'
import statistics, sys, collections
rows = [l.split() for l in open(sys.argv[1])]
def v(x):
    x = x.split("=")[-1]
    try: return float(x)
    except ValueError: return None
cols = {3: "votes/s", 4: "p50", 5: "p99", 6: "edge us", 7: "node us", 8: "batch", 9: "v/fsync"}
for case in dict.fromkeys(r[2] for r in rows):
    for b in ("-", "before", "after"):
        sel = [r for r in rows if r[2] == case and r[1] == b]
        if not sel: continue
        print(f"{case:16} {b:6}", "  ".join(f"{n}={statistics.median(vals):.2f}" for i, n in cols.items()
              if (vals := [v(r[i]) for r in sel if v(r[i]) is not None])))
    rat = []
    for i, n in cols.items():
        pr = [v(a[i]) / v(c[i]) for a in rows for c in rows if a[2] == c[2] == case and a[0] == c[0]
              and a[1] == "after" and c[1] == "before" and v(a[i]) and v(c[i])]
        if pr: rat.append(f"{n}={statistics.median(pr):.2f}x")
    if rat: print(f"{case:16} after/before", "  ".join(rat))
PY
