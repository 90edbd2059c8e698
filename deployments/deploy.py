"""Deploying the Serve app with a deadline: ``serve.run`` waits for every deployment without one, so a replica
whose resources the cluster never offers (an accelerator node that never joins) would hang ``streamdycoke
run`` forever."""

import threading
import time

__all__ = ["DeployTimeout", "deploy_app"]


class DeployTimeout(TimeoutError):
    """The Serve app was not running within its deadline; the message says what Serve waits for."""


def deploy_app(target, name: str, timeout_s: float, say=print, route_prefix: str = "/") -> None:
    """``serve.run(target)``, given up after ``timeout_s`` with :class:`DeployTimeout` naming each deployment
    that is not healthy and Serve's message about it (e.g. the resources a replica needs and the cluster
    lacks). ``serve.run`` waits for the app without a deadline: it runs in a thread while this one watches
    ``serve.status()``, and is left behind (a daemon) when given up on."""
    from ray import serve

    failed: list[BaseException] = []
    done = threading.Event()

    def deploy() -> None:
        try:
            serve.run(target, name=name, route_prefix=route_prefix)
        except BaseException as exc:  # raised here, in the caller's thread
            failed.append(exc)
        finally:
            done.set()

    threading.Thread(target=deploy, name="serve-run", daemon=True).start()
    deadline, said = time.monotonic() + timeout_s, time.monotonic() + 30.0
    while not done.wait(2.0):
        now = time.monotonic()
        if now > deadline or now > said:
            waiting = _not_running(serve, name)
            if now > deadline:
                raise DeployTimeout(f"the Serve app {name!r} was not running after {timeout_s:.0f} s: "
                                    + ("; ".join(waiting) or "no deployment reported yet"))
            if waiting:
                say("waiting for the Serve app: " + "; ".join(waiting))
            said = now + 30.0
    if failed:
        raise failed[0]


def _not_running(serve, name: str) -> list[str]:
    """``deployment (STATUS): Serve's message`` for each deployment of app ``name`` that is not healthy."""
    try:
        app = serve.status().applications.get(name)
    except Exception as exc:  # the controller is busy or restarting: said, asked again later
        return [f"status unavailable ({type(exc).__name__})"]
    if app is None:
        return []
    status = {d: getattr(st.status, "value", st.status) for d, st in app.deployments.items()}  # the enum's name
    return [f"{d} ({status[d]}): {' '.join((st.message or '').split())[:400]}"
            for d, st in app.deployments.items() if status[d] != "HEALTHY"]
