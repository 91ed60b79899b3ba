"""The batch script of one attempt on Slurm, and the sbatch options that place it.

The script needs only bash and coreutils on the compute node (no runyard, no Python). It runs
the program in its workspace with exactly the environment a local run gets (`env -i`), in a
session of its own so that a TERM reaches everything it started, and writes the exit record
atomically (temporary file, rename) into the shared run directory, where the server reads it.
Every value is quoted by `shlex.quote`: nothing from a job file or a request is ever shell
code. A restarted (requeued) job appends a line to the log saying where the restart began.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass
from typing import Any

# The exit record's JSON, printed by bash: every value is a number, null or a fixed string.
# `pid` is the Slurm job id: what identifies the attempt's program to the server (its Started).
_RECORD = (
    '{"key":"%s","pid":%s,"exit_code":%s,"signal":%s,"killed_by":%s,"error":%s,'
    '"started_at":%s,"ended_at":%s,"progress_bytes":%s,"restarts":%s}'
)

# A quiet margin above runyard's own timeout and kill grace: --time is only a backstop.
TIME_MARGIN_S = 60.0


@dataclass(frozen=True, slots=True)
class ScriptSpec:
    key: str  # the attempt key (KEY_PATTERN: letters, digits, ':')
    argv: list[str]
    cwd: str
    env: dict[str, str]
    exit_path: str
    progress_path: str
    requeue: bool  # a TERM may be Slurm's preemption: the job comes back, it has not ended


def batch_script(spec: ScriptSpec) -> str:
    q = shlex.quote
    env = " ".join(q(f"{k}={v}") for k, v in sorted(spec.env.items()))
    # When Slurm may requeue the job, a TERM does not end the attempt: the script leaves no
    # exit record then, and the server decides from Slurm's state whether it came back
    # (requeued) or ended (cancelled, timed out: the server writes that record itself).
    on_term = "exit 0" if spec.requeue else ":"
    return f"""#!/bin/bash
# runyard attempt {spec.key}: generated, do not edit
set -u
exit_file={q(spec.exit_path)}
progress_file={q(spec.progress_path)}
restarts="${{SLURM_RESTART_COUNT:-0}}"
started=$(date +%s.%N)
record() {{  # code signal [error]
    by=null
    if [ "$killed" != null ]; then by="\\"$killed\\""; fi
    size=$(stat -c %s "$progress_file" 2>/dev/null || echo null)
    printf '{_RECORD}\\n' {q(spec.key)} "${{SLURM_JOB_ID:-null}}" "$1" "$2" "$by" "${{3:-null}}" \\
        "$started" "$(date +%s.%N)" "$size" "$restarts" > "$exit_file.tmp.$$" \\
        && mv -f "$exit_file.tmp.$$" "$exit_file"
}}
if [ "$restarts" -gt 0 ]; then  # the log says where each restart (requeue) began
    echo "--- runyard: attempt {spec.key} restarted by Slurm (job ${{SLURM_JOB_ID:-?}}," \\
        "start $((restarts + 1))) on $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
fi
child=
termed=
killed=null
trap 'termed=1; [ -n "$child" ] && kill -TERM -- "-$child" 2>/dev/null' TERM
# USR1 is Slurm's warning before --time (sbatch_options): runyard's timeout backstop
trap 'killed=timeout; [ -n "$child" ] && kill -TERM -- "-$child" 2>/dev/null' USR1
if ! cd {q(spec.cwd)}; then record 126 null '"cannot enter the workspace"'; exit 0; fi
if ! PATH={q(spec.env.get("PATH", ""))} command -v {q(spec.argv[0])} >/dev/null; then
    record 127 null {q(json.dumps(f"cannot start {spec.argv[0]!r}: no such command"))}
    exit 0
fi
slurm_env=()  # the allocation's SLURM_* variables: the program may run srun steps in it
for name in ${{!SLURM_@}}; do slurm_env+=("$name=${{!name}}"); done
setsid env -i -- {env} "${{slurm_env[@]}}" {" ".join(q(a) for a in spec.argv)} </dev/null &
child=$!
while :; do
    wait "$child"
    rc=$?
    if [ "$rc" -le 128 ]; then break; fi
    # > 128: a signal ended it, or a trap interrupted the wait while it runs on
    if kill -0 "$child" 2>/dev/null; then continue; fi
    wait "$child"  # gone: bash keeps its status, which the interrupted wait may not have had
    st=$?
    if [ "$st" -ne 127 ]; then rc=$st; fi
    break
done
if [ "$rc" -lt 0 ] || [ "$rc" -gt 255 ]; then
    # bash lost the status (a wait a trap interrupted can answer -1): a program it signalled
    # ended by that signal; of any other nothing is known, so no record (lost, never success)
    if [ -n "$termed" ] || [ "$killed" != null ]; then rc=143; else exit 0; fi
fi
if [ -n "$termed" ] && [ "$killed" = null ]; then {on_term}; fi
if [ "$rc" -gt 128 ] && [ "$rc" -le 192 ]; then
    record null $((rc - 128))
else
    record "$rc" null
fi
exit 0
"""


def sbatch_options(
    *,
    name: str,
    log: str,
    cwd: str,
    slurm: dict[str, Any],
    resources: dict[str, Any],
    timeout_s: float | None,
    kill_grace_s: float,
) -> list[str]:
    """The sbatch command line's options (every one `--name=value`: no shell, no splitting)."""
    opts = [
        "--parsable", f"--job-name={name}", f"--output={log}", "--open-mode=append",
        f"--chdir={cwd}",
        # the batch shell gets sbatch's own (minimal: commands.py) environment; NONE would
        # make Slurm run a login shell on the node first for every job (SLURM_GET_USER_ENV)
        "--export=ALL", "--requeue" if slurm.get("requeue") else "--no-requeue",
        # USR1 to the batch shell before Slurm's own kill at --time: the script stops the
        # program and records a timeout (a TERM would read as a cancel or a preemption)
        f"--signal=B:USR1@{max(1, math.ceil(kill_grace_s))}",
    ]  # fmt: skip
    for field in ("partition", "account", "qos"):
        if slurm.get(field):
            opts.append(f"--{field}={slurm[field]}")
    if resources.get("cpus"):
        opts.append(f"--cpus-per-task={max(1, math.ceil(resources['cpus']))}")
    if resources.get("memory_mb"):
        opts.append(f"--mem={int(resources['memory_mb'])}M")
    if resources.get("gpus"):
        opts.append(f"--gpus={int(resources['gpus'])}")
    if timeout_s is not None:
        minutes = math.ceil((timeout_s + kill_grace_s + TIME_MARGIN_S) / 60)
        opts.append(f"--time={minutes}")
    for option, value in sorted((slurm.get("options") or {}).items()):
        opts.append(f"--{option}={value}" if value != "" else f"--{option}")
    return opts
