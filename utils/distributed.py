"""Data-parallel training under torchrun (DistributedDataParallel), the single-process path
untouched.

    torchrun --nproc_per_node=N main.py --config X.yml            # one node, N processes
    torchrun --nnodes=M --nproc_per_node=N --node_rank=R \
             --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT main.py --config X.yml

How the pieces fit:
  * torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) switches it on; a world of one
    process is the ordinary single-process run.
  * The config's `batch_size` is per process unless `batch_size_is_global`; the resolved config
    holds the global batch (batch_size × world size), so the run directory, its hash and
    config.yaml are those of a single-process run with that batch.
  * Every rank draws the same seeded order and augmentation of each global batch and trains on
    its contiguous slice of it; the loss of a slice is weighted by its share of the global
    batch, so DDP's gradient average equals the single-process gradient of the global batch.
    Evaluation splits val/test into contiguous shards and sums the counts over the ranks.
  * Rank 0 alone writes the run directory.  The other ranks run the same algorithm on a
    private copy of it in a temporary folder (the files an algorithm reads back: levels,
    rewind point, ...), removed when the run ends; they print nothing.
  * Every phase wraps the model in DDP, which broadcasts rank 0's parameters and buffers
    (masks, scores, BatchNorm statistics) to every rank; before that broadcast the masks each
    rank computed on its own are compared, and at the end all masks and weights are compared:
    summary.json records `masks_agree` and `weights_agree`.
"""
from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import tempfile
from dataclasses import dataclass

import torch

from utils.errors import ConfigError

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a torchrun launch."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int

    @property
    def nodes(self) -> int:
        return max(1, self.world_size // max(1, self.local_world_size))


def from_env(environ=None) -> DistEnv | None:
    """The torchrun launch this process belongs to, or None (not launched by torchrun, or a
    world of one process: the ordinary single-process run)."""
    env = os.environ if environ is None else environ
    if not all(k in env for k in TORCHRUN_VARS):
        return None
    try:
        world = int(env["WORLD_SIZE"])
        dist_env = DistEnv(rank=int(env["RANK"]), world_size=world,
                           local_rank=int(env["LOCAL_RANK"]),
                           local_world_size=int(env.get("LOCAL_WORLD_SIZE", world)),
                           node_rank=int(env.get("GROUP_RANK", 0)))
    except ValueError:
        raise ConfigError("environment: RANK / WORLD_SIZE / LOCAL_RANK must be integers "
                          "(set by torchrun)") from None
    return dist_env if world > 1 else None


def torchrun_command(argv: list[str], nproc: int | str) -> str:
    """The torchrun command line that runs `main.py argv` with `nproc` processes per node."""
    return f"torchrun --nproc_per_node={nproc} main.py {shlex.join(argv)}".rstrip()


def configure(cfg, dist_env: DistEnv | None, argv: list[str]):
    """Check the distributed options against how the process was launched and return the
    config with the global batch size.  Raises ConfigError naming the option."""
    if dist_env is None:
        gpus = torch.cuda.device_count() if cfg.device != "cpu" else 0
        if cfg.multiprocessing_distributed and gpus > 1:
            raise ConfigError(f"{cfg.where('multiprocessing_distributed')}: one process per "
                              f"GPU is started by torchrun: {torchrun_command(argv, gpus)}")
        if cfg.world_size not in (-1, 1):
            raise ConfigError(f"{cfg.where('world_size')}: {cfg.world_size} nodes are "
                              f"started by torchrun on each node: torchrun "
                              f"--nnodes={cfg.world_size} --nproc_per_node=GPUS_PER_NODE "
                              f"--node_rank=R --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT "
                              f"main.py {shlex.join(argv)}")
        if cfg.rank not in (-1, 0):
            raise ConfigError(f"{cfg.where('rank')}: a node rank needs a multi-node torchrun "
                              f"launch (torchrun --node_rank=R ...); got {cfg.rank} without "
                              f"torchrun")
        return cfg
    if cfg.data_subset == "prac":
        raise ConfigError(f"{cfg.where('data_subset')}: prac counts per-example statistics "
                          f"in one process; launch it without torchrun")
    if cfg.world_size != -1 and cfg.world_size != dist_env.nodes:
        raise ConfigError(f"{cfg.where('world_size')} (upstream: number of nodes) is "
                          f"{cfg.world_size} but torchrun started {dist_env.nodes} node(s); "
                          f"drop the key")
    if cfg.rank != -1 and cfg.rank != dist_env.node_rank:
        raise ConfigError(f"{cfg.where('rank')} (upstream: node rank) is {cfg.rank} but "
                          f"torchrun says this is node {dist_env.node_rank}; drop the key")
    world = dist_env.world_size
    if cfg.batch_size_is_global:
        if cfg.batch_size % world:
            raise ConfigError(f"{cfg.where('batch_size')}: the global batch {cfg.batch_size} "
                              f"(batch_size_is_global) must be a multiple of the {world} "
                              f"processes")
        total = cfg.batch_size
    else:
        total = cfg.batch_size * world
    return cfg.replace(batch_size=total, batch_size_is_global=True)


def backend_for(cfg, device: torch.device) -> str:
    """nccl on CUDA, gloo on CPU (`dist_backend: auto`), or the backend asked for."""
    backend = cfg.dist_backend
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError(f"{cfg.where('dist_backend')}: nccl needs CUDA devices; this run is "
                          f"on {device} (use gloo or auto)")
    return backend


def device_for(cfg, dist_env: DistEnv) -> torch.device:
    """cuda:LOCAL_RANK when the run is on CUDA, else cpu."""
    from utils.device import select_device

    device = select_device(cfg.replace(gpu=dist_env.local_rank))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def init(cfg, dist_env: DistEnv, device: torch.device) -> str:
    """Join the process group (env:// rendezvous set up by torchrun); returns the backend."""
    import torch.distributed as dist

    backend = backend_for(cfg, device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return backend


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def gather(obj) -> list:
    """Every rank's `obj`, in rank order (a collective: all ranks must call it)."""
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over the ranks in place (float64 recommended for counts)."""
    import torch.distributed as dist

    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def is_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def shard_loaders(loaders, dist_env: DistEnv, dataset: str) -> None:
    """Give each rank its slice of every training batch and its shard of val/test
    (`train_eval`, used by analyses that must see the same data everywhere, stays whole)."""
    for part in (loaders.train, loaders.val, loaders.test):
        if not hasattr(part, "shard"):
            raise ConfigError(f"key 'dataset': {dataset} has no sharded loader yet; run it "
                              f"in one process (without torchrun)")
        part.shard(dist_env.rank, dist_env.world_size)


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous slice [lo, hi) of n items that `rank` of `world` takes."""
    return n * rank // world, n * (rank + 1) // world


def parallel(model: torch.nn.Module, device: torch.device):
    """`model` wrapped in DistributedDataParallel when a process group is active (this
    broadcasts rank 0's parameters and buffers), else `model` itself."""
    if not is_active() or not any(p.requires_grad for p in model.parameters()):
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=True)


def _digest(tensors) -> str:
    h = hashlib.sha256()
    for name, t in tensors:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def mask_digest(model: torch.nn.Module) -> str:
    """A hash of every mask buffer (exact: equal hashes ⇔ equal masks)."""
    return _digest((n, b) for n, b in model.named_buffers() if n.endswith("mask"))


def state_digest(model: torch.nn.Module) -> str:
    """A hash of all parameters and buffers."""
    return _digest(model.state_dict().items())


def masks_agree(model: torch.nn.Module) -> bool:
    """Whether every rank holds the same masks (a collective)."""
    return len(set(gather(mask_digest(model)))) == 1


def weights_agree(model: torch.nn.Module) -> bool:
    """Whether every rank holds the same parameters and buffers (a collective)."""
    return len(set(gather(state_digest(model)))) == 1


def private_copy(run_dir: str, rank: int) -> tuple[str, str]:
    """A private copy of `run_dir` for a rank other than 0 (its checkpoints, when resuming),
    in a new temporary folder; returns (the copy, the folder to remove at the end)."""
    root = tempfile.mkdtemp(prefix=f"lth-rank{rank}-")
    target = os.path.join(root, os.path.basename(os.path.normpath(run_dir)) or "run")
    if os.path.isdir(run_dir):
        shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns(
            "events.out.tfevents.*", "log.txt", ".lock", ".*.tmp"))
    else:
        os.makedirs(target)
    return target, root
