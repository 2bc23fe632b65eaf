"""bench/RESULTS.md: each benchmark owns one section between <!-- key --> markers."""
from pathlib import Path


def write_section(path: Path, key: str, body: str):
    """Replace the section between <!-- key --> markers (append if absent), atomically."""
    text = path.read_text() if path.exists() else "# cvene benchmark results\n"
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# Ranks benchmarks: mpirun on one machine (shared-memory transport), every process on one thread.
MPIRUN = ["mpirun", "--oversubscribe", "--mca", "btl", "self,vader", "--mca", "btl_vader_single_copy_mechanism", "none"]


def ranks_env():
    """One OpenMP thread per process; OpenMPI allowed to run as root (CI)."""
    import os
    return dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def cpu_name():
    """The CPU's model name (/proc/cpuinfo), or the machine type."""
    import platform
    try:
        return next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
                    platform.machine())
    except OSError:
        return platform.machine()


def run_timed(cmd, env):
    """Run cmd; (wall-clock seconds, its stdout); exits with its stderr's tail when it fails."""
    import subprocess, sys, time
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return wall, r.stdout
