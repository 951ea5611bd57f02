#!/usr/bin/env bash
# Runs $PETRELD_BIN with the given arguments and stops it (SIGTERM, so it
# prints its final stats) when this script's parent goes away.
# scripts/bench-vhost.sh passes it as PETRELD to peer-bench.sh, which starts
# the SUT through a shell function in the background and later kills that
# subshell's PID only: without this, petreld would keep polling its core.
parent=$PPID
"${PETRELD_BIN:?}" "$@" &
child=$!
trap 'kill -TERM $child 2>/dev/null' TERM INT
while kill -0 "$child" 2>/dev/null; do
    if [[ $(ps -o ppid= -p $$ | tr -d ' ') != "$parent" ]] || ! kill -0 "$parent" 2>/dev/null; then
        kill -TERM "$child" 2>/dev/null
        break
    fi
    sleep 0.2
done
wait "$child"
