"""The script Slurm runs for every cloudhpc job: it stages in, runs the user's script once,
stages out (also when the script failed), and keeps the user's #SBATCH lines.

"Once": slurmctld saves its state a few seconds after a change, and a job started in the
seconds before a crash comes back as pending; Slurm then launches it again, while or after
its first run goes on; and a job slurmctld forgot entirely may have started on its node
before it was submitted again under a new id (cloudhpc.slurm.jobids explains the id side).
A run holds a lock on its submission's `.cloudhpc/run.lock` (in /shared, whatever the job
id) from its start to its end, and appends its marks to that file (through the locked
descriptor: no file is made per mark): `script RC` when the script ends (before stage-out)
and `rc RC` at the very end. A launch first
takes that lock, so it waits while an earlier run of the submission is alive, however slow
(a lock, not a heartbeat: a run starved of CPU for seconds is still alive); then, finding
the job's exit code, it ends at once with it (the output of the first run is kept: output
is opened in append mode). A run whose node died holds no lock any more (the kernel drops
it with the process; on NFS when the client's lease ends) and left no exit code: the job
runs again, as Slurm's requeue intends, from the script if the script had not ended, else
only its stage-out. A consequence: `scontrol requeue` of a cloudhpc job that completed
does not run it again (submit it again instead)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from cloudhpc.secretfile import write_secret

WRAPPER = "cloudhpc-job.sh"
# exit codes of the wrapper when staging, not the user's script, failed
STAGE_IN_FAILED = 97
STAGE_OUT_FAILED = 98
# seconds a run whose script died of a signal waits for Slurm's signal to the wrapper
SIGNAL_GRACE = 1


# A job whose script ended well but one of whose srun steps failed (an MPI launch that
# could not start its ranks, a rank that crashed) has failed: Slurm alone records it
# COMPLETED when the script's last command succeeds. Steps are read from accounting (the
# job's own, as its user). slurmctld sends steps to slurmdbd a moment after they end: while
# none is recorded yet, or one still shows RUNNING, accounting is asked again for up to 30 s
# (a second or two usually; longer while slurmctld's queue to a restarted slurmdbd drains).
# With accounting off or not answering, the script's exit code stands.
STEPS_OK = r"""steps_ok() {
  [ -n "$SLURM_JOB_ID" ] && command -v sacct >/dev/null || return 0
  local i out rows bad
  for i in $(seq 60); do
    out=$(timeout 10 sacct -n -P -j "$SLURM_JOB_ID" --format=JobID,State,ExitCode \
      2>/dev/null) || return 0
    rows=$(echo "$out" | grep -v -e "^$SLURM_JOB_ID|" -e '\.batch|' -e '\.extern|')
    [ -n "$rows" ] && ! echo "$rows" | grep -q '|RUNNING|' && break
    sleep 0.5
  done
  bad=$(echo "$rows" | grep -E '\|(FAILED|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE)\|' \
    | head -1)
  [ -z "$bad" ] && return 0
  echo "cloudhpc: job step ${bad%%|*} failed (${bad#*|}): the job fails with it" >&2
  return 1
}"""


LAUNCHERS = re.compile(r"\b(srun|mpirun|mpiexec|orterun|prterun)\b")


def launches_steps(script: str) -> bool:
    """Whether a script names a job step launcher: only then are its steps checked (one
    sacct call; a trivial job is not slowed). A program that runs srun itself, unnamed in
    the script, has its steps' failures recorded by Slurm but not made the job's."""
    return LAUNCHERS.search(script) is not None


def directives(script: str) -> list[str]:
    """The #SBATCH lines of the user's script (they must stay in the script Slurm reads)."""
    lines = script.splitlines()
    return [ln for ln in lines[1:] if ln.startswith("#SBATCH")]


def render(script_name: str, script: str, workdir: str, stage: str | None) -> str:
    """STAGE: the staging command (cloudhpc.storage.stage with its arguments) or None."""
    wdir = shlex.quote(workdir)
    run = f"./{shlex.quote(script_name)} \"$@\" 9>&-"  # the lock is the wrapper's alone
    if stage is None:
        first = [f"  {run}", "  rc=$?"]
        last: list[str] = []
    else:
        first = [f"  if {stage} in {wdir} 9>&-; then",
                 "    [ -s .cloudhpc/env ] && . .cloudhpc/env",
                 f"    {run}",
                 "    rc=$?",
                 "  else",
                 f"    rc={STAGE_IN_FAILED}",
                 "  fi"]
        last = [f"{stage} out {wdir} 9>&- || {{ [ $rc = 0 ] && rc={STAGE_OUT_FAILED}; }}"]
    # the script's end is marked before stage-out: a run that dies in stage-out (its node
    # lost) does not run the script again, only what follows it
    body = ['if [ -n "$script_rc" ]; then',
            '  rc=$script_rc',
            '  echo "cloudhpc: the script already ran to its end; finishing what follows" >&2',
            "else",
            *first,
            # a script ended by a signal may have been Slurm ending the job (a requeue, a
            # cancel, a time limit): Slurm signals every process of the job one by one, and
            # under load the wrapper's turn can come a moment after the script is dead. It
            # gets a second to come: then the run ends unmarked (TERM trap) and a requeued
            # launch runs the script again, as Slurm intends
            f'  [ "$rc" -gt 128 ] && {{ sleep {SIGNAL_GRACE} 9>&- & wait $!; }}',
            # a builtin write, no process: the instant between the script's end and this
            # mark (where a lost node makes the script run again) stays well under 1 ms
            '  printf "script %s\\n" "$rc" >&9',
            *(['  if [ "$rc" = 0 ] && ! steps_ok; then',
               '    rc=1; printf "script %s\\n" "$rc" >&9',
               "  fi"] if launches_steps(script) else []),
            "fi",
            *last]
    return "\n".join([
        # sh, not bash: a trivial job's wrapper costs half as much (bash's start alone is
        # ~3 ms of CPU per job, measured with perf stat; bench/throughput.py)
        "#!/bin/sh",
        *directives(script),
        f"# generated by cloudhpc: run {script_name} once"
        + (", with staging" if stage else ""),
        f"cd {wdir} || exit 1",
        # made at submission (jobs/service.py); again here if the user removed it
        "[ -d .cloudhpc ] || mkdir -p .cloudhpc",
        'mark=".cloudhpc/run"  # one per submission, whatever job id Slurm gave it',
        STEPS_OK,
        "# held until this run ends: a later launch of the submission waits here while an",
        "# earlier run is alive (it is released when its holder dies)",
        'exec 9>>"$mark.lock" && flock 9 || exit 1',
        "# Slurm ending this run (TERM, then KILL): no mark, whatever was running",
        "trap 'exit 143' TERM",
        "# the marks of earlier runs (the last of each kind counts); builtins only",
        "script_rc= job_rc=",
        "while read -r what value; do",
        '  case "$what" in script) script_rc=$value ;; rc) job_rc=$value ;; esac',
        'done < "$mark.lock"',
        'if [ -n "$job_rc" ]; then',
        '  echo "cloudhpc: this submission already ran to its end; not running it again" >&2',
        '  exit "$job_rc"',
        "fi",
        *body,
        'printf "rc %s\\n" "$rc" >&9',
        "exit $rc",
        ""])


def write(meta: Path, text: str, gid: int) -> Path:
    """The wrapper in cloudhpc's record of the job (root's, readable by the job's group: the
    job runs it and cannot change it)."""
    path = meta / WRAPPER
    write_secret(path, text, mode=0o750, exclusive=True, gid=gid)
    return path
