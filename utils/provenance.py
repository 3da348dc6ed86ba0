"""Where and with what a run ran: code version, machine, library versions, device, threads.

Recorded in summary.json (`provenance`) and at the top of log.txt, because these change
results: a different thread count changes the order of floating-point sums (the digits IMP
quick start gives different accuracies with 1 and 2 intra-op threads).
"""
from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=1)
def git_state() -> dict:
    """{"git_commit": sha or None, "git_dirty": bool or None} of the project checkout."""
    def git(*args) -> str | None:
        try:
            out = subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"git_commit": None, "git_dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def device_name(device) -> str:
    """The accelerator's name (CUDA), else the CPU's model name where the OS says it."""
    import torch

    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device) -> dict:
    """The record summary.json keeps under `provenance`."""
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        **git_state(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "device": str(device),
        "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": os.cpu_count(),
    }


def provenance_line(record: dict) -> str:
    """One log line: commit, host, versions, device and threads."""
    commit = record["git_commit"][:10] + ("+dirty" if record["git_dirty"] else "") \
        if record["git_commit"] else "no git checkout"
    cuda = f" (CUDA {record['cuda']})" if record["cuda"] else ""
    return (f"code {commit} | host {record['host']} | torch {record['torch']}{cuda} | "
            f"{record['device']}: {record['device_name']} | threads "
            f"{record['torch_threads']} intra-op / {record['torch_interop_threads']} inter-op")
