"""Stand-in ``sbatch``, ``srun``, ``scontrol`` and ``apptainer`` that run a batch script for real.

`install(bin_dir, state_dir)` writes the four executables. They behave like the real tools in
what the templates depend on:

* ``sbatch`` reads ``#SBATCH`` lines (command-line options win), copies the script to a spool
  directory (so the job cannot find files next to its own path), prints ``Submitted batch job N``
  and hands the job to a detached controller process. The controller opens ``--output`` (``%x``,
  ``%j``) relative to the submit directory *before* the script runs; a missing directory fails the
  job without a log, as slurmstepd does. It starts ``bash`` on the script with the job's
  ``SLURM_*`` variables. When the file ``$STANDIN_TIME_LIMIT`` appears it sends ``--signal``
  (``B:`` to the batch shell only, else to every other process of the job): the time limit
  approaching. On ``scontrol requeue`` it kills the job's processes and starts it again with
  ``SLURM_RESTART_COUNT`` raised. ``<state>/job-<id>.json`` says how the job ended.
* ``srun`` starts ``SLURM_NTASKS`` tasks with ``SLURM_PROCID``/``LOCALID``/``NODEID``, forwards
  signals to them and exits with the worst status (``--kill-on-bad-exit`` ends the rest).
* ``scontrol requeue <id>`` asks the controller to requeue; every call is logged with the command
  line of its parent process.
* ``apptainer exec [--nv] [--bind src:dst[:ro]] image cmd...`` checks the image and the bind
  sources, rewrites container paths in the arguments to the bound host paths, and execs the
  command with the container's PATH, which has no Slurm client (as in the real image).
"""

from __future__ import annotations

import sys
from pathlib import Path

COMMON = r"""
import json, os, re, shlex, shutil, signal, subprocess, sys, time
STATE = os.environ["STANDIN_SLURM_STATE"]
VALUED = {"output", "job-name", "nodes", "ntasks-per-node", "gpus-per-node", "cpus-per-task",
          "signal", "time", "mem", "open-mode", "ntasks", "kill-on-bad-exit", "error", "chdir"}

def parse(tokens, stop_at_positional=True):
    opts, i = {}, 0
    while i < len(tokens) and tokens[i].startswith("-"):
        key, eq, value = tokens[i].lstrip("-").partition("=")
        if not eq and key in VALUED - {"kill-on-bad-exit"}:
            i += 1
            value = tokens[i]
        opts[key] = value if (eq or key in VALUED) else True
        i += 1
    return opts, tokens[i:]
"""

SBATCH = r"""
def directives(script):
    tokens = []
    for line in open(script).read().splitlines()[1:]:
        if line.startswith("#SBATCH"):
            tokens += shlex.split(line[len("#SBATCH"):])
        elif line.strip() and not line.startswith("#"):
            break
    return parse(tokens)[0]

def submit(argv):
    cli, rest = parse(argv)
    script, args = rest[0], rest[1:]
    opts = {**directives(script), **cli}
    counter = os.path.join(STATE, "next-job-id")
    job_id = int(open(counter).read()) if os.path.exists(counter) else 4100
    open(counter, "w").write(str(job_id + 1))
    spool = os.path.join(STATE, f"job{job_id}")
    os.makedirs(spool)
    shutil.copy(script, os.path.join(spool, "slurm_script"))
    job = {"id": job_id, "opts": opts, "args": args, "cwd": os.getcwd(), "spool": spool,
           "env": dict(os.environ)}
    open(os.path.join(spool, "job.json"), "w").write(json.dumps(job))
    subprocess.Popen([sys.executable, __file__, "--controller", spool], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"Submitted batch job {job_id}")

def job_env(job, restart):
    o = job["opts"]
    nodes, per_node = int(o.get("nodes", 1)), int(o.get("ntasks-per-node", 1))
    env = dict(job["env"])
    env.update(SLURM_JOB_ID=str(job["id"]), SLURM_JOBID=str(job["id"]),
               SLURM_JOB_NAME=o.get("job-name", "slurm_script"), SLURM_JOB_NODELIST="localhost",
               SLURM_NODELIST="localhost", SLURM_JOB_NUM_NODES=str(nodes), SLURM_NNODES=str(nodes),
               SLURM_NTASKS=str(nodes * per_node), SLURM_NTASKS_PER_NODE=str(per_node),
               SLURM_CPUS_PER_TASK=str(o.get("cpus-per-task", 1)), SLURM_SUBMIT_DIR=job["cwd"],
               SLURM_CLUSTER_NAME="standin")
    if restart:
        env["SLURM_RESTART_COUNT"] = str(restart)
    return env

def session_pids(sid):
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids

def send_signal(spec, shell):
    target, _, rest = spec.rpartition(":") if ":" in spec else ("", "", spec)
    name = rest.split("@")[0]
    signum = int(name) if name.isdigit() else getattr(signal, "SIG" + name.removeprefix("SIG"))
    pids = [shell.pid] if target == "B" else [p for p in session_pids(shell.pid) if p != shell.pid]
    for pid in pids:
        os.kill(pid, signum)

def end_job(shell):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_pids(shell.pid):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        try:
            shell.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            pass

def control(spool):
    job = json.load(open(os.path.join(spool, "job.json")))
    o, name = job["opts"], job["opts"].get("job-name", "slurm_script")
    pattern = o.get("output", "slurm-%j.out").replace("%x", name).replace("%j", str(job["id"]))
    out_path = os.path.join(job["cwd"], pattern)
    request = os.path.join(STATE, f"requeue-{job['id']}")
    trigger = job["env"].get("STANDIN_TIME_LIMIT")
    restart, result = 0, {}
    while True:
        try:
            out = open(out_path, "a" if restart or o.get("open-mode") == "append" else "w")
        except OSError as exc:
            result = {"state": "FAILED", "reason": f"could not open output file {out_path}: {exc}"}
            break
        shell = subprocess.Popen(["bash", os.path.join(spool, "slurm_script"), *job["args"]],
                                 cwd=job["cwd"], env=job_env(job, restart), stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        signalled = False
        while shell.poll() is None and not os.path.exists(request):
            if trigger and not signalled and restart == 0 and os.path.exists(trigger):
                send_signal(o.get("signal", "USR1@60"), shell)
                signalled = True
            time.sleep(0.1)
        if os.path.exists(request):
            end_job(shell)
            os.remove(request)
            restart += 1
            if restart <= 3:
                continue
        result = {"state": "COMPLETED" if shell.returncode == 0 else "FAILED",
                  "exit_code": shell.returncode}
        break
    result.update(job_id=job["id"], restarts=restart, output=out_path)
    open(os.path.join(STATE, f"job-{job['id']}.json"), "w").write(json.dumps(result))

if sys.argv[1:2] == ["--controller"]:
    control(sys.argv[2])
else:
    submit(sys.argv[1:])
"""

SRUN = r"""
opts, cmd = parse(sys.argv[1:])
ntasks = int(opts.get("ntasks", os.environ.get("SLURM_NTASKS", "1")))
per_node = int(os.environ.get("SLURM_NTASKS_PER_NODE", ntasks))
tasks = []
for rank in range(ntasks):
    env = dict(os.environ, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank % per_node),
               SLURM_NODEID=str(rank // per_node), SLURM_STEP_ID="0")
    tasks.append(subprocess.Popen(cmd, env=env))
def forward(signum, frame):
    for task in tasks:
        if task.poll() is None:
            task.send_signal(signum)
for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(signum, forward)
codes = {}
while len(codes) < len(tasks):
    for i, task in enumerate(tasks):
        if i not in codes and task.poll() is not None:
            codes[i] = task.returncode if task.returncode >= 0 else 128 - task.returncode
            if codes[i] != 0 and opts.get("kill-on-bad-exit", "0") != "0":
                forward(signal.SIGTERM, None)
    time.sleep(0.05)
sys.exit(max(codes.values()))
"""

SCONTROL = r"""
parent = open(f"/proc/{os.getppid()}/cmdline", "rb").read().replace(b"\0", b" ").decode()
with open(os.path.join(STATE, "scontrol-calls.jsonl"), "a") as log:
    log.write(json.dumps({"argv": sys.argv[1:], "parent": parent.strip()}) + "\n")
if sys.argv[1:2] != ["requeue"] or len(sys.argv) != 3:
    sys.exit(f"scontrol stand-in: only `scontrol requeue <job id>`, got {sys.argv[1:]}")
open(os.path.join(STATE, f"requeue-{sys.argv[2]}"), "w").close()
"""

APPTAINER = r"""
if sys.argv[1:2] != ["exec"]:
    sys.exit(f"apptainer stand-in: only `apptainer exec`, got {sys.argv[1:2]}")
args, binds = sys.argv[2:], []
while args and args[0].startswith("-"):
    flag = args.pop(0)
    if flag in ("--bind", "-B"):
        src, dst, *mode = args.pop(0).split(":")
        if not os.path.exists(src):
            sys.exit(f"FATAL: container creation failed: mount {src}->{dst} error: no such file")
        binds.append((src, dst))
image, cmd = args[0], args[1:]
if not os.path.isfile(image):
    sys.exit(f"FATAL: could not open image {image}: no such file")
def host_path(arg):
    for src, dst in binds:
        if arg == dst or arg.startswith(dst + "/"):
            return src + arg[len(dst):]
    return arg
container_path = os.pathsep.join([os.path.dirname(sys.executable), "/usr/bin", "/bin"])
if shutil.which("scontrol", path=container_path):
    sys.exit("apptainer stand-in: the container PATH must not reach scontrol")
env = dict(os.environ, PATH=container_path, APPTAINER_CONTAINER=image, APPTAINER_NAME=image)
os.execvpe(cmd[0], [host_path(a) for a in cmd], env)
"""


def install(bin_dir: Path, state_dir: Path) -> None:
    """Write ``sbatch``, ``srun``, ``scontrol`` and ``apptainer`` into ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    for name, body in (
        ("sbatch", SBATCH),
        ("srun", SRUN),
        ("scontrol", SCONTROL),
        ("apptainer", APPTAINER),
    ):
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{COMMON}\n{body}")
        path.chmod(0o755)
