"""Ray for ``--ray``: which cluster to join (or start), how many workers it can hold, and
the one-line errors for bad input (Ray missing, an unreachable address, more GPU workers
than GPUs, ``workers`` below 1).

The workers themselves are ``replicas.ModelPool`` actors, one model replica each; an axis
run's are ``shard_workers.ShardWorker`` actors, which hold the judge too (docs/scale.md).

Ray is an optional extra (``pip install 'personaspace[ray]'``): nothing here imports it
until a run asks for it.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from personaspace.errors import PersonaspaceError
from personaspace.models.device import DEVICE_CHOICES, DTYPE_CHOICES

INSTALL_FIX = "install the extra: pip install 'personaspace[ray]'"
CONNECT_TIMEOUT_S = 5.0  # how long an address may take to accept a connection


@dataclass(frozen=True)
class RayOptions:
    """Where and on how many workers a run's work items are computed.

    ``address``: ``"local"`` starts a Ray instance on this machine for the run (and stops it
    after), ``"auto"`` joins the one already running here (``ray start --head``), and
    ``HOST:PORT`` or ``ray://HOST:PORT`` joins a cluster's head. ``workers``: how many model
    replicas (default: one per GPU of the cluster, or one CPU worker where it has none).

    Example:
        >>> RayOptions(workers=2).address
        'local'
        >>> RayOptions(workers=0)
        Traceback (most recent call last):
        personaspace.errors.PersonaspaceError: workers is 0: use 1 or more
    """

    address: str = "local"
    workers: int | None = None
    threads_per_worker: int = 1
    max_attempts: int = 3  # times one item is tried (its workers dying) before the run stops

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise PersonaspaceError(
                f"workers is {self.workers}", fix="use 1 or more", param="workers"
            )
        if self.threads_per_worker < 1:
            raise PersonaspaceError(
                f"threads_per_worker is {self.threads_per_worker}",
                fix="use 1 or more",
                param="threads_per_worker",
            )
        if self.max_attempts < 1:
            raise PersonaspaceError(
                f"max_attempts is {self.max_attempts}", fix="use 1 or more", param="max_attempts"
            )
        if not self.address.strip():
            raise PersonaspaceError(
                "the Ray address is empty", fix="give HOST:PORT, auto, or local", param="ray"
            )


def first_line(err: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none).

    Example:
        >>> first_line(OSError("no model here")), first_line(KeyError())
        ('no model here', 'KeyError')
    """
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it.

    Example:
        >>> import_ray().__name__  # doctest: +SKIP
        'ray'
    """
    try:
        import ray
    except ImportError as err:
        raise PersonaspaceError("Ray is not installed", fix=INSTALL_FIX, param="ray") from err
    return ray


def check_placement_names(device: str, dtype: str) -> None:
    """Refuse a device or dtype no worker could resolve (which one is chosen, and whether
    it exists, is up to each worker's node).

    Example:
        >>> check_placement_names("cuda:1", "auto")
        >>> check_placement_names("tpu", "auto")
        Traceback (most recent call last):
        personaspace.errors.PersonaspaceError: device is 'tpu': use auto, cpu or cuda with Ray
    """
    kind = device.strip().lower().split(":")[0]
    if kind not in DEVICE_CHOICES or kind == "mps":
        raise PersonaspaceError(
            f"device is {device!r}", fix="use auto, cpu or cuda with Ray", param="device"
        )
    if dtype.strip().lower() not in {*DTYPE_CHOICES, "fp32", "bf16", "fp16"}:
        raise PersonaspaceError(
            f"dtype is {dtype!r}", fix="use auto, float32, bfloat16 or float16", param="dtype"
        )


def plan_workers(
    options: RayOptions, device: str, cluster_gpus: float, cluster_cpus: float
) -> tuple[int, bool]:
    """How many workers to start and whether each takes a GPU, for the cluster's resources.

    Example:
        >>> plan_workers(RayOptions(), "auto", cluster_gpus=8, cluster_cpus=96)
        (8, True)
        >>> plan_workers(RayOptions(workers=2), "cpu", cluster_gpus=8, cluster_cpus=96)
        (2, False)
        >>> plan_workers(RayOptions(workers=4), "cuda", cluster_gpus=2, cluster_cpus=96)
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        personaspace.errors.PersonaspaceError: workers is 4 but the Ray cluster has 2 GPUs: ...
    """
    kind = device.strip().lower().split(":")[0]
    gpus, cpus = int(cluster_gpus), int(cluster_cpus)
    if kind == "cuda" or (kind == "auto" and gpus >= 1):
        if gpus < 1:
            raise PersonaspaceError(
                f"device {device} asks for GPU workers but the Ray cluster has no GPU",
                fix="use --device cpu (or auto) for CPU workers, or join a cluster with GPUs",
                param="device",
            )
        count = options.workers or gpus
        if count > gpus:
            raise PersonaspaceError(
                f"workers is {count} but the Ray cluster has {gpus} GPUs",
                fix=f"ask for at most {gpus} (one per GPU), add GPU nodes, or use --device cpu",
                param="workers",
            )
        return count, True
    count = options.workers or 1
    need = count * options.threads_per_worker
    if need > cpus:
        raise PersonaspaceError(
            f"workers is {count} but the Ray cluster has {cpus} CPUs "
            f"({need} needed at {options.threads_per_worker} thread(s) per worker)",
            fix=f"ask for at most {cpus // options.threads_per_worker}, or add nodes",
            param="workers",
        )
    return count, False


def _check_reachable(address: str) -> None:
    """A quick TCP connect to ``HOST:PORT`` (Ray itself would retry for a minute)."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise PersonaspaceError(
            f"the Ray address {address!r} is not HOST:PORT",
            fix="give the head node's HOST:PORT (e.g. 10.0.0.1:6379), ray://HOST:10001, auto "
            "or local",
            param="ray",
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise PersonaspaceError(
            f"the Ray cluster at {address} is unreachable ({err.strerror or err})",
            fix="check the head node's address and port (ray status on the head shows it), "
            "or use --ray alone for a local one",
            param="ray",
        ) from err


@contextmanager
def ray_cluster(options: RayOptions) -> Iterator[dict[str, float]]:
    """Connected to the cluster ``options`` names (or the one this process is connected to
    already, as a test's local instance); yields its total resources (``CPU``, ``GPU``...);
    disconnects after, unless the caller had connected.

    Example:
        >>> with ray_cluster(RayOptions(address="auto")) as resources:  # doctest: +SKIP
        ...     resources["GPU"]
        8.0
    """
    ray = import_ray()
    address = options.address.strip()
    if address not in ("local", "auto"):
        _check_reachable(address)  # even when connected already: a wrong address is an error
    joined = not ray.is_initialized()
    if joined:
        settings: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.ERROR,
        }
        try:
            ray.init(address=address, **settings)
        except ConnectionError as err:
            raise PersonaspaceError(
                f"no Ray cluster to join at {address} ({first_line(err)})",
                fix="start one with `ray start --head`, give its HOST:PORT, or use --ray "
                "alone for a local one",
                param="ray",
            ) from err
        except Exception as err:
            raise PersonaspaceError(
                f"could not connect to Ray at {address} ({first_line(err)})",
                fix="check the address and that this Ray matches the cluster's version",
                param="ray",
            ) from err
    try:
        yield {k: float(v) for k, v in ray.cluster_resources().items()}
    finally:
        if joined:
            ray.shutdown()
