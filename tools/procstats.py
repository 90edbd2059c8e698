"""CPU and resident memory of the processes a benchmark runs: the driver (ingest threads), camera actors,
Serve replicas, Ray's own, the broker and Valkey. One owner for ``bench pipeline`` and ``bench soak``."""

from __future__ import annotations

import os

__all__ = ["ProcessSampler", "own_processes", "process_group"]


def process_group(pid: int, name: str, cmdline: str) -> str | None:
    """The group a process belongs to, or None for one no benchmark follows."""
    if pid == os.getpid():
        return "driver"
    if "CameraActor" in cmdline or name.startswith("ray::CameraActor"):
        return "camera_actor"
    if "ServeReplica" in cmdline or "ProxyActor" in cmdline or "ServeController" in cmdline or name.startswith(
            ("ray::ServeReplica", "ray::ProxyActor", "ray::ServeController")):
        return "serve"
    if "tansu" in cmdline:
        return "broker"
    if "valkey" in name or "valkey-server" in cmdline:
        return "valkey"
    if name in ("raylet", "gcs_server") or "ray/dashboard" in cmdline or "log_monitor" in cmdline:
        return "ray_system"
    return None


def own_processes() -> list:
    """This process and its descendants (``psutil.Process``): the Ray, broker and Valkey a benchmark started,
    not another one on the same machine (a demo, a second benchmark, a test run beside it)."""
    import psutil

    me = psutil.Process()
    return [me, *me.children(recursive=True)]


class ProcessSampler:
    """Snapshots of CPU seconds and RSS per process; :meth:`since` gives cores used and RSS by group."""

    def snapshot(self) -> dict[int, tuple[str, float, float]]:
        """``{pid: (group, cpu seconds, rss MiB)}`` of the processes of interest among :func:`own_processes`."""
        import psutil

        out = {}
        for p in own_processes():
            try:
                with p.oneshot():
                    group = process_group(p.pid, p.name() or "", " ".join(p.cmdline() or []))
                    if group is None:
                        continue
                    t = p.cpu_times()
                    out[p.pid] = (group, t.user + t.system, p.memory_info().rss / 2**20)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, TypeError):
                continue
        return out

    @staticmethod
    def since(before: dict, after: dict, seconds: float) -> dict[str, dict]:
        """By group: processes, cores used between the snapshots (CPU seconds / wall seconds), RSS (MiB) now,
        and per process (mean)."""
        groups: dict[str, dict] = {}
        for pid, (group, cpu, rss) in after.items():
            g = groups.setdefault(group, {"processes": 0, "cpu_cores": 0.0, "rss_mib": 0.0})
            g["processes"] += 1
            g["cpu_cores"] += (cpu - before[pid][1]) / seconds if pid in before else 0.0
            g["rss_mib"] += rss
        for g in groups.values():
            g["cpu_cores_per_process"] = g["cpu_cores"] / g["processes"]
            g["rss_mib_per_process"] = g["rss_mib"] / g["processes"]
        return groups
